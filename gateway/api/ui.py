"""The human side of comparisons: a blind side-by-side page and the leaderboard page.

Plain HTML, CSS and a little JavaScript shipped inside the package and served by the gateway
(no CDN: the pages work offline); they call the same `/v1` API as any client.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from litestar import Response, get

from gateway.errors import not_found

_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css"}
_ASSETS = frozenset({"api.js", "compare.js", "leaderboard.js", "ui.css"})


@cache
def _file(name: str) -> bytes:
    return resources.files("gateway.api").joinpath("ui", name).read_bytes()


def _page(name: str) -> Response[bytes]:
    media_type = _TYPES[name[name.rindex(".") :]]
    return Response(_file(name), media_type=media_type, headers={"cache-control": "no-cache"})


@get("/ui/compare/{comparison_id:str}", include_in_schema=False)
async def compare_page(comparison_id: str) -> Response[bytes]:
    """The page loads the comparison itself (with the browser's key), so ownership holds there."""
    return _page("compare.html")


@get("/ui/leaderboard", include_in_schema=False)
async def leaderboard_page() -> Response[bytes]:
    return _page("leaderboard.html")


@get("/ui/assets/{name:str}", include_in_schema=False)
async def asset(name: str) -> Response[bytes]:
    if name not in _ASSETS:
        raise not_found("asset", name, "name")
    return _page(name)


UI_ROUTES = [compare_page, leaderboard_page, asset]
