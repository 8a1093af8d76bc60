"""The Linux test guest (tests/guest/): built from Debian packages, booted for real under
TCG in a throwaway network namespace, its echo and record services exercised, and its
acknowledged records checked after QEMU is killed (no guest-side sync, no shutdown).

Only addresses inside the namespace created here are used; QEMU, the namespace (with its
bridge and tap) and the disk image are removed also when a test fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

import guestlib
from guestlib import EchoClient, GuestError, RecordClient
from netns import add_bridge, add_tap, namespace

pytestmark = pytest.mark.integration

ADDRESS = "10.66.0.50"
HOST_ADDRESS = "10.66.0.1"
SCRIPTS = [guestlib.GUEST_DIR / name for name in ("build-guest.sh", "init", "records.sh")]
DISK_BYTES = 64 * 1024 * 1024


def test_guest_scripts_pass_shellcheck():
    assert shutil.which("shellcheck"), "shellcheck missing: set up with README's test command"
    done = subprocess.run(
        ["shellcheck", "--severity=style", *map(str, SCRIPTS)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


class Guest:
    """The guest's QEMU inside namespace ns; start() again after kill() boots the same disk."""

    def __init__(self, ns: str, tap: str, workdir: Path, vmlinuz: Path, initrd: Path) -> None:
        self.ns, self.tap, self.workdir = ns, tap, workdir
        self.vmlinuz, self.initrd = vmlinuz, initrd
        self.disk = workdir / "disk.raw"
        with open(self.disk, "wb") as f:
            f.truncate(DISK_BYTES)
        self.proc: subprocess.Popen | None = None
        self.boots = 0
        self.serial = workdir / "serial-0.log"
        self.boot_seconds = 0.0

    def start(self) -> float:
        """Boot; returns the seconds from starting QEMU to the ready marker."""
        assert self.proc is None
        self.boots += 1
        self.serial = self.workdir / f"serial-{self.boots}.log"
        argv = [
            "qemu-system-x86_64",
            "-accel", "tcg", "-machine", "pc", "-m", "256", "-nodefaults",
            "-display", "none", "-no-reboot",
            "-serial", f"file:{self.serial}",
            "-kernel", str(self.vmlinuz), "-initrd", str(self.initrd),
            "-append", guestlib.kernel_append(ADDRESS),
            "-netdev", f"tap,id=hn0,ifname={self.tap},script=no,downscript=no,vhost=off",
            "-device", "virtio-net-pci,netdev=hn0,romfile=",
            "-drive", f"if=virtio,file={self.disk},format=raw",
        ]  # fmt: skip
        errors = self.workdir / f"qemu-{self.boots}.err"
        with open(errors, "wb") as stderr:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, *argv], stdout=subprocess.DEVNULL, stderr=stderr
            )
        try:
            self.boot_seconds = guestlib.wait_ready(
                self.serial, ADDRESS, timeout=120, alive=lambda: self.proc.poll() is None
            )
        except GuestError as e:
            raise GuestError(f"{e}\nQEMU's stderr:\n{errors.read_text(errors='replace')}") from e
        return self.boot_seconds

    def kill(self) -> None:
        """Power cut: SIGKILL to QEMU, nothing flushed or synced by the guest."""
        if self.proc is not None:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
            self.proc = None

    def console(self) -> str:
        return self.serial.read_text(errors="replace")


@pytest.fixture(scope="module")
def guest():
    vmlinuz, initrd = guestlib.guest_files()
    with (
        tempfile.TemporaryDirectory(prefix="colospec-guest-") as tmp,
        namespace("cgt") as ns,
    ):
        add_bridge(ns, "br0", HOST_ADDRESS)
        add_tap(ns, "tap0", "br0")
        g = Guest(ns, "tap0", Path(tmp), vmlinuz, initrd)
        try:
            g.start()
            yield g
        finally:
            g.kill()


def assert_clean_console(g: Guest) -> None:
    console = g.console()
    for bad in (guestlib.FAILED, "Call Trace", "BUG:", "Oops", "Kernel panic"):
        assert bad not in console, console


def test_guest_boots_to_the_ready_marker(guest, record_property):
    record_property("boot_seconds", round(guest.boot_seconds, 2))
    lines = guest.console().splitlines()
    assert f"COLOTEST READY {ADDRESS}" in lines
    # quiet: the kernel prints nothing at the default log level on a clean boot
    assert len(lines) <= 5, lines
    assert guest.boot_seconds < 60
    assert_clean_console(guest)


def test_echo_keeps_one_connection_for_100_lines(guest):
    with EchoClient(ADDRESS, netns=guest.ns) as echo:
        local = echo.sock.getsockname()
        for i in range(100):
            payload = f"line {i} " + "x" * i
            echo.send_line(payload)
            assert echo.read_line() == payload
        rtts = [echo.ping() for _ in range(20)]
        assert echo.sock.getsockname() == local
    assert max(rtts) < 5, rtts


def test_echo_serves_connections_side_by_side(guest):
    with (
        EchoClient(ADDRESS, netns=guest.ns) as a,
        EchoClient(ADDRESS, netns=guest.ns) as b,
    ):
        a.send_line("from a")
        b.send_line("from b")
        assert (b.read_line(), a.read_line()) == ("from b", "from a")


def test_records_read_back_and_unwritten_is_none(guest):
    with RecordClient(ADDRESS, netns=guest.ns) as rec:
        written = {n: f"record {n} " + "p" * (n % 50) for n in range(100, 120)}
        for n, payload in written.items():
            rec.write(n, payload)
        assert {n: rec.read(n) for n in written} == written
        assert rec.read(99) is None
        assert rec.read(120) is None
        rec.write(101, "overwritten")
        assert rec.read(101) == "overwritten"
        longest = "~" * guestlib.MAX_PAYLOAD
        rec.write(130, longest)
        assert rec.read(130) == longest
        rec.write(131, "")
        assert rec.read(131) == ""
        last = DISK_BYTES // 512 - 1
        rec.write(last, "last sector")
        assert rec.read(last) == "last sector"
        count, highest = rec.count()
        assert count >= len(written) + 3
        assert highest == last


def test_record_service_rejects_malformed_requests(guest):
    with RecordClient(ADDRESS, netns=guest.ns) as rec:
        assert rec.raw(f"W {DISK_BYTES // 512} beyond the disk").startswith("ERR")
        assert rec.raw("W 07 leading zero").startswith("ERR")
        assert rec.raw("W 5").startswith("ERR")
        assert rec.raw("W 5 " + "x" * (guestlib.MAX_PAYLOAD + 1)).startswith("ERR")
        assert rec.raw("R -1").startswith("ERR")
        assert rec.raw("Q").startswith("ERR")
        assert rec.read(5) is None  # nothing above was written
        with pytest.raises(ValueError):
            rec.write(5, "tab\tinside")


def test_acknowledged_records_survive_a_power_cut(guest):
    records = {n: f"durable {n}" for n in range(1000, 1030)}
    with RecordClient(ADDRESS, netns=guest.ns) as rec:
        for n, payload in records.items():
            rec.write(n, payload)
        guest.kill()  # at once after the last OK: no sync, no shutdown
    assert {n: guestlib.read_record_from_image(guest.disk, n) for n in records} == records
    assert guestlib.read_record_from_image(guest.disk, 1030) is None

    guest.start()
    with RecordClient(ADDRESS, netns=guest.ns) as rec:
        assert {n: rec.read(n) for n in records} == records
        assert rec.read(1030) is None
    with EchoClient(ADDRESS, netns=guest.ns) as echo:
        echo.ping()
    assert_clean_console(guest)
