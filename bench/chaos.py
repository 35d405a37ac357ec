"""Chaos run: real processes, injected faults, kills; every figure counted at the emulators.

The three provider emulators run in their own processes with fault rates (429, 5xx, timeouts,
malformed bodies, late task failures, expired result URLs, answers lost after the task was
made). Jobs are created over HTTP while the gateway is killed and restarted:

- sqlite:   one gateway, SIGKILLed `--kills` times and restarted on the same database;
- postgres: two API replicas (wan, hailuo, live) and one worker (`i2v-gateway worker --adapters
            kling`) on one PostgreSQL; replica 1 is frozen with SIGSTOP for longer than the lease
            and resumed, replica 2 is SIGKILLed and restarted.

Then it waits for every job to end and every trail to settle, reads the database and the
emulators' task books, and prints the table docs/reliability.md records:

    python bench/chaos.py --jobs 200 --kills 2                      # SQLite
    python bench/chaos.py --jobs 200 --database postgres            # two replicas + a worker

`tests/gateway/jobs/test_chaos.py` runs a short form of each in CI and asserts the invariants.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.jobs.store import JobStore  # noqa: E402
from gateway.jobs.tables import AttemptRow, JobRow, OutboxRow, make_engine  # noqa: E402
from gateway.serving import free_port  # noqa: E402

KLING_AK, KLING_SK = "ak-chaos", "sk-chaos-0123456789abcdef0123456789abcdef"
KEY = "sk-chaos"
MODELS = ["wan-2.6-i2v", "kling-v2.1", "hailuo-2.3-fast", "video-01-live", "wan-2.6-i2v-flash", "kling-v2.6-motion"]
#: Per call, by endpoint where the fault can strike (see adapters/emulators/common.py).
FAULTS = {
    "rate_limit": 0.05,
    "server_error": 0.04,
    "timeout": 0.02,
    "malformed": 0.03,
    "task_fail": 0.04,
    "moderation_late": 0.01,
    "expired_url_once": 0.06,
    "accepted_error": 0.03,
}

#: the emulator task phases a provider bills (or may yet bill): the rest end without a charge
BILLABLE = ("queued", "running", "succeeded")


@dataclass
class Config:
    jobs: int = 200
    database: str = "sqlite"
    kills: int = 2
    lease_s: float = 3.0
    run_s: float = 2.0
    seed: int = 7
    timeout_s: float = 300.0
    pg_url: str | None = None


class Proc:
    """A child `python -m gateway ...` with its own environment and a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logs: Path, ready: str | None) -> None:
        self.name, self.args, self.env, self.ready = name, args, env, ready
        self.log_path = logs / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", *self.args], cwd=ROOT, env=self.env, stdout=log, stderr=log
        )
        self.starts += 1
        if self.ready:
            deadline = time.time() + 60
            while time.time() < deadline:
                try:
                    if httpx.get(self.ready, timeout=1).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited; see {self.log_path}")
                time.sleep(0.1)
            raise RuntimeError(f"{self.name} did not become ready; see {self.log_path}")

    def signal(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            if sig == signal.SIGKILL:
                self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _image(rng: random.Random) -> str:
    arr = np.random.default_rng(rng.randrange(1 << 30)).integers(0, 255, (12, 16, 3), dtype=np.uint8)
    img = Image.fromarray(arr).resize((480, 360), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _gateway_env(cfg: Config, data: Path, emus: dict[str, str], port: int, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "I2V_PORT": str(port),
        "I2V_DATA_DIR": str(data),
        "I2V_RULES_FILE": str(ROOT / "router_rules.yaml"),
        "I2V_LEASE_S": str(cfg.lease_s),
        "I2V_POLL_INTERVAL_S": "0.2",
        "I2V_POLL_INTERVAL_MAX_S": "1",
        "I2V_RUNNER_SCAN_INTERVAL_S": "0.2",
        "I2V_CANCEL_CHECK_S": "1",
        "I2V_OUTBOX_BACKOFF_S": "0.5",
        "I2V_JOB_TIMEOUT_S": str(cfg.timeout_s),
        "I2V_RULES_RELOAD_S": "0",
        "I2V_LOG_LEVEL": os.environ.get("I2V_CHAOS_LOG_LEVEL", "WARNING"),
        "I2V_ADAPTERS__WAN__BASE_URL": emus["wan"],
        "I2V_ADAPTERS__WAN__API_KEY": KEY,
        "I2V_ADAPTERS__KLING__BASE_URL": emus["kling"],
        "I2V_ADAPTERS__KLING__API_KEY": KLING_AK,
        "I2V_ADAPTERS__KLING__SECRET_KEY": KLING_SK,
        "I2V_ADAPTERS__HAILUO__BASE_URL": emus["minimax"],
        "I2V_ADAPTERS__HAILUO__API_KEY": KEY,
        "I2V_ADAPTERS__LIVE__BASE_URL": emus["minimax"],
        "I2V_ADAPTERS__LIVE__API_KEY": KEY,
    }
    for family in ("WAN", "KLING", "HAILUO", "LIVE"):
        env[f"I2V_ADAPTERS__{family}__TIMEOUT_S"] = "2"
        env[f"I2V_ADAPTERS__{family}__MAX_CONCURRENCY"] = "64"
    if cfg.pg_url:
        env["I2V_DATABASE_URL"] = cfg.pg_url
    env.update(extra)
    return env


@dataclass
class Topology:
    emulators: dict[str, Proc]
    fronts: list[Proc]  # take HTTP requests
    workers: list[Proc] = field(default_factory=list)


def _start(cfg: Config, work: Path, stack: ExitStack) -> Topology:
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    emus: dict[str, Proc] = {}
    for family, key in (("wan", KEY), ("kling", f"{KLING_AK}:{KLING_SK}"), ("minimax", KEY)):
        port = free_port()
        args = ["emulate", family, "--port", str(port), "--key", key, "--queue-s", "0.3", "--run-s", str(cfg.run_s)]
        args += ["--max-side", "160", "--max-frames", "8"]
        proc = Proc(f"emu-{family}", args, {**os.environ, "PYTHONPATH": str(ROOT)}, logs, None)
        proc.base = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
        proc.start()
        stack.callback(proc.stop)
        emus[family] = proc
    for proc in emus.values():
        _wait_http(f"{proc.base}/_emulator/stats")  # type: ignore[attr-defined]
        plan = {"rates": FAULTS, "hang_s": 3, "retry_after_s": 0, "seed": cfg.seed}
        httpx.post(f"{proc.base}/_emulator/faults", json=plan).raise_for_status()  # type: ignore[attr-defined]
    bases = {f: p.base for f, p in emus.items()}  # type: ignore[attr-defined]
    data = work / "data"
    fronts: list[Proc] = []
    workers: list[Proc] = []
    # Kling and MiniMax call back the first front (as through a load balancer, it may be down):
    # how a MiniMax task whose submit answer was lost gets counted
    ports = [free_port() for _ in range(3)]
    hooks = {"I2V_PUBLIC_URL": f"http://127.0.0.1:{ports[0]}"}
    if cfg.database == "sqlite":
        port = ports[0]
        env = _gateway_env(cfg, data, bases, port, **hooks)
        fronts.append(Proc("gateway", ["serve"], env, logs, f"http://127.0.0.1:{port}/readyz"))
    else:
        for i in (1, 2):
            port = ports[i - 1]
            env = _gateway_env(
                cfg,
                data,
                bases,
                port,
                I2V_REMOTE_ADAPTERS='["kling"]',
                I2V_RUNNER_ADAPTERS='["wan","hailuo","live"]',
                **hooks,
            )
            fronts.append(Proc(f"api-{i}", ["serve"], env, logs, f"http://127.0.0.1:{port}/readyz"))
        port = ports[2]
        env = _gateway_env(cfg, data, bases, port, **hooks)
        workers.append(
            Proc(
                "worker",
                ["worker", "--adapters", "kling", "--port", str(port)],
                env,
                logs,
                f"http://127.0.0.1:{port}/readyz",
            )
        )
    for proc in [*fronts, *workers]:
        proc.start()
        stack.callback(proc.stop)
    for proc in fronts:
        proc.url = proc.ready.rsplit("/", 1)[0]  # type: ignore[attr-defined,union-attr]
    return Topology(emus, fronts, workers)


def _wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} never answered")


def _create_jobs(cfg: Config, topo: Topology, ids: list[str], done: threading.Event) -> None:
    rng = random.Random(cfg.seed)
    images = [_image(rng) for _ in range(8)]
    with httpx.Client(timeout=10) as client:
        for i in range(cfg.jobs):
            body = {"prompt": "leaves sway, slow push in", "model": rng.choice(MODELS), "image": rng.choice(images)}
            while True:  # a front that is down or frozen: try the next one, as a load balancer would
                front = topo.fronts[i % len(topo.fronts)] if rng.random() < 0.8 else rng.choice(topo.fronts)
                try:
                    resp = client.post(f"{front.url}/v1/videos", json=body, timeout=3)  # type: ignore[attr-defined]
                    if resp.status_code == 202:
                        ids.append(resp.json()["id"])
                        break
                except httpx.TransportError:
                    pass
                i += 1
                time.sleep(0.05)
            time.sleep(0.01)
    done.set()


def _disrupt(cfg: Config, topo: Topology, created: list[str], log: list[str]) -> None:
    """Kills (SQLite) or one freeze and one kill (PostgreSQL), spread over the job creation."""
    if cfg.database == "sqlite":
        for k in range(cfg.kills):
            _wait_count(created, cfg.jobs * (k + 1) // (cfg.kills + 1))
            time.sleep(0.5)
            topo.fronts[0].signal(signal.SIGKILL)
            log.append(f"SIGKILL gateway at {len(created)} jobs")
            topo.fronts[0].start()
        return
    _wait_count(created, cfg.jobs // 3)
    topo.fronts[0].signal(signal.SIGSTOP)
    frozen = cfg.lease_s * 2.5
    log.append(f"SIGSTOP api-1 for {frozen:.1f} s (lease {cfg.lease_s} s) at {len(created)} jobs")
    time.sleep(frozen)
    topo.fronts[0].signal(signal.SIGCONT)
    _wait_count(created, cfg.jobs * 2 // 3)
    topo.fronts[1].signal(signal.SIGKILL)
    log.append(f"SIGKILL api-2 at {len(created)} jobs")
    topo.fronts[1].start()


def _wait_count(items: list[str], n: int) -> None:
    while len(items) < n:
        time.sleep(0.05)


async def _read(url: str) -> tuple[list[JobRow], list[AttemptRow], list[OutboxRow]]:
    engine = make_engine(url)
    try:
        from sqlalchemy import select

        async with JobStore(engine).sessions() as s:
            jobs = list(await s.scalars(select(JobRow)))
            attempts = list(await s.scalars(select(AttemptRow)))
            outbox = list(await s.scalars(select(OutboxRow)))
        return jobs, attempts, outbox
    finally:
        await engine.dispose()


def run(cfg: Config, work: Path) -> dict[str, Any]:
    """One chaos run; returns the figures (and the invariants' inputs) as a dict."""
    t0 = time.time()
    with ExitStack() as stack:
        topo = _start(cfg, work, stack)
        created: list[str] = []
        done = threading.Event()
        disruptions: list[str] = []
        creator = threading.Thread(target=_create_jobs, args=(cfg, topo, created, done), daemon=True)
        creator.start()
        _disrupt(cfg, topo, created, disruptions)
        creator.join()
        db_url = cfg.pg_url or f"sqlite+aiosqlite:///{work / 'data' / 'gateway.db'}"
        deadline = time.time() + cfg.timeout_s
        while True:
            jobs, attempts, outbox = asyncio.run(_read(db_url))
            active = [j for j in jobs if j.status in ("queued", "in_progress")]
            pending = [o for o in outbox if o.status == "pending" and o.kind != "webhook"]
            if (not active and not pending) or time.time() > deadline:
                break
            time.sleep(0.5)
        tasks = {f: httpx.get(f"{p.base}/_emulator/tasks").json() for f, p in topo.emulators.items()}  # type: ignore[attr-defined]
        stats = {f: httpx.get(f"{p.base}/_emulator/stats").json() for f, p in topo.emulators.items()}  # type: ignore[attr-defined]
        stale = sum(p.log_path.read_text(errors="replace").count("lease lost") for p in [*topo.fronts, *topo.workers])
    return figures(cfg, created, jobs, attempts, outbox, tasks, stats, disruptions, stale, time.time() - t0)


def figures(
    cfg: Config,
    created: list[str],
    jobs: list[JobRow],
    attempts: list[AttemptRow],
    outbox: list[OutboxRow],
    tasks: dict[str, list[dict[str, Any]]],
    stats: dict[str, dict[str, int]],
    disruptions: list[str],
    stale: int,
    wall_s: float,
) -> dict[str, Any]:
    family = {"wan": "wan", "kling": "kling", "hailuo": "minimax", "live": "minimax"}
    by_job: dict[str, list[AttemptRow]] = {}
    for a in attempts:
        by_job.setdefault(a.job_id, []).append(a)
    known = {j.id for j in jobs}
    referenced: dict[tuple[str, str], list[AttemptRow]] = {}
    for a in attempts:
        if a.provider_task_id:
            referenced.setdefault((family.get(a.adapter, a.adapter), a.provider_task_id), []).append(a)
    per_family: dict[str, dict[str, int]] = {}
    for fam, book in tasks.items():
        unreferenced = [t for t in book if (fam, t["id"]) not in referenced]
        unconfirmed = [
            a for a in attempts if family.get(a.adapter) == fam and a.status == "unconfirmed" and not a.provider_task_id
        ]
        succeeded_uncounted = [t for t in unreferenced if t["phase"] == "succeeded"]
        for t in unreferenced:  # say which, and the attempts made near it, for whoever reads a failing run
            print(f"{fam} task {t['id']} held by no attempt: {t['phase']}, made at {t['created']:.3f}", file=sys.stderr)
            for a in attempts:
                near = a.submitted_at is not None and abs(a.submitted_at - t["created"]) < 15
                if family.get(a.adapter) == fam and (near or (a.status == "unconfirmed" and not a.provider_task_id)):
                    print(
                        f"  job {a.job_id} attempt {a.seq} {a.status} task {a.provider_task_id} submitted "
                        f"{a.submitted_at} finished {a.finished_at} error {a.error} cost {a.cost_usd}",
                        file=sys.stderr,
                    )
            for o in outbox:
                if o.kind == "trail" and o.payload.get("task_id") == t["id"]:
                    print(f"  trail {o.id} {o.status} {o.payload}", file=sys.stderr)
        for t in book:
            for a in referenced.get((fam, t["id"]), []):
                job = next((j for j in jobs if j.id == a.job_id), None)
                delivered = job is not None and job.status == "completed" and a.status == "completed"
                if t["phase"] == "succeeded" and not delivered and a.cost_usd is None:
                    succeeded_uncounted.append(t)
        per_family[fam] = {
            "tasks": len(book),
            "submit_calls": stats[fam].get("submits", 0),
            "faults": sum(v for k, v in stats[fam].items() if k.startswith("fault.")),
            "lost_answers_injected": stats[fam].get("fault.accepted_error", 0),
            "callback_challenges_failed": stats[fam].get("callback_challenges_failed", 0),
            "attempts_with_task": sum(1 for (f, _), rows in referenced.items() if f == fam for _ in rows),
            "unconfirmed_attempts": len(unconfirmed),
            "unreferenced_tasks": len(unreferenced),
            # a task that failed, was cancelled or forgotten by the provider costs nothing
            "unreferenced_billable": sum(t["phase"] in BILLABLE for t in unreferenced),
            "tasks_on_two_attempts": sum(1 for (f, _), rows in referenced.items() if f == fam and len(rows) > 1),
            "succeeded_not_delivered_nor_counted": len(succeeded_uncounted),
        }
    for (fam, task_id), rows in referenced.items():
        if len(rows) > 1:  # say which, for whoever reads a failing run
            print(f"{fam} task {task_id} on {len(rows)} attempts:", file=sys.stderr)
            for a in rows:
                print(
                    f"  job {a.job_id} attempt {a.seq} {a.status} submitted {a.submitted_at} "
                    f"error {(a.error or {}).get('code')} cost {a.cost_usd} task_data {a.task_data}",
                    file=sys.stderr,
                )
    for j in jobs:  # say which jobs the gateway's own restart failed, and how, for whoever reads a failing run
        if j.status == "failed" and (j.error or {}).get("code") in ("interrupted", "internal_error"):
            print(f"job {j.id} ({j.requested_model}) failed by a restart: {j.error}", file=sys.stderr)
            for a in by_job.get(j.id, []):
                print(f"  attempt {a.seq} {a.model} {a.status} {a.provider_task_id} {a.error}", file=sys.stderr)
    statuses: dict[str, int] = {}
    for j in jobs:
        key = j.status if j.status != "failed" else f"failed:{(j.error or {}).get('code')}"
        statuses[key] = statuses.get(key, 0) + 1
    live = ("submitting", "queued", "in_progress")
    two_live = sum(1 for rows in by_job.values() if sum(r.status in live for r in rows) > 1)
    live_in_done = sum(
        1
        for j in jobs
        if j.status in ("completed", "failed", "cancelled")
        for r in by_job.get(j.id, [])
        if r.status in live
    )
    return {
        "config": cfg.__dict__ | {"pg_url": bool(cfg.pg_url)},
        "wall_s": round(wall_s, 1),
        "disruptions": disruptions,
        "jobs_created": len(created),
        "jobs_lost": len([i for i in created if i not in known])
        + sum(j.status in ("queued", "in_progress") for j in jobs),
        "jobs_by_status": statuses,
        "jobs_failed_by_restart": sum(
            1 for j in jobs if j.status == "failed" and (j.error or {}).get("code") in ("interrupted", "internal_error")
        ),
        "attempts": len(attempts),
        "faults_injected": sum(f["faults"] for f in per_family.values()),
        "per_family": per_family,
        "stale_writes_refused": stale,
        "jobs_with_two_live_attempts": two_live,
        "live_attempts_in_finished_jobs": live_in_done,
        "outbox": _count(f"{o.kind}:{o.status}" for o in outbox),
    }


def _count(keys: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for k in keys:
        out[k] = out.get(k, 0) + 1
    return dict(sorted(out.items()))


def table(report: dict[str, Any]) -> str:
    lines = [
        f"jobs created {report['jobs_created']}, lost {report['jobs_lost']}, by status {report['jobs_by_status']}",
        f"failed by the gateway's own restart: {report['jobs_failed_by_restart']}; attempts {report['attempts']}; "
        f"faults injected {report['faults_injected']}; disruptions: {'; '.join(report['disruptions'])}",
        f"stale writes refused (lease lost): {report['stale_writes_refused']}; jobs with two live attempts: "
        f"{report['jobs_with_two_live_attempts']}; live attempts in finished jobs: "
        f"{report['live_attempts_in_finished_jobs']}",
        f"outbox: {report['outbox']}; wall {report['wall_s']} s",
        "",
        "| family | tasks | submit calls | faults | of which lost answers | attempts with task | unconfirmed | "
        "unreferenced tasks (billable) | tasks on 2 attempts | succeeded, not delivered nor counted |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for fam, f in report["per_family"].items():
        lines.append(
            f"| {fam} | {f['tasks']} | {f['submit_calls']} | {f['faults']} | {f['lost_answers_injected']} | "
            f"{f['attempts_with_task']} | "
            f"{f['unconfirmed_attempts']} | {f['unreferenced_tasks']} ({f['unreferenced_billable']}) | "
            f"{f['tasks_on_two_attempts']} | "
            f"{f['succeeded_not_delivered_nor_counted']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument(
        "--pg-admin", default=os.environ.get("I2V_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--run-s", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument("--keep", type=Path, default=None, help="keep the processes' logs in this folder")
    args = parser.parse_args()
    cfg = Config(jobs=args.jobs, database=args.database, kills=args.kills, run_s=args.run_s, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="i2v-chaos-") as tmp, ExitStack() as stack:
        if args.database == "postgres":
            os.environ["I2V_TEST_POSTGRES_URL"] = args.pg_admin
            from tests.support.postgres import temporary_database

            cfg.pg_url = stack.enter_context(temporary_database())
        report = run(cfg, Path(tmp))
        if args.keep is not None:
            shutil.copytree(Path(tmp) / "logs", args.keep, dirs_exist_ok=True)
    print(table(report))
    if args.json:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
