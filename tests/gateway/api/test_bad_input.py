"""Bad input gets a 4xx in the error envelope that names the field and says what to fix."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from tests.conftest import Gateway
from tests.support.images import data_uri, image_bytes


def post(gw: Gateway, **body: object) -> tuple[int, dict]:
    resp = gw.client.post("/v1/videos", json=body)
    return resp.status_code, resp.json()


def assert_error(status_body: tuple[int, dict], status: int, code: str, param: str | None) -> str:
    got_status, body = status_body
    assert got_status == status, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["code"] == code
    assert err["param"] == param
    assert err["type"] == "invalid_request_error" or status >= 401
    return err["message"]


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (1-bit, zeros compress to almost nothing)."""
    raw = zlib.compress(b"\x00" * (1 + (width + 7) // 8) * 16)  # only a few rows: header is what counts

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def test_missing_image(gateway: Gateway) -> None:
    msg = assert_error(post(gateway, prompt="pan"), 422, "missing_image", "image")
    assert "input_reference" in msg and "data URI" in msg


def test_missing_prompt(gateway: Gateway) -> None:
    assert_error(post(gateway, image=data_uri(image_bytes())), 422, "missing_field", "prompt")


def test_undecodable_image(gateway: Gateway) -> None:
    msg = assert_error(
        post(gateway, prompt="pan", image=data_uri(b"\x00garbage" * 50)), 415, "unsupported_image", "image"
    )
    assert "JPEG, PNG or WebP" in msg


def test_bad_base64(gateway: Gateway) -> None:
    assert_error(post(gateway, prompt="pan", image="data:image/png;base64,@@@notbase64"), 422, "invalid_image", "image")


def test_unsupported_format(gateway: Gateway) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (200, 200)).save(buf, format="GIF")
    msg = assert_error(
        post(gateway, prompt="pan", image=data_uri(buf.getvalue(), "image/gif")), 415, "unsupported_image", "image"
    )
    assert "GIF" in msg


def test_truncated_image(gateway: Gateway) -> None:
    data = image_bytes(640, 480)
    assert_error(post(gateway, prompt="pan", image=data_uri(data[: len(data) // 2])), 422, "invalid_image", "image")


def test_image_too_small(gateway: Gateway) -> None:
    assert_error(post(gateway, prompt="pan", image=data_uri(image_bytes(40, 40))), 422, "image_too_small", "image")


def test_over_byte_limit(gateway_factory) -> None:
    gw = gateway_factory(max_image_bytes=50_000)
    over = image_bytes(160, 160, fmt="PNG", noise=True)  # over the image limit, under the body limit
    assert 50_000 < len(over) < 90_000
    msg = assert_error(post(gw, prompt="pan", image=data_uri(over, "image/png")), 413, "image_too_large", "image")
    assert "MB limit" in msg
    resp = gw.client.post("/v1/videos", data={"prompt": "pan"}, files={"input_reference": ("a.png", over)})
    assert resp.status_code == 413 and resp.json()["error"]["param"] == "input_reference"
    huge = image_bytes(400, 400, fmt="PNG", noise=True)  # trips the request body limit itself
    assert_error(post(gw, prompt="pan", image=data_uri(huge, "image/png")), 413, "image_too_large", "image")


@pytest.mark.parametrize("side", [8000, 100_000])
def test_decompression_bomb_refused_before_decode(gateway: Gateway, side: int) -> None:
    bomb = bomb_png(side, side)
    assert len(bomb) < 20_000  # small on the wire, enormous when decoded
    msg = assert_error(post(gateway, prompt="pan", image=data_uri(bomb, "image/png")), 413, "image_too_large", "image")
    assert "limit is 40 MP" in msg


def test_prompt_too_long(gateway: Gateway) -> None:
    msg = assert_error(
        post(gateway, prompt="x" * 2501, image=data_uri(image_bytes())), 422, "prompt_too_long", "prompt"
    )
    assert "2501" in msg and "2500" in msg


def test_unknown_model_lists_choices(gateway: Gateway) -> None:
    msg = assert_error(
        post(gateway, prompt="pan", model="sora-9", image=data_uri(image_bytes())), 422, "unknown_model", "model"
    )
    assert "toy-fast" in msg and "/v1/models" in msg


def test_duration_no_model_can_give(gateway: Gateway) -> None:
    msg = assert_error(
        post(gateway, prompt="pan", seconds=7, strict_duration=True, image=data_uri(image_bytes())),
        422,
        "no_model_fits",
        "seconds",
    )
    assert "7 s not offered" in msg


def test_resolution_no_model_can_give(gateway: Gateway) -> None:
    msg = assert_error(
        post(gateway, prompt="pan", model="toy-unpriced", resolution="720p", image=data_uri(image_bytes())),
        422,
        "no_model_fits",
        "resolution",
    )
    assert "720p not offered" in msg


def test_explicit_model_that_cannot_serve_moves_to_its_fallback_with_a_warning(gateway: Gateway) -> None:
    resp = gateway.client.post(
        "/v1/videos",
        json={"prompt": "pan", "model": "toy-fast", "resolution": "1080p", "image": data_uri(image_bytes())},
    )
    assert resp.status_code == 202
    video = resp.json()
    assert video["model"] == "toy-backup" and video["requested_model"] == "toy-fast"
    assert video["route"]["candidates"] == ["toy-backup"]
    assert any("toy-fast cannot serve" in w and "1080p not offered" in w for w in video["warnings"])


def test_budget_no_model_can_meet(gateway: Gateway) -> None:
    msg = assert_error(
        post(gateway, prompt="pan", max_cost_usd=0.001, image=data_uri(image_bytes())),
        422,
        "no_model_fits",
        "max_cost_usd",
    )
    assert "over max_cost_usd" in msg


def test_model_whose_backend_is_not_configured(gateway: Gateway) -> None:
    status, body = post(gateway, prompt="pan", model="elsewhere", image=data_uri(image_bytes()))
    assert status == 503 and body["error"]["code"] == "no_backend_configured"


def test_unknown_field_and_bad_values(gateway: Gateway) -> None:
    img = data_uri(image_bytes())
    assert_error(post(gateway, prompt="pan", image=img, secnds=5), 422, "unknown_field", "secnds")
    assert_error(post(gateway, prompt="pan", image=img, size="big"), 422, "invalid_field", "size")
    assert_error(post(gateway, prompt="pan", image=img, seconds="five"), 422, "invalid_field", "seconds")
    assert_error(post(gateway, prompt="pan", image=img, tier="gold"), 422, "invalid_field", "tier")
    assert_error(post(gateway, prompt="pan", image=img, camera={"type": "warp"}), 422, "invalid_field", "camera.type")


def test_invalid_json_body(gateway: Gateway) -> None:
    resp = gateway.client.post("/v1/videos", content=b"{not json", headers={"content-type": "application/json"})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_json"


def test_unknown_job_is_404(gateway: Gateway) -> None:
    for method, path in [
        ("GET", "/v1/videos/vid_nope"),
        ("GET", "/v1/videos/vid_nope/content"),
        ("POST", "/v1/videos/vid_nope/cancel"),
        ("DELETE", "/v1/videos/vid_nope"),
    ]:
        resp = gateway.client.request(method, path)
        assert resp.status_code == 404, path
        assert resp.json()["error"] == {
            "message": "No video with id 'vid_nope'.",
            "type": "not_found_error",
            "param": "video_id",
            "code": "video_not_found",
        }


def test_unknown_route_uses_envelope(gateway: Gateway) -> None:
    resp = gateway.client.get("/v1/nothing")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"


def test_auth_when_keys_configured(gateway_factory) -> None:
    gw = gateway_factory(api_keys=["k-alice", "k-bob"])
    img = data_uri(image_bytes())
    resp = gw.client.post("/v1/videos", json={"prompt": "pan", "image": img})
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "invalid_api_key"
    alice = {"Authorization": "Bearer k-alice"}
    video = gw.client.post("/v1/videos", json={"prompt": "pan", "image": img}, headers=alice).json()
    assert gw.client.get(f"/v1/videos/{video['id']}", headers=alice).status_code == 200
    bob = {"Authorization": "Bearer k-bob"}
    assert gw.client.get(f"/v1/videos/{video['id']}", headers=bob).status_code == 404
    assert gw.client.get("/v1/videos", headers=bob).json()["data"] == []
    assert gw.client.get("/healthz").status_code == 200  # probes need no key


# --- inputs that used to answer 500 (issue 14) -----------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "param", "says"),
    [
        ({"aspect_ratio": "16:0"}, "aspect_ratio", "at least 1"),
        ({"resolution": "999p"}, "resolution", "480p, 512p"),
        ({"size": "9999x9999"}, "size", "between 128 and 4096"),
        ({"seconds": 99}, "seconds", "use at most 60"),
        ({"prompt": "pan\x00left"}, "prompt", "NUL character"),
        ({"metadata": {"team": "a\x00b"}}, "metadata.team", "NUL character"),
        ({"parameters": {"cfg": {"deep": float("nan")}}}, "parameters.cfg.deep", "finite number"),
        ({"max_cost_usd": float("inf")}, "max_cost_usd", "finite number"),
    ],
)
@pytest.mark.parametrize("path", ["/v1/videos", "/v1/route/explain"])
def test_values_no_database_or_router_can_take_are_refused_by_name(
    gateway: Gateway, path: str, fields: dict, param: str, says: str
) -> None:
    import json

    body = json.dumps({"prompt": "pan", "image": data_uri(image_bytes()), **fields}, allow_nan=True)
    resp = gateway.client.post(path, content=body, headers={"content-type": "application/json"})
    assert resp.status_code in (400, 422), resp.text
    err = resp.json()["error"]
    if resp.status_code == 400:  # NaN/Infinity are not JSON: refused by the parser
        assert err["code"] == "invalid_json" and ("NaN" in err["message"] or "Infinity" in err["message"])
    else:
        assert (err["code"], err["param"]) == ("invalid_field", param) and says in err["message"], err


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nests too deeply"),
        (b'{"prompt": "\xff\xfe"}', "not valid UTF-8"),
        (b'{"seed": 1' + b"0" * 5000 + b"}", "JSON cannot carry"),
        (b'{"max_cost_usd": Infinity}', "Infinity"),
    ],
)
def test_json_that_fails_to_decode_for_any_reason_is_a_400(gateway: Gateway, raw: bytes, says: str) -> None:
    resp = gateway.client.post("/v1/videos", content=raw, headers={"content-type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == "invalid_json" and says in resp.json()["error"]["message"]


def test_a_json_form_field_that_nests_too_deeply_is_a_422(gateway: Gateway) -> None:
    resp = gateway.client.post(
        "/v1/videos",
        data={"prompt": "pan", "camera": "[" * 10_000 + "]" * 10_000},
        files={"input_reference": ("a.jpg", image_bytes(), "image/jpeg")},
    )
    assert resp.status_code == 422 and resp.json()["error"]["param"] == "camera"


@pytest.mark.parametrize("key", ["k" * 256, "caf\u00e9", "tab\there"])
def test_an_idempotency_key_a_database_cannot_index_is_refused(gateway: Gateway, key: str) -> None:
    resp = gateway.client.post(
        "/v1/videos",
        json={"prompt": "pan", "image": data_uri(image_bytes())},
        headers={"idempotency-key": key.encode("utf-8")},
    )
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "invalid_idempotency_key"
    assert (
        gateway.client.post(
            "/v1/videos",
            json={"prompt": "pan", "image": data_uri(image_bytes())},
            headers={"idempotency-key": "k" * 255},
        ).status_code
        == 202
    )


@pytest.mark.parametrize(
    ("parameters", "status", "says"),
    [
        ({"style": "noir"}, 202, None),
        ({"duration": 99}, 422, "set by the gateway"),
        ({"external_task_id": "mine", "callback_url": "https://x"}, 422, "are set by the gateway"),
        ({"colour": "red"}, 422, "toy: style"),
    ],
)
def test_parameters_pass_only_what_the_backend_takes_and_never_what_the_gateway_owns(
    gateway: Gateway, parameters: dict, status: int, says: str | None
) -> None:
    resp = gateway.client.post(
        "/v1/videos", json={"prompt": "pan", "image": data_uri(image_bytes()), "parameters": parameters}
    )
    assert resp.status_code == status, resp.text
    if says:
        err = resp.json()["error"]
        assert err["code"] == "unknown_parameter" and says in err["message"]
        assert err["param"] == f"parameters.{sorted(parameters)[0]}"


def test_a_form_field_that_is_not_utf8_is_a_400(gateway: Gateway) -> None:
    body = b'--b\r\nContent-Disposition: form-data; name="prompt"\r\n\r\n\x97\xff\r\n--b--\r\n'
    resp = gateway.client.post("/v1/videos", content=body, headers={"content-type": "multipart/form-data; boundary=b"})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_form"


@pytest.mark.parametrize("url", ["/v1/videos/vid%00x", "/v1/videos?after=%00", "/v1/comparisons?after=a%00"])
def test_a_url_with_a_nul_character_is_a_400(gateway: Gateway, url: str) -> None:
    resp = gateway.client.get(url)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_url"
