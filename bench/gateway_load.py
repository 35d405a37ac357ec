"""Gateway overhead under load: create and status latency with a backend that answers at once.

    python bench/gateway_load.py --clients 200 --seconds 15

Starts `i2v-gateway serve` (one process, SQLite) with the instant adapter, then drives it with
wrk (Debian package `wrk`) over N keep-alive connections. Baseline in the same run: GET /healthz, which
touches neither the database nor the router (the web stack's own floor on this machine).
Prints one table; the load generator shares the machine's cores with the gateway.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def image_uri() -> str:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def wrk(url: str, clients: int, seconds: float, script: str) -> dict[str, float]:
    """Run wrk (a C load generator, so the client is not the bottleneck) and parse its report."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    out = subprocess.run(
        ["wrk", "-t2", f"-c{clients}", f"-d{int(seconds)}s", "--latency", "-s", f.name, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    res = {
        "requests": float(re.search(r"(\d+) requests in", out).group(1)),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "errors": float(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0.0,
    }
    for q in ("50", "99"):
        val, unit = re.search(rf"\s{q}%\s+([\d.]+)(us|ms|s)", out).groups()
        res[f"p{q}"] = float(val) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
    if m := re.search(r"Socket errors: (.*)", out):
        res["socket_errors"] = m.group(1)  # type: ignore[assignment]
    return res


def drain(client: httpx.Client, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        busy = [
            v
            for st in ("queued", "in_progress")
            for v in client.get("/v1/videos", params={"status": st, "limit": 1}).json()["data"]
        ]
        if not busy:
            return
        time.sleep(0.2)
    raise RuntimeError("jobs did not finish")


def metric(text: str, name: str, having: str = "") -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name) and having in line)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    args = ap.parse_args()

    data = tempfile.mkdtemp(prefix="i2v-bench-")
    port = 8790
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "I2V_PORT": str(port),
        "I2V_DATA_DIR": data,
        "I2V_RULES_FILE": str(ROOT / "bench" / "rules_instant.yaml"),
        "I2V_ADAPTERS__INSTANT__CLASS_PATH": "bench.instant_adapter:InstantAdapter",
        "I2V_ADAPTERS__INSTANT__MAX_CONCURRENCY": "1000",
        "I2V_LOG_LEVEL": "WARNING",
    }
    if args.database_url:
        env["I2V_DATABASE_URL"] = args.database_url
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        body = json.dumps({"prompt": "slow push in", "image": image_uri()})
        # seed jobs for the status phase
        ids = [
            httpx.post(f"{url}/v1/videos", content=body, headers={"content-type": "application/json"}).json()["id"]
            for _ in range(200)
        ]
        phases = [
            ("baseline GET /healthz", "", f"{url}/healthz"),
            (
                "POST /v1/videos",
                'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                f"wrk.body = {json.dumps(body)}\n",
                f"{url}/v1/videos",
            ),
            (
                "GET /v1/videos/{id}",
                "ids = {" + ",".join(f'"{i}"' for i in ids) + "}\nn = 0\n"
                "request = function()\n n = n + 1\n return wrk.format(nil, '/v1/videos/' .. ids[n % #ids + 1])\nend\n",
                f"{url}/v1/videos/x",
            ),
        ]
        rows = []
        with httpx.Client(base_url=url, timeout=30) as client:
            for name, script, target in phases:
                drain(client)  # attribute CPU to one phase: no runner backlog from the last one
                cpu0 = cpu_seconds(proc.pid)
                r = wrk(target, args.clients, args.seconds, script)
                cpu = cpu_seconds(proc.pid) - cpu0
                rows.append(
                    (
                        name,
                        int(r["requests"]),
                        int(r["errors"]),
                        r["rps"],
                        r["p50"],
                        r["p99"],
                        cpu / r["requests"] * 1000,
                    )
                )
                if "socket_errors" in r:
                    print(f"{name}: socket errors {r['socket_errors']}", file=sys.stderr)
                if name.startswith("POST"):
                    cpu0 = cpu_seconds(proc.pid)
                    t0 = time.time()
                    drain(client)
                    runner = (cpu_seconds(proc.pid) - cpu0, time.time() - t0)
            metrics = client.get("/metrics").text
        created = metric(metrics, "i2v_jobs_created_total")
        finished = metric(metrics, "i2v_jobs_finished_total", 'status="completed"')
        print(
            f"\n{args.clients} clients, {args.seconds:.0f} s per phase, database: "
            f"{args.database_url or 'SQLite'}, CPUs: {os.cpu_count()}"
        )
        print(f"{'phase':<24}{'ok':>8}{'errors':>8}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'gw CPU ms/req':>15}")
        for r in rows:
            print(f"{r[0]:<24}{r[1]:>8}{r[2]:>8}{r[3]:>8.0f}{r[4]:>9.1f}{r[5]:>9.1f}{r[6]:>15.2f}")
        print(f"after the create phase the runner drained its backlog in {runner[1]:.1f} s using {runner[0]:.1f} CPU s")
        print(f"jobs created {created:.0f}, completed {finished:.0f}; gateway peak RSS {rss_mb(proc.pid):.0f} MB")
    finally:
        proc.terminate()
        proc.wait(20)


if __name__ == "__main__":
    main()
