"""Throwaway network namespaces for tests: created here, always removed, never leaking.

Only addresses inside these namespaces (and loopback) are ever used.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
from collections.abc import Iterator

_counter = itertools.count()


def ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=30)


def unique_name(prefix: str) -> str:
    """Short (≤ 15 chars) and unique across parallel test runs on one machine."""
    return f"{prefix}{os.getpid() % 100000}{next(_counter)}"[:15]


def kill_all_in(netns: str) -> None:
    """SIGKILL every process inside the namespace (a lost host's processes die with it)."""
    pids = subprocess.run(
        ["ip", "netns", "pids", netns], capture_output=True, text=True, timeout=30
    ).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


@contextlib.contextmanager
def namespace(prefix: str = "cst") -> Iterator[str]:
    name = unique_name(prefix)
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    try:
        ip("link", "set", "lo", "up", netns=name)
        yield name
    finally:
        kill_all_in(name)
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=30)


def add_bridge(netns: str, bridge: str, address: str | None = None, prefix: int = 24) -> None:
    ip("link", "add", bridge, "type", "bridge", netns=netns)
    if address:
        ip("addr", "add", f"{address}/{prefix}", "dev", bridge, netns=netns)
    ip("link", "set", bridge, "up", netns=netns)


def add_tap(netns: str, tap: str, bridge: str) -> None:
    ip("tuntap", "add", "dev", tap, "mode", "tap", netns=netns)
    ip("link", "set", tap, "master", bridge, "up", netns=netns)
