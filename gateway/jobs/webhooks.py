"""Webhook delivery on terminal status, signed the way Replicate and Svix sign theirs.

Headers `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">`, so receivers can reuse standard Svix verification code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import httpx

log = logging.getLogger("i2v.webhooks")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = secret.removeprefix("whsec_").encode()
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


class WebhookSender:
    def __init__(self, client: httpx.AsyncClient, secret: str | None) -> None:
        self.client = client
        self.secret = secret

    async def deliver(
        self, url: str, event: str, payload: dict[str, Any], msg_id: str, *, wrap: bool = True
    ) -> tuple[bool, bool, str]:
        """One delivery try. `msg_id` stays the same across retries (receivers dedupe on it);
        `wrap`: the body is `{type, data}` (else the payload as is: a provider's callback shape).

        Returns (delivered, worth retrying, what happened): 2xx delivers; 5xx, 429 and
        transport errors are retried by the outbox; any other answer is final."""
        body = json.dumps({"type": event, "data": payload} if wrap else payload, separators=(",", ":")).encode()
        ts = int(time.time())
        headers = {"content-type": "application/json", "webhook-id": msg_id, "webhook-timestamp": str(ts)}
        if self.secret:
            headers["webhook-signature"] = sign(self.secret, msg_id, ts, body)
        try:
            resp = await self.client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return False, True, f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # the SSRF guard refusing the address, for one
            return False, False, f"{type(exc).__name__}: {exc}"
        if resp.is_success:
            return True, False, f"HTTP {resp.status_code}"
        retry = resp.status_code >= 500 or resp.status_code == 429
        if not retry:
            log.warning("webhook refused", extra={"url": url, "status": resp.status_code})
        return False, retry, f"HTTP {resp.status_code}"
