"""Heartbeats between two runners on loopback: liveness per path, urgent updates, filtering."""

from __future__ import annotations

import asyncio
import json
import time

from colospec.runner.hbauth import REPLAY_WINDOW_S, seal, unseal
from colospec.runner.heartbeat import PROTOCOL, Heartbeat, HeartbeatPath

PORT = 18990
KEY = bytes(range(32))


def pair(interval_ms=20, missed=3):
    a = Heartbeat("p", "a", [HeartbeatPath("replication", "127.0.0.1", "127.0.0.2")],
                  PORT, interval_ms, missed, KEY)  # fmt: skip
    b = Heartbeat("p", "b", [HeartbeatPath("replication", "127.0.0.2", "127.0.0.1")],
                  PORT, interval_ms, missed, KEY)  # fmt: skip
    return a, b


def test_peers_hear_each_other_and_notice_silence():
    async def main():
        a, b = pair()
        a.update(role="primary", qemu="running")
        await a.start()
        await b.start()
        try:
            await asyncio.sleep(0.1)
            assert b.alive_paths() == ["replication"]
            assert b.peer.report["role"] == "primary"
            await a.stop()
            await asyncio.sleep(0.1)  # > interval × missed
            assert b.alive_paths() == []
            assert b.silence() > 0.06
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(main())


def test_urgent_update_arrives_before_the_next_interval():
    async def main():
        a, b = pair(interval_ms=5000)
        await a.start()
        await b.start()
        try:
            await b.changed(1.0)  # the first periodic datagram
            a.update(urgent=True, qemu="dead")
            await b.changed(1.0)
            assert b.peer.report["qemu"] == "dead"
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(main())


def test_datagrams_from_other_pairs_or_addresses_are_ignored():
    async def main():
        a, _ = pair()
        stranger = Heartbeat("other-pair", "x", [HeartbeatPath("replication", "127.0.0.2",
                             "127.0.0.1")], PORT, 20, 3, KEY)  # fmt: skip
        await a.start()
        await stranger.start()
        try:
            await asyncio.sleep(0.1)
            assert a.alive_paths() == [] and a.peer.report == {}
        finally:
            await a.stop()
            await stranger.stop()

    asyncio.run(main())


def receiver(updates: list) -> Heartbeat:
    """b of a two-path pair, fed datagrams by hand (no sockets)."""
    return Heartbeat(
        "p", "b",
        [HeartbeatPath("replication", "10.0.0.2", "10.0.0.1"),
         HeartbeatPath("lan", "192.168.0.2", "192.168.0.1")],
        PORT, 100, 3, KEY, on_peer_update=lambda: updates.append(1),
    )  # fmt: skip


def datagram(key: bytes = KEY, **fields) -> bytes:
    msg = {"v": PROTOCOL, "pair": "p", "from": "a", "boot": "b1", "seq": 1, "ts": time.time(),
           **fields}  # fmt: skip
    return seal(key, json.dumps(msg).encode())


def test_only_the_configured_peer_address_speaks_on_a_path():
    updates: list = []
    b = receiver(updates)
    rep, lan = b.paths
    # the peer's LAN address on the replication path, and a stranger's address
    b._received(rep, datagram(qemu="dead"), ("192.168.0.1", PORT))
    b._received(lan, datagram(qemu="dead"), ("192.168.0.66", PORT))
    assert (b.peer.report, b.peer.last_seen, updates) == ({}, {}, [])
    b._received(lan, datagram(qemu="running"), ("192.168.0.1", PORT))
    assert b.peer.report["qemu"] == "running" and list(b.peer.last_seen) == ["lan"]


def test_a_report_counts_once_whichever_path_brings_it_and_older_ones_never():
    updates: list = []
    b = receiver(updates)
    rep, lan = b.paths
    b._received(rep, datagram(seq=5, qemu="running"), ("10.0.0.1", PORT))
    b._received(lan, datagram(seq=5, qemu="running"), ("192.168.0.1", PORT))
    assert len(updates) == 1 and set(b.peer.last_seen) == {"replication", "lan"}
    b._received(rep, datagram(seq=4, qemu="dead"), ("10.0.0.1", PORT))  # late, reordered
    assert b.peer.report["seq"] == 5 and b.peer.report["qemu"] == "running"
    b._received(rep, datagram(seq=6, qemu="dead"), ("10.0.0.1", PORT))
    assert b.peer.report["qemu"] == "dead" and len(updates) == 2


def test_a_restarted_peer_is_heard_from_its_first_report():
    updates: list = []
    b = receiver(updates)
    rep = b.paths[0]
    b._received(rep, datagram(seq=900, qemu="running"), ("10.0.0.1", PORT))
    b._received(rep, datagram(boot="b2", seq=1, qemu="starting"), ("10.0.0.1", PORT))
    assert b.peer.report["boot"] == "b2" and b.peer.report["qemu"] == "starting"


def test_another_protocol_version_is_ignored():
    updates: list = []
    b = receiver(updates)
    b._received(b.paths[0], datagram(v=1, qemu="dead"), ("10.0.0.1", PORT))
    assert (b.peer.report, b.peer.last_seen, updates) == ({}, {}, [])


def test_every_datagram_carries_what_the_sender_hears():
    sent: list = []

    class Transport:
        def sendto(self, data, addr):
            sent.append((json.loads(unseal(KEY, data)), addr))

    updates: list = []
    b = receiver(updates)
    b._received(b.paths[1], datagram(qemu="running"), ("192.168.0.1", PORT))

    class Endpoint:
        def __init__(self, path):
            self.path, self.transport = path, Transport()

    b._endpoints = [Endpoint(p) for p in b.paths]
    b.update(role="secondary")
    b.send()
    assert [(m["hears"], m["role"], addr[0]) for m, addr in sent] == [
        (["lan"], "secondary", "10.0.0.1"), (["lan"], "secondary", "192.168.0.1")
    ]  # fmt: skip


def test_a_forged_datagram_is_never_acted_on_and_is_counted():
    updates: list = []
    b = receiver(updates)
    rep = b.paths[0]
    b._received(rep, datagram(key=bytes(32), qemu="dead"), ("10.0.0.1", PORT))  # wrong key
    b._received(rep, b"x" * 40, ("10.0.0.1", PORT))  # garbage
    tampered = bytearray(datagram(qemu="running"))
    tampered[-3] ^= 1
    b._received(rep, bytes(tampered), ("10.0.0.1", PORT))
    assert (b.peer.report, b.peer.last_seen, updates, b.rejected) == ({}, {}, [], 3)


def test_a_replayed_datagram_is_refused():
    updates: list = []
    b = receiver(updates)
    rep = b.paths[0]
    first = datagram(seq=7, qemu="running")
    b._received(rep, first, ("10.0.0.1", PORT))
    seen = b.peer.last_seen["replication"]
    b._received(rep, first, ("10.0.0.1", PORT))  # the same datagram again
    assert b.rejected == 1 and b.peer.last_seen["replication"] == seen and len(updates) == 1


def test_a_datagram_outside_the_time_window_is_refused():
    updates: list = []
    b = receiver(updates)
    old = datagram(seq=1, ts=time.time() - REPLAY_WINDOW_S - 1, qemu="dead")
    b._received(b.paths[0], old, ("10.0.0.1", PORT))
    assert (b.peer.report, b.rejected) == ({}, 1)


def test_an_older_runner_instance_cannot_come_back():
    updates: list = []
    b = receiver(updates)
    rep = b.paths[0]
    b._received(rep, datagram(boot="old", seq=1, ts=time.time() - 5), ("10.0.0.1", PORT))
    b._received(rep, datagram(boot="new", seq=1, ts=time.time() - 1), ("10.0.0.1", PORT))
    b._received(rep, datagram(boot="old", seq=2, ts=time.time() - 4, qemu="dead"),
                ("10.0.0.1", PORT))  # fmt: skip
    assert b.peer.report["boot"] == "new" and b.rejected == 1
