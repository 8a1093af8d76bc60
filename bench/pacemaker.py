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
                paused    n2's runners paused their guests: lost quorum (their log's stamp)
                serving   both secondaries (n1 for pa, n3 for pb) serve alone; this waits
                          for corosync to drop n2 (the runners act on silence only then)
                promoted  Pacemaker shows both promoted on n1 and n3
  heal        links back -> both pairs protected again
usage: python3 bench/pacemaker.py [RUNS]   (as root; default 3 runs)
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from clusterlab import NODES, SERVING_ALONE, ClusterLab, promoted_on  # noqa: E402

POLL_S = 0.01
PAUSE_LINE = "decision pause (no-quorum)"


def first_times(predicates: dict, t0: float, timeout: float = 60) -> dict[str, float]:
    """When each predicate first held, seconds after t0; each polled in its own thread, so
    a slow answer (a cut-off runner's status) delays no other measurement."""
    found: dict[str, float] = {}

    def watch(name: str, predicate) -> None:
        while time.monotonic() - t0 < timeout:
            if predicate():
                found[name] = time.monotonic() - t0
                return
            time.sleep(POLL_S)

    threads = [threading.Thread(target=watch, args=item) for item in predicates.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    missing = set(predicates) - set(found)
    assert not missing, f"never: {missing}"
    return found


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

        wall0, t0 = datetime.now(), time.monotonic()
        lab.isolate("n2")
        t |= first_times(
            {
                "partition: serving (pa)": lambda: serves(lab, "pa", "n1"),
                "partition: serving (pb)": lambda: serves(lab, "pb", "n3"),
            },
            t0,
        )
        for pair in ("pa", "pb"):
            paused = lab.logged_at(pair, "n2", PAUSE_LINE, wall0)
            assert paused is not None, f"n2 never paused {pair}'s guest"
            t[f"partition: n2 paused {pair}"] = (paused - wall0).total_seconds()
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
