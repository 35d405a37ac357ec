"""Experiments: validated in the rules file, sticky by hash, held out and shadowed, measured."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from gateway.routing.catalog import CatalogError, parse_rules
from gateway.routing.experiments import assign, sticky_id
from tests.conftest import RULES, Gateway
from tests.support.images import data_uri, image_bytes

BASE = RULES.read_text()
EXPERIMENT = """
experiments:
  - name: fast-vs-backup
    rule: default
    control: fast
    arms:
      - {name: fast, route: [toy-fast], weight: 3}
      - {name: backup, route: [toy-backup], weight: 1}
    holdout: 0.1
    shadow: {model: toy-unpriced, share: 0.5, max_jobs_per_day: 2, max_usd_per_day: 5}
"""
TYPO = EXPERIMENT.replace("    holdout: 0.1", "    holdout: 0.1\n    holdot: 0.2")


def rules_with(extra: str = EXPERIMENT) -> Any:
    return parse_rules(BASE + extra, "rules.yaml")


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        (TYPO, f"rules.yaml:{(BASE + TYPO).splitlines().index('    holdot: 0.2') + 1}:5: experiments.0.holdot"),
        (EXPERIMENT.replace("rule: default", "rule: nope"), "splits unknown rule 'nope'"),
        (EXPERIMENT.replace("control: fast", "control: slow"), "control 'slow' is not one of the arms"),
        (EXPERIMENT.replace("[toy-backup]", "[toy-nope]"), "routes to unknown model 'toy-nope'"),
        (EXPERIMENT.replace("holdout: 0.1", "holdout: 1.5"), "experiments.0.holdout"),
        (EXPERIMENT.replace("name: backup", "name: holdout"), "reserved arm names"),
        (EXPERIMENT + EXPERIMENT.replace("experiments:\n", "").replace("fast-vs-backup", "again"), "both split rule"),
    ],
)
def test_experiment_mistakes_are_errors_with_their_line(yaml_text: str, message: str) -> None:
    with pytest.raises(CatalogError) as err:
        rules_with(yaml_text)
    assert message in str(err.value)


def test_assignment_follows_the_weights_within_two_percent_over_10000_keys() -> None:
    exp = rules_with().experiments[0]
    arms = Counter()
    shadows = 0
    for i in range(10_000):
        a = assign(exp, f"user:{i}")
        arms[a.arm] += 1
        shadows += a.shadow is not None
    assert abs(arms["holdout"] / 10_000 - 0.10) < 0.02
    assert abs(arms["fast"] / 10_000 - 0.675) < 0.02
    assert abs(arms["backup"] / 10_000 - 0.225) < 0.02
    assert abs(shadows / 10_000 - 0.5) < 0.02


def test_assignment_is_the_same_in_a_fresh_process_with_another_hash_seed() -> None:
    exp = rules_with().experiments[0]
    here = [assign(exp, f"user:{i}").arm for i in range(50)]
    code = (
        "from pathlib import Path; from gateway.routing.catalog import parse_rules;"
        "from gateway.routing.experiments import assign;"
        f"exp = parse_rules({(BASE + EXPERIMENT)!r}, 'r').experiments[0];"
        "print(','.join(assign(exp, f'user:{i}').arm for i in range(50)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "123"}
    )
    assert out.stdout.strip().split(",") == here


def test_sticky_ids() -> None:
    exp = rules_with().experiments[0]
    assert sticky_id(exp, user="ann", owner="k", metadata=None) == "user:ann"
    assert sticky_id(exp, user=None, owner="k", metadata=None) == "key:k"
    by_team = exp.model_copy(update={"sticky": "metadata.team"})
    assert sticky_id(by_team, user="ann", owner="k", metadata={"team": "red"}) == "meta:red"
    assert sticky_id(by_team, user="ann", owner="k", metadata={}) == "user:ann"


@pytest.fixture
def lab(gateway_factory: Any, tmp_path: Path) -> Gateway:
    rules = tmp_path / "rules.yaml"
    rules.write_text(BASE + EXPERIMENT)
    return gateway_factory(rules_file=rules, quality_metrics=True)


def _create(gw: Gateway, user: str) -> dict[str, Any]:
    body = {"prompt": "leaves drift", "image": data_uri(image_bytes()), "user": user, "seconds": 2}
    resp = gw.client.post("/v1/videos", json=body)
    assert resp.status_code == 202, resp.text
    return resp.json()


def test_jobs_carry_their_arm_and_shadows_stay_hidden_and_capped(lab: Gateway) -> None:
    exp = rules_with().experiments[0]
    users = [f"u{i}" for i in range(12)]
    videos = [_create(lab, u) for u in users]
    for user, video in zip(users, videos, strict=True):
        assert video["route"]["rule"] == "default"
        assert video["route"]["arm"] == assign(exp, f"user:{user}").arm
    again = _create(lab, users[0])
    assert again["route"]["arm"] == videos[0]["route"]["arm"]  # sticky
    for v in [*videos, again]:
        assert lab.wait(v["id"])["status"] == "completed"
    listed = lab.client.get("/v1/videos?limit=100").json()["data"]
    assert {v["id"] for v in listed} == {v["id"] for v in [*videos, again]}  # no shadow job shows
    report = lab.client.get("/v1/experiments/fast-vs-backup").json()
    shadow = report["arms"]["shadow"]
    in_share = sum(assign(exp, f"user:{u}").shadow is not None for u in [*users, users[0]])
    assert in_share > 2 and shadow["jobs"] == 2  # max_jobs_per_day
    assert 'i2v_shadow_jobs_total{experiment="fast-vs-backup",outcome="capped"}' in lab.client.get("/metrics").text


def test_the_report_measures_each_arm_against_the_control(lab: Gateway) -> None:
    videos = [_create(lab, f"r{i}") for i in range(16)]
    for v in videos:
        assert lab.wait(v["id"])["status"] == "completed"
    report = lab.client.get("/v1/experiments/fast-vs-backup?mde=0.1").json()
    arms = report["arms"]
    counts = Counter(v["route"]["arm"] for v in videos)
    for name in ("fast", "backup", "holdout"):
        assert arms[name]["jobs"] == counts[name]
    fast = arms["fast"]
    assert fast["model"] == "toy-fast"
    assert fast["success_rate"]["value"] == 1.0 and fast["success_rate"]["ci_low"] < 1.0
    assert fast["latency_s"]["p50"] > 0 and fast["cost_per_clip_usd"] > 0
    assert fast["quality"]["measured"] == counts["fast"]
    assert "vs_control" not in fast
    if counts["backup"] >= 2:
        vs = arms["backup"]["vs_control"]
        assert vs["success_rate_diff"]["value"] == 0.0
        assert vs["cost_mean_diff_usd"]["value"] > 0  # toy-backup costs more per second
        assert vs["jobs_per_arm_for_mde"] > 0
    listed = lab.client.get("/v1/experiments").json()["data"]
    assert listed[0]["name"] == "fast-vs-backup" and sum(listed[0]["jobs"].values()) >= len(videos)
    assert lab.client.get("/v1/experiments/nope").status_code == 404


def test_rules_check_refuses_an_unknown_experiment_key(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gateway.cli import app

    bad = tmp_path / "rules.yaml"
    bad.write_text(BASE + TYPO)
    result = CliRunner().invoke(app, ["rules", "check", str(bad)])
    assert result.exit_code != 0
    assert "experiments.0.holdot: unknown field (did you mean 'holdout'?)" in result.output


def test_the_shipped_example_experiment_is_valid_when_uncommented() -> None:
    text = (Path(__file__).resolve().parents[3] / "router_rules.yaml").read_text()
    start = text.index("# experiments:\n")
    example = "\n".join(line[2:] for line in text[start:].splitlines())
    exp = parse_rules(text[:start] + example, "router_rules.yaml").experiments[0]
    assert exp.rule == "portrait" and exp.shadow is not None and exp.holdout == 0.1
