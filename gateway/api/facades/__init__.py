"""Provider-native front doors: a program written for DashScope's video-synthesis API, Kling's
image2video API, MiniMax's video_generation API or OpenRouter's video API changes only its base
URL to the gateway. Each façade translates the provider's request into the gateway's own create
request (so the rules, fallbacks, durability and metrics all apply), and renders the job back in
the provider's task shape, errors included."""

from __future__ import annotations

from litestar import Router

from gateway.api.facades.dashscope import dashscope_router
from gateway.api.facades.kling import kling_router
from gateway.api.facades.minimax import minimax_router
from gateway.api.facades.openrouter import openrouter_router


def facade_routers() -> list[Router]:
    return [dashscope_router(), kling_router(), minimax_router(), openrouter_router()]
