"""SQL statements per job: the database work behind one job, counted exactly (CPU timings on a
shared 2-core machine move ±15% from run to run; statement counts do not).

    python bench/statements.py --jobs 20

One gateway in this process on SQLite with the toy provider (tests/support: tasks take 2 s and
report progress), `--jobs` clients at once, each creating a job and polling its status every
0.5 s until it ends, as the peer benchmark's clients do. Prints statements per job, by statement.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event
from sqlalchemy.engine import Engine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gateway.api.app import create_app
from tests.conftest import create_toy_provider, make_settings
from tests.support.images import data_uri, image_bytes
from tests.support.servers import serve_in_thread

COUNTS: collections.Counter[str] = collections.Counter()


@event.listens_for(Engine, "before_cursor_execute")
def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
    """Every engine's statements: the async engine's and the store's inline reads on SQLite."""
    COUNTS[" ".join(statement.split())[:90]] += 1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--quality", action="store_true", help="measure each clip (metrics.quality: one write more)")
    args = ap.parse_args()
    with serve_in_thread(create_toy_provider()) as toy:
        settings = make_settings(
            Path(tempfile.mkdtemp()),
            toy,
            poll_interval_s=0.5,
            poll_interval_max_s=1.0,
            runner_scan_interval_s=0.5,
            quality_metrics=args.quality,
        )
        with serve_in_thread(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30) as c:
            image = data_uri(image_bytes())
            c.get("/healthz")
            time.sleep(1)
            COUNTS.clear()

            reads = [0]

            def one(_: int) -> str:
                video = c.post("/v1/videos", json={"prompt": "[run=2] gentle pan right", "image": image}).json()
                while video["status"] not in ("completed", "failed", "cancelled"):
                    time.sleep(0.5)
                    video = c.get(f"/v1/videos/{video['id']}").json()
                    reads[0] += 1  # one statement each (job and attempts in one join)
                return str(video["status"])

            with ThreadPoolExecutor(args.jobs) as pool:
                outcomes = collections.Counter(pool.map(one, range(args.jobs)))
            time.sleep(0.5)
    print(f"jobs: {dict(outcomes)}\n\n| per job | statement |\n|---|---|")
    for statement, n in COUNTS.most_common():
        print(f"| {n / args.jobs:.2f} | `{statement}` |")
    total = sum(COUNTS.values())
    print(f"| **{total / args.jobs:.1f}** | all |")
    own = (total - reads[0]) / args.jobs
    client = reads[0] / args.jobs
    print(f"| **{own:.1f}** | the gateway's own (all, less the {client:.1f} status reads the clients made) |")


if __name__ == "__main__":
    main()
