"""i2v-gateway against the LiteLLM proxy on the anchor's workload, measured in the same run.

    python bench/peer_litellm.py --litellm /tmp/llm-venv/bin/litellm --seconds 30
    python bench/peer_litellm.py --clients 50 --without-quality   # + the gateway without metrics.quality
    python bench/peer_litellm.py --clients 50 --floor   # + bench/stack_floor.py: our web stack alone

Workload (shared/reference/gateway-anchors.md): one DashScope-protocol backend (our Wan
emulator, tasks done 2 s after submission, small clips); closed-loop clients, each creating a
job (`POST /v1/videos`, JSON, the photo as an http URL), polling `GET /v1/videos/{id}` every
0.5 s until it is completed, downloading `/content`, and starting again. 5 and 50 clients.
Each gateway runs alone as one process (LiteLLM: one worker); CPU is read from /proc for the
gateway's whole process tree, and apart, the part of it spent in the processes that measure
`metrics.quality` (its multiprocessing forkserver's). The load generator, the emulator and the
image server share the machine. Prints one markdown table.

LiteLLM is installed in its own virtualenv (it pins other versions of our dependencies):
`python3 -m venv /tmp/llm-venv && /tmp/llm-venv/bin/pip install 'litellm[proxy]==1.105.0' &&
/tmp/llm-venv/bin/pip install --no-deps litellm==1.109.1` (1.109.1's own pins ask for a certifi
newer than the index here has; its code runs with the older one).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import http.server
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-peer"
ANALYSIS = "multiprocessing.forkserver"  #: the command line of the gateway's clip-analysis processes


def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def tree_cpu(pid: int, within: str | None = None) -> float:
    """CPU seconds of a process and all its descendants (workers, threads included); with
    `within`, only of the descendants under one whose command line holds it (the gateway's clip
    analysis runs in processes forked by a multiprocessing forkserver)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [(pid, within is None)]
    while todo:
        p, counted = todo.pop()
        if not counted and within is not None:
            try:
                counted = within in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                pass
        total += times.get(p, 0.0) if counted else 0.0
        todo.extend((c, counted) for c, parent in parents.items() if parent == p)
    return total


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def postgres_cpu() -> float:
    """CPU seconds of the local PostgreSQL server: live processes plus what exited backends left
    in their parent's children-time counters (so a closed connection does not make it shrink)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() not in ("postgres", "postmaster"):
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / tick
    return total


class _PhotoServer(http.server.ThreadingHTTPServer):
    #: the standard library listens with a backlog of 5: 50 gateways' fetches at once overflowed it,
    #: and each dropped connection waited out TCP's 1 s (then 3 s) SYN retry: create p99 ~1-2 s
    request_queue_size = 256


def serve_photo(directory: str, port: int) -> http.server.ThreadingHTTPServer:
    handler = functools.partial(_QuietHandler, directory=directory)
    server = _PhotoServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def photo_jpeg() -> bytes:
    """The workload's photo: 640x480 noise as JPEG (bench/quality.py and bench/status_read.py use
    it too, so that their figures are this bench's)."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def gateway_env(data_dir: Path, port: int, emulator: str) -> dict[str, str]:
    """A gateway process on SQLite in `data_dir`, its Wan adapter on the emulator at `emulator`,
    reading the photo from the loopback photo server."""
    return {
        **os.environ,
        "I2V_PORT": str(port),
        "I2V_DATA_DIR": str(data_dir),
        "I2V_LOG_LEVEL": "WARNING",
        "I2V_API_KEYS": f'["{KEY}"]',
        "I2V_IMAGE_FETCH_ALLOW_NETWORKS": '["127.0.0.0/8"]',  # the photo server is on loopback
        "I2V_ADAPTERS__WAN__BASE_URL": emulator,
        "I2V_ADAPTERS__WAN__API_KEY": KEY,
    }


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def closed_loop(
    url: str, model: str, image_url: str, clients: int, seconds: float, name: str = ""
) -> dict[str, Any]:
    creates: list[float] = []
    statuses: list[float] = []
    finals: list[dict[str, Any]] = []  # each job's first `completed` answer
    done = failed = 0
    stop_at = time.perf_counter() + seconds
    body = {"model": model, "prompt": "slow push in, leaves drift", "input_reference": {"image_url": image_url}}
    headers = {"Authorization": f"Bearer {KEY}"}
    limits = httpx.Limits(max_connections=clients * 2, max_keepalive_connections=clients * 2)

    async with httpx.AsyncClient(base_url=url, timeout=60, headers=headers, limits=limits) as client:

        async def one_client() -> None:
            nonlocal failed
            while time.perf_counter() < stop_at:
                try:
                    await one_job()
                except httpx.TransportError as exc:  # a dropped connection fails that job, not the run
                    failed += 1
                    print(f"{name}: {type(exc).__name__} on {exc.request.method} {exc.request.url.path}", flush=True)

        async def one_job() -> None:
            nonlocal done, failed
            t0 = time.perf_counter()
            r = await client.post("/v1/videos", json=body)
            creates.append(time.perf_counter() - t0)
            if r.status_code >= 300:
                failed += 1
                await asyncio.sleep(0.5)
                return
            vid = r.json()["id"]
            while True:
                await asyncio.sleep(0.5)
                t1 = time.perf_counter()
                s = await client.get(f"/v1/videos/{vid}")
                statuses.append(time.perf_counter() - t1)
                state = s.json().get("status") if s.status_code == 200 else "failed"
                if state in ("completed", "failed", "cancelled"):
                    if state == "completed":
                        finals.append(s.json())
                    break
            if state != "completed":
                failed += 1
                return
            c = await client.get(f"/v1/videos/{vid}/content")
            if c.status_code == 200 and c.content[4:8] == b"ftyp":
                done += 1
            else:
                failed += 1

        await asyncio.gather(*(one_client() for _ in range(clients)))
    return {"done": done, "failed": failed, "creates": creates, "statuses": statuses, "finals": finals}


EMULATOR = "http://127.0.0.1:9291"
PROVIDER_S = 2.0  # the emulator's queue_s + run_s below: a task is done this long after its submit


def provider_calls() -> int:
    stats = httpx.get(f"{EMULATOR}/_emulator/stats", timeout=30).json()
    return sum(stats.get(k, 0) for k in ("submits", "polls", "downloads"))


def visible_after_finish(finals: list[dict[str, Any]]) -> list[float]:
    """Seconds from the provider finishing a task to the gateway holding it as `completed`, for
    gateways that record it (ours: the attempt's `finished_at`, written with the job's completion,
    against the emulator's own submit time + PROVIDER_S). A gateway that asks the provider on every
    client read (LiteLLM) holds it from the moment the provider finishes: 0."""
    created = {t["id"]: t["created"] for t in httpx.get(f"{EMULATOR}/_emulator/tasks", timeout=60).json()}
    out = []
    for video in finals:
        attempts = (video.get("route") or {}).get("attempts") or []
        if attempts and attempts[-1].get("provider_task_id") in created and attempts[-1].get("finished_at"):
            out.append(attempts[-1]["finished_at"] - (created[attempts[-1]["provider_task_id"]] + PROVIDER_S))
    return out


def measure(
    name: str,
    proc: subprocess.Popen[bytes],
    url: str,
    model: str,
    image_url: str,
    clients: int,
    seconds: float,
    *,
    reads_provider: bool = False,
) -> dict[str, Any]:
    asyncio.run(closed_loop(url, model, image_url, 2, 6))  # warm-up
    calls0, cpu0, db0, t0 = provider_calls(), tree_cpu(proc.pid), postgres_cpu(), time.perf_counter()
    analysis0 = tree_cpu(proc.pid, ANALYSIS)
    out = asyncio.run(closed_loop(url, model, image_url, clients, seconds, name))
    wall = time.perf_counter() - t0
    cpu, db = tree_cpu(proc.pid) - cpu0, postgres_cpu() - db0
    analysis = tree_cpu(proc.pid, ANALYSIS) - analysis0
    jobs = max(1, out["done"])
    calls = (provider_calls() - calls0) / jobs
    visible = [0.0] if reads_provider else visible_after_finish(out["finals"])
    status_p50 = pct(out["statuses"], 0.5)
    return {
        "gateway": name,
        "clients": clients,
        "jobs/s": round(out["done"] / wall, 1),
        "completed": out["done"],
        "failed": out["failed"],
        "CPU per job ms": round(cpu / jobs * 1000, 1),
        # of which in the processes that measure `metrics.quality` (work LiteLLM does not do)
        "of which clip analysis ms": round(analysis / jobs * 1000, 1),
        "+ PostgreSQL server ms": round(db / jobs * 1000, 1),
        "create p50 / p99 ms": f"{pct(out['creates'], 0.5) * 1000:.1f} / {pct(out['creates'], 0.99) * 1000:.0f}",
        "status p50 / p99 ms": f"{status_p50 * 1000:.1f} / {pct(out['statuses'], 0.99) * 1000:.0f}",
        "provider calls per job": round(calls, 1),
        # When a read sent at the provider's finish would first say `completed`: p50 of the
        # gateway's own delay plus the p50 read.
        "completed after provider p50 / p90 ms": f"{(pct(visible, 0.5) + status_p50) * 1000:.0f} / "
        f"{(pct(visible, 0.9) + status_p50) * 1000:.0f}",
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--litellm", default="/tmp/llm-venv/bin/litellm", help="the litellm CLI of its own venv")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--clients", type=int, nargs="*", default=[5, 50])
    ap.add_argument("--database", default="sqlite", choices=["sqlite", "postgres"])
    ap.add_argument("--skip-litellm", action="store_true")
    ap.add_argument("--floor", action="store_true", help="also bench/stack_floor.py (the stack's HTTP alone), same run")
    ap.add_argument(
        "--without-quality", action="store_true", help="also the gateway with I2V_QUALITY_METRICS=false, same run"
    )
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="i2v-peer-"))
    (tmp / "photo.jpg").write_bytes(photo_jpeg())
    photo_server = serve_photo(str(tmp), 9290)
    image_url = "http://127.0.0.1:9290/photo.jpg"
    emu = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "emulate",
            "wan",
            "--port",
            "9291",
            "--key",
            KEY,
            "--queue-s",
            "0.5",
            "--run-s",
            str(PROVIDER_S - 0.5),
            "--max-side",
            "160",
            "--max-frames",
            "8",
        ],
        cwd=ROOT,
    )
    rows: list[dict[str, Any]] = []
    try:
        wait_ready("http://127.0.0.1:9291/_emulator/stats")

        # --- i2v-gateway -----------------------------------------------------------------
        env = {
            **gateway_env(tmp / "gw", 9292, "http://127.0.0.1:9291"),
            "I2V_ADAPTERS__WAN__MAX_CONCURRENCY": "500",
            "I2V_POLL_INTERVAL_S": "0.5",
            "I2V_POLL_INTERVAL_MAX_S": "1.0",
        }
        if args.database == "postgres":
            env["I2V_DATABASE_URL"] = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
        serve = [sys.executable, "-m", "gateway", "serve"]
        servers = [(f"i2v-gateway ({args.database})", serve, {**env, "I2V_DATA_DIR": str(tmp / "gw0")}, 9292)]
        if args.without_quality:  # the same gateway without `metrics.quality`, which LiteLLM does not measure
            extra = {"I2V_DATA_DIR": str(tmp / "gw1"), "I2V_QUALITY_METRICS": "false"}
            servers.append((f"i2v-gateway ({args.database}), no metrics.quality", serve, {**env, **extra}, 9292))
        if args.floor:  # the stack's floor
            floor = [sys.executable, str(ROOT / "bench" / "stack_floor.py"), "--port", "9294"]
            servers.append(("stack floor", floor, None, 9294))
        for name, command, server_env, port in servers:
            proc = subprocess.Popen(command, cwd=ROOT, env=server_env)
            try:
                wait_ready(f"http://127.0.0.1:{port}/healthz")
                for n in args.clients:
                    rows.append(
                        measure(name, proc, f"http://127.0.0.1:{port}", "wan-2.6-i2v", image_url, n, args.seconds)
                    )
                    print(rows[-1], flush=True)
            finally:
                proc.terminate()
                proc.wait(20)

        # --- LiteLLM proxy -----------------------------------------------------------------
        if args.skip_litellm:
            raise SystemExit(print_table(rows, args.seconds))
        config = tmp / "litellm.yaml"
        config.write_text(
            "model_list:\n"
            "  - model_name: wan-2.6-i2v\n"
            "    litellm_params:\n"
            "      model: dashscope/wan2.6-i2v\n"
            "      api_base: http://127.0.0.1:9291\n"
            f"      api_key: {KEY}\n"
            "general_settings:\n"
            f"  master_key: {KEY}\n"
            "litellm_settings:\n"
            "  drop_params: true\n"
        )
        llm_env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        llm = subprocess.Popen(
            [args.litellm, "--config", str(config), "--port", "9293", "--num_workers", "1"],
            env=llm_env,
            stdout=subprocess.DEVNULL,
        )
        try:
            wait_ready("http://127.0.0.1:9293/health/liveliness", timeout=120)
            for n in args.clients:
                rows.append(
                    measure(
                        "LiteLLM 1.109.1 proxy",
                        llm,
                        "http://127.0.0.1:9293",
                        "wan-2.6-i2v",
                        image_url,
                        n,
                        args.seconds,
                        reads_provider=True,
                    )
                )
                print(rows[-1], flush=True)
        finally:
            llm.terminate()
            llm.wait(30)
    finally:
        emu.terminate()
        emu.wait(20)
        photo_server.shutdown()

    print_table(rows, args.seconds)


RATIO = "CPU per job vs LiteLLM"


def against_litellm(rows: list[dict[str, Any]]) -> list[str]:
    """Each row's CPU per job as a multiple of LiteLLM's at the same client count, same run (the
    issue's figure: <= 0.5x at 50 clients); "-" where LiteLLM was not run."""
    litellm = {r["clients"]: r["CPU per job ms"] for r in rows if r["gateway"].startswith("LiteLLM")}
    return [f"{r['CPU per job ms'] / litellm[r['clients']]:.2f}x" if r["clients"] in litellm else "-" for r in rows]


def print_table(rows: list[dict[str, Any]], seconds: float) -> None:
    rows = [{**r, RATIO: ratio} for r, ratio in zip(rows, against_litellm(rows), strict=True)]
    cols = [c for c in rows[0] if c != RATIO]
    cols.insert(cols.index("CPU per job ms") + 1, RATIO)
    print(f"\n{os.cpu_count()} CPUs, {seconds:.0f} s per row\n")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")


if __name__ == "__main__":
    main()
