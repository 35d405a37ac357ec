"""Drop-in compatibility, proved with a client nobody here wrote: the official `openai` SDK."""

from __future__ import annotations

import io

import av
import openai
import pytest

from tests.conftest import Gateway
from tests.support.images import image_bytes


@pytest.fixture
def client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused-without-keys", max_retries=0)


def test_create_poll_download_with_openai_sdk(client: openai.OpenAI) -> None:
    video = client.videos.create(
        model="toy-fast",
        prompt="the camera pushes in slowly",
        input_reference=("still.jpg", image_bytes(), "image/jpeg"),
        seconds="4",
        size="1280x720",
    )
    assert video.status == "queued" and video.id.startswith("vid_")
    assert video.size == "1280x720" and video.seconds == "4"
    done = client.videos.poll(video.id, poll_interval_ms=50)
    assert done.status == "completed"
    assert done.progress == 100
    assert done.model == "toy-fast"
    content = client.videos.download_content(done.id)
    data = content.read()
    with av.open(io.BytesIO(data)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
    # the gateway's extensions ride along as extra fields
    extra = done.model_extra or {}
    assert extra["output"]["bytes"] == len(data)
    assert extra["route"]["attempts"][0]["status"] == "completed"
    assert [v.id for v in client.videos.list()] == [done.id]
    deleted = client.videos.delete(done.id)
    assert deleted.deleted is True


def test_openai_sdk_sees_error_envelope(client: openai.OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as info:
        client.videos.create(model="sora-2", prompt="x", input_reference=("a.jpg", image_bytes(), "image/jpeg"))
    assert info.value.code == "unknown_model"
    assert info.value.param == "model"
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve("vid_missing")


def test_openai_sdk_with_api_key(gateway_factory) -> None:
    gw = gateway_factory(api_keys=["sk-gw-test"])
    bad = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.videos.list()
    good = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="sk-gw-test", max_retries=0)
    assert list(good.videos.list()) == []
