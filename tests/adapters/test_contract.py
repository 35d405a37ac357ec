"""The adapter contract: every provider family passes the same suite against its emulator,
over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.base import ProviderError, ProviderStatus, ProviderTask, TaskLookup, TaskSearch
from adapters.emulators.common import EmulatorConfig
from gateway.jobs.fetch import store_video
from gateway.storage.blobs import BlobStore
from tests.adapters.families import FAMILIES, Family, request
from tests.support.servers import serve_in_thread


@pytest.fixture(params=FAMILIES, ids=[f.name for f in FAMILIES])
def fam(request: pytest.FixtureRequest) -> Family:
    return request.param


@pytest.fixture
def emu(fam: Family) -> Iterator[str]:
    cfg = EmulatorConfig(queue_s=0.2, run_s=0.4, fps=8, max_side=160, max_frames=8)
    with serve_in_thread(fam.emulator(cfg)) as url:
        yield url


def faults(emu: str, **plan: Any) -> None:
    httpx.post(f"{emu}/_emulator/faults", json=plan).raise_for_status()


def stats(emu: str) -> dict[str, int]:
    return {"submits": 0, "polls": 0, "tasks": 0, **httpx.get(f"{emu}/_emulator/stats").json()}


async def follow(adapter: Any, task: ProviderTask, limit_s: float = 10) -> list[ProviderStatus]:
    seen: list[ProviderStatus] = []
    deadline = time.time() + limit_s
    while time.time() < deadline:
        status = await adapter.poll(task)
        if not seen or seen[-1].state != status.state:
            seen.append(status)
        if status.state in ("completed", "failed", "cancelled"):
            return seen
        await asyncio.sleep(0.05)
    raise AssertionError(f"task did not end: {[s.state for s in seen]}")


async def test_happy_path_walks_every_status_and_yields_a_video(fam: Family, emu: str, tmp_path: Path) -> None:
    adapter = fam.adapter(emu)
    task = await adapter.submit(request(fam))
    states = [s.state for s in await follow(adapter, task)]
    assert states == ["queued", "in_progress", "completed"]
    source = await adapter.fetch(task)
    async with httpx.AsyncClient() as client:
        facts = await store_video(source, BlobStore(tmp_path), client, 10**8)
    assert facts.codec == "h264" and facts.frames >= 2
    assert abs(facts.width / facts.height - 4 / 3) < 0.05  # output follows the input image's aspect
    await adapter.aclose()


async def test_a_completed_answer_that_names_the_video_names_the_one_fetch_gives(
    fam: Family, emu: str, tmp_path: Path
) -> None:
    """Where the poll that sees the task done says where the video is, the driver downloads it
    from there and skips `fetch`'s second query; it must be the very video `fetch` finds."""
    adapter = fam.adapter(emu)
    task = await adapter.submit(request(fam))
    done = (await follow(adapter, task))[-1]
    assert done.state == "completed"
    assert (done.result is not None) == fam.names_result
    async with httpx.AsyncClient() as client:
        fetched = await store_video(await adapter.fetch(task), BlobStore(tmp_path / "fetched"), client, 10**8)
        if done.result is not None:
            named = await store_video(done.result, BlobStore(tmp_path / "named"), client, 10**8)
            assert named.sha256 == fetched.sha256
    await adapter.aclose()


async def test_the_emulator_counts_the_submits_it_is_answering(fam: Family, emu: str) -> None:
    """`most_sending`, what bounds on submits in flight are checked against, counts every family's
    create (before, MiniMax's was not counted: its figure read 0)."""
    adapter = fam.adapter(emu)
    await asyncio.gather(*(adapter.submit(request(fam, prompt=f"push in {n}")) for n in range(3)))
    assert 1 <= stats(emu)["most_sending"] <= 3
    await adapter.aclose()


async def test_resume_polling_after_restart(fam: Family, emu: str) -> None:
    first = fam.adapter(emu)
    task = await first.submit(request(fam))
    await first.aclose()
    stored = ProviderTask.model_validate_json(task.model_dump_json())  # what the job row keeps
    second = fam.adapter(emu)
    assert (await follow(second, stored))[-1].state == "completed"
    assert stats(emu)["submits"] == 1
    await second.aclose()


async def test_rate_limit_at_submit_is_retried(fam: Family, emu: str) -> None:
    faults(emu, script={"submit": ["rate_limit", "rate_limit"]}, retry_after_s=0)
    adapter = fam.adapter(emu)
    task = await adapter.submit(request(fam))
    assert task.task_id
    assert stats(emu)["submits"] == 3 and stats(emu)["tasks"] == 1
    await adapter.aclose()


async def test_persistent_rate_limit_gives_up_with_rate_limited(fam: Family, emu: str) -> None:
    faults(emu, rates={"rate_limit": 1.0}, retry_after_s=0)
    adapter = fam.adapter(emu, max_attempts=3)
    with pytest.raises(ProviderError) as info:
        await adapter.submit(request(fam))
    assert info.value.code == "rate_limited"
    assert info.value.provider_code
    assert stats(emu)["submits"] == 3
    await adapter.aclose()


def idempotent(adapter: object) -> bool:
    """The provider refuses a second task with our attempt id, so an unknown outcome may be resent."""
    return isinstance(adapter, TaskLookup) and adapter.idempotent_submit


@pytest.mark.parametrize("fault", ["server_error", "timeout", "malformed"])
async def test_a_submit_whose_outcome_is_unknown_is_never_blindly_repeated(fam: Family, emu: str, fault: str) -> None:
    """The fault strikes before the task exists. Where the protocol refuses twins (Kling), the
    adapter looks the task up, finds none, and sends it again under the same id; elsewhere it
    says the outcome is unknown and sends nothing more."""
    faults(emu, script={"submit": [fault]}, hang_s=2)
    adapter = fam.adapter(emu, timeout_s=0.5)
    if idempotent(adapter):
        assert (await adapter.submit(request(fam))).task_id
        assert (stats(emu)["submits"], stats(emu)["tasks"]) == (2, 1)
    else:
        with pytest.raises(ProviderError) as info:
            await adapter.submit(request(fam))
        assert info.value.maybe_submitted
        assert (stats(emu)["submits"], stats(emu).get("tasks", 0)) == (1, 0)
    await adapter.aclose()


@pytest.mark.parametrize(
    ("fault", "hang_s", "timeout_s"),
    [
        ("accepted_error", 2, 0.5),
        ("accepted_timeout", 2, 0.5),  # we give up first
        ("accepted_timeout", 0.3, 5),  # the provider answers its own timeout (MiniMax: 1001 in an HTTP 200)
        ("accepted_malformed", 2, 0.5),
    ],
)
async def test_a_task_created_behind_a_lost_answer_is_never_created_twice(
    fam: Family, emu: str, fault: str, hang_s: float, timeout_s: float
) -> None:
    """The provider created the task, then the answer was lost. Kling's adapter finds it by our
    external_task_id; elsewhere the error says the task may exist. One task either way."""
    faults(emu, script={"submit": [fault]}, hang_s=hang_s)
    adapter = fam.adapter(emu, timeout_s=timeout_s)
    if idempotent(adapter):
        task = await adapter.submit(request(fam))
        assert (await follow(adapter, task))[-1].state == "completed"
    else:
        with pytest.raises(ProviderError) as info:
            await adapter.submit(request(fam))
        assert info.value.maybe_submitted
    assert (stats(emu)["submits"], stats(emu)["tasks"]) == (1, 1)
    await adapter.aclose()


SEARCHERS = [f for f in FAMILIES if issubclass(f.adapter_cls, TaskSearch)]


@pytest.mark.parametrize("fam", SEARCHERS, ids=[f.name for f in SEARCHERS])
async def test_a_task_behind_a_lost_answer_is_found_in_the_task_list(fam: Family, emu: str) -> None:
    """Where the provider keeps no id of ours but lists its tasks (DashScope), the task a lost
    answer hid is in the list for its model since the submit began; once it has finished it shows
    the prompt it was made with, so it is told apart from another request's task."""
    adapter = fam.adapter(emu, timeout_s=0.5)
    since = time.time()
    other = await adapter.submit(request(fam, prompt="a different request"))  # answered normally
    faults(emu, script={"submit": ["accepted_error"]})
    with pytest.raises(ProviderError) as info:
        await adapter.submit(request(fam))
    assert info.value.maybe_submitted
    running = {f.task.task_id: f for f in await adapter.search(request(fam), since)}
    assert len(running) == 2
    for f in running.values():  # still running: no prompt shown yet
        assert (await adapter.inspect(request(fam), f)).matches is None
    await follow(adapter, other)  # teaches the adapter the provider's clock
    await asyncio.sleep(0.7)  # both tasks have finished
    listed = await adapter.search(request(fam), since)
    assert all(f.created_at is not None and since - 2 <= f.created_at <= time.time() for f in listed)
    found = {f.task.task_id: await adapter.inspect(request(fam), f) for f in listed}
    assert found.keys() == running.keys()
    assert found[other.task_id].matches is False
    (lost,) = [f for tid, f in found.items() if tid != other.task_id]
    assert (lost.state, lost.matches) == ("completed", True)
    assert (await follow(adapter, lost.task))[-1].state == "completed"
    assert await adapter.search(request(fam), time.time() + 3600) == []  # nothing made after then
    assert (stats(emu)["submits"], stats(emu)["tasks"]) == (2, 2)
    await adapter.aclose()


async def test_a_content_refusal_at_submit_is_final(fam: Family, emu: str) -> None:
    faults(emu, script={"submit": ["moderation_submit"]})
    adapter = fam.adapter(emu)
    with pytest.raises(ProviderError) as info:
        await adapter.submit(request(fam))
    assert info.value.code == "content_policy" and not info.value.maybe_submitted
    assert stats(emu)["submits"] == 1
    await adapter.aclose()


async def test_poll_faults_are_retried_or_reported_as_retryable(fam: Family, emu: str) -> None:
    adapter = fam.adapter(emu)
    task = await adapter.submit(request(fam))
    faults(emu, script={"poll": ["rate_limit", "server_error"]}, retry_after_s=0)
    polls = stats(emu)["polls"]
    status = await adapter.poll(task)  # both faults absorbed by retries
    assert status.state in ("queued", "in_progress", "completed")
    assert stats(emu)["polls"] == polls + 3
    faults(emu, script={"poll": ["malformed"]})
    with pytest.raises(ProviderError) as info:
        await adapter.poll(task)
    assert info.value.retryable  # the runner polls again; a bad poll never fails a billed job
    assert (await follow(adapter, task))[-1].state == "completed"
    await adapter.aclose()


async def test_moderation_after_acceptance_fails_the_task(fam: Family, emu: str) -> None:
    faults(emu, script={"submit": ["moderation_late"]})
    adapter = fam.adapter(emu)
    end = (await follow(adapter, await adapter.submit(request(fam))))[-1]
    assert end.state == "failed"
    assert end.error is not None and end.error.code == "content_policy" and end.error.provider_code
    assert not end.error.retryable
    await adapter.aclose()


async def test_task_failure_after_acceptance(fam: Family, emu: str) -> None:
    faults(emu, script={"submit": ["task_fail"]})
    adapter = fam.adapter(emu)
    end = (await follow(adapter, await adapter.submit(request(fam))))[-1]
    assert end.state == "failed"
    assert end.error is not None and end.error.code == "provider_error" and end.error.retryable
    await adapter.aclose()


async def test_expired_result_url(fam: Family, emu: str, tmp_path: Path) -> None:
    faults(emu, script={"submit": ["expired_url"]})
    adapter = fam.adapter(emu)
    task = await adapter.submit(request(fam))
    assert (await follow(adapter, task))[-1].state == "completed"
    source = await adapter.fetch(task)
    async with httpx.AsyncClient() as client:
        with pytest.raises(ProviderError) as info:
            await store_video(source, BlobStore(tmp_path), client, 10**8)
    assert "HTTP 403" in info.value.message and info.value.retryable
    await adapter.aclose()


async def test_lost_task(fam: Family, emu: str) -> None:
    """A task the provider no longer knows (DashScope's UNKNOWN, a 404 elsewhere) ends as a
    retryable failure, so the job can move on."""
    faults(emu, script={"submit": ["unknown"]})
    adapter = fam.adapter(emu)
    task = await adapter.submit(request(fam))
    try:
        end = (await follow(adapter, task))[-1]
    except ProviderError as exc:
        assert not exc.retryable  # an adapter may also raise: then the runner fails the attempt
        return
    assert end.state == "failed" and end.error is not None and end.error.retryable
    await adapter.aclose()


async def test_cancel(fam: Family, emu: str) -> None:
    adapter = fam.adapter(emu)
    task = await adapter.submit(request(fam))
    stopped = await adapter.cancel(task)  # never raises, whatever the provider can do
    assert stopped is fam.can_cancel  # the truth: a provider without cancel says so
    end = (await follow(adapter, task))[-1]
    assert end.state == ("cancelled" if fam.can_cancel else "completed")
    await adapter.aclose()


async def test_wrong_credentials(fam: Family, emu: str) -> None:
    creds = {k: "wrong-" + str(v) for k, v in fam.credentials.items()}
    adapter = Family(**{**fam.__dict__, "credentials": creds}).adapter(emu)
    with pytest.raises(ProviderError) as info:
        await adapter.submit(request(fam))
    assert info.value.code == "auth_failed"
    await adapter.aclose()


async def test_secrets_never_reach_logs(fam: Family, emu: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    faults(emu, script={"submit": ["rate_limit"], "poll": ["server_error"]}, retry_after_s=0)
    adapter = fam.adapter(emu)
    task = await adapter.submit(request(fam))
    await follow(adapter, task)
    await adapter.aclose()
    text = caplog.text + repr(adapter.__dict__.get("settings", ""))
    for secret in fam.secrets:
        assert secret not in caplog.text
    assert text  # something was logged at DEBUG (httpx/httpcore), and none of it holds a secret
