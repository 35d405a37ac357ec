"""Download links are absolute and signed: they work without the API key until they expire, and
only for the video they were made for."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from gateway.jobs.links import Links, signing_key
from tests.conftest import Gateway
from tests.support.images import data_uri, image_bytes

KEY = "sk-gw-links"


def finished(gw: Gateway, **headers: str) -> dict[str, Any]:
    body = {"prompt": "slow push in", "image": data_uri(image_bytes()), "model": "toy-fast"}
    video = gw.client.post("/v1/videos", json=body, headers=headers).json()
    done = gw.wait(video["id"])
    assert done["status"] == "completed", done
    return gw.client.get(f"/v1/videos/{video['id']}", headers=headers).json()


def test_the_output_url_is_absolute_and_works_without_the_key(gateway_factory: Any) -> None:
    gw = gateway_factory(api_keys=[KEY])
    gw.client.headers["authorization"] = f"Bearer {KEY}"
    video = finished(gw)
    url = video["output"]["url"]
    assert url.startswith(f"{gw.url}/v1/videos/{video['id']}/content?expires=")
    anonymous = httpx.get(url)  # no Authorization header at all
    assert anonymous.status_code == 200 and len(anonymous.content) == video["output"]["bytes"]
    assert anonymous.headers["content-type"] == "video/mp4"
    ranged = httpx.get(url, headers={"Range": "bytes=0-9"})
    assert ranged.status_code == 206 and ranged.content == anonymous.content[:10]
    # polling again gives the same link (players and caches keep it)
    assert gw.client.get(f"/v1/videos/{video['id']}").json()["output"]["url"] == url
    # without the signature the key is needed
    bare = url.split("?")[0]
    assert httpx.get(bare).status_code == 401


def test_a_tampered_expired_or_borrowed_signature_is_refused(gateway_factory: Any) -> None:
    gw = gateway_factory(api_keys=[KEY])
    gw.client.headers["authorization"] = f"Bearer {KEY}"
    one, two = finished(gw), finished(gw)
    q = parse_qs(urlsplit(one["output"]["url"]).query)
    expires, sig = q["expires"][0], q["signature"][0]
    for query in (
        f"expires={expires}&signature={sig[:-1]}{'0' if sig[-1] != '0' else '1'}",  # one character changed
        f"expires={int(expires) + 3600}&signature={sig}",  # a later expiry, same signature
        f"expires=1000&signature={sig}",  # long past
    ):
        resp = httpx.get(f"{gw.url}/v1/videos/{one['id']}/content?{query}")
        assert resp.status_code == 403, query
        assert resp.json()["error"]["code"] == "link_expired"
        assert f"GET /v1/videos/{one['id']}" in resp.json()["error"]["message"]
    borrowed = httpx.get(f"{gw.url}/v1/videos/{two['id']}/content?expires={expires}&signature={sig}")
    assert borrowed.status_code == 403


def test_links_follow_the_public_url_or_the_proxy_headers(gateway_factory: Any) -> None:
    plain = gateway_factory()
    forwarded = finished(plain, **{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "video.example.com"})
    assert forwarded["output"]["url"].startswith("https://video.example.com/v1/videos/")
    rfc = finished(plain, Forwarded='for=10.0.0.1;proto=https;host="cdn.example.org"', **{"X-Forwarded-Prefix": "/gw"})
    assert rfc["output"]["url"].startswith("https://cdn.example.org/gw/v1/videos/")
    configured = gateway_factory(public_url="https://api.example.net/")
    video = finished(configured, **{"X-Forwarded-Host": "ignored.example.com"})
    assert video["output"]["url"].startswith("https://api.example.net/v1/videos/")


def test_a_link_lasts_one_to_two_ttls_and_never_past_the_video(tmp_path: Any) -> None:
    key = signing_key(None, tmp_path)
    assert signing_key(None, tmp_path) == key and len(key) == 64  # made once, then read back
    assert (tmp_path / "url_signing_key").stat().st_mode & 0o777 == 0o600
    links = Links(key, ttl_s=100)
    early, late = links.content_url("vid_a", 1000.0), links.content_url("vid_a", 1099.0)
    assert early == late  # one link per window
    expires = int(parse_qs(urlsplit(early).query)["expires"][0])
    assert expires == 1200
    sig = parse_qs(urlsplit(early).query)["signature"][0]
    assert links.verify("vid_a", str(expires), sig, now=1199.0)
    assert not links.verify("vid_a", str(expires), sig, now=1200.0)
    capped = links.content_url("vid_a", 1000.0, until=1050.0)
    assert parse_qs(urlsplit(capped).query)["expires"] == ["1050"]
    assert Links(b"other-key", ttl_s=100).content_url("vid_a", 1000.0) != early
