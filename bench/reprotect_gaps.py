"""What a client sees of re-protection and of a planned switchover: the largest gap between
two echoes, beside a normal checkpoint's and a failover's, in the same runs.

Each run builds a fresh pair with the Linux test guest under TCG (the patched QEMU 7.2 of
tests/qemu-tcg, 256 MiB guests, checkpoint delay 2 s, failover.rejoin: automatic) and a
client on the LAN echoing one line every 20 ms over one TCP connection (tests/traffic.py).
Measured, each as the largest gap between two echoes in its interval:
  checkpoint  10 s of protected running (COLO's periodic checkpoints pause the guest)
  failover    from killing the primary's QEMU until 2 s after the secondary serves
  resync      from starting the lost host's runner (it joins: disk copy, `stop`,
              migration, COLO) until 2 s after both report protected
  switchover  from `colospec switchover` on the primary until 0.5 s after the other host
              serves (the hand-over; the old primary then joins it)
  switch+rejoin  the same until 2 s after the pair is protected again, roles swapped
The connection must survive all four (it is the same one throughout).
usage: python3 bench/reprotect_gaps.py [RUNS]   (as root; RUNS default 3)
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from pairlab import COLOSPEC, PairLab  # noqa: E402
from traffic import Traffic, serving  # noqa: E402

PHASES = ("checkpoint", "failover", "resync", "switchover", "switch+rejoin")
HANDOVER_MARGIN_S = 0.5


def status(lab: PairLab, h: str) -> dict:
    return lab.ask(h, {"cmd": "status"})


def protected(lab: PairLab, primary: str, secondary: str) -> bool:
    p, s = status(lab, primary), status(lab, secondary)
    return (p["colo_mode"], s["colo_mode"], p["protected"], s["protected"]) == (
        "primary", "secondary", True, True)  # fmt: skip


def gap_ms(traffic: Traffic, start: float) -> float:
    time.sleep(2)
    return traffic.largest_gap(start, time.monotonic()) * 1000


def run_once() -> dict[str, float] | None:
    with PairLab(guest=True, checkpoint_delay_ms=2000, failover={"rejoin": "automatic"}) as lab:
        traffic = serving(lab)
        if traffic is None:
            return None  # the secondary's NIC stayed silent at boot (README, Known limits)
        try:
            return measure(lab, traffic)
        finally:
            traffic.close()


def measure(lab: PairLab, traffic: Traffic) -> dict[str, float]:
    out: dict[str, float] = {}
    start = time.monotonic()
    time.sleep(10)
    out["checkpoint"] = traffic.largest_gap(start, time.monotonic()) * 1000

    start = lab.kill_qemu("a")
    lab.wait_for("b serves alone", lambda: status(lab, "b")["phase"] == "alone", timeout=60)
    out["failover"] = gap_ms(traffic, start)

    lab.wait_for("a's runner exits", lambda: lab.procs["a"].poll() is not None)
    start = time.monotonic()
    lab.start("a")
    lab.wait_for("a joins b", lambda: protected(lab, "b", "a"), timeout=180)
    out["resync"] = gap_ms(traffic, start)

    start = time.monotonic()
    switch = subprocess.Popen([*COLOSPEC, "switchover", str(lab.host_dir("b"))],
                              stderr=subprocess.PIPE, text=True, cwd=ROOT)  # fmt: skip
    lab.wait_for("a serves", lambda: status(lab, "a")["role"] == "primary", timeout=60)
    served = time.monotonic()
    if switch.wait(60) != 0:
        raise SystemExit(f"switchover failed: {switch.stderr.read().strip()}")
    lab.wait_for("a protected by b", lambda: protected(lab, "a", "b"), timeout=180)
    time.sleep(2)
    # The echo gap around the hand-over itself (until a serves, and the echoes that were
    # held then came back), then b's re-joining, which pauses the guest as any resync.
    out["switchover"] = traffic.largest_gap(start, served + HANDOVER_MARGIN_S) * 1000
    out["switch+rejoin"] = traffic.largest_gap(start, time.monotonic()) * 1000
    traffic.wait_echoes(20)  # still the same connection
    if traffic.errors:
        raise SystemExit(f"the client's connection broke: {traffic.errors}")
    return out


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    print(f"largest echo gap (ms) seen by one client connection, {runs} runs (Linux guest "
          "under TCG, patched QEMU 7.2, 256 MiB, checkpoint delay 2 s)", flush=True)  # fmt: skip
    results: list[dict[str, float]] = []
    while len(results) < runs:
        r = run_once()
        if r is None:
            print("  (a pair whose secondary NIC stayed silent at boot: replaced)", flush=True)
            continue
        results.append(r)
        print(f"  run {len(results)}: " + ", ".join(f"{p} {r[p]:.0f}" for p in PHASES), flush=True)
    print(f"\n{'':14} {'median':>8} {'max':>8}")
    for p in PHASES:
        values = [r[p] for r in results]
        print(f"{p:14} {statistics.median(values):8.0f} {max(values):8.0f}")


if __name__ == "__main__":
    main()
