"""Sandbox mode: every provider emulator on a loopback port, and the adapters pointed at them,
so the whole product runs with no keys. Videos are camera moves over the submitted image."""

from __future__ import annotations

import logging
import secrets

from adapters.emulators.common import EmulatorConfig
from adapters.emulators.kling import create_kling_emulator
from adapters.emulators.minimax import create_minimax_emulator
from adapters.emulators.wan import create_wan_emulator
from gateway.serving import ServerThread
from gateway.settings import AdapterSettings

log = logging.getLogger("i2v.sandbox")


class Sandbox:
    def __init__(self, config: EmulatorConfig | None = None) -> None:
        config = config or EmulatorConfig(queue_s=1.0, run_s=4.0)
        wan_key, mm_key = f"sk-sandbox-{secrets.token_hex(8)}", f"mm-sandbox-{secrets.token_hex(8)}"
        kling_ak, kling_sk = "ak-sandbox", secrets.token_hex(32)
        self.servers = {
            "wan": ServerThread(create_wan_emulator([wan_key], config.model_copy(deep=True))),
            "kling": ServerThread(create_kling_emulator({kling_ak: kling_sk}, config.model_copy(deep=True))),
            "minimax": ServerThread(create_minimax_emulator([mm_key], config.model_copy(deep=True))),
        }
        self.adapters = {
            "wan": AdapterSettings(base_url=self.servers["wan"].url, api_key=wan_key),
            "kling": AdapterSettings(base_url=self.servers["kling"].url, api_key=kling_ak, secret_key=kling_sk),
            "hailuo": AdapterSettings(base_url=self.servers["minimax"].url, api_key=mm_key),
            "live": AdapterSettings(base_url=self.servers["minimax"].url, api_key=mm_key),
        }

    def start(self) -> None:
        for name, server in self.servers.items():
            server.start()
            log.warning("SANDBOX MODE: %s emulator on %s", name, server.url)

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()
