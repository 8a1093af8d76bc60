"""What does protection cost? Echo round trips to the guest unprotected, then under COLO.

Same machine, same guest (tests/guest), same QEMU binary (tests/qemu-tcg, TCG), same
network; first one plain QEMU without COLO objects, then a colospec pair with the
default tuning (checkpoint_delay_ms 2000, compare_timeout_ms 3000). Prints the echo
round trip (median, p99) for both and their ratio, and COLO checkpoints per minute.
With more checkpoint delays given, COLO is measured once per delay (to choose the default).
usage: python3 bench/overhead.py [SECONDS] [DELAY_MS,...]   (as root)
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from guestlib import EchoClient, guest_files, kernel_append, wait_ready  # noqa: E402
from netns import add_tap  # noqa: E402
from pairlab import GUEST_IP, PairLab, tcg_qemu  # noqa: E402


def measure(netns: str, seconds: float) -> list[float]:
    """Round trips (s) of one echo every 20 ms on one connection for `seconds`."""
    echo = EchoClient(GUEST_IP, netns=netns, timeout=30)
    rtts, end = [], time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            rtts.append(echo.ping())
            time.sleep(0.02)
    finally:
        echo.close()
    return rtts


def p99(xs: list[float]) -> float:
    return sorted(xs)[int(len(xs) * 0.99) - 1]


def unprotected(lab: PairLab, seconds: float) -> list[float]:
    vmlinuz, initrd = guest_files()
    ns, tap = lab.ns["a"], "tap-plain"
    add_tap(ns, tap, "br0")
    console = lab.tmp / "plain-console.log"
    argv = [
        tcg_qemu(), "-accel", "tcg", "-machine", "pc", "-m", "256", "-nodefaults",
        "-display", "none", "-serial", f"file:{console}", "-kernel", str(vmlinuz),
        "-initrd", str(initrd), "-append", kernel_append(GUEST_IP),
        "-netdev", f"tap,id=hn0,ifname={tap},script=no,downscript=no,vhost=off",
        "-device", "virtio-net-pci,netdev=hn0,mac=52:54:00:c0:10:01,romfile=",
        "-drive", f"if=virtio,file={lab.tmp / 'a' / 'disk.raw'},format=raw",
    ]  # fmt: skip
    qemu = subprocess.Popen(["ip", "netns", "exec", ns, *argv])
    try:
        wait_ready(console, GUEST_IP, timeout=120)
        measure(lab.ns["l"], 1.0)  # warm-up: ARP, TCP
        return measure(lab.ns["l"], seconds)
    finally:
        qemu.kill()
        qemu.wait()
        subprocess.run(["ip", "-n", ns, "link", "del", tap], check=False)


def protected(lab: PairLab, seconds: float) -> tuple[list[float], float]:
    lab.start("a")
    lab.start("b")
    lab.wait_colo(timeout=120)
    wait_ready(lab.run_dir("a") / "console.log", GUEST_IP, timeout=120)
    measure(lab.ns["l"], 1.0)
    before = lab.ask("a", {"cmd": "status"})["checkpoints"]
    t0 = time.monotonic()
    rtts = measure(lab.ns["l"], seconds)
    per_min = (
        (lab.ask("a", {"cmd": "status"})["checkpoints"] - before) * 60 / (time.monotonic() - t0)
    )
    return rtts, per_min


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 30
    delays = [int(d) for d in sys.argv[2].split(",")] if len(sys.argv) > 2 else [2000]
    with PairLab(guest=True) as lab:  # the namespaces and images; COLO only below
        plain = unprotected(lab, seconds)
    pm = statistics.median(plain)
    print(f"echo round trip, one TCP connection, one line every 20 ms for {seconds:.0f} s "
          "(Linux guest under TCG; compare_timeout_ms 3000):")  # fmt: skip
    print(f"  {'':27} {'median':>8} {'p99':>9} {'ratio':>12} {'checkpoints/min':>16}")
    print(f"  {'unprotected':27} {pm * 1000:6.2f}ms {p99(plain) * 1000:7.2f}ms")
    for delay in delays:
        with PairLab(guest=True, checkpoint_delay_ms=delay) as lab:
            colo, per_min = protected(lab, seconds)
        cm = statistics.median(colo)
        print(f"  {f'COLO, checkpoint {delay} ms':27} {cm * 1000:6.2f}ms {p99(colo) * 1000:7.2f}ms"
              f" {cm / pm:5.2f}x/{p99(colo) / p99(plain):4.1f}x {per_min:16.0f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
