"""`i2v-gateway keys`: API keys as data, managed on the gateway's own database.

The operator runs these where the gateway's settings are (same `I2V_DATABASE_URL` or data
dir); every replica sees the result within `I2V_KEY_CACHE_S`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from gateway.jobs.keys import KeyStore, Period
from gateway.jobs.migrate import migrate
from gateway.jobs.tables import make_engine
from gateway.settings import Settings

keys_app = typer.Typer(help="Create, list, revoke and rotate API keys (stored hashed).", no_args_is_help=True)
console = Console(stderr=True)
T = TypeVar("T")


def _run(work: Callable[[KeyStore], Awaitable[T]]) -> T:
    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)

    async def go() -> T:
        engine = make_engine(settings.resolved_database_url)
        try:
            await migrate(engine)
            return await work(KeyStore(engine))
        finally:
            await engine.dispose()

    return asyncio.run(go())


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Option(help="Who or what uses the key (shown in metrics, never the key).")],
    rpm: Annotated[int | None, typer.Option(min=1, help="Requests per minute.")] = None,
    concurrency: Annotated[int | None, typer.Option(min=1, help="Jobs running at once.")] = None,
    budget_usd: Annotated[float | None, typer.Option(min=0, help="Spend per period, estimated up front.")] = None,
    period: Annotated[str, typer.Option(help="day or month (UTC).")] = "month",
    admin: Annotated[bool, typer.Option(help="Sees every key's jobs.")] = False,
) -> None:
    """Make a key and print it once: only its hash is kept."""
    if period not in ("day", "month"):
        console.print("[red]--period must be day or month[/red]")
        raise typer.Exit(2)
    per: Period = "day" if period == "day" else "month"
    row, secret = _run(
        lambda ks: ks.create(name, admin=admin, rpm=rpm, concurrency=concurrency, budget_usd=budget_usd, period=per)
    )
    console.print(f"[green]created[/green] {row.id} ({name}); the key is shown once, keep it now:")
    typer.echo(secret)


@keys_app.command("list")
def list_keys() -> None:
    rows = _run(lambda ks: ks.list())
    table = Table("id", "name", "prefix", "admin", "rpm", "concurrency", "budget", "created", "state")
    for r in rows:
        state = "revoked" if r.revoked_at else ("rotated " + _day(r.rotated_at) if r.rotated_at else "live")
        budget = f"${r.budget_usd:g}/{r.period}" if r.budget_usd is not None else "-"
        table.add_row(
            r.id,
            r.name,
            r.prefix + "…",
            "yes" if r.admin else "",
            _n(r.rpm),
            _n(r.concurrency),
            budget,
            _day(r.created_at),
            state,
        )
    Console(width=200).print(table)


@keys_app.command("revoke")
def revoke(key_id: str) -> None:
    if not _run(lambda ks: ks.revoke(key_id)):
        console.print(f"[red]no live key {key_id}[/red]")
        raise typer.Exit(1)
    console.print(f"revoked {key_id}")


@keys_app.command("rotate")
def rotate(key_id: str) -> None:
    """A new secret for the key, printed once; the old one stops working; its jobs stay its own."""
    secret = _run(lambda ks: ks.rotate(key_id))
    if secret is None:
        console.print(f"[red]no live key {key_id}[/red]")
        raise typer.Exit(1)
    console.print(f"[green]rotated[/green] {key_id}; the new key is shown once:")
    typer.echo(secret)


def refuse_open_bind(settings: Settings, insecure_no_auth: bool) -> None:
    """Never listen beyond loopback with no key at all: anyone who reached it could spend the
    operator's provider money. `--insecure-no-auth` says it is meant."""
    if insecure_no_auth or _loopback(settings.host) or settings.api_keys:
        return
    if _run(lambda ks: ks.any_made()):
        return
    console.print(
        f"[red]refusing to listen on {settings.host} with no API key:[/red] anyone who reaches it could spend "
        "your provider money. Create one first (`i2v-gateway keys create --name me`), set I2V_API_KEYS, listen "
        "on 127.0.0.1, or pass --insecure-no-auth if this is what you want."
    )
    raise typer.Exit(2)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _n(value: Any) -> str:
    return "-" if value is None else str(value)


def _day(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts)) if ts else "-"
