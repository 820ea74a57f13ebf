"""`orderpipe metrics …`: recompute the daily metrics tables from orders and refunds.

shared/cli.py registers the group (`main.add_command(metrics)`). Because shared.cli imports this
module, nothing from shared.cli is imported here at import time: under `python -m shared.cli`
that would be an import cycle. `local_runtime` is imported inside the command; the --data-dir
option is declared here exactly as shared.cli.DATA_DIR_OPTION declares it (a test keeps the two equal).
"""

from __future__ import annotations

from pathlib import Path

import click

from shared import errors

MAX_BACKFILL_DAYS = 3660  # shared.flows.metrics.MAX_BACKFILL_DAYS, without importing the flow at startup

_DATA_DIR_OPTION = click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".orderpipe"), show_default=True,
    help="The embedded server's data (ignored when DATABASE_URL is set).",
)


@click.group()
def metrics() -> None:
    """Daily vendor and platform metrics."""


@metrics.command()
@click.option("--days", required=True, type=click.IntRange(1, MAX_BACKFILL_DAYS),
              help="How many days back, today included.")
@_DATA_DIR_OPTION
def backfill(days: int, data_dir: Path) -> None:
    """Recompute every vendor's and the platform's row for each of the last N days (today included)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from shared.cli import console, fail, local_runtime
    from shared.flows.metrics import backfill as backfill_days

    columns = (TextColumn("metrics backfill"), BarColumn(), MofNCompleteColumn(), TextColumn("days"),
               TimeElapsedColumn())
    try:
        with local_runtime(data_dir) as runtime, Progress(*columns, console=Console(stderr=True)) as progress:
            task = progress.add_task("backfill", total=days)
            result = backfill_days(runtime.db, days=days,
                                   progress=lambda done, total: progress.update(task, completed=done, total=total))
    except errors.OrderpipeError as exc:
        fail(exc.message)
        return
    console.print(f"metrics backfill: {result['days']} days, {result['vendor_rows']} vendor rows checked, "
                  f"{result['changed']} written ({result['created']} new), "
                  f"{result['platform_changed']} platform rows written")
