"""Bring-up time: `colospec run` on both hosts vs a minimal hand-written QMP driver.

Both bring the same built pair (two namespaces, Debian's QEMU under KVM, firmware-only
guests) from nothing to COLO mode on both hosts, alternately, in the same run. The
runner's time ends when both runners report READY=1 over $NOTIFY_SOCKET (what systemd
sees); the driver's when it has seen COLO mode on both QEMUs. Both are timed from the
moment their processes are spawned, so Python's start-up and imports count on both
sides. Target: ratio <= 1.10.
usage: python3 bench/bringup.py [RUNS]   (as root)
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from netns import ip  # noqa: E402
from pairlab import PairLab  # noqa: E402


def runner_bringup(lab: PairLab) -> float:
    with tempfile.TemporaryDirectory(prefix="cs-notify-") as tmp:
        socks = {}
        for h in ("a", "b"):
            socks[h] = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            socks[h].bind(f"{tmp}/{h}")
        t0 = time.monotonic()
        for h in ("a", "b"):  # the order the hand driver uses
            os.environ["NOTIFY_SOCKET"] = f"{tmp}/{h}"
            lab.start(h)
        del os.environ["NOTIFY_SOCKET"]
        for h in ("a", "b"):
            socks[h].settimeout(120)
            while b"READY=1" not in socks[h].recv(4096):
                pass
        took = time.monotonic() - t0
        for h in ("a", "b"):
            socks[h].close()
    for h in ("a", "b"):
        lab.expect_running.discard(h)
        lab.procs[h].terminate()
    for h in ("a", "b"):
        try:
            lab.procs[h].wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise SystemExit(f"runner {h} did not stop\n{lab.describe()}") from None
    return took


def hand_bringup(lab: PairLab) -> float:
    t0 = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench/hand_driver.py"), str(lab.host_dir("a")), lab.ns["a"],
         str(lab.host_dir("b")), lab.ns["b"]],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"hand driver failed:\n{result.stderr}")
    out = result.stdout
    time.sleep(0.3)  # let both QEMUs finish quitting
    for h in ("a", "b"):
        ip("link", "del", f"tap-{lab.name}", netns=lab.ns[h], check=False)
    return float(out.split()[-1]) - t0


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    runner, hand = [], []
    with PairLab(checkpoint_delay_ms=2000) as lab:
        runner_bringup(lab)  # warm-up: page cache, and the runner's cached QEMU check
        for i in range(runs):
            order = (runner_bringup, hand_bringup) if i % 2 == 0 else (hand_bringup, runner_bringup)
            for fn in order:
                (runner if fn is runner_bringup else hand).append(fn(lab))
    r, h = statistics.median(runner), statistics.median(hand)
    print(f"bring-up to COLO mode on both hosts, median of {runs} runs (2 cores, KVM, 128 MiB):")
    print(f"  colospec run (2 runners, READY=1): {r * 1000:7.0f} ms   runs: "
          + " ".join(f"{x * 1000:.0f}" for x in runner))  # fmt: skip
    print(f"  hand-written QMP driver:           {h * 1000:7.0f} ms   runs: "
          + " ".join(f"{x * 1000:.0f}" for x in hand))  # fmt: skip
    print(f"  ratio: {r / h:.2f}x   (target <= 1.10x)")


if __name__ == "__main__":
    main()
