"""Run an ASGI app with uvicorn in a background thread (the sandbox's emulators, tests, the CLI's
in-process gateway)."""

from __future__ import annotations

import random
import socket
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

#: Idle keep-alive of the servers started here (the emulators stand in for providers, whose
#: servers keep idle connections far longer than uvicorn's 5 s; at 5 s a client's pool, httpx's
#: also 5 s, races the server's close and a reused connection fails with a reset). The same
#: figure is `Settings.keep_alive_s`'s default (`serve`, `worker`): the kernel's modules do not
#: import each other, and a test holds the two equal.
KEEP_ALIVE_S = 75


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out by itself (to `bind(0)` and outgoing connections)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A free loopback port for a server that another process binds later.

    Drawn below the kernel's ephemeral range: a port from `bind(0)` lies inside it, so any
    outgoing connection or `bind(0)` on the machine (gloo's ranks, other tests) could take it
    before the server binds; the kernel hands out no port below that range by itself.
    """
    low = _ephemeral_low()
    if low > 11000:
        for _ in range(200):
            port = random.randrange(10000, low)
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """`start()` returns once the server accepts connections; `stop()` shuts it down."""

    def __init__(
        self, app: Any, port: int | None = None, host: str = "127.0.0.1", keep_alive_s: int = KEEP_ALIVE_S
    ) -> None:
        # Bind here and hand uvicorn the socket: picking a free port and binding it later races
        # with any other process doing the same (two pytest-xdist workers did).
        self.socket = socket.socket()
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, port or 0))
        self.port = int(self.socket.getsockname()[1])
        self.url = f"http://{host}:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=host,
                port=self.port,
                log_config=None,
                log_level="warning",
                access_log=False,
                lifespan="on",
                timeout_keep_alive=keep_alive_s,
            )
        )
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def start(self, timeout_s: float = 30) -> str:
        self.thread.start()
        deadline = time.time() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.time() > deadline:
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.02)
        return self.url

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        self.socket.close()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
