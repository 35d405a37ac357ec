"""Many jobs in flight at once through one gateway against a provider emulator over real HTTP.

    python bench/emulator_load.py --jobs 1000 --provider-s 3
    python bench/emulator_load.py --jobs 10000 --provider-s 60 --prefill   # 10,000 in flight at once

Starts `i2v-gateway emulate wan` and `i2v-gateway serve` (SQLite) as separate processes, creates
the jobs as fast as 50 concurrent clients can, and waits until every job is terminal. Reports
completed/failed, wall time, the most jobs in flight at once (from the gateway's own gauge), the
gateway process's CPU seconds per job and peak RSS (VmHWM), and the SQL statements per job (from
`i2v_db_statements_total`, so the creates, claims, writes and the bench's own status scans).
The emulator renders small clips (160 px, 8 frames) so its CPU does not starve the gateway's.

`--prefill`: the jobs are created first by a gateway whose runner is off (two cores cannot create
10,000 jobs inside one 60 s provider latency), then that process stops and a fresh one with the
runner on claims them all: every job is in flight at once on one replica. CPU, RSS and the
in-flight peak are then the second process's; statements per job count both.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.gateway_load import cpu_seconds, rss_mb  # noqa: E402


def wait_ready(url: str) -> None:
    for _ in range(300):
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


async def run(url: str, jobs: int) -> tuple[list[str], float]:
    buf = io.BytesIO()
    small = np.random.default_rng(1).integers(0, 255, (12, 16, 3), dtype=np.uint8)
    Image.fromarray(small).resize((640, 480), Image.Resampling.BILINEAR).save(buf, "JPEG", quality=80)
    body = {
        "prompt": "slow push in",
        "model": "wan-2.6-i2v",
        "resolution": "720p",
        "image": "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode(),
    }
    sem = asyncio.Semaphore(50)
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def create() -> str:
            async with sem:
                r = await client.post("/v1/videos", json=body)
                r.raise_for_status()
                return r.json()["id"]

        t0 = time.time()
        ids = await asyncio.gather(*(create() for _ in range(jobs)))
        return list(ids), time.time() - t0


def metric_sum(text: str, name: str) -> float:
    """The sum over all label sets of one metric in a Prometheus text page."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def statements(url: str) -> float:
    return sum(statements_by_verb(url).values())


def statements_by_verb(url: str) -> dict[str, float]:
    """`i2v_db_statements_total` of the gateway at `url`, by verb."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return {
        line.split('verb="', 1)[1].split('"', 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("i2v_db_statements_total{")
    }


def in_flight(client: httpx.Client) -> int:
    return int(metric_sum(client.get("/metrics").text, "i2v_jobs_in_flight"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--provider-s", type=float, default=3.0, help="emulated provider latency per task")
    ap.add_argument("--poll-max-s", type=float, default=2.0, help="I2V_POLL_INTERVAL_MAX_S of the gateway")
    ap.add_argument("--prefill", action="store_true", help="create every job first, then start the runner")
    args = ap.parse_args()
    data = tempfile.mkdtemp(prefix="i2v-emu-bench-")
    emu = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "emulate",
            "wan",
            "--port",
            "9181",
            "--key",
            "sk-b",
            "--queue-s",
            str(args.provider_s / 3),
            "--run-s",
            str(args.provider_s * 2 / 3),
            "--max-side",
            "160",
            "--max-frames",
            "8",
        ],
        cwd=ROOT,
    )
    env = {
        **os.environ,
        "I2V_PORT": "9180",
        "I2V_DATA_DIR": data,
        "I2V_LOG_LEVEL": "WARNING",
        "I2V_ADAPTERS__WAN__BASE_URL": "http://127.0.0.1:9181",
        "I2V_ADAPTERS__WAN__API_KEY": "sk-b",
        "I2V_ADAPTERS__WAN__MAX_CONCURRENCY": str(max(2000, args.jobs)),
        "I2V_RUNNER_CONCURRENCY": str(max(2000, args.jobs)),
        "I2V_POLL_INTERVAL_S": "1.0",
        "I2V_POLL_INTERVAL_MAX_S": str(args.poll_max_s),
        "I2V_HIGH_VOLUME_QUEUED": "1000000",
    }
    url = "http://127.0.0.1:9180"
    created_statements = 0.0
    create_wall = 0.0
    if args.prefill:
        filler = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve"], cwd=ROOT, env={**env, "I2V_RUNNER_ENABLED": "false"}
        )
        try:
            wait_ready(f"{url}/healthz")
            s0 = statements(url)
            _, create_wall = asyncio.run(run(url, args.jobs))
            created_statements = statements(url) - s0
        finally:
            filler.terminate()
            filler.wait(60)
    gw = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], cwd=ROOT, env=env)
    try:
        wait_ready("http://127.0.0.1:9181/_emulator/stats")
        wait_ready(f"{url}/healthz")
        statements0 = statements(url) - created_statements
        cpu0, t0 = cpu_seconds(gw.pid), time.time()
        if not args.prefill:
            _, create_wall = asyncio.run(run(url, args.jobs))
        peak = 0
        with httpx.Client(base_url=url, timeout=120) as client:
            while True:
                peak = max(peak, in_flight(client))
                active = sum(
                    len(client.get("/v1/videos", params={"status": s, "limit": 1}).json()["data"])
                    for s in ("queued", "in_progress")
                )
                if not active or time.time() - t0 > 3600:
                    break
                time.sleep(1.0)
            wall = time.time() - t0
            cpu = cpu_seconds(gw.pid) - cpu0
            counts = {s: 0 for s in ("completed", "failed", "cancelled", "queued", "in_progress")}
            after = None
            while True:
                page = client.get("/v1/videos", params={"limit": 100, **({"after": after} if after else {})}).json()
                for v in page["data"]:
                    counts[v["status"]] += 1
                if not page["has_more"]:
                    break
                after = page["last_id"]
        stats = httpx.get("http://127.0.0.1:9181/_emulator/stats").json()
        print(f"\n{args.jobs} jobs, provider latency {args.provider_s:.1f} s, SQLite, CPUs: {os.cpu_count()}")
        print(f"created in {create_wall:.1f} s; all terminal after {wall:.1f} s")
        print(f"statuses: {counts}")
        by_verb = statements_by_verb(url)
        sql = (sum(by_verb.values()) - statements0) / args.jobs
        print(f"gateway CPU {cpu:.1f} s = {cpu / args.jobs * 1000:.1f} ms per job; peak RSS {rss_mb(gw.pid):.0f} MB")
        verbs = {k: round(v / args.jobs, 1) for k, v in by_verb.items() if v}
        print(f"most jobs in flight at once: {peak}; SQL statements per job: {sql:.1f}")
        print(f"of which this replica's, by verb: {verbs}")
        print(f"emulator saw: {stats}")
    finally:
        for p in (gw, emu):
            p.terminate()
            p.wait(60)


if __name__ == "__main__":
    main()
