"""Client side of the colospec test guest (tests/guest/README.md).

guest_files() builds (or reuses) the cached kernel and initramfs; kernel_append() is the
guest's kernel command line; EchoClient and RecordClient speak the guest's two TCP
services over one long-lived connection each. The guest lives inside a network namespace
the test created: pass netns=NAME and the socket is created (and connected) inside it,
by switching only the calling thread there for the connect (in_netns).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

GUEST_DIR = Path(__file__).resolve().parent / "guest"
BUILD_SCRIPT = GUEST_DIR / "build-guest.sh"
ECHO_PORT = 7
RECORD_PORT = 8
READY = "COLOTEST READY"
FAILED = "COLOTEST FAILED"
MAX_PAYLOAD = 400

_CLONE_NEWNET = 0x40000000


class GuestError(Exception):
    """The guest answered something its protocol does not allow, or an error."""


def guest_files(timeout: float = 900) -> tuple[Path, Path]:
    """(vmlinuz, initrd.img): builds them with build-guest.sh unless the cache is current.
    Progress goes to our stderr; the script's last stdout line is the cache directory."""
    done = subprocess.run(
        [str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, timeout=timeout, check=True
    )
    cache = Path(done.stdout.strip().splitlines()[-1])
    return cache / "vmlinuz", cache / "initrd.img"


def kernel_append(address: str, prefix: int = 24, extra: str = "") -> str:
    """The guest's kernel command line: serial console, quiet, pti=on (TCG COLO needs it:
    see the notes), no IPv6 chatter, and no idle timers for the soft-lockup watchdog, the
    clocksource watchdog (tsc=reliable) or pressure stall averages (psi=0)."""
    line = (
        "console=ttyS0 quiet pti=on ipv6.disable=1 nowatchdog tsc=reliable psi=0"
        f" colotest.ip={address}/{prefix}"
    )
    return f"{line} {extra}".strip()


def wait_ready(serial_log: Path, address: str, timeout: float = 60, alive=None) -> float:
    """Seconds until the serial log shows 'COLOTEST READY <address>'. Raises GuestError on
    the guest's failure marker, when alive() turns false, or after timeout."""
    start = time.monotonic()
    marker = f"{READY} {address}"
    while True:
        text = serial_log.read_text(errors="replace") if serial_log.exists() else ""
        if any(line.strip().endswith(marker) for line in text.splitlines()):
            return time.monotonic() - start
        if FAILED in text:
            raise GuestError(f"guest failed to start:\n{text}")
        if alive is not None and not alive():
            raise GuestError(f"QEMU exited before the guest was ready:\n{text}")
        if time.monotonic() - start > timeout:
            raise GuestError(f"no '{marker}' within {timeout} s:\n{text}")
        time.sleep(0.02)


@contextlib.contextmanager
def in_netns(name: str | None) -> Iterator[None]:
    """Run the body with the calling thread in network namespace NAME (ip netns's
    /run/netns/NAME); None: stay. Sockets created inside keep that namespace."""
    if name is None:
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            if libc.setns(target, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {name}")
        finally:
            os.close(target)
        try:
            yield
        finally:
            if libc.setns(own, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to our own namespace")
    finally:
        os.close(own)


class _LineConnection:
    """One TCP connection exchanging '\\n'-terminated ASCII lines."""

    def __init__(self, host: str, port: int, netns: str | None, timeout: float) -> None:
        with in_netns(netns):
            self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = b""

    def send_line(self, line: str) -> None:
        self.sock.sendall(line.encode("ascii") + b"\n")

    def read_line(self) -> str:
        while b"\n" not in self._buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise GuestError(f"connection closed by the guest (pending {self._buf!r})")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode("ascii", errors="replace")

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class EchoClient(_LineConnection):
    """The echo service (TCP 7): every line comes back as sent, on one open connection."""

    def __init__(
        self, host: str, port: int = ECHO_PORT, *, netns: str | None = None, timeout: float = 10
    ) -> None:
        super().__init__(host, port, netns, timeout)
        self._seq = 0

    def ping(self, payload: str | None = None) -> float:
        """Send one line, read its echo, verify it; returns the round trip in seconds."""
        if payload is None:
            self._seq += 1
            payload = f"ping {self._seq}"
        if "\n" in payload:
            raise ValueError("payload must be one line")
        start = time.monotonic()
        self.send_line(payload)
        echoed = self.read_line()
        rtt = time.monotonic() - start
        if echoed != payload:
            raise GuestError(f"echo mismatch: sent {payload!r}, got {echoed!r}")
        return rtt


class RecordClient(_LineConnection):
    """The record service (TCP 8): record n is sector n of the guest's /dev/vda."""

    def __init__(
        self, host: str, port: int = RECORD_PORT, *, netns: str | None = None, timeout: float = 60
    ) -> None:
        super().__init__(host, port, netns, timeout)

    def _ask(self, line: str) -> str:
        self.send_line(line)
        return self.read_line()

    def write(self, n: int, payload: str) -> None:
        """Returns once the guest answered OK: the record is durable in QEMU's block layer."""
        check_payload(payload)
        reply = self._ask(f"W {int(n)} {payload}")
        if reply != f"OK {n}":
            raise GuestError(f"W {n}: {reply!r}")

    def read(self, n: int) -> str | None:
        """The stored payload, or None when sector n holds no record n."""
        reply = self._ask(f"R {int(n)}")
        if reply == f"NONE {n}":
            return None
        prefix = f"DATA {n} "
        if not reply.startswith(prefix):
            raise GuestError(f"R {n}: {reply!r}")
        return reply[len(prefix) :]

    def count(self) -> tuple[int, int]:
        """(records on the disk, highest record number or -1); scans the whole disk."""
        reply = self._ask("C")
        words = reply.split()
        if len(words) != 3 or words[0] != "COUNT":
            raise GuestError(f"C: {reply!r}")
        return int(words[1]), int(words[2])

    def raw(self, line: str) -> str:
        """Send any request line and return the reply line (for protocol tests)."""
        return self._ask(line)


def check_payload(payload: str) -> None:
    if len(payload) > MAX_PAYLOAD or not all(" " <= c <= "~" for c in payload):
        raise ValueError(f"payload must be ≤ {MAX_PAYLOAD} printable ASCII characters")


def read_record_from_image(image: Path, n: int) -> str | None:
    """Record n read straight from the raw disk image on the host (guest stopped)."""
    with open(image, "rb") as f:
        f.seek(n * 512)
        sector = f.read(512)
    line = sector.split(b"\n", 1)[0]
    prefix = f"COLOREC {n} ".encode()
    if not line.startswith(prefix) or sector[len(line) + 1 :].strip(b"\0"):
        return None
    return line[len(prefix) :].decode("ascii")
