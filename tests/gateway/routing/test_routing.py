"""Trait-aware routing end to end, against the provider emulators over real HTTP: the shipped
rules, the explain endpoint, fallback after a late failure, circuit breakers, looping, reload."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from adapters.emulators.common import EmulatorConfig
from gateway.sandbox import Sandbox
from tests.conftest import Gateway
from tests.support.images import data_uri, image_bytes
from tests.support.photos import jpeg, labelled_photos

ROOT = Path(__file__).resolve().parents[3]
PHOTOS = labelled_photos()
PORTRAIT = data_uri(jpeg(__import__("skimage.data").data.astronaut(), size=1024))
LANDSCAPE = data_uri(PHOTOS["china"][0])


@pytest.fixture(scope="module")
def emulators() -> Iterator[Sandbox]:
    sandbox = Sandbox(EmulatorConfig(queue_s=0.1, run_s=0.3))
    sandbox.start()
    yield sandbox
    sandbox.stop()


def faults(sandbox: Sandbox, family: str, plan: dict[str, Any]) -> None:
    httpx.post(f"{sandbox.servers[family].url}/_emulator/faults", json=plan).raise_for_status()


@pytest.fixture
def routed(gateway_factory: Any, emulators: Sandbox) -> Iterator[Gateway]:
    for family in emulators.servers:
        faults(emulators, family, {})
    yield gateway_factory(rules_file=ROOT / "router_rules.yaml", adapters=emulators.adapters)
    for family in emulators.servers:
        faults(emulators, family, {})


def explain(gw: Gateway, **body: Any) -> dict[str, Any]:
    resp = gw.client.post("/v1/route/explain", json={"image": LANDSCAPE, **body})
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_shipped_rules_route_by_traits(routed: Gateway) -> None:
    portrait = explain(routed, prompt="she smiles softly and blinks", image=PORTRAIT)
    assert portrait["rule"] == "portrait" and portrait["traits"]["portrait"] is True
    assert [c["model"] for c in portrait["candidates"]][:1] == ["video-01-live"]

    camera = explain(routed, prompt="slow push in on the temple roof", image=PORTRAIT)
    assert camera["rule"] == "camera-work"
    assert camera["traits"]["camera_move"]["type"] == "push_in"
    assert "portrait" not in camera["traits"]  # the detector never ran: no rule asked
    assert camera["candidates"][0]["model"] == "kling-v1.5-camera"

    bulk = explain(routed, prompt="leaves sway in the breeze", tier="bulk")
    assert (bulk["rule"], bulk["traits"]["volume"]) == ("bulk", "high")
    assert [c["model"] for c in bulk["candidates"] if c["kept"]] == ["hailuo-2.3-fast", "wan-2.6-i2v-flash"]
    local = next(c for c in bulk["candidates"] if c["model"] == "local-wan")  # first in the rule, not configured
    assert local["kept"] is False and "not configured" in local["reason"]
    assert bulk["max_attempts"] == 2
    assert explain(routed, prompt="leaves sway", batch_id="b-1")["rule"] == "bulk"

    ambient = explain(routed, prompt="mist drifts over the lake while leaves sway")
    assert ambient["rule"] == "default" and ambient["traits"]["portrait"] is False
    assert [r["rule"] for r in ambient["rules_tried"]] == ["camera-work", "bulk", "portrait", "default"]
    assert ambient["candidates"][0] == {
        "model": "wan-2.6-i2v",
        "adapter": "wan",
        "kept": True,
        "reason": "can serve this request",
        "resolution": "720p",
        "seconds": 5,
        "estimated_cost_usd": 0.5,
        "typical_latency_s": 120.0,
        "circuit": "closed",
    }
    assert routed.client.get("/v1/videos").json()["data"] == []  # explain creates nothing


def test_explain_says_why_each_candidate_was_dropped(routed: Gateway) -> None:
    out = explain(routed, prompt="mist drifts", seconds=10, resolution="1080p", max_cost_usd=1.0)
    by_model = {c["model"]: c for c in out["candidates"]}
    assert by_model["wan-2.6-i2v"]["kept"] is False and "over max_cost_usd" in by_model["wan-2.6-i2v"]["reason"]
    assert by_model["hailuo-2.3-fast"]["kept"] is True
    nothing = explain(routed, prompt="mist drifts", seconds=7, strict_duration=True)
    assert not any(c["kept"] for c in nothing["candidates"])
    resp = routed.client.post(
        "/v1/videos", json={"image": LANDSCAPE, "prompt": "mist drifts", "seconds": 7, "strict_duration": True}
    )
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "no_model_fits"
    assert "7 s not offered" in resp.json()["error"]["message"]


def test_prompt_advice_lands_on_the_job(routed: Gateway) -> None:
    small = data_uri(image_bytes(640, 480))
    resp = routed.client.post(
        "/v1/videos", json={"image": small, "prompt": "a beautiful garden at golden hour, 4k, cinematic"}
    )
    warnings = resp.json()["warnings"]
    assert any(w.startswith("prompt: it describes the scene") for w in warnings)
    assert any(w.startswith("image: 640 px wide") for w in warnings)
    busy = explain(routed, prompt="camera pans left, then zooms in while she turns, waves, laughs and runs")
    assert any("competing motions" in w for w in busy["warnings"])
    drama = explain(routed, prompt="she bursts into tears and screams", image=PORTRAIT)
    assert any("dramatic expression" in w for w in drama["warnings"])
    calm = explain(routed, prompt="she bursts into tears and screams")  # no face: no portrait advice
    assert not any("dramatic expression" in w for w in calm["warnings"])


def test_late_failure_falls_back_to_the_next_candidate(routed: Gateway, emulators: Sandbox) -> None:
    faults(emulators, "wan", {"script": {"submit": ["task_fail"]}})
    resp = routed.client.post("/v1/videos", json={"image": LANDSCAPE, "prompt": "mist drifts over the lake"})
    assert resp.status_code == 202
    video = routed.wait(resp.json()["id"], timeout=30)
    assert video["status"] == "completed", video
    attempts = video["route"]["attempts"]
    assert [(a["model"], a["status"]) for a in attempts] == [
        ("wan-2.6-i2v", "failed"),
        ("hailuo-2.3-fast", "completed"),
    ]
    assert attempts[0]["provider_task_id"]  # the provider had accepted it before failing
    assert video["route"]["rule"] == "default"


def test_breaker_opens_on_failures_and_routing_skips_the_adapter(gateway_factory: Any, emulators: Sandbox) -> None:
    gw = gateway_factory(
        rules_file=ROOT / "router_rules.yaml",
        adapters=emulators.adapters,
        breaker={"failures": 2, "cooldown_s": 60},
    )
    faults(emulators, "wan", {"rates": {"task_fail": 1.0}})
    try:
        for _ in range(2):
            vid = gw.client.post("/v1/videos", json={"image": LANDSCAPE, "prompt": "mist drifts"}).json()["id"]
            assert gw.wait(vid, timeout=30)["status"] == "completed"  # hailuo took over
        out = explain(gw, prompt="mist drifts")
        wan = next(c for c in out["candidates"] if c["model"] == "wan-2.6-i2v")
        assert wan["kept"] is False and wan["circuit"] == "open" and "circuit open" in wan["reason"]
        vid = gw.client.post("/v1/videos", json={"image": LANDSCAPE, "prompt": "mist drifts"}).json()["id"]
        video = gw.wait(vid, timeout=30)
        assert [a["model"] for a in video["route"]["attempts"]] == ["hailuo-2.3-fast"]  # wan never tried
    finally:
        faults(emulators, "wan", {})


def test_loop_is_made_by_the_gateway_when_the_model_cannot(routed: Gateway) -> None:
    resp = routed.client.post("/v1/videos", json={"image": LANDSCAPE, "prompt": "mist drifts", "loop": True})
    assert any(w.startswith("loop:") for w in resp.json()["warnings"])
    video = routed.wait(resp.json()["id"], timeout=30)
    assert video["status"] == "completed", video
    assert video["output"]["post_processing"] == ["loop_crossfade"]
    data = routed.client.get(video["output"]["url"]).content
    with av.open(io.BytesIO(data)) as c:
        frames = [f.to_ndarray(format="rgb24").astype(int) for f in c.decode(video=0)]
    assert len(frames) == video["output"]["frames"]
    seam = abs(frames[-1] - frames[0]).mean()  # last frame flows into the first
    step = abs(frames[1] - frames[0]).mean()
    assert seam < 3 * step + 2


def test_rules_file_changes_apply_without_restart(gateway_factory: Any, emulators: Sandbox, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    text = (ROOT / "router_rules.yaml").read_text()
    rules.write_text(text)
    gw = gateway_factory(rules_file=rules, adapters=emulators.adapters, rules_reload_s=0.1)
    assert explain(gw, prompt="mist drifts")["rule"] == "default"
    rules.write_text(text.replace("name: default", "name: ambient"))
    deadline = time.time() + 5
    while explain(gw, prompt="mist drifts")["rule"] != "ambient":
        assert time.time() < deadline, "the new rules never went live"
        time.sleep(0.1)
    rules.write_text(text.replace("traits.volume: high", "traits.volume: {eqq: high}"))  # broken: ignored
    time.sleep(0.5)
    assert explain(gw, prompt="mist drifts")["rule"] == "ambient"
    assert gw.client.get("/healthz").status_code == 200


def _custom_rules(tmp_path: Path, extra: str) -> Path:
    text = (ROOT / "router_rules.yaml").read_text().replace("rules:\n", "rules:\n" + extra, 1)
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return path


def test_fallback_on_and_max_attempts_come_from_the_rule(
    gateway_factory: Any, emulators: Sandbox, tmp_path: Path
) -> None:
    rules = _custom_rules(
        tmp_path,
        "  - name: moderated-retry\n"
        "    when: {metadata.case: retry}\n"
        "    route: [wan-2.6-i2v, hailuo-2.3-fast]\n"
        "    fallback_on: [content_policy]\n"
        "  - name: one-shot\n"
        "    when: {metadata.case: once}\n"
        "    route: [wan-2.6-i2v, hailuo-2.3-fast]\n"
        "    max_attempts: 1\n",
    )
    gw = gateway_factory(rules_file=rules, adapters=emulators.adapters)
    body = {"image": LANDSCAPE, "prompt": "mist drifts"}
    try:
        faults(emulators, "wan", {"script": {"submit": ["moderation_late"]}})
        vid = gw.client.post("/v1/videos", json={**body, "metadata": {"case": "retry"}}).json()["id"]
        video = gw.wait(vid, timeout=30)
        assert video["status"] == "completed"
        assert [a["error"]["code"] if a["error"] else None for a in video["route"]["attempts"]] == [
            "content_policy",
            None,
        ]
        faults(emulators, "wan", {"script": {"submit": ["task_fail"]}})
        vid = gw.client.post("/v1/videos", json={**body, "metadata": {"case": "once"}}).json()["id"]
        video = gw.wait(vid, timeout=30)
        assert video["status"] == "failed" and len(video["route"]["attempts"]) == 1
        faults(emulators, "wan", {"script": {"submit": ["moderation_late"]}})
        vid = gw.client.post("/v1/videos", json=body).json()["id"]  # default rule: no fallback on moderation
        video = gw.wait(vid, timeout=30)
        assert video["status"] == "failed" and video["error"]["code"] == "content_policy"
        assert len(video["route"]["attempts"]) == 1
    finally:
        faults(emulators, "wan", {})


def test_split_assigns_sticky_arms_by_weight(gateway_factory: Any, emulators: Sandbox, tmp_path: Path) -> None:
    rules = _custom_rules(
        tmp_path,
        "  - name: ab\n"
        "    when: {metadata.experiment: wan-vs-hailuo}\n"
        "    split:\n"
        "      - {name: wan, weight: 3, route: [wan-2.6-i2v]}\n"
        "      - {name: hailuo, weight: 1, route: [hailuo-2.3]}\n",
    )
    gw = gateway_factory(rules_file=rules, adapters=emulators.adapters)
    meta = {"experiment": "wan-vs-hailuo"}
    arms = [explain(gw, prompt="mist drifts", user=f"user-{i}", metadata=meta)["arm"] for i in range(200)]
    assert set(arms) == {"wan", "hailuo"}
    assert 0.65 < arms.count("wan") / len(arms) < 0.85  # weight 3:1
    again = [explain(gw, prompt="mist drifts", user=f"user-{i}", metadata=meta)["arm"] for i in range(20)]
    assert again == arms[:20]  # sticky per user
    resp = gw.client.post(
        "/v1/videos", json={"image": LANDSCAPE, "prompt": "mist drifts", "user": "user-0", "metadata": meta}
    )
    video = gw.wait(resp.json()["id"], timeout=30)
    assert video["route"]["arm"] == arms[0] and video["route"]["rule"] == "ab"
    assert video["route"]["attempts"][0]["model"] == ("wan-2.6-i2v" if arms[0] == "wan" else "hailuo-2.3")
