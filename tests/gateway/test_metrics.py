"""The Grafana dashboard in docs/ only queries metrics the gateway exports (it would go blank,
not fail, if a name drifted)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from gateway.metrics import GatewayMetrics

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "i2v-gateway.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported() -> set[str]:
    names = set()
    for family in GatewayMetrics().registry.collect():
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def test_every_dashboard_query_names_an_exported_metric() -> None:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\bi2v_[a-z0-9_]+", e)}
    assert len(exprs) >= 14 and used
    assert sorted(used - exported()) == []
    # the panels cover what an operator watches: throughput, failures, latency, spend, breakers, quality
    assert {"i2v_jobs_finished_total", "i2v_cost_usd_total", "i2v_breaker_state", "i2v_jobs_queued"} <= used
    assert any(m.startswith("i2v_quality_") for m in used)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
