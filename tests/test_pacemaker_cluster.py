"""Two pairs on a real three-node Corosync + Pacemaker cluster (tests/clusterlab.py).

One scenario, in order (a cluster takes about 12 s to form and bring both pairs up):
1. both pairs protected; Pacemaker promotes each where the spec's primary is;
2. the node holding pa's primary dies: pa's secondary serves within colospec's time, well
   before Pacemaker's promotion, and Pacemaker then promotes it with no demote, stop or
   failure; pb (whose primary shares that secondary's node) is untouched;
3. the node returns: pa is protected again, nothing typed, nothing moved back;
4. a partition isolates n2 (both pairs' primaries by now) from both others on every link:
   n2 never serves either guest alone; both secondaries take over in the quorate
   partition; once the links are back, both pairs are protected again.
"""

from __future__ import annotations

import os
import shutil
import time
import xml.etree.ElementTree as ET
from datetime import datetime

import pytest

from clusterlab import NODES, SERVING_ALONE, ClusterLab, promoted_on

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces)"),
    pytest.mark.skipif(shutil.which("pacemakerd") is None, reason="needs pacemaker, corosync"),
    pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="needs /dev/kvm"),
]

# Pacemaker alone promotes 2.3–3.3 s after a node dies here; colospec's takeover after a
# killed process is tens of ms (README, How fast is failover). The bound leaves room for
# a loaded machine while staying below what Pacemaker could do.
TAKEOVER_BOUND_S = 1.5


def history(mon_xml: str, node: str, rid: str) -> list[tuple[str, str]]:
    """(task, rc) of every operation Pacemaker recorded for the pair on that node."""
    root = ET.fromstring(mon_xml)
    return [
        (op.get("task"), op.get("rc"))
        for n in root.iter("node")
        if n.get("name") == node
        for rh in n.iter("resource_history")
        if rh.get("id", "").startswith(f"{rid}-runner")
        for op in rh.iter("operation_history")
    ]


def failures(mon_xml: str) -> list[dict]:
    return [f.attrib for f in ET.fromstring(mon_xml).iter("failure")]


def test_two_pairs_on_three_nodes():
    with ClusterLab() as lab:
        pa, pb = (f"colospec-{lab.pairs[p]}" for p in ("pa", "pb"))
        for n in NODES:
            lab.boot(n)
        lab.wait_for("both pairs protected", lambda: lab.protected("pa") and lab.protected("pb"))

        def promoted(observer: str, rid: str) -> list[str]:
            return promoted_on(lab.crm_mon(observer), rid)

        lab.wait_for("Pacemaker promotes the first primaries",
                     lambda: promoted("n3", pa) == ["n1"] and promoted("n3", pb) == ["n2"],
                     every=0.5)  # fmt: skip
        pb_before = {n: lab.status("pb", n)["qemu_pid"] for n in ("n2", "n3")}

        # ----- 2. the node holding pa's primary dies
        killed_at = lab.kill_node("n1")
        lab.wait_for("pa's secondary serves",
                     lambda: (lab.status("pa", "n2") or {}).get("phase") in SERVING_ALONE,
                     timeout=30, every=0.01)  # fmt: skip
        took_s = time.monotonic() - killed_at
        lab.wait_for("Pacemaker promotes pa on n2", lambda: promoted("n2", pa) == ["n2"],
                     timeout=60, every=0.2)  # fmt: skip
        pacemaker_s = time.monotonic() - killed_at
        assert took_s < TAKEOVER_BOUND_S, f"takeover after {took_s:.2f} s"
        assert took_s < pacemaker_s
        mon = lab.crm_mon("n2")
        tasks = {task for task, _ in history(mon, "n2", pa)}
        assert not tasks & {"demote", "stop"}, history(mon, "n2", pa)
        # 193: an operation in flight (the recurring monitor Pacemaker just started)
        assert all(rc in ("0", "8", "193") for _, rc in history(mon, "n2", pa)), history(
            mon, "n2", pa
        )
        assert failures(mon) == [], lab.describe()
        assert promoted("n2", pb) == ["n2"] and lab.protected("pb")
        assert {n: lab.status("pb", n)["qemu_pid"] for n in ("n2", "n3")} == pb_before

        # ----- 3. it returns: protected again, nothing typed, nothing moved back
        lab.boot("n1")
        lab.wait_for("pa protected again", lambda: lab.protected("pa"), timeout=120, every=0.2)
        assert lab.status("pa", "n1")["role"] == "secondary"
        assert promoted("n1", pa) == ["n2"]
        assert failures(lab.crm_mon("n1")) == [], lab.describe()

        # ----- 4. n2 (both primaries) cut off from both other nodes on every link
        cut_at = datetime.now()
        lab.isolate("n2")
        seen: dict[str, set] = {"pa": set(), "pb": set()}

        def secondaries_serve() -> bool:
            for pair in ("pa", "pb"):
                status = lab.status(pair, "n2") or {}
                seen[pair].add((status.get("phase"), status.get("vm_status")))
            return (lab.status("pa", "n1") or {}).get("phase") in SERVING_ALONE and (
                lab.status("pb", "n3") or {}
            ).get("phase") in SERVING_ALONE

        lab.wait_for("both secondaries serve in the quorate partition", secondaries_serve,
                     timeout=60, every=0.05)  # fmt: skip
        # The cut-off side paused each guest before the other side served it (the runners'
        # own log stamps, one clock: polling two nodes' status cannot order them this well).
        for pair, survivor in (("pa", "n1"), ("pb", "n3")):
            paused = lab.logged_at(pair, "n2", "decision pause (no-quorum)", cut_at)
            serving = lab.logged_at(pair, survivor, "FAILOVER as secondary", cut_at)
            assert paused and serving and paused < serving, (pair, paused, serving)
        # ... and n2 keeps not serving until Pacemaker has stopped its instances there.
        lab.wait_for("n2's runners stopped (no quorum)",
                     lambda: secondaries_serve() and lab.status("pa", "n2") is None
                     and lab.status("pb", "n2") is None, timeout=60, every=0.05)  # fmt: skip
        for pair in ("pa", "pb"):
            assert not {phase for phase, _ in seen[pair]} & set(SERVING_ALONE), seen[pair]
        lab.wait_for("Pacemaker promotes both on the quorate side",
                     lambda: promoted("n1", pa) == ["n1"] and promoted("n1", pb) == ["n3"],
                     timeout=60, every=0.5)  # fmt: skip

        lab.isolate("n2", cut=False)
        lab.wait_for("both pairs protected after the partition",
                     lambda: lab.protected("pa") and lab.protected("pb"), timeout=180,
                     every=0.5)  # fmt: skip
        # n2's own view (its CIB) catches up with the cluster's after it rejoined.
        lab.wait_for("n2's Pacemaker sees both promoted where they serve",
                     lambda: promoted("n2", pa) == ["n1"] and promoted("n2", pb) == ["n3"],
                     timeout=60, every=0.5)  # fmt: skip
        # The only failures: n2's own record, while cut off, that its promoted instances no
        # longer served (they expire after the clone's failure-timeout).
        cut_off = {(f["node"], f["exitstatus"]) for f in failures(lab.crm_mon("n1"))}
        assert cut_off <= {("n2", "promoted (failed)")}, lab.describe()
        lab.on("n1", "crm_resource", "--cleanup")

        # No role swap through Pacemaker (crm_resource --move --promoted) here: in about
        # 1 run in 5 it restarted the secondary's instance first, the primary dropped it
        # and served on at a new epoch, and then the demote stopped the primary: both
        # instances stood down (README, Many pairs: Pacemaker, Limits).
        print(f"\ntakeover {took_s * 1000:.0f} ms, Pacemaker promoted after {pacemaker_s:.2f} s")
