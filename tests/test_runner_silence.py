"""A silent secondary: the counters read from the kernel, and the window they are judged over."""

from __future__ import annotations

import socket
import threading

from colospec.runner.silence import MIN_GUEST_BYTES, Sample, SilenceWatch, read_counters

WINDOW = 3.0


def watch(*samples: tuple[float, int, int | None]) -> SilenceWatch:
    w = SilenceWatch(WINDOW)
    for at, guest, secondary in samples:
        w.add(Sample(at, guest, secondary))
    return w


def test_guest_output_and_nothing_from_the_secondary_for_a_window_is_silence():
    assert watch((0, 0, 500), (1.5, MIN_GUEST_BYTES, 500), (3, 2 * MIN_GUEST_BYTES, 500)).silent()


def test_a_guest_slowed_to_the_checkpoint_rate_by_a_silent_secondary_is_silence():
    """Measured on QEMU 10.0 (2 s checkpoints, a 6 s window): the client's echoes and
    records come back only at each checkpoint, 480 bytes each time, and nothing ever
    from the secondary."""
    w = SilenceWatch(6.0)
    for i in range(5):
        w.add(Sample(15274.9 + 2 * i, 1746 + 480 * i, 0))
    assert w.silent()


def test_not_silent_before_a_whole_window_has_passed():
    assert not watch((0, 0, 500), (2.9, 10 * MIN_GUEST_BYTES, 500)).silent()


def test_any_byte_from_the_secondary_in_the_window_is_not_silence():
    assert not watch((0, 0, 500), (3, 2 * MIN_GUEST_BYTES, 501)).silent()


def test_a_quiet_guest_proves_nothing():
    assert not watch((0, 0, 500), (3, MIN_GUEST_BYTES - 1, 500)).silent()


def test_no_compare_connection_is_no_evidence():
    assert not watch((0, 0, None), (3, 2 * MIN_GUEST_BYTES, None)).silent()
    assert not watch((0, 0, 500), (3, 2 * MIN_GUEST_BYTES, None)).silent()


def test_the_window_slides_old_traffic_out():
    w = watch((0, 0, 100), (1, MIN_GUEST_BYTES, 200))  # the secondary spoke at first
    for t in range(2, 6):
        w.add(Sample(t, MIN_GUEST_BYTES * t, 200))  # then never again
    assert w.silent()
    assert len(w.samples) <= 5


def test_counters_come_from_the_kernel():
    """On loopback: lo's receive bytes and a real TCP connection's bytes_received."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = server.accept()
    try:
        _, before = read_counters("lo", "127.0.0.1", port)
        client.sendall(b"x" * 4096)
        got = 0
        while got < 4096:
            got += len(conn.recv(65536))
        guest, after = read_counters("lo", "127.0.0.1", port)
        assert before is not None and after - before == 4096
        assert guest > 0
        _, none = read_counters("lo", "127.0.0.1", port + 1 if port < 65535 else port - 1)
        assert none is None
    finally:
        for s in (client, conn, server):
            s.close()


def test_reading_is_safe_from_a_thread():
    out = []
    t = threading.Thread(target=lambda: out.append(read_counters("lo", "127.0.0.1", 1)))
    t.start()
    t.join(10)
    assert out and out[0][1] is None
