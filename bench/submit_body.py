"""CPU to encode one submit's JSON body: msgspec (the code, `adapters/http.py`) against the
`json.dumps` httpx runs for `json=` (its settings: no ASCII escaping, compact separators).

    python bench/submit_body.py [--runs 300]

The body is a Wan (DashScope) submit carrying the peer benchmark's photo (640x480 noise JPEG)
as a data URI, as `WanAdapter.submit` sends it. Checks both decode to the same object; prints
µs per encode, median of three rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peer_litellm import photo_jpeg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from media.image import data_uri


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=300)
    args = ap.parse_args()
    body = {
        "model": "wan2.6-i2v",
        "input": {"prompt": "slow push in, leaves drift", "img_url": data_uri(photo_jpeg(), "image/jpeg")},
        "parameters": {"resolution": "720P", "duration": 5, "prompt_extend": False},
    }
    ways = {
        "msgspec.json.encode (the code)": lambda: msgspec.json.encode(body),
        "json.dumps as httpx's json= runs it": lambda: json.dumps(
            body, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode(),
    }
    assert len({json.dumps(json.loads(fn()), sort_keys=True) for fn in ways.values()}) == 1
    print(f"body: {len(msgspec.json.encode(body)):,} bytes")
    for name, fn in ways.items():
        rounds = []
        for _ in range(3):
            t0 = time.process_time()
            for _ in range(args.runs):
                fn()
            rounds.append((time.process_time() - t0) / args.runs * 1e6)
        print(f"{name}: {statistics.median(rounds):.0f} µs CPU per body")


if __name__ == "__main__":
    main()
