"""Find the task behind a submit whose outcome is unknown: by the id we sent where the protocol
keeps one (Kling, `look_up`), else in the provider's task list (DashScope, `reconcile`); adopt it,
say it surely does not exist, or leave it unknown.

A lookup by our id is authoritative, but a lookup that fails (a 5xx, a malformed answer) says
nothing: it is asked again until `reconcile_timeout_s` or the job's time is up, never read as
"unknown" at the first failure (the task would run, bill and go uncounted).

Why each answer of the task-list search is safe:
- a task is adopted only when it is the one task of that model, made while the submit was in
  flight (where the provider says when), held by no attempt or trail, whose fingerprint (the
  prompt) matches, and no other unheld task could still turn out to match, nor a later submit of
  the same prompt still waiting for its answer have made it (`JobStore.later_submits`; found in a
  chaos run: a resumed search took the task of a live submit sent after the restart, and that
  submit's answer then crashed its job). Submits whose answers were lost too (`lost_at`, a burst)
  do not hold a search back: they are searching themselves; but where one of them was sent
  clearly nearer (`_CALL_S`) to when the task was made, the task is left to it
  (`JobStore.searching_submits`; found in a PostgreSQL chaos run: a submit a kill cut before it
  was sent and a lost answer of the same prompt both took the one task, and the loser of that
  race ended `unconfirmed`);
- "absent" is said only after the list had `reconcile_settle_s` to show the task and no unheld
  task in the window matches or may yet match: then sending it (again) cannot pay twice;
- anything else stays unknown, and the attempt ends `unconfirmed`, never sent again. Where the
  unknown is several matching tasks too close together to tell apart (a crash in a burst of one
  prompt), the attempt still takes one of them to count (`Attempts._claim_one`), not to deliver.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Literal

from adapters.base import FoundTask, ProviderError, ProviderRequest, ProviderTask, TaskLookup, TaskSearch
from gateway.jobs.context import RunContext

_SKEW_S = 2.0  # clocks apart (the provider's offset is learned to the quarter hour)
_CALL_S = 0.5
_AMBIGUOUS_LOOKS = 3


@dataclass
class Verdict:
    kind: Literal["found", "absent", "unknown"]
    task: ProviderTask | None = None
    why: str = ""
    #: several matching tasks too close to tell apart, nearest the submit first (else empty)
    candidates: list[ProviderTask] = field(default_factory=list)


async def look_up(ctx: RunContext, adapter: TaskLookup, request: ProviderRequest, until: float) -> Verdict:
    """Ask for the task under the attempt id we sent until the provider answers, every
    `reconcile_every_s`, for at most `reconcile_timeout_s` or until the job's time is up."""
    deadline = min(time.time() + ctx.settings.reconcile_timeout_s, until)
    while True:
        try:
            task = await adapter.lookup(request)
        except ProviderError as exc:
            if time.time() + ctx.settings.reconcile_every_s > deadline:
                return Verdict("unknown", why=f"the lookup by our id failed: {exc.message}")
            await asyncio.sleep(ctx.settings.reconcile_every_s)
            continue
        return Verdict("found", task) if task is not None else Verdict("absent")


@dataclass
class Lost:
    """The submit being searched for: its attempt, the job's prompt and when it was sent."""

    attempt_id: str
    prompt: str
    since: float


async def reconcile(
    ctx: RunContext, adapter: TaskSearch, adapter_name: str, request: ProviderRequest, lost: Lost, until: float
) -> Verdict:
    """Search until the answer is sure, `reconcile_timeout_s` has passed or the job's time is up."""
    settings = ctx.settings
    deadline = min(time.time() + settings.reconcile_timeout_s, until)
    await asyncio.sleep(settings.reconcile_settle_s)
    ambiguous = 0
    while True:
        verdict = await _look(ctx, adapter, adapter_name, request, lost)
        # several matches resolve only if other attempts adopt theirs: a few looks, not the deadline
        ambiguous = ambiguous + 1 if verdict.candidates else 0
        if verdict.kind != "unknown" or ambiguous >= _AMBIGUOUS_LOOKS:
            return verdict
        if time.time() + settings.reconcile_every_s > deadline:
            return verdict
        await asyncio.sleep(settings.reconcile_every_s)


async def _look(
    ctx: RunContext, adapter: TaskSearch, adapter_name: str, request: ProviderRequest, lost: Lost
) -> Verdict:
    try:
        return await _decide(ctx, adapter, adapter_name, request, lost)
    except ProviderError as exc:
        return Verdict("unknown", why=f"the task search failed: {exc.message}")


async def _decide(
    ctx: RunContext, adapter: TaskSearch, adapter_name: str, request: ProviderRequest, lost: Lost
) -> Verdict:
    since = lost.since
    # only tasks made while the submit was in flight are asked about in the database
    found = _near(ctx, adapter_name, await adapter.search(request, since), since)
    held = await ctx.retrying(lambda: ctx.store.held_tasks(adapter_name, [f.task.task_id for f in found]), "held tasks")
    near = [f for f in found if f.task.task_id not in held]
    # read the fingerprint of finished tasks only: one still running shows none yet
    read = [await adapter.inspect(request, f) if f.state == "completed" else f for f in near]
    sure = [f for f in read if f.matches]
    # an unheld task still running may be ours (a failed one costs nothing and is never adopted)
    maybe = [f for f in read if f.matches is None and f.state in ("queued", "in_progress")]
    if sure or maybe:  # a later submit of this prompt, still waiting for its answer, may have made them
        later = await ctx.retrying(
            lambda: ctx.store.later_submits(adapter_name, lost.attempt_id, lost.prompt, since), "later submits"
        )
        if later:
            return Verdict("unknown", why=f"{later} later submit(s) of this prompt still wait for their answer")
    if len(sure) > 1:
        ranked = sorted(sure, key=lambda f: abs((f.created_at or since) - since))
        nearest = _nearest(ranked, since)
        if nearest is None:
            why = f"{len(sure)} unheld tasks carry this prompt"
            return Verdict("unknown", why=why, candidates=[f.task for f in ranked])
        sure = [nearest]
    if maybe:
        return Verdict("unknown", why=f"{len(maybe)} unheld task(s) still running may be this one")
    if sure:
        made = sure[0].created_at
        if made is not None:  # another lost submit of this prompt, sent clearly nearer to when the
            # task was made, is its owner: leave it to that one, then look again (it will be held)
            peers = await ctx.retrying(
                lambda: ctx.store.searching_submits(adapter_name, lost.attempt_id, lost.prompt), "searching submits"
            )
            if any(abs(p - made) + _CALL_S <= abs(since - made) for p in peers):
                return Verdict("unknown", why="another lost submit of this prompt was sent nearer to its making")
        return Verdict("found", sure[0].task)
    return Verdict("absent")


def _near(ctx: RunContext, adapter_name: str, found: list[FoundTask], since: float) -> list[FoundTask]:
    """Where the provider says when each task was made, only those made while the submit was in
    flight (its HTTP timeout, with some clock skew) can be its task."""
    adapter = ctx.settings.adapters.get(adapter_name)
    late = since + (adapter.timeout_s if adapter else 60.0) + _SKEW_S
    return [f for f in found if f.created_at is None or since - _SKEW_S <= f.created_at <= late]


def _nearest(ranked: list[FoundTask], since: float) -> FoundTask | None:
    """Several unheld tasks with this prompt, nearest `since` first (a bulk job's lost answers
    close together): a task is made within milliseconds of its request, so the one made clearly
    nearest to when this submit began is its task; too close to call (within `_CALL_S`), none is."""
    if any(f.created_at is None for f in ranked):
        return None
    first, second = (abs((f.created_at or 0.0) - since) for f in ranked[:2])
    return ranked[0] if second - first >= _CALL_S else None
