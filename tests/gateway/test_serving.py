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
