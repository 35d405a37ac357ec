"""Rule conditions, the rules file's validation (with line numbers), `rules check`, reload."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import app
from gateway.routing.catalog import CatalogError, parse_rules
from gateway.routing.conditions import matches
from gateway.routing.watch import RulesHolder

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = (ROOT / "router_rules.yaml").read_text()

CTX = {
    "traits": {"portrait": True, "volume": "normal", "camera_move": {"type": "pan", "direction": "left"}, "faces": 2},
    "request": {"tier": "bulk", "seconds": 10, "prompt": "slow pan left over the bay", "max_cost_usd": None},
    "metadata": {"team": "growth"},
}


@pytest.mark.parametrize(
    ("cond", "expected"),
    [
        ({}, True),
        ({"traits.portrait": True}, True),
        ({"traits.portrait": False}, False),
        ({"request.tier": {"eq": "bulk"}}, True),
        ({"request.tier": {"ne": "bulk"}}, False),
        ({"request.tier": {"in": ["bulk", "standard"]}}, True),
        ({"request.tier": {"nin": ["bulk"]}}, False),
        ({"request.seconds": {"gt": 5}}, True),
        ({"request.seconds": {"gte": 10, "lt": 11}}, True),
        ({"request.seconds": {"lte": 5}}, False),
        ({"request.max_cost_usd": {"lt": 1}}, False),  # missing numbers never compare true
        ({"request.prompt": {"regex": r"\bpan\b"}}, True),
        ({"traits.camera_move.type": "pan"}, True),
        ({"traits.camera_move.direction": {"in": ["up", "down"]}}, False),
        ({"metadata.team": "growth", "traits.faces": {"gte": 2}}, True),
        ({"metadata.missing": {"eq": None}}, True),
        ({"any": [{"traits.volume": "high"}, {"request.tier": "bulk"}]}, True),
        ({"all": [{"traits.volume": "high"}, {"request.tier": "bulk"}]}, False),
        ({"not": {"traits.portrait": True}}, False),
        ({"not": {"any": [{"traits.volume": "high"}, {"metadata.team": "ads"}]}}, True),
    ],
)
def test_condition_operators(cond: dict, expected: bool) -> None:
    assert matches(cond, CTX) is expected


def test_evaluation_short_circuits_so_lazy_traits_are_not_computed() -> None:
    class Lazy(dict):
        def get(self, key, default=None):
            if key == "portrait":
                raise AssertionError("portrait was computed")
            return super().get(key, default)

    ctx = {**CTX, "traits": Lazy(volume="normal")}
    assert matches({"traits.volume": "high", "traits.portrait": True}, ctx) is False


def _error(text: str) -> str:
    with pytest.raises(CatalogError) as info:
        parse_rules(text, "rules.yaml")
    return str(info.value)


def test_errors_name_file_line_and_field() -> None:
    bad_op = SHIPPED.replace("traits.portrait: true", "traits.portrait: {equals: true}")
    line = bad_op.splitlines().index("      traits.portrait: {equals: true}") + 1
    col = "      traits.portrait: {equals: true}".index("equals") + 1
    assert _error(bad_op).startswith(f"rules.yaml:{line}:{col}: rules.2.when.traits.portrait.equals: unknown operator")

    bad_field = SHIPPED.replace("traits.volume: high", "trait.volume: high")
    line = bad_field.splitlines().index("      trait.volume: high") + 1
    assert f"rules.yaml:{line}:7: rules.1.when.trait.volume: unknown field" in _error(bad_field)

    bad_type = SHIPPED.replace("durations: [5, 10, 15]", "durations: [5, ten]", 1)
    line = bad_type.splitlines().index("    durations: [5, ten]") + 1
    col = "    durations: [5, ten]".index("ten") + 1
    assert _error(bad_type).startswith(f"rules.yaml:{line}:{col}: models.wan-2.6-i2v.durations.1:")

    assert "routes to unknown model 'wan-9'" in _error(
        SHIPPED.replace("[wan-2.6-i2v, hailuo-2.3-fast", "[wan-9, hailuo-2.3-fast")
    )
    # a near miss gets a suggestion, for models and for fields alike
    assert "unknown model 'wan-2.6-i2b' (did you mean 'wan-2.6-i2v'?)" in _error(
        SHIPPED.replace("[wan-2.6-i2v, hailuo-2.3-fast", "[wan-2.6-i2b, hailuo-2.3-fast")
    )
    misspelt = SHIPPED.replace("    durations: [5, 10, 15]", "    duratons: [5, 10, 15]", 1)
    assert "duratons: unknown field (did you mean 'durations'?)" in _error(misspelt)
    assert _error("models: {a: [1, 2}").startswith("rules.yaml:1:18: not valid YAML")  # line and column
    assert "not both or neither" in _error(
        SHIPPED.replace("    route: [video-01-live", "    split: []\n    route: [video-01-live")
    )
    bad_regex = SHIPPED.replace("traits.volume: high", "request.prompt: {regex: '(unclosed'}")
    assert "invalid regex" in _error(bad_regex)


def test_split_arms_validate() -> None:
    text = SHIPPED.replace(
        "    route: [wan-2.6-i2v, hailuo-2.3-fast, kling-v2.1]",
        "    split:\n"
        "      - {name: a, weight: 50, route: [wan-2.6-i2v]}\n"
        "      - {name: b, weight: 50, route: [hailuo-2.3]}",
    )
    rules = parse_rules(text, "x")
    assert [arm.name for arm in rules.rules[-1].split or []] == ["a", "b"]


def test_rules_check_command(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["rules", "check", str(ROOT / "router_rules.yaml")])
    assert ok.exit_code == 0 and "OK" in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(SHIPPED.replace("traits.portrait: true", "traits.portrait: {eqq: true}"))
    result = runner.invoke(app, ["rules", "check", str(bad)])
    assert result.exit_code == 1
    assert "unknown operator 'eqq'" in result.output and "bad.yaml:" in result.output


def test_reload_keeps_the_old_rules_when_the_new_file_is_bad(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(SHIPPED)
    holder = RulesHolder(path)
    first = holder.get()
    path.write_text(SHIPPED.replace("name: portrait", "name: faces"))
    assert holder.changed() and holder.reload()
    assert [r.name for r in holder.get().rules][2] == "faces"
    path.write_text(SHIPPED.replace("traits.portrait: true", "traits.portrait: {eqq: true}"))
    assert holder.reload() is False
    assert [r.name for r in holder.get().rules][2] == "faces"
    assert "eqq" in (holder.last_error or "")
    assert holder.get() is not first


def test_the_watcher_waits_for_a_file_to_settle_and_survives_an_unreadable_one(tmp_path: Path) -> None:
    import os

    path = tmp_path / "rules.yaml"
    path.write_text(SHIPPED)
    holder = RulesHolder(path)
    outcomes: list[bool] = []
    holder.on_result = outcomes.append
    # a copy in progress: a shorter file that still parses (the rules list cut off) is not taken at once
    truncated = SHIPPED[: SHIPPED.index("  - name: portrait")]
    path.write_text(truncated)
    holder.tick()
    assert outcomes == [] and len(holder.get().rules) == 4  # moved: wait a beat
    path.write_text(SHIPPED + "\n")  # the writer finished
    holder.tick()
    holder.tick()
    assert outcomes == [True] and len(holder.get().rules) == 4
    # unreadable: refused, kept, reported; the watcher lives on
    os.utime(path, ns=(1, 1))
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):  # root reads anything: make it a directory instead
            path.chmod(0o644)
            path.unlink()
            path.mkdir()
        holder.tick()
        holder.tick()
    finally:
        if path.is_dir():
            path.rmdir()
        else:
            path.chmod(0o644)
    assert outcomes == [True, False] and "cannot read" in (holder.last_error or "")
    assert len(holder.get().rules) == 4


def test_healthz_and_metrics_report_a_refused_rules_file(gateway_factory, tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text((ROOT / "tests" / "support" / "rules.yaml").read_text())
    gw = gateway_factory(rules_file=path, rules_reload_s=0.05)
    assert gw.client.get("/healthz").json() == {"status": "ok"}
    path.write_text("models: {oops")
    import time

    deadline = time.time() + 10
    while gw.client.get("/healthz").json()["status"] == "ok" and time.time() < deadline:
        time.sleep(0.05)
    health = gw.client.get("/healthz").json()
    assert health["status"] == "degraded" and "not valid YAML" in health["rules_error"]
    assert "i2v_rules_ok 0.0" in gw.client.get("/metrics").text
    assert gw.client.get("/v1/models").status_code == 200  # still serving on the last good rules


def test_rules_check_shows_every_error_at_its_own_line() -> None:
    text = (
        "models:\n"  # 1
        "  a:\n"  # 2
        "    adapter: toy\n"  # 3
        "    provider_model: x\n"  # 4
        "    fallbacks: [nope]\n"  # 5
        "rules:\n"  # 6
        "  - name: one\n"  # 7
        "    when: {}\n"  # 8
        "    route: [a, missing]\n"  # 9
        "  - name: two\n"  # 10
        "    when: {traits.portrait: {eqq: 1}}\n"  # 11
        "    route: [a]\n"
    )
    with pytest.raises(CatalogError) as err:
        parse_rules(text, "r.yaml")
    lines = str(err.value).splitlines()
    assert [line.split(":")[1] for line in lines] == ["5", "9", "11"]
    assert "unknown model 'nope'" in lines[0] and "unknown model 'missing'" in lines[1] and "eqq" in lines[2]
