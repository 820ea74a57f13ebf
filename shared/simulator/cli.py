"""`orderpipe gateway-sim`: the gateway simulator on its own, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
from pathlib import Path

import click

# The secrets the simulator checks and signs with; the app must use the same values.
SIGNING_SECRETS = ("esewa-secret-key", "khalti-secret-key", "stripe-api-key", "stripe-webhook-secret")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8090, show_default=True, help="Port of the simulator.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".orderpipe"),
              show_default=True, help="Where secrets.json is (the same secrets `orderpipe dev` uses).")
@click.option("--stripe-webhook-url", default="http://127.0.0.1:8080/webhook_intake/stripe", show_default=True,
              help="Where Stripe events are POSTed.")
@click.option("--secrets", "source", type=click.Choice(["file", "env"]), default="file", show_default=True,
              help="file: <data-dir>/secrets.json (generated if missing); env: ORDERPIPE_SECRET_* variables.")
def gateway_sim(host: str, port: int, data_dir: Path, stripe_webhook_url: str, source: str) -> None:
    """Run the eSewa / Khalti / Stripe simulator (real paths plus /sim/* driving paths)."""
    from shared import errors
    from shared.devserver import run_until_signalled
    from shared.secrets import EnvSecrets, FileSecrets
    from shared.simulator.server import SimulatorServer

    secrets = FileSecrets(data_dir.expanduser() / "secrets.json") if source == "file" else EnvSecrets()
    try:
        # Loaded now so a missing secret stops the command at once (the file source creates its file).
        for name in SIGNING_SECRETS:
            secrets.get(name)
    except errors.ConfigurationError as exc:
        raise click.ClickException(exc.message) from None
    product_code = os.environ.get("ESEWA_PRODUCT_CODE", "EPAYTEST")
    server = SimulatorServer(secrets, host=host, port=port, stripe_webhook_url=stripe_webhook_url,
                             esewa_product_code=product_code)

    def start() -> None:
        server.start()
        click.echo(f"gateway simulator at {server.url} (Stripe events → {stripe_webhook_url}); Ctrl-C stops it")

    try:
        run_until_signalled(start, server.stop)
    finally:
        click.echo("gateway simulator stopped")
