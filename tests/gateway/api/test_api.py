"""The video API end to end over real HTTP: create, status, content, list, cancel, delete."""

from __future__ import annotations

import io
from typing import Any

import av
import pytest

from tests.conftest import Gateway
from tests.support.images import data_uri, image_bytes


def create(gw: Gateway, **fields: object) -> dict:
    body = {"prompt": "slow push in on the scene", "image": data_uri(image_bytes()), **fields}
    resp = gw.client.post("/v1/videos", json=body)
    assert resp.status_code == 202, resp.text
    return resp.json()


def test_create_returns_queued_video_object(gateway: Gateway) -> None:
    video = create(gateway, model="toy-fast", seconds="4", metadata={"user": "u1"})
    assert video["object"] == "video"
    assert video["id"].startswith("vid_")
    assert video["status"] == "queued"
    assert video["requested_model"] == "toy-fast"
    assert video["model"] == "toy-fast"
    assert video["seconds"] == "4"
    assert video["size"] == "640x480"  # 480p (first resolution) at the 4:3 image aspect
    assert video["route"]["candidates"] == ["toy-fast", "toy-backup"]
    assert video["metadata"] == {"user": "u1"}


def test_job_completes_with_facts_read_back_from_the_file(gateway: Gateway) -> None:
    video = gateway.wait(create(gateway, resolution="720p", seconds=2)["id"])
    assert video["status"] == "completed", video
    assert video["progress"] == 100
    out = video["output"]
    content = gateway.client.get(out["url"])
    assert content.status_code == 200
    assert content.headers["content-type"] == "video/mp4"
    assert len(content.content) == out["bytes"]
    with av.open(io.BytesIO(content.content)) as c:
        s = c.streams.video[0]
        assert (s.codec_context.width, s.codec_context.height) == (out["width"], out["height"])
        assert s.codec_context.name == "h264" == out["codec"]
        assert sum(1 for _ in c.demux(s) if _.size) == out["frames"] == 8
    assert out["duration_s"] == 1.0 and out["fps"] == 8.0
    m = video["metrics"]
    assert m["cost_usd"] == 0.04  # 2 s x $0.02/s at 720p, from the catalog
    assert m["cost_estimated"] is True
    assert m["video_seconds"] == 1.0
    assert m["total_s"] >= m["run_s"] > 0 and m["queue_s"] >= 0
    assert m["gateway_overhead_ms"] > 0 and m["fetch_s"] > 0
    assert m["provider"]["seconds"] == 2
    attempts = video["route"]["attempts"]
    assert [a["status"] for a in attempts] == ["completed"]
    assert attempts[0]["provider_task_id"].startswith("toy-")


def test_content_supports_http_range(gateway: Gateway) -> None:
    video = gateway.wait(create(gateway)["id"])
    url = video["output"]["url"]
    full = gateway.client.get(url).content
    part = gateway.client.get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206
    assert part.content == full[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(full)}"
    tail = gateway.client.get(url, headers={"Range": "bytes=-5"})
    assert tail.content == full[-5:]
    bad = gateway.client.get(url, headers={"Range": f"bytes={len(full) + 5}-"})
    assert bad.status_code == 416
    assert bad.json()["error"]["code"] == "invalid_range"


def test_content_over_chunk_size_is_streamed_in_chunks_and_ranges_still_hold(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Content up to CHUNK bytes is read whole, more is streamed: with CHUNK at 100 bytes the same
    clip goes through the streamed path whole and through the read-whole path as a short range."""
    from gateway.api import videos

    video = gateway.wait(create(gateway)["id"])
    url = video["output"]["url"]
    whole = gateway.client.get(url).content  # read whole: the clip is under the real CHUNK
    streamed: list[int] = []
    chunks = videos._chunks

    async def counted(path: Any, start: int, end: int) -> Any:
        async for piece in chunks(path, start, end):
            streamed.append(len(piece))
            yield piece

    monkeypatch.setattr(videos, "CHUNK", 100)
    monkeypatch.setattr(videos, "_chunks", counted)
    assert len(whole) > 400 and gateway.client.get(url).content == whole
    assert sum(streamed) == len(whole) and max(streamed) == 100
    ranged = gateway.client.get(url, headers={"Range": "bytes=150-349"})  # 200 bytes: streamed too
    assert ranged.status_code == 206 and ranged.content == whole[150:350]
    assert ranged.headers["content-length"] == "200" and sum(streamed) == len(whole) + 200
    short = gateway.client.get(url, headers={"Range": "bytes=5-54"})  # 50 bytes: read whole
    assert short.status_code == 206 and short.content == whole[5:55]
    assert short.headers["content-range"] == f"bytes 5-54/{len(whole)}" and sum(streamed) == len(whole) + 200


def test_content_before_completion_is_409(gateway: Gateway) -> None:
    video = create(gateway, prompt="[slow] waves")
    resp = gateway.client.get(f"/v1/videos/{video['id']}/content")
    assert resp.status_code == 409
    assert resp.json()["error"]["code"] == "video_not_ready"
    gateway.client.post(f"/v1/videos/{video['id']}/cancel")


def test_multipart_upload_like_openai_clients(gateway: Gateway) -> None:
    resp = gateway.client.post(
        "/v1/videos",
        data={"prompt": "pan left", "model": "toy-backup", "seconds": "8", "size": "1920x1080"},
        files={"input_reference": ("still.png", image_bytes(fmt="PNG"), "image/png")},
    )
    assert resp.status_code == 202, resp.text
    video = resp.json()
    assert video["size"] == "1920x1080" and video["seconds"] == "8"
    assert gateway.wait(video["id"])["status"] == "completed"


def test_list_paginates_and_filters(gateway: Gateway) -> None:
    ids = [create(gateway, model=m)["id"] for m in ("toy-fast", "toy-backup", "toy-fast")]
    page1 = gateway.client.get("/v1/videos", params={"limit": 2}).json()
    assert page1["object"] == "list" and page1["has_more"] is True
    assert [v["id"] for v in page1["data"]] == ids[::-1][:2]
    page2 = gateway.client.get("/v1/videos", params={"limit": 2, "after": page1["last_id"]}).json()
    assert [v["id"] for v in page2["data"]] == [ids[0]] and page2["has_more"] is False
    backup = gateway.client.get("/v1/videos", params={"model": "toy-backup"}).json()["data"]
    assert [v["id"] for v in backup] == [ids[1]]
    for i in ids:
        gateway.wait(i)
    done = gateway.client.get("/v1/videos", params={"status": "completed", "order": "asc"}).json()["data"]
    assert [v["id"] for v in done] == ids


def test_cancel_running_job_cancels_at_provider(gateway: Gateway, toy_url: str) -> None:
    from tests.conftest import toy_stats

    video = create(gateway, prompt="[slow] clouds drift")
    # wait until the provider has the task
    for _ in range(200):
        v = gateway.client.get(f"/v1/videos/{video['id']}").json()
        if v["route"]["attempts"] and v["route"]["attempts"][0]["provider_task_id"]:
            break
    before = toy_stats(toy_url)["cancels"]
    resp = gateway.client.post(f"/v1/videos/{video['id']}/cancel")
    assert resp.status_code == 200
    final = gateway.wait(video["id"])
    assert final["status"] == "cancelled"
    assert final["error"]["code"] == "cancelled"
    assert toy_stats(toy_url)["cancels"] == before + 1
    again = gateway.client.post(f"/v1/videos/{video['id']}/cancel")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "video_already_finished"


def test_delete_removes_job_and_file(gateway: Gateway) -> None:
    video = gateway.wait(create(gateway)["id"])
    path = gateway.settings.resolved_blob_dir / video["output"]["sha256"][:2] / video["output"]["sha256"]
    assert path.is_file()
    resp = gateway.client.delete(f"/v1/videos/{video['id']}")
    assert resp.json() == {"id": video["id"], "object": "video.deleted", "deleted": True}
    assert not path.exists()
    assert gateway.client.get(f"/v1/videos/{video['id']}").status_code == 404


def test_delete_of_running_job_is_409(gateway: Gateway) -> None:
    video = create(gateway, prompt="[slow] leaves fall")
    resp = gateway.client.delete(f"/v1/videos/{video['id']}")
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "video_in_progress"
    gateway.client.post(f"/v1/videos/{video['id']}/cancel")


def test_models_health_metrics_and_docs(gateway: Gateway) -> None:
    models = {m["id"]: m for m in gateway.client.get("/v1/models").json()["data"]}
    assert models["toy-fast"]["available"] is True
    assert models["elsewhere"]["available"] is False
    assert models["toy-fast"]["usd_per_second"] == {"480p": 0.01, "720p": 0.02}
    assert gateway.client.get("/healthz").json() == {"status": "ok"}
    ready = gateway.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"runner": True, "database": True}
    vid = gateway.wait(create(gateway)["id"])["id"]
    text = gateway.client.get("/metrics").text
    assert 'i2v_jobs_finished_total{adapter="toy",error_code="",model="toy-fast",status="completed"} 1.0' in text
    assert 'i2v_http_requests_total{method="POST",route="/v1/videos",status="202"}' in text
    assert "i2v_job_total_seconds_bucket" in text
    assert 'i2v_cost_usd_total{model="toy-fast"}' in text

    def statements(text: str) -> dict[str, float]:
        return {
            line.split('"')[1]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("i2v_db_statements_total{")
        }

    counted = statements(text)
    assert counted["insert"] >= 2 and counted["update"] >= 1 and counted["select"] >= 1  # job, attempt, claim
    for _ in range(5):  # status reads run inline on SQLite, and still count
        assert gateway.client.get(f"/v1/videos/{vid}").status_code == 200
    assert statements(gateway.client.get("/metrics").text)["select"] >= counted["select"] + 5
    spec = gateway.client.get("/docs/openapi.json").json()
    assert "/v1/videos/{video_id}" in spec["paths"]
    assert gateway.client.get("/docs/swagger").status_code == 200


async def test_content_is_streamed_in_chunks_that_add_up_to_the_range(tmp_path) -> None:
    import os

    from gateway.api.videos import CHUNK, _chunks

    data = os.urandom(3 * CHUNK + 123)
    path = tmp_path / "big.mp4"
    path.write_bytes(data)
    parts = [p async for p in _chunks(path, 0, len(data) - 1)]
    assert len(parts) == 4 and max(len(p) for p in parts) == CHUNK and b"".join(parts) == data
    middle = b"".join([p async for p in _chunks(path, CHUNK - 5, 2 * CHUNK + 7)])
    assert middle == data[CHUNK - 5 : 2 * CHUNK + 8]


def test_metrics_answer_head_and_carry_breaker_and_queue_gauges_without_created_series(gateway: Gateway) -> None:
    assert gateway.client.head("/metrics").status_code == 200
    create(gateway, prompt="[slow] pan")
    text = gateway.client.get("/metrics").text
    assert 'i2v_breaker_state{adapter="toy"} 0.0' in text
    assert "i2v_jobs_queued " in text
    assert "_created" not in text.replace("i2v_jobs_created_total", "")


def test_remix_extend_and_edit_say_what_is_supported(gateway: Gateway) -> None:
    video = create(gateway)
    for verb in ("remix", "extend", "edit"):
        resp = gateway.client.post(f"/v1/videos/{video['id']}/{verb}", json={"prompt": "more"})
        assert resp.status_code == 400, resp.text
        err = resp.json()["error"]
        assert err["code"] == "unsupported_operation" and "POST /v1/videos" in err["message"] and verb in err["message"]
    assert gateway.client.post("/v1/videos/vid_nope/remix", json={}).status_code == 404
