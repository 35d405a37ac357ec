"""Download links for finished videos: absolute, signed (HMAC-SHA256) and expiring, so a link
can be shared or put in a `<video>` tag without the API key, as a provider's result URL can.

The signature covers the video id and the expiry time. Expiry is rounded up to the next whole
`ttl` window, so every poll within a window returns the same link (caches and players keep
it), and a link stays valid between one and two `ttl`s, never past the video's own expiry.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path


def signing_key(configured: str | None, data_dir: Path) -> bytes:
    """The configured key, else one made once and kept in the data directory (one node; set
    `I2V_URL_SIGNING_KEY` where replicas share a database, so each accepts the others' links)."""
    if configured:
        return configured.encode()
    path = data_dir / "url_signing_key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: read theirs
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


class Links:
    def __init__(self, key: bytes, ttl_s: float, public_url: str | None = None) -> None:
        self._key = key
        self.ttl_s = max(1, int(ttl_s))
        self.public_url = public_url.rstrip("/") if public_url else None

    def signature(self, video_id: str, expires: int) -> str:
        return hmac.new(self._key, f"{video_id}:{expires}".encode(), hashlib.sha256).hexdigest()[:40]

    def verify(self, video_id: str, expires: str, signature: str, now: float) -> bool:
        if not expires.isdigit() or int(expires) <= now:
            return False
        return hmac.compare_digest(self.signature(video_id, int(expires)), signature)

    def content_url(self, video_id: str, now: float, *, base: str | None = None, until: float | None = None) -> str:
        """The signed link to a video's MP4; `base` is the address the caller reached us at
        (the configured public URL wins); `until`: the video's own expiry."""
        expires = (int(now) // self.ttl_s + 2) * self.ttl_s
        if until is not None:
            expires = min(expires, int(until))
        root = self.public_url or (base.rstrip("/") if base else "")
        sig = self.signature(video_id, expires)
        return f"{root}/v1/videos/{video_id}/content?expires={expires}&signature={sig}"
