"""Bring a finished result home: download (or take) the MP4, probe it, store it by hash.

Also the gateway's one edit to a clip, the seamless loop for models that cannot loop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from adapters.base import ProviderError, VideoSource
from gateway.storage.blobs import BlobStore
from media import NotAVideo, VideoFacts, make_loop, probe


async def store_video(source: VideoSource, blobs: BlobStore, client: httpx.AsyncClient, max_bytes: int) -> VideoFacts:
    """Download (or take) the MP4, store it content-addressed, and probe what was stored.

    A result that is not a readable video is a provider error, so the runner can fall back.
    """
    tmp = blobs.temp_path()
    try:
        if source.content is not None:
            tmp.write_bytes(source.content)
        elif source.url:
            await _download(source, tmp, client, max_bytes)
        else:
            raise ProviderError("provider_error", "the provider reported success but gave no video", retryable=False)
        try:
            return await asyncio.to_thread(_probe_and_put, tmp, blobs)
        except NotAVideo as exc:
            # the bytes arrived whole and are not a video: fetching them again would not help
            msg = f"the provider's result is not a video: {exc}"
            raise ProviderError("provider_error", msg, retryable=False) from exc
    finally:
        tmp.unlink(missing_ok=True)


def _probe_and_put(tmp: Path, blobs: BlobStore) -> VideoFacts:
    """Probe the file, then store it under the hash the probe read: one trip to a worker thread
    and one pass of hashing."""
    facts = probe(tmp)
    blobs.put_file(tmp, facts.sha256)
    return facts


async def _download(source: VideoSource, dest: Any, client: httpx.AsyncClient, max_bytes: int) -> None:
    assert source.url is not None
    try:
        async with client.stream("GET", source.url, headers=source.headers) as resp:
            if resp.status_code in (403, 404, 410):
                raise ProviderError(
                    "provider_error",
                    f"the result URL answered HTTP {resp.status_code} (expired or missing)",
                    http_status=resp.status_code,
                    retryable=True,
                )
            if resp.status_code >= 400:
                raise ProviderError(
                    "provider_unavailable",
                    f"downloading the result gave HTTP {resp.status_code}",
                    http_status=resp.status_code,
                )
            size = 0
            with dest.open("wb") as f:
                async for chunk in resp.aiter_bytes(1 << 16):
                    size += len(chunk)
                    if size > max_bytes:
                        msg = "the result is larger than max_video_bytes"
                        raise ProviderError("provider_error", msg, retryable=False)
                    f.write(chunk)
    except httpx.TimeoutException as exc:
        raise ProviderError("timeout", "downloading the result timed out") from exc
    except httpx.TransportError as exc:
        raise ProviderError("provider_unavailable", f"downloading the result failed: {exc}") from exc


def loop_clip(facts: VideoFacts, blobs: BlobStore) -> VideoFacts:
    """The model cannot loop: store the clip as a seamless loop (crossfade) and probe that."""
    looped = make_loop(blobs.path(facts.sha256))
    tmp = blobs.temp_path()
    try:
        tmp.write_bytes(looped)
        new = _probe_and_put(tmp, blobs)
    finally:
        tmp.unlink(missing_ok=True)
    return new
