"""``geocatalog-worker emulator geocatalog``: run the GeoCatalog + SAS API emulator until SIGINT/SIGTERM."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import click

from gcw_emulators.geocatalog.faults import FaultSpecError, parse_fault
from gcw_emulators.geocatalog.operations import DurationSpec


def _check_faults(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    for spec in value:
        try:
            parse_fault(spec)
        except FaultSpecError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


def _check_duration(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        DurationSpec(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


@click.command("geocatalog")
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address.")
@click.option(
    "--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="Port; 0 picks a free one."
)
@click.option("--data-dir", type=click.Path(file_okay=False), help="Keep state in SQLite under DIR (default: memory).")
@click.option(
    "--operation-seconds",
    default="recorded",
    show_default=True,
    callback=_check_duration,
    help="How long operations take: 'recorded' (the live service's timings per operation type: AddItem ~5-7 s, "
    "UpdateItem ~2.5 s, DeleteItem ~0.8 s, failures 0.7-1.6 s, collections 4.6-8.4 s; seeded by --seed), "
    "fixed seconds (0.2 for quick tests), 'uniform:LOW,HIGH' or 'exp:MEAN'.",
)
@click.option(
    "--private-host",
    "private_hosts",
    multiple=True,
    default=("privatedemo.blob.core.windows.net",),
    show_default=True,
    help="Storage host whose assets need a SAS token issued by this emulator (repeatable).",
)
@click.option("--token", default="dev-token", show_default=True, help="The Bearer token the API accepts.")
@click.option(
    "--sas-expiry-seconds",
    default=86400.0,
    show_default=True,
    type=float,
    help="Default lifetime of SAS tokens (the service's: 24 h); 'duration' (minutes) can only shorten it.",
)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    callback=_check_faults,
    help="Fault spec, repeatable: 'status=503,rate=0.3', 'reset,rate=0.05', 'latency=0.2', "
    "'op-fail,rate=0.1,code=InternalError', 'outage=60', 'auth-expired=30', 'sas-early=3000', 'budget=50'.",
)
@click.option("--budget", type=float, help="Request budget: calls per second across all clients (429 beyond).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the fault and duration draws.")
@click.option("--collection", "collections", multiple=True, help="Create this collection at start-up (repeatable).")
@click.option(
    "--managed-storage-account",
    default="emulatormanaged",
    show_default=True,
    help="Account of the catalog's managed storage: stored items' asset hrefs become "
    "https://NAME.blob.core.windows.net/<collection>-<8 hex>/...; the bytes are served at /_blobs/NAME/... (private).",
)
@click.option(
    "--tls",
    is_flag=True,
    help="Serve HTTPS with a freshly generated self-signed certificate for the host, 127.0.0.1 and localhost; "
    "its path is printed (trust it with REQUESTS_CA_BUNDLE / SSL_CERT_FILE).",
)
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True), help="Serve HTTPS with this PEM certificate.")
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True), help="The PEM private key of --tls-cert.")
@click.option(
    "--tls-dir",
    type=click.Path(file_okay=False),
    help="Where --tls writes geocatalog-cert.pem and geocatalog-key.pem (default: a new temporary folder).",
)
@click.option(
    "--public-url",
    help="Origin of every absolute URL in answers (operation-location, STAC links), e.g. https://gc.example behind "
    "a TLS proxy; without it X-Forwarded-Proto / X-Forwarded-Host, else the request's scheme and Host, are used.",
)
def geocatalog_command(
    host: str,
    port: int,
    data_dir: str | None,
    operation_seconds: str,
    private_hosts: tuple[str, ...],
    token: str,
    sas_expiry_seconds: float,
    faults: tuple[str, ...],
    budget: float | None,
    seed: int,
    collections: tuple[str, ...],
    managed_storage_account: str,
    tls: bool,
    tls_cert: str | None,
    tls_key: str | None,
    tls_dir: str | None,
    public_url: str | None,
) -> None:
    """Serve the GeoCatalog data-plane (STAC items, operations) and SAS APIs over HTTP(S), with fault injection.

    Prints the URL, then serves until SIGINT or SIGTERM. Admin endpoints: /_emulator/stats, /_emulator/faults.
    """
    from gcw_emulators.geocatalog.server import GeoCatalogEmulator

    try:
        seconds: float | str = float(operation_seconds)
    except ValueError:
        seconds = operation_seconds
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if tls_dir and not tls:
        raise click.UsageError("--tls-dir needs --tls")
    try:
        emu = GeoCatalogEmulator(
            host=host,
            port=port,
            operation_seconds=seconds,
            private_hosts=list(private_hosts),
            token=token,
            sas_expiry_seconds=sas_expiry_seconds,
            faults=list(faults),
            seed=seed,
            data_dir=data_dir,
            request_budget=budget,
            collections=list(collections),
            managed_storage_account=managed_storage_account,
            tls=tls,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_dir=tls_dir,
            public_url=public_url,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        emu.start()
        shown = token if token == "dev-token" else "as given by --token"  # noqa: S105 - the public dev token
        click.echo(f"GeoCatalog emulator listening on {emu.url} (token: {shown}, api-version: {emu.api_version})")
        if emu.cert is not None:
            click.echo(f"  TLS certificate (trust it with REQUESTS_CA_BUNDLE): {emu.cert}")
        if emu.public_url:
            click.echo(f"  public URL (the origin of URLs in answers): {emu.public_url}")
        click.echo(f"  stats: {emu.url}/_emulator/stats   faults: {emu.url}/_emulator/faults", err=True)
        while not stop.wait(0.5):
            pass
    finally:
        emu.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        click.echo("GeoCatalog emulator stopped", err=True)
