"""The comparison page and the leaderboard in real headless Chromium: blind, in sync, votes count."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from skimage import data

from gateway.schemas import CreateComparisonRequest, CreateVideoRequest
from tests.gateway.api.test_comparisons import compare, wait
from tests.support.browser import browser  # noqa: F401  (fixture)
from tests.support.photos import jpeg

ROOT = Path(__file__).resolve().parents[3]
ARMS = ["wan-2.6-i2v-flash", "hailuo-2.3-fast"]


@pytest.mark.slow
def test_blind_page_plays_in_sync_records_a_vote_and_moves_the_leaderboard(gateway_factory: Any, browser: Any) -> None:  # noqa: F811
    gw = gateway_factory(sandbox=True, sandbox_task_s=0.5, rules_file=ROOT / "router_rules.yaml", adapters={})
    cid = compare(gw, ARMS, image=None, input_reference={"image_url": _data_uri()}).json()["id"]
    assert wait(gw, cid)["status"] == "completed"
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{gw.url}/ui/compare/{cid}")
    page.wait_for_function(
        "document.querySelectorAll('video').length === 2 && "
        "[...document.querySelectorAll('video')].every(v => v.readyState >= 2)",
        timeout=30000,
    )
    text = page.inner_text("body")
    assert not any(model in text for model in ARMS), "model names must stay hidden until the vote"

    page.click("#play")
    page.wait_for_function("[...document.querySelectorAll('video')].every(v => !v.paused && v.currentTime > 0.3)")
    times = page.evaluate("[...document.querySelectorAll('video')].map(v => v.currentTime)")
    assert max(times) - min(times) < 0.2, times
    page.click("#play")  # one pause stops both
    page.wait_for_function("[...document.querySelectorAll('video')].every(v => v.paused)")
    page.eval_on_selector("#seek", "s => { s.value = 700; s.dispatchEvent(new Event('input')); }")
    page.wait_for_function("[...document.querySelectorAll('video')].every(v => !v.seeking)")
    # one clock for all: the bar is the first clip's length, the others seek to the same second
    times = page.evaluate("[...document.querySelectorAll('video')].map(v => v.currentTime)")
    target = 0.7 * page.evaluate("document.querySelector('video').duration")
    assert all(abs(t - target) < 0.1 for t in times), (times, target)

    label = page.get_attribute("figure.arm >> nth=0", "data-label")  # whatever the shuffle put first
    page.click("#best button >> nth=0")
    page.wait_for_selector("#result:not([hidden])")
    assert "Vote recorded" in page.inner_text("#result")
    winner = ARMS["AB".index(label)]
    assert winner in page.inner_text("figure.arm >> nth=0")  # revealed after the vote
    assert page.is_visible(".reveal >> nth=0")
    summary = gw.client.get(f"/v1/comparisons/{cid}").json()["summary"]["votes"]
    assert summary["total"] == 1 and summary["best"][label] == 1

    page.goto(f"{gw.url}/ui/leaderboard")
    page.wait_for_selector("#board:not([hidden])")
    rows = page.eval_on_selector_all("#board tbody tr", "rs => rs.map(r => r.children[1].textContent)")
    assert rows == [winner, ARMS[1 - "AB".index(label)]]
    assert errors == []
    page.close()


def test_pages_are_served_without_any_outside_address(gateway_factory: Any) -> None:
    gw = gateway_factory()
    for path in ("/ui/leaderboard", "/ui/compare/cmp_x", "/ui/assets/compare.js", "/ui/assets/api.js"):
        resp = gw.client.get(path)
        assert resp.status_code == 200, path
        assert "http://" not in resp.text and "https://" not in resp.text and "//cdn" not in resp.text
    assert gw.client.get("/ui/assets/../settings.py").status_code == 404


def _data_uri() -> str:
    from tests.support.images import data_uri

    return data_uri(jpeg(data.chelsea()))


@pytest.mark.slow
def test_the_docs_page_renders_offline_with_the_create_body(gateway_factory: Any, browser: Any) -> None:  # noqa: F811
    gw = gateway_factory()
    page = browser.new_page()
    outside: list[str] = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(gw.url) else None)
    page.goto(f"{gw.url}/docs/swagger")
    page.wait_for_function(
        "document.body.innerText.includes('Create a video from an image and a motion prompt')", timeout=30000
    )
    assert outside == []  # every asset came from the gateway itself
    doc = gw.client.get("/docs/openapi.json").json()
    body = doc["paths"]["/v1/videos"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    assert "CreateVideoRequest" in doc["components"]["schemas"]
    # every create-shaped POST has both bodies and a JSON example that validates as a request
    for path in ("/v1/videos", "/v1/route/explain", "/v1/comparisons"):
        content = doc["paths"][path]["post"]["requestBody"]["content"]
        example = content["application/json"]["example"]
        schema = CreateComparisonRequest if path == "/v1/comparisons" else CreateVideoRequest
        assert schema.model_validate(example).prompt and "multipart/form-data" in content
    page.close()
