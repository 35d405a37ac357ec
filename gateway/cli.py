"""The `i2v-gateway` command: serve the API, and talk to a gateway from the shell."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
import uvicorn
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

app = typer.Typer(help="i2v-gateway: one HTTP API over every image-to-video backend.", no_args_is_help=True)
jobs_app = typer.Typer(help="List, show and cancel jobs on a running gateway.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
console = Console(stderr=True)

BaseUrl = Annotated[str, typer.Option("--base-url", envvar="I2V_BASE_URL", help="A running gateway.")]
ApiKey = Annotated[str | None, typer.Option("--api-key", envvar="I2V_API_KEY", help="Bearer key, if required.")]


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Default: I2V_HOST or 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(help="Default: I2V_PORT or 8000")] = None,
) -> None:
    """Run the gateway (API + job runner) until interrupted."""
    from gateway.app import create_app
    from gateway.settings import Settings

    settings = Settings()
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = settings.model_copy(update=overrides)
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port, log_config=None, timeout_graceful_shutdown=10
    )


def _client(base_url: str, api_key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.Client(base_url=base_url, headers=headers, timeout=60)


def _check(resp: httpx.Response) -> Any:
    if resp.status_code >= 400:
        try:
            err = resp.json()["error"]
            console.print(f"[red]error {resp.status_code} {err.get('code')}:[/red] {err.get('message')}")
        except Exception:
            console.print(f"[red]error {resp.status_code}:[/red] {resp.text[:500]}")
        raise typer.Exit(1)
    return resp.json()


@contextlib.contextmanager
def _in_process_gateway() -> Iterator[str]:
    """Start a gateway with this shell's settings on a free loopback port, for one command."""
    from gateway.app import create_app
    from gateway.settings import Settings

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(Settings()), host="127.0.0.1", port=port, log_config=None, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("the in-process gateway did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@app.command()
def generate(
    image: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The still image to animate.")],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="The motion to make.")],
    model: Annotated[str, typer.Option(help="A catalog alias, or auto.")] = "auto",
    seconds: Annotated[int | None, typer.Option()] = None,
    size: Annotated[str | None, typer.Option(help="WIDTHxHEIGHT")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Where to save the MP4.")] = None,
    base_url: BaseUrl = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
    in_process: Annotated[bool, typer.Option("--in-process", help="Start a gateway inside this command.")] = False,
    timeout: Annotated[float, typer.Option(help="Give up waiting after this many seconds.")] = 3600,
) -> None:
    """Create a video from IMAGE, wait for it with a progress bar, and save the MP4."""
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(_in_process_gateway()) if in_process else base_url
        with _client(url, api_key) as client:
            data: dict[str, str] = {"prompt": prompt, "model": model}
            if seconds:
                data["seconds"] = str(seconds)
            if size:
                data["size"] = size
            files = {"input_reference": (image.name, image.read_bytes())}
            video = _check(client.post("/v1/videos", data=data, files=files))
            video = _wait(client, video, timeout)
            if video["status"] != "completed":
                err = video.get("error") or {}
                console.print(f"[red]{video['id']} {video['status']}:[/red] {err.get('code')}: {err.get('message')}")
                raise typer.Exit(1)
            dest = out or Path(f"{video['id']}.mp4")
            resp = client.get(f"/v1/videos/{video['id']}/content")
            resp.raise_for_status()
            dest.write_bytes(resp.content)
            o = video["output"]
            console.print(
                f"[green]saved[/green] {dest}  {o['width']}x{o['height']} {o['duration_s']} s "
                f"{o['fps']} fps  model={video['model']}  cost=${video['metrics'].get('cost_usd', 0):.3f}"
            )
            typer.echo(json.dumps({"id": video["id"], "file": str(dest)}))


def _wait(client: httpx.Client, video: dict[str, Any], timeout: float) -> dict[str, Any]:
    deadline = time.time() + timeout
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(f"{video['id']} {video['status']}", total=100)
        while video["status"] in ("queued", "in_progress"):
            if time.time() > deadline:
                console.print(
                    f"[yellow]still {video['status']} after {timeout:.0f} s; check later with "
                    f"`i2v-gateway jobs show {video['id']}`[/yellow]"
                )
                raise typer.Exit(2)
            time.sleep(0.5)
            video = _check(client.get(f"/v1/videos/{video['id']}"))
            bar.update(
                task, completed=video["progress"], description=f"{video['id']} {video['model']} {video['status']}"
            )
    return video


@app.command()
def models(base_url: BaseUrl = "http://127.0.0.1:8000", api_key: ApiKey = None) -> None:
    """The catalog of the gateway at --base-url."""
    with _client(base_url, api_key) as client:
        data = _check(client.get("/v1/models"))["data"]
    table = Table("model", "adapter", "available", "resolutions", "seconds", "USD/s")
    for m in data:
        table.add_row(
            m["id"],
            m["adapter"],
            "yes" if m["available"] else "no",
            ",".join(m["resolutions"]),
            ",".join(map(str, m["durations"])),
            " ".join(f"{k}:{v}" for k, v in m["usd_per_second"].items()),
        )
    Console().print(table)


@jobs_app.command("list")
def jobs_list(
    status: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option()] = 20,
    base_url: BaseUrl = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
) -> None:
    """Recent jobs, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if status:
        params["status"] = status
    with _client(base_url, api_key) as client:
        data = _check(client.get("/v1/videos", params=params))["data"]
    table = Table("status", "model", "progress", "created")
    table.columns.insert(0, Column("id", no_wrap=True, min_width=28))
    for v in data:
        table.add_row(
            v["id"],
            v["status"],
            v["model"],
            f"{v['progress']}%",
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v["created_at"])),
        )
    Console().print(table)


@jobs_app.command("show")
def jobs_show(video_id: str, base_url: BaseUrl = "http://127.0.0.1:8000", api_key: ApiKey = None) -> None:
    """The whole video object, as JSON."""
    with _client(base_url, api_key) as client:
        typer.echo(json.dumps(_check(client.get(f"/v1/videos/{video_id}")), indent=2))


@jobs_app.command("cancel")
def jobs_cancel(video_id: str, base_url: BaseUrl = "http://127.0.0.1:8000", api_key: ApiKey = None) -> None:
    """Cancel a queued or running job."""
    with _client(base_url, api_key) as client:
        video = _check(client.post(f"/v1/videos/{video_id}/cancel"))
    typer.echo(f"{video['id']} {video['status']}")


def main() -> None:
    app()
