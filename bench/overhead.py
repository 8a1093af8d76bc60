"""What does protection cost? Echo round trips to the guest unprotected, then under COLO.

Same machine, same guest (tests/guest), same QEMU binary (tests/qemu-tcg, TCG), same
network; first one plain QEMU without COLO objects, then a colospec pair with the
default tuning (checkpoint_delay_ms 2000, compare_timeout_ms 3000). Prints the echo
round trip (median, p99) for both and their ratio, and COLO checkpoints per minute.
With more checkpoint delays given, COLO is measured once per delay (to choose the default).
With --tls RUNS: then, at the first delay, RUNS pairs without and RUNS with TLS on the
replication channels (security.tls), alternating: the same round trips, and the largest
echo gap and the failover time when the primary's QEMU is killed.
usage: python3 bench/overhead.py [SECONDS] [DELAY_MS,...] [--tls RUNS]   (as root)
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from guestlib import EchoClient, guest_files, kernel_append, wait_ready  # noqa: E402
from netns import add_tap  # noqa: E402
from pairlab import GUEST_IP, PairLab, tcg_qemu  # noqa: E402
from tlslab import TlsLab  # noqa: E402
from traffic import Traffic  # noqa: E402


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


def kill_primary(lab: PairLab) -> tuple[float, float]:
    """(largest echo gap, failover done after) in s, when the primary's QEMU is killed."""
    traffic = Traffic(GUEST_IP, lab.ns["l"]).start()
    try:
        traffic.wait_echoes(50)
        wall, mono = time.time(), time.monotonic()
        lab.kill_qemu("a")
        lab.wait_for("failover", lambda: lab.ask("b", {"cmd": "status"})["last_failover"],
                     timeout=60, every=0.01)  # fmt: skip
        traffic.wait_echoes(50)
        done = lab.ask("b", {"cmd": "status"})["last_failover"]["time"]
        if traffic.errors:
            raise SystemExit(f"the connection broke: {traffic.errors}")
        return traffic.largest_gap(after=mono), datetime.fromisoformat(done).timestamp() - wall
    finally:
        traffic.close()


def tls_comparison(seconds: float, delay: int, runs: int, plain_median: float) -> None:
    found: dict[bool, list[tuple[float, float, float, float, float]]] = {False: [], True: []}
    for _ in range(runs):
        for tls in (False, True):  # alternating, so a busy spell hits both alike
            with TlsLab(guest=True, tls=tls, checkpoint_delay_ms=delay) as lab:
                rtts, per_min = protected(lab, seconds)
                gap, took = kill_primary(lab)
            found[tls].append((statistics.median(rtts), p99(rtts), per_min, gap, took))
    print(f"TLS on the replication channels, checkpoint {delay} ms, {runs} pairs each "
          "(medians over the pairs):")  # fmt: skip
    print(f"  {'':15} {'median':>8} {'p99':>9} {'vs unprotected':>15} {'checkpoints/min':>16}"
          f" {'failover gap':>13} {'failover done':>14}")  # fmt: skip
    medians = {}
    for tls, rows in found.items():
        m, p, per_min, gap, took = (statistics.median(col) for col in zip(*rows, strict=True))
        medians[tls] = (m, p, gap, took)
        name = "COLO + TLS" if tls else "COLO"
        print(f"  {name:15} {m * 1000:6.2f}ms {p * 1000:7.2f}ms {m / plain_median:14.2f}x"
              f" {per_min:16.0f} {gap * 1000:11.0f}ms {took * 1000:12.0f}ms", flush=True)  # fmt: skip
    (m0, p0, g0, t0), (m1, p1, g1, t1) = medians[False], medians[True]
    print(
        f"  TLS / plain COLO: median {m1 / m0:.2f}x, p99 {p1 / p0:.2f}x, "
        f"failover gap {g1 / g0:.2f}x, failover done {t1 / t0:.2f}x"
    )


def main() -> None:
    args = sys.argv[1:]
    tls_runs = 0
    if "--tls" in args:
        at = args.index("--tls")
        tls_runs = int(args[at + 1])
        del args[at : at + 2]
    sys.argv[1:] = args
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
    if tls_runs:
        tls_comparison(seconds, delays[0], tls_runs, pm)


if __name__ == "__main__":
    main()
