"""What one status read costs: `GET /v1/videos/{id}` end to end, and its database read alone.

    python bench/status_read.py --reads 1000

1. A gateway process (SQLite) in front of the Wan emulator finishes one job; then `--reads`
   sequential `GET /v1/videos/{id}` of it, the gateway's CPU read from /proc (its whole process
   tree), three rounds.
2. In this process, `JobStore.get_with_attempts` on an empty SQLite database (inline, on the
   calling thread) against the same statement through the async engine (aiosqlite), that
   statement built on every call (the code before), and SQLAlchemy Core through the async
   engine: CPU per call, alternating rounds.
Prints one table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import bindparam, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from peer_litellm import KEY, gateway_env, photo_jpeg, serve_photo, tree_cpu, wait_ready  # noqa: E402
from rounds import alternate, print_table  # noqa: E402

from gateway.jobs import store as jobstore  # noqa: E402
from gateway.jobs.tables import AttemptRow, Base, JobRow, make_engine  # noqa: E402


def over_http(reads: int, rounds: int) -> list[tuple[str, str]]:
    tmp = Path(tempfile.mkdtemp(prefix="i2v-status-"))
    (tmp / "photo.jpg").write_bytes(photo_jpeg())
    serve_photo(str(tmp), 9390)
    timing = ["--queue-s", "0.2", "--run-s", "0.3", "--max-side", "160", "--max-frames", "8"]
    emulate = [sys.executable, "-m", "gateway", "emulate", "wan", "--port", "9391", "--key", KEY, *timing]
    emu = subprocess.Popen(emulate, cwd=ROOT)
    env = gateway_env(tmp / "gw", 9392, "http://127.0.0.1:9391")
    gw = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], cwd=ROOT, env=env)
    rows = []
    try:
        wait_ready("http://127.0.0.1:9391/_emulator/stats")
        wait_ready("http://127.0.0.1:9392/healthz")
        with httpx.Client(base_url="http://127.0.0.1:9392", headers={"Authorization": f"Bearer {KEY}"}) as c:
            body = {
                "model": "wan-2.6-i2v",
                "prompt": "push in",
                "input_reference": {"image_url": "http://127.0.0.1:9390/photo.jpg"},
            }
            vid = c.post("/v1/videos", json=body).json()["id"]
            while "pending" in str(c.get(f"/v1/videos/{vid}").json().get("metrics", {}).get("quality", "pending")):
                time.sleep(0.2)
            for _ in range(100):
                c.get(f"/v1/videos/{vid}")
            for n in range(rounds):
                cpu0, t0 = tree_cpu(gw.pid), time.perf_counter()
                for _ in range(reads):
                    r = c.get(f"/v1/videos/{vid}")
                cpu, wall = tree_cpu(gw.pid) - cpu0, time.perf_counter() - t0
                what = f"GET /v1/videos/{{id}}, round {n + 1} ({len(r.content):,} bytes)"
                rows.append((what, f"{cpu / reads * 1000:.2f} ms CPU, {wall / reads * 1000:.2f} ms wall"))
    finally:
        gw.terminate()
        emu.terminate()
        gw.wait(20)
        emu.wait(20)
    return rows


async def in_process(calls: int, rounds: int) -> list[tuple[str, str]]:
    engine = make_engine(f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/bench.db")
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    store = jobstore.JobStore(engine)
    jobs, attempts = JobRow.__table__, AttemptRow.__table__
    core = (
        select(jobs, attempts)
        .select_from(jobs.outerjoin(attempts, attempts.c.job_id == jobs.c.id))
        .where(jobs.c.id == bindparam("job_id"))
        .order_by(attempts.c.seq)
    )

    async def built_each_call(job_id: str) -> Any:
        q = (
            select(JobRow, AttemptRow)
            .outerjoin(AttemptRow, AttemptRow.job_id == JobRow.id)
            .where(JobRow.id == job_id)
            .order_by(AttemptRow.seq)
        )
        async with store.sessions() as s:
            return (await s.execute(q)).all()

    async def through_async_engine(job_id: str) -> Any:
        async with store.sessions() as s:
            return (await s.execute(jobstore.WITH_ATTEMPTS, {"job_id": job_id})).all()

    async def with_core(job_id: str) -> Any:
        async with engine.connect() as conn:
            return (await conn.execute(core, {"job_id": job_id})).all()

    variants = {
        "get_with_attempts (the code: inline on a SQLite file)": store.get_with_attempts,
        "the same statement through the async engine": through_async_engine,
        "that, with the select built on every call (before)": built_each_call,
        "SQLAlchemy Core through the async engine": with_core,
    }
    spent = await alternate(variants, [("none",)] * calls, rounds, warm=200)
    store.close()
    await engine.dispose()
    return [(name, " / ".join(f"{us:.0f}" for us in values) + " µs CPU") for name, values in spent.items()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reads", type=int, default=1000)
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rows = asyncio.run(in_process(args.calls, args.rounds)) + over_http(args.reads, args.rounds)
    print_table(f"One status read ({os.cpu_count()} CPUs)", ("what", "per read / call"), rows)


if __name__ == "__main__":
    main()
