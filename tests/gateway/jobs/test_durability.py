"""Exactly-once under faults: each test injects one fault and counts at the provider (emulator or
toy) that no task is made twice, none is lost, and every task that ran is in its job's cost."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar, Request, post
from sqlalchemy import event, select

from adapters.emulators.common import EmulatorConfig
from gateway.api.app import create_app
from gateway.jobs.ids import new_id
from gateway.jobs.store import JobStore
from gateway.jobs.tables import AttemptRow, make_engine
from gateway.sandbox import Sandbox
from gateway.settings import AdapterSettings
from tests.conftest import Gateway, make_settings, toy_stats
from tests.support.images import data_uri, image_bytes
from tests.support.postgres import temporary_database
from tests.support.servers import free_port, serve_in_thread
from tests.support.toy_provider import create_toy_provider

ROOT = Path(__file__).resolve().parents[3]
IMAGE = data_uri(image_bytes(800, 600))


def wait_for(pred: Any, timeout: float = 30.0, every: float = 0.05) -> Any:
    deadline = time.time() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.time() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(every)


def wait_ended(url: str, video_id: str) -> dict[str, Any]:
    """The video once completed or failed, read from the gateway at `url`."""
    return wait_for(lambda: (v := httpx.get(f"{url}/v1/videos/{video_id}").json())["status"] in ENDED and v)


ENDED = ("completed", "failed")


# --- against the provider emulators ---------------------------------------------------------------


@pytest.fixture(scope="module")
def emulators() -> Iterator[Sandbox]:
    sandbox = Sandbox(EmulatorConfig(queue_s=0.2, run_s=1.5))
    sandbox.start()
    yield sandbox
    sandbox.stop()


def emu(sandbox: Sandbox, family: str, path: str, **plan: Any) -> dict[str, Any]:
    url = f"{sandbox.servers[family].url}/_emulator/{path}"
    if path == "faults":
        httpx.post(url, json=plan).raise_for_status()
        return {}
    return httpx.get(url).json()


@pytest.fixture
def gw(gateway_factory: Any, emulators: Sandbox) -> Iterator[Gateway]:
    for family in emulators.servers:
        emu(emulators, family, "faults")
    yield gateway_factory(
        rules_file=ROOT / "router_rules.yaml",
        adapters=emulators.adapters,
        poll_interval_s=0.1,
        cancel_check_s=0.2,
        reconcile_settle_s=0.2,
        reconcile_every_s=0.3,
    )
    for family in emulators.servers:
        emu(emulators, family, "faults")


@contextmanager
def callback_gateway(tmp_path: Path, emulators: Sandbox, **overrides: Any) -> Iterator[httpx.Client]:
    """A gateway on the emulators whose public URL is its own address, so that providers call it
    back (Kling and MiniMax take a `callback_url`); a client to it."""
    port = free_port()
    settings = make_settings(
        tmp_path,
        "",
        rules_file=ROOT / "router_rules.yaml",
        adapters=emulators.adapters,
        public_url=f"http://127.0.0.1:{port}",
        **overrides,
    )
    with serve_in_thread(create_app(settings), port) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


def create(gw: Gateway, **body: Any) -> dict[str, Any]:
    resp = gw.client.post("/v1/videos", json={"prompt": "leaves sway", "image": IMAGE, **body})
    assert resp.status_code == 202, resp.text
    return resp.json()


def test_once_a_model_has_finished_its_next_task_is_first_polled_near_its_usual_end(
    gw: Gateway, emulators: Sandbox
) -> None:
    """Polls counted at the Wan emulator (tasks done 1.7 s after the submit): the first task of a
    model is polled with the plain backoff from at once; the next one not before the learned end,
    then densely, so it takes a couple of polls."""
    polls = []
    for _ in range(2):
        before = emu(emulators, "wan", "stats")
        final = gw.wait(create(gw, model="wan-2.6-i2v")["id"])
        assert final["status"] == "completed", final
        polls.append(emu(emulators, "wan", "stats")["polls"] - before.get("polls", 0))
    assert polls[0] >= 5 and polls[1] <= 3, polls


@pytest.mark.parametrize(("model", "family", "reads"), [("wan-2.6-i2v", "wan", 1), ("kling-v2.1", "kling", 1)])
def test_a_finished_task_is_read_once_and_downloaded_once(
    gw: Gateway, emulators: Sandbox, model: str, family: str, reads: int
) -> None:
    """Counted at the emulator: the answer that says the task is done names the video, and the
    gateway downloads it from there (before: a second query of the task, by `fetch`)."""
    final = gw.wait(create(gw, model=model)["id"])
    assert final["status"] == "completed", final
    task_id = final["route"]["attempts"][-1]["provider_task_id"]
    (task,) = [t for t in emu(emulators, family, "tasks") if t["id"] == task_id]
    assert (task["reads_done"], task["downloads"]) == (reads, 1)


def test_an_expired_result_url_is_fetched_again_not_paid_again(gw: Gateway, emulators: Sandbox) -> None:
    before = emu(emulators, "wan", "stats")
    emu(emulators, "wan", "faults", script={"submit": ["expired_url_once"]})
    final = gw.wait(create(gw, model="wan-2.6-i2v")["id"])
    after = emu(emulators, "wan", "stats")
    assert final["status"] == "completed", final
    assert [a["model"] for a in final["route"]["attempts"]] == ["wan-2.6-i2v"]  # no second model, no second bill
    assert after["tasks"] - before.get("tasks", 0) == 1
    assert after["expired_downloads"] - before.get("expired_downloads", 0) == 1


def test_a_cancel_by_the_provider_is_not_the_clients_cancel(gw: Gateway) -> None:
    """DashScope ends the task CANCELED though nobody asked: the attempt failed, the job falls
    back (before the fix it ended `cancelled`, "at the client's request")."""
    httpx.post(f"{gw_emulator_url(gw)}/_emulator/faults", json={"script": {"submit": ["cancel_late"]}})
    final = gw.wait(create(gw, model="wan-2.6-i2v")["id"])
    attempts = final["route"]["attempts"]
    assert final["status"] == "completed", final
    assert [(a["model"], a["status"]) for a in attempts] == [
        ("wan-2.6-i2v", "failed"),
        ("wan-2.6-i2v-flash", "completed"),
    ]
    assert attempts[0]["error"]["provider_code"] == "cancelled"
    assert "without being asked" in attempts[0]["error"]["message"]


def gw_emulator_url(gw: Gateway) -> str:
    return gw.settings.adapters["wan"].base_url or ""


def test_kling_task_created_behind_a_lost_answer_is_adopted(gw: Gateway, emulators: Sandbox) -> None:
    """Kling created the task, then answered 500. The adapter finds it by external_task_id: one
    task, one attempt (before the fix the retry got 1201 and the job failed while it billed)."""
    before = emu(emulators, "kling", "stats")
    emu(emulators, "kling", "faults", script={"submit": ["accepted_error"]})
    final = gw.wait(create(gw, model="kling-v2.1")["id"])
    after = emu(emulators, "kling", "stats")
    assert final["status"] == "completed", final
    assert [a["status"] for a in final["route"]["attempts"]] == ["completed"]
    assert after["tasks"] - before.get("tasks", 0) == 1


def test_a_kling_lookup_that_fails_is_asked_again_not_left_unconfirmed(gw: Gateway, emulators: Sandbox) -> None:
    """Kling created the task and answered 500; the lookup by external_task_id then got a
    malformed answer twice. A failed lookup says nothing about the task: it is asked again until
    Kling answers. One task, adopted, delivered and counted (before: the attempt ended
    `unconfirmed` at the first failed lookup, the job paid a fallback and the task billed uncounted;
    the CI chaos run of a5f488c caught one)."""
    before = emu(emulators, "kling", "stats")
    emu(emulators, "kling", "faults", script={"submit": ["accepted_error"], "poll": ["malformed", "malformed"]})
    final = gw.wait(create(gw, model="kling-v2.1", prompt="a lookup that fails first")["id"])
    after = emu(emulators, "kling", "stats")
    attempts = final["route"]["attempts"]
    assert final["status"] == "completed", final
    assert [(a["model"], a["status"]) for a in attempts] == [("kling-v2.1", "completed")]
    assert attempts[0]["cost_usd"] > 0
    assert after["tasks"] - before.get("tasks", 0) == 1
    assert after["submits"] - before.get("submits", 0) == 1
    assert after["fault.malformed"] - before.get("fault.malformed", 0) == 2


def test_a_wan_task_behind_a_lost_answer_is_found_in_the_task_list_and_adopted(gw: Gateway, emulators: Sandbox) -> None:
    """DashScope created the task, then answered 500; it keeps no id of ours, but lists its tasks.
    The runner finds the one unheld task with this prompt and follows it: one task, one attempt,
    delivered and counted (before: the attempt ended `unconfirmed`, the job paid a second model,
    and the first task succeeded uncounted)."""
    before = emu(emulators, "wan", "stats")
    emu(emulators, "wan", "faults", script={"submit": ["accepted_error"]})
    final = gw.wait(create(gw, model="wan-2.6-i2v", prompt="a lost answer's ferry")["id"], timeout=30)
    after = emu(emulators, "wan", "stats")
    attempts = final["route"]["attempts"]
    assert final["status"] == "completed", final
    assert [(a["model"], a["status"]) for a in attempts] == [("wan-2.6-i2v", "completed")]
    assert final["metrics"]["cost_usd"] > 0
    assert after["tasks"] - before.get("tasks", 0) == 1
    assert after["submits"] - before.get("submits", 0) == 1
    assert after["lists"] - before.get("lists", 0) >= 1


def test_two_lost_answers_for_one_prompt_each_adopt_their_own_task(gw: Gateway, emulators: Sandbox) -> None:
    """A bulk job with one prompt loses two submit answers a second apart: both tasks carry the
    prompt, and each attempt adopts the one made nearest to when its submit began (before: both
    were ambiguous, ended `unconfirmed`, and two paid tasks went uncounted)."""
    before = emu(emulators, "wan", "stats")
    emu(emulators, "wan", "faults", script={"submit": ["accepted_error", "accepted_error"]})
    first = create(gw, model="wan-2.6-i2v", prompt="one prompt for the whole batch")
    time.sleep(1.2)
    second = create(gw, model="wan-2.6-i2v", prompt="one prompt for the whole batch")
    finals = [gw.wait(v["id"], timeout=30) for v in (first, second)]
    after = emu(emulators, "wan", "stats")
    assert [[a["status"] for a in f["route"]["attempts"]] for f in finals] == [["completed"], ["completed"]]
    assert len({f["route"]["attempts"][0]["provider_task_id"] for f in finals}) == 2
    assert after["tasks"] - before.get("tasks", 0) == 2


def test_a_burst_of_one_prompt_whose_answers_are_all_lost_counts_every_task_once(
    gw: Gateway, emulators: Sandbox
) -> None:
    """Three jobs of one prompt lose their submit answers at the same moment: DashScope made three
    tasks within milliseconds, too close to tell whose is whose. Each attempt ends `unconfirmed`
    (nothing delivered, nothing sent again) and takes one of the three to count: every task is
    in exactly one job's cost (before: all three were paid and none was counted)."""
    before = emu(emulators, "wan", "stats")
    emu(emulators, "wan", "faults", script={"submit": ["accepted_error"] * 3})
    with ThreadPoolExecutor(3) as pool:
        made = list(pool.map(lambda _: create(gw, model="wan-2.6-i2v", prompt="one prompt, one burst"), range(3)))
    finals = [gw.wait(v["id"], timeout=60) for v in made]
    firsts = [f["route"]["attempts"][0] for f in finals]
    assert [a["status"] for a in firsts] == ["unconfirmed"] * 3, firsts

    def counted() -> list[dict[str, Any]] | None:
        rows = [gw.client.get(f"/v1/videos/{v['id']}").json()["route"]["attempts"][0] for v in made]
        return rows if all(r.get("cost_usd") for r in rows) else None

    rows = wait_for(counted, timeout=30)
    after = emu(emulators, "wan", "stats")
    wan_attempts = [a for f in finals for a in f["route"]["attempts"] if a["adapter"] == "wan"]
    assert after["tasks"] - before.get("tasks", 0) == len(wan_attempts)  # no task made twice
    assert len({r["provider_task_id"] for r in rows}) == 3  # each task on one attempt
    later = [a for f in finals for a in f["route"]["attempts"][1:] if a["adapter"] == "wan"]
    held = [a["provider_task_id"] for a in later] + [r["provider_task_id"] for r in rows]
    assert len(set(held)) == len(held) == len(wan_attempts)  # every wan task is counted, once


def test_a_wan_submit_that_never_made_a_task_is_not_left_unconfirmed(gw: Gateway, emulators: Sandbox) -> None:
    """The 500 came before DashScope made anything: the list shows no such task, so the provider's
    error stands (the attempt failed, not `unconfirmed`) and the job goes on as after any refusal."""
    before = emu(emulators, "wan", "stats")
    emu(emulators, "wan", "faults", script={"submit": ["server_error"]})
    final = gw.wait(create(gw, model="wan-2.6-i2v", prompt="a ferry never sent")["id"], timeout=30)
    after = emu(emulators, "wan", "stats")
    attempts = final["route"]["attempts"]
    assert final["status"] == "completed", final
    assert attempts[0]["status"] == "failed" and attempts[0]["error"]["code"] == "provider_unavailable"
    assert [a["status"] for a in attempts[1:]] == ["completed"]
    assert after["tasks"] - before.get("tasks", 0) == 1  # only the attempt that completed made one


def test_minimax_submit_with_unknown_outcome_is_never_resent(gw: Gateway, emulators: Sandbox) -> None:
    """MiniMax created the task, then answered 500; its protocol neither takes an id of ours nor
    lists tasks. The attempt is recorded `unconfirmed` and the job moves on: one task per attempt
    (before the fix the 500 was retried as a fresh submit: two tasks for one attempt)."""
    before = emu(emulators, "minimax", "stats")
    emu(emulators, "minimax", "faults", script={"submit": ["accepted_error"]})
    final = gw.wait(create(gw, model="hailuo-2.3-fast")["id"])
    after = emu(emulators, "minimax", "stats")
    attempts = final["route"]["attempts"]
    assert final["status"] == "completed", final
    assert [a["status"] for a in attempts][:1] == ["unconfirmed"] and attempts[-1]["status"] == "completed"
    assert attempts[0]["error"]["code"] == "provider_unavailable"  # the provider's 5xx, not our restart
    minimax_attempts = [a for a in attempts if a["model"] in ("hailuo-2.3-fast", "video-01-live", "hailuo-02")]
    assert after["tasks"] - before.get("tasks", 0) == len(minimax_attempts)
    assert after["submits"] - before.get("submits", 0) == len(minimax_attempts)


@pytest.mark.parametrize("fault", ["accepted_error", "accepted_timeout"])
def test_a_minimax_task_behind_a_lost_answer_is_adopted_when_its_callback_names_it(
    tmp_path: Path, emulators: Sandbox, fault: str
) -> None:
    """MiniMax made the task, then answered 502 (or held the answer past the task's own end, so
    that both callbacks naming the task arrive while the attempt is still `submitting`). MiniMax
    can neither find a task by our id nor list tasks: its callback is the one word on which task
    the submit made. The attempt waits for it and adopts the task: the job completes on it, one
    task, nothing paid twice (before: the attempt ended `unconfirmed` and a fallback paid again;
    with the stalled answer both callbacks were dropped and the task was counted nowhere)."""
    before = emu(emulators, "minimax", "stats")
    emu(emulators, "minimax", "faults", script={"submit": [fault]}, hang_s=3.0)
    fast = {"poll_interval_s": 0.1, "outbox_backoff_s": 0.2, "poll_interval_max_s": 0.5}
    try:
        with callback_gateway(tmp_path, emulators, **fast) as client:
            body = {"prompt": "leaves sway", "image": IMAGE, "model": "hailuo-2.3-fast"}
            video_id = client.post("/v1/videos", json=body).json()["id"]
            final = wait_for(lambda: (v := client.get(f"/v1/videos/{video_id}").json())["status"] in ENDED and v, 30)
    finally:
        emu(emulators, "minimax", "faults")
    after = emu(emulators, "minimax", "stats")
    attempts = final["route"]["attempts"]
    assert final["status"] == "completed", final
    assert [(a["model"], a["status"]) for a in attempts] == [("hailuo-2.3-fast", "completed")]
    assert attempts[0]["provider_task_id"] and attempts[0]["cost_usd"] > 0
    assert after["tasks"] - before.get("tasks", 0) == 1
    assert after["polls"] - before.get("polls", 0) >= 1  # the callback's word was checked by a query


def test_a_minimax_task_behind_a_lost_answer_is_counted_when_a_late_callback_names_it(
    gw: Gateway, emulators: Sandbox
) -> None:
    """With no callback in time (here: none was asked for) the attempt ends `unconfirmed` and the
    job moves on. A callback that names the task later, to that attempt's URL, puts the task on a
    trail: the gateway queries it and, when it ends, puts its cost on the unconfirmed attempt."""
    known = {t["id"] for t in emu(emulators, "minimax", "tasks")}
    emu(emulators, "minimax", "faults", script={"submit": ["accepted_error"]})
    final = gw.wait(create(gw, model="hailuo-2.3-fast")["id"])
    first = final["route"]["attempts"][0]
    assert (first["model"], first["status"], first["provider_task_id"]) == ("hailuo-2.3-fast", "unconfirmed", None)
    (made,) = [t["id"] for t in emu(emulators, "minimax", "tasks") if t["id"] not in known]
    db = sqlite3.connect(gw.settings.resolved_database_url.split("///", 1)[1])
    query = "SELECT id FROM attempts WHERE job_id = ? ORDER BY seq LIMIT 1"
    (attempt_id,) = db.execute(query, (final["id"],)).fetchone()
    db.close()
    gw.client.post(f"/v1/provider-callbacks/{attempt_id}", json={"task_id": made, "status": "success"})

    def counted() -> dict[str, Any] | None:
        first = gw.client.get(f"/v1/videos/{final['id']}").json()["route"]["attempts"][0]
        return first if first.get("cost_usd") else None

    first = wait_for(counted, 30)
    assert (first["status"], first["provider_task_id"]) == ("unconfirmed", made) and first["cost_usd"] > 0


def _wan_job_not_run(tmp_path: Path, emulators: Sandbox, prompt: str) -> tuple[dict[str, Any], str]:
    """Settings for a gateway on the emulators with quick searches, and a wan-2.6-i2v job that a
    gateway with its runner off accepted (for the test to leave its rows as a crash would)."""
    settings: dict[str, Any] = {
        "rules_file": ROOT / "router_rules.yaml",
        "adapters": emulators.adapters,
        "poll_interval_s": 0.1,
        "reconcile_settle_s": 0.2,
        "reconcile_every_s": 0.3,
    }
    with serve_in_thread(create_app(make_settings(tmp_path, "", runner_enabled=False, **settings))) as url:
        body = {"prompt": prompt, "image": IMAGE, "model": "wan-2.6-i2v"}
        return settings, httpx.post(f"{url}/v1/videos", json=body).json()["id"]


def _resume_until_ended(
    tmp_path: Path, settings: dict[str, Any], emulators: Sandbox, family: str, video_id: str
) -> tuple[dict[str, Any], dict[str, int]]:
    """Start a gateway on the same data to resume the job; its final state and the emulator's
    counters once it ended (the emulator's scripted faults cleared either way)."""
    try:
        with serve_in_thread(create_app(make_settings(tmp_path, "", **settings))) as url:
            final = wait_ended(url, video_id)
    finally:
        emu(emulators, family, "faults")
    return final, emu(emulators, family, "stats")


def test_a_resumed_wan_search_leaves_the_task_of_a_live_submit_of_the_same_prompt_alone(
    tmp_path: Path, emulators: Sandbox
) -> None:
    """Job A's submit was cut by a crash before it reached DashScope; after the restart job B,
    same prompt, sends its own: DashScope makes B's task at once, B's answer is slow. A's search
    of the task list sees that task unheld, with A's prompt, in A's window. It must not take it
    while a later submit of the prompt still waits for its answer: A looks again once B holds its
    task, finds none of its own and sends. Each job completes on its own task (before: A adopted
    B's task, and B's answer, arriving, hit the unique task id and crashed B's job)."""
    settings, video_a = _wan_job_not_run(tmp_path, emulators, "a kite over dunes")
    settings["reconcile_settle_s"] = 1.0  # A's first look comes after B's task exists
    asyncio.run(_leave_submitting(tmp_path / "gateway.db", video_a, "wan-2.6-i2v", "wan", "wan2.6-i2v"))
    before = emu(emulators, "wan", "stats")
    emu(emulators, "wan", "faults", script={"submit": ["accepted_slow"]}, hang_s=2.0)
    try:
        with serve_in_thread(create_app(make_settings(tmp_path, "", **settings))) as url:
            body = {"prompt": "a kite over dunes", "image": IMAGE, "model": "wan-2.6-i2v"}
            video_b = httpx.post(f"{url}/v1/videos", json=body).json()["id"]
            final_a, final_b = wait_ended(url, video_a), wait_ended(url, video_b)
    finally:
        emu(emulators, "wan", "faults")
    after = emu(emulators, "wan", "stats")
    assert (final_a["status"], final_b["status"]) == ("completed", "completed"), (final_a, final_b)
    assert [a["status"] for a in final_a["route"]["attempts"]] == ["completed"]
    assert [a["status"] for a in final_b["route"]["attempts"]] == ["completed"]
    task_a, task_b = (f["route"]["attempts"][0]["provider_task_id"] for f in (final_a, final_b))
    assert task_a and task_b and task_a != task_b
    assert after["tasks"] - before.get("tasks", 0) == 2


@pytest.mark.parametrize("made", [True, False], ids=["task-made", "never-sent"])
def test_a_restart_mid_submit_on_wan_adopts_the_task_or_sends_it_once(
    tmp_path: Path, emulators: Sandbox, made: bool
) -> None:
    """The gateway died between writing the `submitting` row and reading DashScope's answer.
    On restart the runner searches the task list: the task is adopted if it was made, else the
    submit is sent now; either way one task and no job failed by the gateway's own restart
    (before: the attempt ended `unconfirmed` and the job paid a fallback)."""
    # a prompt of its own: the emulators outlive the test, and the other case's task, made a
    # moment ago with the same prompt and held by no attempt of this database, would match
    prompt = f"reeds in wind ({'made' if made else 'never sent'})"
    settings, video_id = _wan_job_not_run(tmp_path, emulators, prompt)
    before = emu(emulators, "wan", "stats")
    made_id = None
    if made:  # what DashScope holds when the answer was lost to the crash
        body = {
            "model": "wan2.6-i2v",
            "input": {"prompt": prompt, "img_url": IMAGE},
            "parameters": {"resolution": "720P", "duration": 5},
        }
        headers = {"Authorization": f"Bearer {emulators.adapters['wan'].api_key.get_secret_value()}"}  # type: ignore[union-attr]
        created = httpx.post(
            f"{emulators.servers['wan'].url}/api/v1/services/aigc/video-generation/video-synthesis",
            json=body,
            headers={**headers, "X-DashScope-Async": "enable"},
        )
        made_id = created.json()["output"]["task_id"]
    asyncio.run(_leave_submitting(tmp_path / "gateway.db", video_id, "wan-2.6-i2v", "wan", "wan2.6-i2v"))
    with serve_in_thread(create_app(make_settings(tmp_path, "", **settings))) as url:
        final = wait_ended(url, video_id)
    after = emu(emulators, "wan", "stats")
    attempts = final["route"]["attempts"]
    assert final["status"] == "completed", final
    assert [(a["model"], a["status"]) for a in attempts] == [("wan-2.6-i2v", "completed")]
    assert after["tasks"] - before.get("tasks", 0) == 1
    if made_id:
        assert attempts[0]["provider_task_id"] == made_id
        assert after["submits"] - before.get("submits", 0) == 1  # ours, made before the restart


def test_a_resend_whose_answer_is_lost_too_is_found_where_it_was_made(tmp_path: Path, emulators: Sandbox) -> None:
    """A runner died mid-submit long ago (a replica frozen past its lease, in the PostgreSQL
    chaos run); the one that resumes finds no task and sends again, and that send's answer is
    lost as well (task made, 5xx returned). The second search must look around the resend, not
    the first send: the resend's task is adopted and the job completes on it. Before the fix the
    search said "absent", the job failed `provider_unavailable` and the task billed uncounted."""
    settings, video_id = _wan_job_not_run(tmp_path, emulators, "gulls on a pier")
    before = emu(emulators, "wan", "stats")
    emu(emulators, "wan", "faults", script={"submit": ["accepted_error"]})
    asyncio.run(
        _leave_submitting(tmp_path / "gateway.db", video_id, "wan-2.6-i2v", "wan", "wan2.6-i2v", opened_ago_s=600)
    )
    final, after = _resume_until_ended(tmp_path, settings, emulators, "wan", video_id)
    attempts = final["route"]["attempts"]
    assert after["fault.accepted_error"] - before.get("fault.accepted_error", 0) == 1
    assert after["tasks"] - before.get("tasks", 0) == 1
    assert final["status"] == "completed", final
    assert [(a["model"], a["status"]) for a in attempts] == [("wan-2.6-i2v", "completed")]


def test_resends_after_a_restart_wait_for_the_send_permit(tmp_path: Path, emulators: Sandbox) -> None:
    """Four jobs left `submitting` by a crash long ago: on restart each searches, finds no task
    and sends again. The resends take the adapter's send permit as first sends do: with
    `max_submitting` 1 the Wan emulator answers one submit at a time (counted there; each answer
    held 0.4 s). Before, the resends all went at once (4 at the emulator)."""
    ids = []
    for n in range(4):
        settings, video_id = _wan_job_not_run(tmp_path, emulators, f"boats at dawn {n}")
        ids.append(video_id)
        asyncio.run(
            _leave_submitting(tmp_path / "gateway.db", video_id, "wan-2.6-i2v", "wan", "wan2.6-i2v", opened_ago_s=600)
        )
    wan = emulators.adapters["wan"].model_copy(update={"max_submitting": 1})
    settings["adapters"] = {**emulators.adapters, "wan": wan}
    before = emu(emulators, "wan", "stats")
    emu(emulators, "wan", "faults", script={"submit": ["accepted_slow"] * 4}, hang_s=0.4)
    try:
        with serve_in_thread(create_app(make_settings(tmp_path, "", **settings))) as url:
            finals = [wait_ended(url, video_id) for video_id in ids]
        after = emu(emulators, "wan", "stats")
    finally:
        emu(emulators, "wan", "faults")
    assert [f["status"] for f in finals] == ["completed"] * 4, finals
    assert after["tasks"] - before.get("tasks", 0) == 4
    assert after["most_sending"] == 1


def test_two_resumed_searches_of_one_prompt_leave_the_one_task_to_the_submit_sent_nearest_it(
    tmp_path: Path, emulators: Sandbox
) -> None:
    """A crash left two attempts of one prompt `submitting`: A's submit was never sent (opened
    30 s before), B's made task T and its answer was lost (opened just before T). On restart both
    search at once and both see T as the one task of the prompt: B, sent nearest T, takes it; A
    leaves it, looks again, finds nothing of its own and sends. Counted at the Wan emulator: T
    and A's task, no third. Before, both took T: the loser ended `unconfirmed` (the PostgreSQL
    chaos run's `failed:interrupted` job) or A took B's task."""
    prompt = "herons in the reeds"
    settings, video_a = _wan_job_not_run(tmp_path, emulators, prompt)
    _, video_b = _wan_job_not_run(tmp_path, emulators, prompt)
    db = tmp_path / "gateway.db"
    asyncio.run(_leave_submitting(db, video_a, "wan-2.6-i2v", "wan", "wan2.6-i2v", opened_ago_s=30))
    asyncio.run(_leave_submitting(db, video_b, "wan-2.6-i2v", "wan", "wan2.6-i2v", opened_ago_s=0.05))
    wan = emulators.adapters["wan"]
    before = emu(emulators, "wan", "stats")
    made = httpx.post(  # B's submit: the task is made, its answer never reaches the gateway
        f"{wan.base_url}/api/v1/services/aigc/video-generation/video-synthesis",
        headers={"Authorization": f"Bearer {wan.api_key.get_secret_value()}", "X-DashScope-Async": "enable"},
        json={"model": "wan2.6-i2v", "input": {"prompt": prompt, "img_url": IMAGE}},
    )
    assert made.is_success, made.text
    task_t = made.json()["output"]["task_id"]
    settings["reconcile_settle_s"] = 0.5  # both searches are under way before either looks
    with serve_in_thread(create_app(make_settings(tmp_path, "", **settings))) as url:
        final_a, final_b = wait_ended(url, video_a), wait_ended(url, video_b)
    assert (final_a["status"], final_b["status"]) == ("completed", "completed"), (final_a, final_b)
    assert [a["provider_task_id"] for a in final_b["route"]["attempts"]] == [task_t]
    [attempt_a] = final_a["route"]["attempts"]
    assert attempt_a["provider_task_id"] != task_t
    assert emu(emulators, "wan", "stats")["tasks"] - before.get("tasks", 0) == 2


def test_a_restart_mid_submit_on_kling_looks_it_up_until_kling_answers(tmp_path: Path, emulators: Sandbox) -> None:
    """The gateway died mid-submit to Kling; on restart the lookup by our id first gets a
    malformed answer, is asked again, learns the task was never made and sends it: one task, no
    job failed by the gateway's own restart (before: `unconfirmed` at the first failed lookup)."""
    settings: dict[str, Any] = {
        "rules_file": ROOT / "router_rules.yaml",
        "adapters": emulators.adapters,
        "poll_interval_s": 0.1,
        "reconcile_every_s": 0.3,
    }
    with serve_in_thread(create_app(make_settings(tmp_path, "", runner_enabled=False, **settings))) as url:
        body = {"prompt": "kites over dunes", "image": IMAGE, "model": "kling-v2.1"}
        video_id = httpx.post(f"{url}/v1/videos", json=body).json()["id"]
    before = emu(emulators, "kling", "stats")
    emu(emulators, "kling", "faults", script={"poll": ["malformed"]})
    asyncio.run(_leave_submitting(tmp_path / "gateway.db", video_id, "kling-v2.1", "kling", "kling-v2-1"))
    final, after = _resume_until_ended(tmp_path, settings, emulators, "kling", video_id)
    assert final["status"] == "completed", final
    assert [(a["model"], a["status"]) for a in final["route"]["attempts"]] == [("kling-v2.1", "completed")]
    assert after["tasks"] - before.get("tasks", 0) == 1
    assert after["fault.malformed"] - before.get("fault.malformed", 0) == 1


async def _leave_submitting(
    db: Path, job_id: str, model: str, adapter: str, provider_model: str, opened_ago_s: float = 1.0
) -> None:
    """The rows a crash mid-submit leaves: the attempt written, the provider's answer never read."""
    engine = make_engine(f"sqlite+aiosqlite:///{db}")
    store = JobStore(engine)
    try:
        async with store.sessions.begin() as session:
            session.add(
                AttemptRow(
                    id=new_id("att"),
                    job_id=job_id,
                    seq=0,
                    model=model,
                    adapter=adapter,
                    provider_model=provider_model,
                    status="submitting",
                    task_data={"opened_at": time.time() - opened_ago_s},
                    usage={"seconds": 5, "resolution": "720p"},
                )
            )
        await store.update(job_id, status="in_progress")
    finally:
        await engine.dispose()


def test_kling_cancel_is_a_request_and_the_billed_task_is_counted(gw: Gateway, emulators: Sandbox) -> None:
    """Kling cannot cancel: the job stays in progress until the task ends, then ends cancelled
    with the task's cost counted and the result dropped (before: cancelled at once, cost 0)."""
    video = create(gw, model="kling-v2.1")
    wait_for(
        lambda: (
            (a := gw.client.get(f"/v1/videos/{video['id']}").json()["route"]["attempts"]) and a[0]["provider_task_id"]
        )
    )
    cancelled = gw.client.post(f"/v1/videos/{video['id']}/cancel").json()
    assert cancelled["status"] == "in_progress"
    seen = wait_for(
        lambda: gw.client.get(f"/v1/videos/{video['id']}").json()["route"]["attempts"][0]["cancel_requested_at"]
    )
    assert seen
    final = gw.wait(video["id"])
    assert final["status"] == "cancelled" and final["output"] is None
    assert final["metrics"]["cost_usd"] > 0 and "billed" in final["error"]["message"]
    events = gw.client.get(f"/v1/videos/{video['id']}/events").json()["data"]
    cancel = next(e for e in events if e["type"] == "provider_cancel")
    assert cancel["data"]["status"] == "delivered"
    assert "cannot stop" in cancel["data"]["log"][-1]["detail"]


# --- the database and the process -----------------------------------------------------------------


def body(prompt: str = "gentle pan right", **fields: Any) -> dict[str, Any]:
    return {"prompt": prompt, "image": data_uri(image_bytes()), **fields}


def test_cancel_flags_of_all_held_jobs_are_read_in_one_statement_per_sweep(tmp_path: Path, toy_url: str) -> None:
    """12 jobs followed for ~1.5 s with a 0.1 s cancel check: the flags are read by the runner's
    sweep (one statement each time for all of them), not per job (before: a read per job per
    check, ~180 here, 10,000 per interval on a replica holding 10,000 jobs)."""
    app = create_app(make_settings(tmp_path, toy_url, cancel_check_s=0.1))
    seen = {"sweep": 0, "per_job": 0}

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "jobs.cancel_requested IS 1" in statement:
            seen["sweep"] += 1
        elif "FROM jobs \nWHERE jobs.id = ?" in statement and "JOIN" not in statement:
            seen["per_job"] += 1

    with serve_in_thread(app) as url:
        for engine in app.state.services.store.sync_engines:
            event.listen(engine, "before_cursor_execute", count)
        with httpx.Client(base_url=url, timeout=10) as client:
            ids = [client.post("/v1/videos", json=body("[run=1.5] tide")).json()["id"] for _ in range(12)]
            for vid in ids:
                wait_for(lambda vid=vid: client.get(f"/v1/videos/{vid}").json()["status"] == "completed", 30, 0.1)
    assert seen["sweep"] >= 5
    assert seen["per_job"] <= 12  # at most the read of each finished clip for its download


def test_database_errors_while_following_a_task_never_fail_the_job(tmp_path: Path, toy_url: str) -> None:
    """Progress writes and the runner's cancel-flag reads fail three times each mid-poll; the job
    completes on its one task (before the fix it failed as internal_error while the provider billed)."""
    app = create_app(make_settings(tmp_path, toy_url, cancel_check_s=0.05, progress_write_s=0))
    failures = {"progress": 3, "cancel": 3}

    def inject(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        if statement.startswith("UPDATE jobs SET progress") and failures["progress"]:
            failures["progress"] -= 1
            raise sqlite3.OperationalError("database is locked (injected)")
        if "jobs.cancel_requested IS 1" in statement and failures["cancel"]:
            failures["cancel"] -= 1
            raise sqlite3.OperationalError("disk I/O error (injected)")

    with serve_in_thread(app) as url:
        for engine in app.state.services.store.sync_engines:  # reads run inline on SQLite
            event.listen(engine, "before_cursor_execute", inject)
        submits = toy_stats(toy_url)["submits"]
        client = httpx.Client(base_url=url, timeout=10)
        video = client.post("/v1/videos", json=body("[run=1.5] clouds drift")).json()
        final = wait_for(
            lambda: (
                (v := client.get(f"/v1/videos/{video['id']}").json())["status"] != "in_progress"
                and v["status"] != "queued"
                and v
            )
        )
        assert final["status"] == "completed", final
        assert failures == {"progress": 0, "cancel": 0}  # every injected fault struck
        assert len(final["route"]["attempts"]) == 1
        assert toy_stats(toy_url)["submits"] == submits + 1


async def _attempts(db: Path) -> list[AttemptRow]:
    engine = make_engine(f"sqlite+aiosqlite:///{db}")
    try:
        async with JobStore(engine).sessions() as s:
            return list(await s.scalars(select(AttemptRow)))
    finally:
        await engine.dispose()


@pytest.mark.slow
def test_shutdown_with_jobs_waiting_for_slots_interrupts_none(tmp_path: Path, toy_url: str) -> None:
    """200 jobs wait for 5 provider slots when the gateway stops: none is marked interrupted, and a
    restart runs each exactly once (before the fix each waiting job ended `interrupted`)."""
    toy = AdapterSettings(class_path="tests.support.toy_adapter:ToyAdapter", base_url=toy_url, max_concurrency=5)
    submits = toy_stats(toy_url)["submits"]
    with serve_in_thread(create_app(make_settings(tmp_path, toy_url, adapters={"toy": toy}))) as url:
        with httpx.Client(base_url=url, timeout=10) as client:
            ids = [client.post("/v1/videos", json=body("[run=2] dusk")).json()["id"] for _ in range(200)]
    attempts = asyncio.run(_attempts(tmp_path / "gateway.db"))
    assert [(a.status, a.error) for a in attempts if a.status not in ("queued", "in_progress", "completed")] == []
    assert len(attempts) < 150  # many jobs were still waiting for a slot (how many depends on the machine's speed)
    faster = toy.model_copy(update={"max_concurrency": 100})
    with serve_in_thread(create_app(make_settings(tmp_path, toy_url, adapters={"toy": faster}))) as url:
        with httpx.Client(base_url=url, timeout=10) as client:
            for vid in ids:
                wait_for(lambda vid=vid: client.get(f"/v1/videos/{vid}").json()["status"] == "completed", 60, 0.1)
    assert toy_stats(toy_url)["submits"] == submits + 200


def test_submits_on_the_wire_are_bounded_by_max_submitting(tmp_path: Path) -> None:
    """30 jobs with room for all at the provider send at most `max_submitting` (3) submits at once,
    counted at the provider, and each is sent once. Before, every claimed job read its image and
    built its body at once: 10,000 claimed jobs held ~60 KB each waiting for a connection."""
    with serve_in_thread(create_toy_provider()) as toy_url:
        toy = AdapterSettings(
            class_path="tests.support.toy_adapter:ToyAdapter", base_url=toy_url, max_concurrency=100, max_submitting=3
        )
        with serve_in_thread(create_app(make_settings(tmp_path, toy_url, adapters={"toy": toy}))) as url:
            with httpx.Client(base_url=url, timeout=10) as client:
                ids = [
                    client.post("/v1/videos", json=body("[submit-delay=0.3] [run=0.2] fog")).json()["id"]
                    for _ in range(30)
                ]
                for vid in ids:
                    wait_for(lambda vid=vid: client.get(f"/v1/videos/{vid}").json()["status"] == "completed", 60, 0.1)
        stats = toy_stats(toy_url)
    assert stats["submits"] == 30
    assert stats["most_sending"] == 3


def test_shutdown_hands_the_leases_back_when_a_job_ignores_cancellation(
    tmp_path: Path, toy_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A driver that swallows its cancellation (a bug, or a call that does not yield) cannot hold
    the shutdown: the runner waits `SETTLE_S` for it, then hands its leases back (before, stop()
    waited on that task for ever and no lease was released)."""
    import threading

    from gateway.jobs import runner as runner_module
    from gateway.jobs.drive import JobDriver

    started, let_go = threading.Event(), threading.Event()

    async def stubborn(self: JobDriver, job_id: str, cancel: asyncio.Event) -> None:
        started.set()
        while not let_go.is_set():
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                continue

    monkeypatch.setattr(JobDriver, "drive", stubborn)
    monkeypatch.setattr(runner_module, "SETTLE_S", 0.3)
    server = serve_in_thread(create_app(make_settings(tmp_path, toy_url)))
    url = server.start()
    httpx.post(f"{url}/v1/videos", json=body("dunes"), timeout=10).raise_for_status()
    assert started.wait(10)

    def lease_owner() -> str | None:
        with sqlite3.connect(tmp_path / "gateway.db") as db:
            return db.execute("SELECT lease_owner FROM jobs").fetchone()[0]

    assert lease_owner() is not None
    stopping = threading.Thread(target=server.stop)
    stopping.start()
    try:
        assert wait_for(lambda: lease_owner() is None, timeout=8)
    finally:
        let_go.set()
        stopping.join(30)


def test_shutdown_ends_when_closing_a_provider_client_hangs(
    tmp_path: Path, toy_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An adapter whose close never returns (a peer that never answers) does not hold the exit:
    each closing step gets `CLOSE_S`, and the server thread ends (before, it waited for ever)."""
    from gateway.api import app as app_module
    from tests.support.toy_adapter import ToyAdapter

    async def hang(self: ToyAdapter) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(ToyAdapter, "aclose", hang)
    monkeypatch.setattr(app_module, "CLOSE_S", 0.3)
    server = serve_in_thread(create_app(make_settings(tmp_path, toy_url)))
    server.start()
    t0 = time.monotonic()
    server.stop()
    assert not server.thread.is_alive()
    assert time.monotonic() - t0 < 10


def test_a_stop_just_after_the_submitting_row_is_written_still_sends_it(tmp_path: Path, toy_url: str) -> None:
    """The jobs are cancelled (as a shutdown does) right after an attempt's `submitting` row is
    committed: the submit still goes out once and its task id is recorded. Before the fix the row
    stayed `submitting` with nothing sent, and on a protocol that cannot look tasks up the restart
    had to end it `unconfirmed`."""
    app = create_app(make_settings(tmp_path, toy_url))
    submits = toy_stats(toy_url)["submits"]
    wrote: list[str] = []

    def note_insert(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO ATTEMPTS"):
            wrote.append("attempt")

    def stop_jobs(conn: Any) -> None:  # at the commit; the cancel lands at the job's next await
        if wrote == ["attempt"]:
            wrote.append("stopped")
            for task in app.state.services.runner._active.values():
                task.cancel()

    with serve_in_thread(app) as url:
        engines = app.state.services.store.sync_engines  # writes run inline on SQLite
        for engine in engines:
            event.listen(engine, "after_cursor_execute", note_insert)
            event.listen(engine, "commit", stop_jobs)
        try:
            video = httpx.post(f"{url}/v1/videos", json=body("[run=30] reeds bend"), timeout=10).json()
            wait_for(lambda: toy_stats(toy_url)["submits"] > submits, timeout=10)
            time.sleep(0.3)  # let the task id be written
        finally:
            for engine in engines:
                event.remove(engine, "commit", stop_jobs)
                event.remove(engine, "after_cursor_execute", note_insert)
    assert wrote == ["attempt", "stopped"]
    attempts = asyncio.run(_attempts(tmp_path / "gateway.db"))
    assert [(a.job_id, a.status, bool(a.provider_task_id)) for a in attempts] == [(video["id"], "queued", True)]
    assert toy_stats(toy_url)["submits"] == submits + 1


@pytest.fixture
def receiver() -> Iterator[tuple[int, list[dict[str, Any]], Litestar]]:
    got: list[dict[str, Any]] = []

    @post("/hook", status_code=204)
    async def hook(request: Request[Any, Any, Any]) -> None:
        got.append({"headers": dict(request.headers), "body": await request.json()})

    port = free_port()
    yield port, got, Litestar([hook])


def test_cancelling_a_queued_job_sends_its_webhook_and_counts_it(gateway_factory: Any, receiver: Any) -> None:
    port, got, app = receiver
    gw = gateway_factory(runner_enabled=False, image_fetch_allow_networks=["127.0.0.1/32"])
    with serve_in_thread(app, port):
        video = gw.client.post("/v1/videos", json=body(webhook_url=f"http://127.0.0.1:{port}/hook")).json()
        assert gw.client.post(f"/v1/videos/{video['id']}/cancel").json()["status"] == "cancelled"
        wait_for(lambda: got)
    assert got[0]["body"]["type"] == "video.cancelled" and got[0]["body"]["data"]["id"] == video["id"]
    metrics = gw.client.get("/metrics").text
    assert (
        'i2v_jobs_finished_total{adapter="",error_code="cancelled",model="toy-fast",status="cancelled"} 1.0' in metrics
        or (
            'i2v_jobs_finished_total{model="toy-fast",adapter="",status="cancelled",error_code="cancelled"} 1.0'
            in metrics
        )
    )


def test_a_webhook_to_a_receiver_that_is_down_is_retried_until_it_lands(gateway_factory: Any, receiver: Any) -> None:
    """The receiver is down when the job finishes; the outbox keeps the webhook and delivers it,
    once, when it is back, and the tries are in the job's events."""
    port, got, app = receiver
    gw = gateway_factory(image_fetch_allow_networks=["127.0.0.1/32"], outbox_backoff_s=0.2)
    video = gw.client.post("/v1/videos", json=body(webhook_url=f"http://127.0.0.1:{port}/hook")).json()
    assert gw.wait(video["id"])["status"] == "completed"
    wait_for(
        lambda: any(
            e["type"] == "webhook" and e["data"]["tries"] >= 2
            for e in gw.client.get(f"/v1/videos/{video['id']}/events").json()["data"]
        )
    )
    with serve_in_thread(app, port):
        wait_for(lambda: got)
        time.sleep(1.0)  # a second delivery would land in this window
    assert len(got) == 1 and got[0]["body"]["type"] == "video.completed"
    hook = next(e for e in gw.client.get(f"/v1/videos/{video['id']}/events").json()["data"] if e["type"] == "webhook")
    assert hook["data"]["status"] == "delivered" and got[0]["headers"]["webhook-id"] == hook["data"]["id"]
    assert [t["result"] for t in hook["data"]["log"]][-1] == "done" and hook["data"]["tries"] >= 3


@pytest.mark.parametrize(("model", "family"), [("kling-v2.1", "kling"), ("hailuo-2.3-fast", "minimax")])
def test_a_provider_callback_shows_the_finished_task_at_once(
    tmp_path: Path, emulators: Sandbox, model: str, family: str
) -> None:
    """The first poll would come after 30 s; the provider's callback (MiniMax's challenge echoed
    first) makes the runner query the task as soon as it finishes. The callback's body is not
    trusted: the task is re-queried (the emulator counts the poll)."""
    before = emu(emulators, family, "stats")
    with callback_gateway(tmp_path, emulators, poll_interval_s=30) as client:
        t0 = time.time()
        video = client.post("/v1/videos", json={"prompt": "leaves sway", "image": IMAGE, "model": model}).json()
        final = wait_for(
            lambda: (v := client.get(f"/v1/videos/{video['id']}").json())["status"] == "completed" and v, 25
        )
        took = time.time() - t0
    after = emu(emulators, family, "stats")
    assert final["route"]["attempts"][0]["model"] == model
    assert took < 25, took  # the emulator's task takes 1.7 s; the first poll was 30 s away (a loaded machine is slow)
    assert after["callbacks"] - before.get("callbacks", 0) >= 2
    assert after["polls"] - before.get("polls", 0) >= 1  # re-queried, not taken from the callback
    if family == "minimax":
        assert after["callback_challenges"] - before.get("callback_challenges", 0) == 1


@pytest.mark.postgres
def test_a_callback_that_lands_on_another_replica_reaches_the_runner(tmp_path: Path, emulators: Sandbox) -> None:
    """The provider calls back a front replica that runs no jobs; PostgreSQL NOTIFY carries the
    nudge to the replica that follows the task."""
    port = free_port()
    with temporary_database() as db:
        common: dict[str, Any] = {
            "rules_file": ROOT / "router_rules.yaml",
            "adapters": emulators.adapters,
            "poll_interval_s": 30,
            "database_url": db,
            "blob_dir": tmp_path / "blobs",
            "public_url": f"http://127.0.0.1:{port}",
        }
        front = create_app(make_settings(tmp_path / "front", "", runner_enabled=False, **common))
        runner = create_app(make_settings(tmp_path / "runner", "", **common))
        with serve_in_thread(front, port) as url, serve_in_thread(runner), httpx.Client(base_url=url) as client:
            t0 = time.time()
            body = {"prompt": "leaves sway", "image": IMAGE, "model": "kling-v2.1"}
            video = client.post("/v1/videos", json=body, timeout=10).json()
            wait_for(lambda: client.get(f"/v1/videos/{video['id']}").json()["status"] == "completed", 25)
            assert time.time() - t0 < 25  # the first poll was 30 s away
