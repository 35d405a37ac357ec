"""`POST /v1/provider-callbacks/{attempt_id}`: where Kling and MiniMax report a task's changes.

A callback is only a nudge: its body is never trusted (anyone could post one). The runner that
follows the attempt, in this process or another, queries the task at once and acts on what the
provider's own API says. MiniMax's challenge (`{"challenge": …}`) is echoed, as it requires.
A callback that names the task of an attempt whose submit answer was lost puts that task on a
trail, so that what it costs is counted.
"""

from __future__ import annotations

import json
from typing import Any

from litestar import Request, post

from gateway.api.auth import Svc


@post("/v1/provider-callbacks/{attempt_id:str}", status_code=200, include_in_schema=False)
async def provider_callback(attempt_id: str, request: Request[Any, Any, Any], services: Svc) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        body = {}
    if isinstance(body, dict) and "challenge" in body:
        return {"challenge": body["challenge"]}
    if attempt_id.startswith("att_") and len(attempt_id) <= 40:
        task_id = body.get("task_id") if isinstance(body, dict) else None
        if isinstance(task_id, str | int) and 0 < len(str(task_id)) <= 255:
            # the one way to learn a task whose submit answer was lost, where the protocol neither
            # takes our id nor lists tasks (MiniMax): its cost is then counted (runner.reported)
            await services.runner.reported(attempt_id, str(task_id))
        await services.runner.poke(attempt_id)
    return {"ok": True}
