"""Heartbeats between two runners on loopback: liveness per path, urgent updates, filtering."""

from __future__ import annotations

import asyncio

from colospec.runner.heartbeat import Heartbeat, HeartbeatPath

PORT = 18990


def pair(interval_ms=20, missed=3):
    a = Heartbeat("p", "a", [HeartbeatPath("replication", "127.0.0.1", "127.0.0.2")],
                  PORT, interval_ms, missed)  # fmt: skip
    b = Heartbeat("p", "b", [HeartbeatPath("replication", "127.0.0.2", "127.0.0.1")],
                  PORT, interval_ms, missed)  # fmt: skip
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
                             "127.0.0.1")], PORT, 20, 3)  # fmt: skip
        await a.start()
        await stranger.start()
        try:
            await asyncio.sleep(0.1)
            assert a.alive_paths() == [] and a.peer.report == {}
        finally:
            await a.stop()
            await stranger.stop()

    asyncio.run(main())
