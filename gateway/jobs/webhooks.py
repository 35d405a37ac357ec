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
import uuid
from typing import Any

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

log = logging.getLogger("i2v.webhooks")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = secret.removeprefix("whsec_").encode()
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


class _Retryable(Exception):
    pass


class WebhookSender:
    def __init__(self, client: httpx.AsyncClient, secret: str | None, attempts: int = 5) -> None:
        self.client = client
        self.secret = secret
        self.attempts = attempts

    async def send(self, url: str, event: str, payload: dict[str, Any]) -> bool:
        body = json.dumps({"type": event, "data": payload}, separators=(",", ":")).encode()
        msg_id = f"msg_{uuid.uuid4().hex}"
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.attempts),
                wait=wait_exponential(multiplier=0.5, max=30),
                retry=retry_if_exception_type((_Retryable, httpx.TransportError)),
                reraise=True,
            ):
                with attempt:
                    ts = int(time.time())
                    headers = {"content-type": "application/json", "webhook-id": msg_id, "webhook-timestamp": str(ts)}
                    if self.secret:
                        headers["webhook-signature"] = sign(self.secret, msg_id, ts, body)
                    resp = await self.client.post(url, content=body, headers=headers)
                    if resp.status_code >= 500 or resp.status_code == 429:
                        raise _Retryable(f"HTTP {resp.status_code}")
                    if resp.status_code >= 300:
                        log.warning("webhook refused", extra={"url": url, "status": resp.status_code})
                        return False
            return True
        except Exception as exc:
            log.warning("webhook delivery failed", extra={"url": url, "error": str(exc)})
            return False
