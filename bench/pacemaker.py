"""Pairs under Pacemaker: how fast does each affected pair serve alone after a node dies,
how fast is it protected again after the node returns, and when does Pacemaker itself
promote? All from the same run, on a real three-node cluster (tests/clusterlab.py: two
pairs, pa on n1+n2, pb on n2+n3, firmware-only guests under KVM, corosync token 1000 ms).

Per run:
  form        boot of the three nodes -> both pairs protected
  kill        SIGKILL of n1's init (every process of the node; its kernel still answers,
              as a host whose QEMU died would) ->
                serving   pa's secondary on n2 serves alone (status phase alone)
                promoted  Pacemaker shows pa promoted on n2 (crm_mon)
  return      boot of n1 -> pa protected again (n1's instance started by Pacemaker, joins)
  partition   n2 cut off on every link (LAN and both replication links) ->
                paused    n2's runners paused their guests (lost quorum) or are gone
                serving   both secondaries (n1 for pa, n3 for pb) serve alone; this waits
                          for corosync to drop n2 (the runners act on silence only then)
                promoted  Pacemaker shows both promoted on n1 and n3
  heal        links back -> both pairs protected again
usage: python3 bench/pacemaker.py [RUNS]   (as root; default 3 runs)
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from clusterlab import NODES, SERVING_ALONE, ClusterLab, promoted_on  # noqa: E402

POLL_S = 0.01


def serves(lab: ClusterLab, pair: str, node: str) -> bool:
    return (lab.status(pair, node) or {}).get("phase") in SERVING_ALONE


def one_run() -> dict[str, float]:
    t: dict[str, float] = {}
    with ClusterLab() as lab:
        pa, pb = (f"colospec-{lab.pairs[p]}" for p in ("pa", "pb"))
        t0 = time.monotonic()
        for n in NODES:
            lab.boot(n)
        lab.wait_for("protected", lambda: lab.protected("pa") and lab.protected("pb"), 120, 0.1)
        t["form"] = time.monotonic() - t0

        def promoted(observer: str, rid: str) -> list[str]:
            return promoted_on(lab.crm_mon(observer), rid)

        lab.wait_for("promoted", lambda: promoted("n3", pa) == ["n1"], 60, 0.5)

        t0 = lab.kill_node("n1")
        lab.wait_for("serving", lambda: serves(lab, "pa", "n2"), 30, POLL_S)
        t["kill: serving"] = time.monotonic() - t0
        lab.wait_for("promoted", lambda: promoted("n2", pa) == ["n2"], 60, 0.05)
        t["kill: Pacemaker promoted"] = time.monotonic() - t0

        t0 = time.monotonic()
        lab.boot("n1")
        lab.wait_for("protected", lambda: lab.protected("pa"), 120, 0.1)
        t["return: protected"] = time.monotonic() - t0

        t0 = time.monotonic()
        lab.isolate("n2")
        done: dict[str, float] = {}

        def both_serve() -> bool:
            for pair in ("pa", "pb"):
                status = lab.status(pair, "n2") or {}
                if f"{pair} paused" not in done and status.get("vm_status") in (None, "paused"):
                    done[f"{pair} paused"] = time.monotonic() - t0
            for key, pair, node in (("pa", "pa", "n1"), ("pb", "pb", "n3")):
                if key not in done and serves(lab, pair, node):
                    done[key] = time.monotonic() - t0
            return len(done) == 4

        lab.wait_for("serving", both_serve, 60, POLL_S)
        t["partition: n2 paused pa"], t["partition: n2 paused pb"] = (
            done["pa paused"], done["pb paused"])  # fmt: skip
        t["partition: serving (pa)"], t["partition: serving (pb)"] = done["pa"], done["pb"]
        lab.wait_for("promoted",
                     lambda: promoted("n1", pa) == ["n1"] and promoted("n1", pb) == ["n3"],
                     60, 0.05)  # fmt: skip
        t["partition: Pacemaker promoted"] = time.monotonic() - t0

        t0 = time.monotonic()
        lab.isolate("n2", cut=False)
        lab.wait_for("protected", lambda: lab.protected("pa") and lab.protected("pb"), 180, 0.2)
        t["heal: both protected"] = time.monotonic() - t0
    return t


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    results = []
    for i in range(runs):
        r = one_run()
        results.append(r)
        print(f"run {i + 1}: " + ", ".join(f"{k} {v:.2f} s" for k, v in r.items()), flush=True)
    print(f"\nmedians of {runs} runs (min / max):")
    for key in results[0]:
        values = [r[key] for r in results]
        print(f"  {key:<32} {statistics.median(values):6.2f} s"
              f"  ({min(values):.2f} / {max(values):.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
