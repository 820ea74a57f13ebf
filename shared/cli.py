"""The `orderpipe` command."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from shared import __version__, errors

console = Console()
err_console = Console(stderr=True)

DATA_DIR_OPTION = click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".orderpipe"), show_default=True,
    help="The embedded server's data (ignored when DATABASE_URL is set).",
)


class OrderpipeGroup(click.Group):
    """Our errors end a command with their message and exit 1 — never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except errors.OrderpipeError as exc:
            fail(f"{exc.message} ({exc.code})")


@contextmanager
def local_runtime(data_dir: Path, *, require_schema: bool = True) -> Iterator:
    """The runtime for a CLI command: DATABASE_URL when set, else the embedded server of `data_dir`.

    The embedded server is started if it is not running; it is stopped again afterwards only if
    no other orderpipe process (a dev server) holds it.
    """
    from shared.db.embedded import EmbeddedPostgres
    from shared.runtime import get_runtime, reset_runtime

    data_dir = data_dir.expanduser().resolve()
    os.environ["ORDERPIPE_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("SECRET_BACKEND", "file")
    embedded = None
    if not os.environ.get("DATABASE_URL"):
        embedded = EmbeddedPostgres(data_dir)
        os.environ["DATABASE_URL"] = embedded.acquire()
    reset_runtime()
    try:
        runtime = get_runtime()
        if require_schema:
            from shared.db import migrations

            with runtime.db.connection() as conn:
                if not migrations.is_current(conn):
                    fail("the database schema is not current: run `orderpipe migrate` first")
        yield runtime
    finally:
        reset_runtime()
        if embedded is not None:
            del os.environ["DATABASE_URL"]
            embedded.release()


def fail(message: str, code: int = 1) -> None:
    err_console.print(f"[red]error:[/red] {message}")
    sys.exit(code)


@click.group(cls=OrderpipeGroup)
@click.version_option(__version__, prog_name="orderpipe")
def main() -> None:
    """orderpipe: every captured payment becomes exactly one order, or lands in a list a person acts on."""
    from shared.logs import configure_logging

    configure_logging(os.environ.get("LOG_LEVEL", "WARNING"))


# --- dev -----------------------------------------------------------------------------------------


@main.command()
@click.option("--port", default=8080, show_default=True, help="Port of the functions.")
@click.option("--sim-port", default=8090, show_default=True, help="Port of the gateway simulator.")
@DATA_DIR_OPTION
@click.option("--no-scheduler", is_flag=True, help="Do not run reconcile on its schedule.")
@click.option("--no-simulator", is_flag=True,
              help="Do not start the gateway simulator; use the one already running at --sim-port.")
def dev(port: int, sim_port: int, data_dir: Path, no_scheduler: bool, no_simulator: bool) -> None:
    """Run the whole pipeline locally: PostgreSQL, every function, the task queue, the simulator."""
    from shared.devserver import DevServer
    from shared.logs import configure_logging

    configure_logging(os.environ.get("LOG_LEVEL", "INFO"))
    server = DevServer(data_dir=data_dir.expanduser().resolve(), port=port, sim_port=sim_port,
                       run_scheduler=not no_scheduler, run_simulator=not no_simulator)

    def announce(urls: dict[str, str]) -> None:
        table = Table(title="orderpipe dev", show_header=False)
        for name, url in urls.items():
            table.add_row(name, url)
        console.print(table)
        secrets_file = server.data_dir / "secrets.json"
        if os.environ.get("SECRET_BACKEND", "file") == "file":
            console.print(f"admin token: in [bold]{secrets_file}[/bold] under \"admin-token\" "
                          f"(admin page: {server.base_url}/admin/)")
        where = f"embedded, data in {server.data_dir / 'pgdata'}" if server.embedded else "DATABASE_URL"
        console.print(f"database: {where}")
        console.print("ready — Ctrl-C stops everything", style="green")

    try:
        server.serve_forever(on_ready=announce)
    except OSError as exc:
        fail(f"could not start: {exc}")
    except errors.OrderpipeError as exc:
        fail(exc.message)


# --- database ------------------------------------------------------------------------------------


@main.command()
@click.option("--status", "show_status", is_flag=True, help="Show which migrations are applied; change nothing.")
@DATA_DIR_OPTION
def migrate(show_status: bool, data_dir: Path) -> None:
    """Apply pending migrations (or show their status)."""
    from shared.db import migrations

    with local_runtime(data_dir, require_schema=False) as runtime, runtime.db.connection() as conn:
        if show_status:
            table = Table("version", "name", "state", "applied at")
            states = migrations.status(conn)
            for s in states:
                style = {"applied": "green", "pending": "yellow"}.get(s.state, "red")
                table.add_row(f"{s.version:04d}", s.name, f"[{style}]{s.state}[/{style}]", str(s.applied_at or ""))
            console.print(table)
            if any(s.state in ("changed", "unknown") for s in states):
                sys.exit(1)
            return
        try:
            applied = migrations.migrate(conn)
        except migrations.MigrationChanged as exc:
            fail(exc.message)
        if applied:
            for m in applied:
                console.print(f"applied {m.version:04d}_{m.name}")
        else:
            console.print("database is up to date")


@main.command("seed-demo")
@DATA_DIR_OPTION
def seed_demo_command(data_dir: Path) -> None:
    """Create the demo vendors and products (idempotent)."""
    from shared.flows.catalog import seed_demo

    with local_runtime(data_dir) as runtime:
        created = seed_demo(runtime.db)
    console.print(f"demo catalog: {created['vendors']} vendors and {created['products']} products created")


@main.command()
@DATA_DIR_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def check(data_dir: Path, as_json: bool) -> None:
    """Check every data invariant; exit 1 on any breach."""
    from shared.encoding import json_default
    from shared.flows.invariants import run_checks

    with local_runtime(data_dir) as runtime, runtime.db.connection() as conn:
        results = run_checks(conn)
    if as_json:
        click.echo(json.dumps(results, default=json_default, indent=2))
    else:
        table = Table("invariant", "result", "breaches")
        for r in results:
            table.add_row(r["name"], "[green]ok[/green]" if r["ok"] else "[red]BREACH[/red]",
                          "" if r["ok"] else str(r["breaches"]))
        console.print(table)
    if not all(r["ok"] for r in results):
        sys.exit(1)


# --- jobs ----------------------------------------------------------------------------------------


@main.group()
def jobs() -> None:
    """Inspect and operate the job queue."""


@jobs.command("list")
@click.option("--status", type=click.Choice(["pending", "running", "completed", "retryable", "dead", "cancelled"]))
@click.option("--kind")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100))
@click.option("--offset", default=0, type=click.IntRange(0))
@DATA_DIR_OPTION
def jobs_list(status: str | None, kind: str | None, limit: int, offset: int, data_dir: Path) -> None:
    """List jobs, newest first."""
    from shared.jobs import store

    with local_runtime(data_dir) as runtime, runtime.db.connection() as conn:
        rows, total = store.list_jobs(conn, status=status, kind=kind, limit=limit, offset=offset)
    table = Table("id", "kind", "status", "attempts", "run at", "last error", title=f"{total} job(s)")
    for job in rows:
        table.add_row(str(job.job_id), job.kind, job.status, f"{job.attempts}/{job.max_attempts}",
                      job.run_at.isoformat(timespec="seconds"), (job.last_error or "")[:60])
    console.print(table)


@jobs.command("show")
@click.argument("job_id", type=int)
@DATA_DIR_OPTION
def jobs_show(job_id: int, data_dir: Path) -> None:
    """Show one job in full."""
    from shared.encoding import json_default
    from shared.jobs import store

    with local_runtime(data_dir) as runtime, runtime.db.connection() as conn:
        job = store.get(conn, job_id)
    if job is None:
        fail(f"no job {job_id}")
    click.echo(json.dumps(job.as_dict(), default=json_default, indent=2))


@jobs.command("retry")
@click.argument("job_ids", type=int, nargs=-1, required=True)
@DATA_DIR_OPTION
def jobs_retry(job_ids: tuple[int, ...], data_dir: Path) -> None:
    """Send dead or failed jobs back to pending; they are dispatched again."""
    from shared import jobs as job_layer

    failed = False
    with local_runtime(data_dir) as runtime:
        for job_id in job_ids:
            job = job_layer.retry(runtime.db, job_id)
            if job is None:
                err_console.print(f"job {job_id}: not dead or failed (or does not exist); unchanged")
                failed = True
            else:
                console.print(f"job {job_id}: pending again (generation {job.dispatch_generation})")
    if failed:
        sys.exit(1)


@jobs.command("rescue-stale")
@DATA_DIR_OPTION
def jobs_rescue_stale(data_dir: Path) -> None:
    """Release jobs running past their lease so they run again."""
    from shared import jobs as job_layer

    with local_runtime(data_dir) as runtime:
        counts = job_layer.rescue_stale_jobs(runtime.db)
    console.print(counts)


# --- reconcile and demo -----------------------------------------------------------------------------


@main.command("reconcile")
@click.argument("tasks", nargs=-1)
@click.option("--window-hours", default=48, show_default=True, type=click.IntRange(1, 24 * 31))
@DATA_DIR_OPTION
def reconcile_command(tasks: tuple[str, ...], window_hours: int, data_dir: Path) -> None:
    """Run reconcile's tasks now (all of them, or the ones named)."""
    from shared.flows import reconcile as flow
    from shared.http import describe_validation_errors

    try:
        request = flow.ReconcileIn(tasks=list(tasks) or None, window_hours=window_hours)
    except ValueError as exc:
        fail(f"unknown task: {describe_validation_errors(exc)[0]['message']} (known: {', '.join(flow.TASK_ORDER)})")
    with local_runtime(data_dir) as runtime:
        result = flow.run(runtime, request)
    table = Table("task", "result")
    for name, counts in result["ran"].items():
        table.add_row(name, json.dumps(counts, default=str))
    for name in result["skipped"]:
        table.add_row(name, "[yellow]skipped: running elsewhere[/yellow]")
    console.print(table)


@main.command()
@click.option("--provider", type=click.Choice(["esewa", "khalti", "stripe"]), default="esewa", show_default=True)
@click.option("--url", default="http://127.0.0.1:8080", show_default=True, help="The running dev server.")
@click.option("--sim-url", default="http://127.0.0.1:8090", show_default=True, help="The gateway simulator.")
def demo(provider: str, url: str, sim_url: str) -> None:
    """One purchase end to end against a running `orderpipe dev`; exit 0 only when the order is confirmed."""
    import httpx

    from shared.demo import DemoFailed, run_demo

    try:
        run_demo(url, provider, sim_url=sim_url, say=lambda line: console.print(f"• {line}"))
    except DemoFailed as exc:
        fail(str(exc))
    except httpx.HTTPError as exc:
        fail(f"could not reach the dev server ({type(exc).__name__}); is `orderpipe dev` running at {url}?")


def _register_area_commands() -> None:
    """Commands that live beside their area: the gateway simulator and the metrics pipeline."""
    from shared.flows.metrics_cli import metrics
    from shared.simulator.cli import gateway_sim

    main.add_command(gateway_sim, "gateway-sim")
    main.add_command(metrics, "metrics")


_register_area_commands()

if __name__ == "__main__":
    main()
