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


def test_the_servers_keep_an_idle_connection_longer_than_clients_do() -> None:
    """The emulators stand in for providers, which keep idle connections open far longer than
    uvicorn's 5 s: at 5 s the server's close races a client pool's reuse (httpx's idle limit is
    also 5 s) and the reused connection fails with a reset. A server with a 1 s limit closes
    the connection after 1.5 s idle; ours (the default) still answers on it."""
    import time

    from litestar import Litestar, get

    from gateway.serving import KEEP_ALIVE_S, ServerThread
    from gateway.settings import Settings

    @get("/ping", sync_to_thread=False)
    def ping() -> str:
        return "pong"

    request = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"
    servers = [ServerThread(Litestar([ping]), keep_alive_s=1), ServerThread(Litestar([ping]))]
    sockets = []
    try:
        for server in servers:
            server.start()
            s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sockets.append(s)
            s.sendall(request)
            assert _answer(s).endswith(b"pong")
        time.sleep(1.5)
        for s in sockets:
            try:
                s.sendall(request)
            except OSError:
                pass
        short, ours = (_answer(s) for s in sockets)
        assert not short.endswith(b"pong")  # closed by the server: read b"" (or reset)
        assert ours.endswith(b"pong")
    finally:
        for s in sockets:
            s.close()
        for server in servers:
            server.stop()
    assert KEEP_ALIVE_S > 60  # longer than the load balancers' and clients' idle limits too
    assert KEEP_ALIVE_S == Settings.model_fields["keep_alive_s"].default  # the gateway's own default


def _answer(s: socket.socket) -> bytes:
    """One small HTTP answer: what arrives until the body's 4 bytes are in, or the peer closes."""
    got = b""
    try:
        while not got.endswith(b"pong") and (chunk := s.recv(4096)):
            got += chunk
    except ConnectionResetError:
        pass
    return got
