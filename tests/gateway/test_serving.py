import socket

from gateway.serving import _ephemeral_low, free_port


def test_a_free_port_lies_below_the_range_the_kernel_hands_out_and_binds() -> None:
    """A port from `bind(0)` can be taken by any outgoing connection before the server that was
    promised it binds (a CI run lost torchrun's worker that way); one below the range cannot."""
    low = _ephemeral_low()
    ports = {free_port() for _ in range(20)}
    assert all(10000 <= p < low for p in ports)
    assert len(ports) > 1  # drawn, not one fixed port that two callers would share
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports.pop()))


def test_a_connection_idle_past_uvicorns_default_keep_alive_still_carries_the_next_request() -> None:
    """The emulators stand in for providers, which keep idle connections open far longer than
    uvicorn's 5 s: at 5 s the server's close races a client pool's reuse (httpx's idle limit is
    also 5 s) and the reused connection fails with a reset. Ours stays open past 5 s."""
    import time

    from litestar import Litestar, get

    from gateway.serving import KEEP_ALIVE_S, ServerThread

    @get("/ping", sync_to_thread=False)
    def ping() -> str:
        return "pong"

    server = ServerThread(Litestar([ping]))
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            request = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"
            s.sendall(request)
            assert _answer(s).endswith(b"pong")
            time.sleep(5.5)
            s.sendall(request)
            assert _answer(s).endswith(b"pong")  # a closed connection reads b"" or resets
    finally:
        server.stop()
    assert KEEP_ALIVE_S > 60  # longer than the load balancers' and clients' idle limits too


def _answer(s: socket.socket) -> bytes:
    """One small HTTP answer: what arrives until the body's 4 bytes are in, or the peer closes."""
    got = b""
    while not got.endswith(b"pong") and (chunk := s.recv(4096)):
        got += chunk
    return got
