"""OpenAI's video fields mean what they say: `size` decides the output, `seconds` takes the values
OpenAI clients send, and what a model cannot make exactly comes out as its nearest, with a warning."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import av
import openai
import pytest
from skimage import data

from tests.conftest import Gateway
from tests.support.images import data_uri, image_bytes
from tests.support.photos import jpeg

ROOT = Path(__file__).resolve().parents[3]
CAT = jpeg(data.chelsea())  # 451x300, about 3:2


@pytest.fixture
def sandbox(gateway_factory: Any) -> Gateway:
    return gateway_factory(
        sandbox=True,
        sandbox_task_s=0.3,
        sandbox_max_side=1280,
        rules_file=ROOT / "router_rules.yaml",
        adapters={},
    )


def create(gw: Gateway, **fields: Any) -> Any:
    return gw.client.post("/v1/videos", json={"prompt": "the cat blinks", "image": data_uri(CAT), **fields})


def clip_size(gw: Gateway, video_id: str) -> tuple[int, int]:
    with av.open(io.BytesIO(gw.client.get(f"/v1/videos/{video_id}/content").content)) as c:
        s = c.streams.video[0]
        return s.codec_context.width, s.codec_context.height


def test_size_decides_the_output_the_image_cropped_to_its_shape(sandbox: Gateway) -> None:
    resp = create(sandbox, model="wan-2.6-i2v", size="1280x720")
    assert resp.status_code == 202, resp.text
    assert resp.json()["size"] == "1280x720"
    assert any("centre-cropped" in w for w in resp.json()["warnings"])  # a 3:2 photo made 16:9
    done = sandbox.wait(resp.json()["id"], 60)
    assert done["status"] == "completed", done
    assert clip_size(sandbox, done["id"]) == (1280, 720)
    assert done["size"] == "1280x720" and (done["output"]["width"], done["output"]["height"]) == (1280, 720)


def test_a_size_the_model_does_not_make_comes_out_nearest_and_the_response_says_the_truth(sandbox: Gateway) -> None:
    # wan-2.6-i2v makes 720p and 1080p: 1000x600 (short side 600) becomes 720p at 5:3
    resp = create(sandbox, model="wan-2.6-i2v", size="1000x600")
    assert resp.status_code == 202, resp.text
    notes = [w for w in resp.json()["warnings"] if w.startswith("size: wan-2.6-i2v does not make 1000x600")]
    assert notes and "making 1200x720 (720p" in notes[0]
    done = sandbox.wait(resp.json()["id"], 60)
    made = clip_size(sandbox, done["id"])
    assert made[1] == 720 and abs(made[0] / made[1] - 1000 / 600) < 0.01
    assert done["size"] == f"{made[0]}x{made[1]}"  # what was made, not what was asked


def test_portrait_size_on_a_landscape_photo(sandbox: Gateway) -> None:
    done = sandbox.wait(create(sandbox, model="wan-2.6-i2v-flash", size="720x1280").json()["id"], 60)
    assert done["status"] == "completed", done
    assert clip_size(sandbox, done["id"]) == (720, 1280)


@pytest.mark.parametrize(
    ("fields", "param", "says"),
    [
        ({"size": "9999x9999"}, "size", "between 128 and 4096"),
        ({"size": "1280*720"}, "size", "WIDTHxHEIGHT"),
        ({"size": "4096x128"}, "size", "between 1:4 and 4:1"),
        ({"size": "1280x720", "resolution": "720p"}, "size", "not both"),
    ],
)
def test_bad_sizes_say_what_to_fix(sandbox: Gateway, fields: dict[str, Any], param: str, says: str) -> None:
    resp = create(sandbox, **fields)
    assert resp.status_code == 422, resp.text
    err = resp.json()["error"]
    assert err["param"] == param and says in err["message"], err


def test_a_size_that_would_crop_the_photo_to_a_sliver_is_refused(sandbox: Gateway) -> None:
    resp = create(sandbox, size="4096x1024", image=data_uri(image_bytes(200, 150)))
    assert resp.status_code == 422, resp.text
    assert "leaves 200x50" in resp.json()["error"]["message"]


@pytest.mark.parametrize(("asked", "made"), [("4", "5"), ("8", "10"), ("12", "10")])
def test_openai_seconds_map_to_the_models_nearest_length(sandbox: Gateway, asked: str, made: str) -> None:
    client = openai.OpenAI(base_url=f"{sandbox.url}/v1", api_key="unused", max_retries=0)
    video = client.videos.create(
        model="wan-2.6-i2v",
        prompt="the cat blinks",
        input_reference=("cat.jpg", CAT, "image/jpeg"),
        seconds=asked,  # type: ignore[arg-type]
    )
    assert video.seconds == made
    warnings = (video.model_extra or {})["warnings"]
    assert any(w.startswith(f"seconds: wan-2.6-i2v makes 5, 10, 15 s clips, not {asked} s") for w in warnings)
    done = client.videos.poll(video.id, poll_interval_ms=50)
    assert done.status == "completed"
    assert abs((done.model_extra or {})["output"]["duration_s"] - int(made)) < 0.5


def test_strict_duration_routes_only_to_models_that_make_that_length(sandbox: Gateway) -> None:
    refused = create(sandbox, model="wan-2.6-i2v", seconds=8, strict_duration=True)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "no_model_fits"
    assert "8 s not offered" in refused.json()["error"]["message"]
    six = create(sandbox, seconds=6, strict_duration=True)  # auto: only MiniMax's models make 6 s
    assert six.status_code == 202, six.text
    assert six.json()["model"].startswith(("hailuo", "video-01")) and six.json()["seconds"] == "6"
    assert not [w for w in six.json()["warnings"] if w.startswith("seconds:")]
