"""The promise COLO makes, checked for every failure an operator meets.

A Linux guest (tests/guest) runs under TCG on QEMU 7.2 with the COLO-under-TCG fix
(tests/qemu-tcg; the tests marked `on_10_0` also on QEMU 10.0 with its port of the fix),
protected by `colospec run` on two namespaces as hosts. A client on
the LAN keeps one TCP connection echoing every 20 ms and appends disk records. After
each failure: the same connection still echoes, every acknowledged record reads back,
the survivor reports the right role, and nothing is left behind. How long the pause
was is measured by bench/failover.py, not asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from faults import nft_table
from netns import ip
from pairlab import PairLab, tcg_qemu
from traffic import Traffic, serving

pytestmark = pytest.mark.integration

if os.environ.get("COLOSPEC_NEED_TCG_QEMU") != "1" and not os.path.exists(
    "/var/cache/colospec-test/qemu-7.2-colo-tcg/bin/qemu-system-x86_64"
):
    pytest.skip("the fixed QEMU is not built: run tests/qemu-tcg/build-qemu.sh "
                "(CI sets COLOSPEC_NEED_TCG_QEMU=1, which turns this into a failure)",
                allow_module_level=True)  # fmt: skip


TCG_QEMU_10_0 = os.path.join(
    os.environ.get("COLOSPEC_QEMU_CACHE_10_0", "/var/cache/colospec-test/qemu-10.0-colo-tcg"),
    "bin/qemu-system-x86_64",
)

# These tests run on each patched QEMU line; the others on 7.2 alone.
on_10_0 = pytest.mark.parametrize("qemu_line", ["7.2", "10.0"], indirect=True)


@pytest.fixture
def qemu_line(request) -> str:
    """The patched QEMU line the pair runs: 7.2 unless a test is marked on_10_0."""
    return getattr(request, "param", "7.2")


def lab_qemu(line: str) -> tuple[str, str] | None:
    """PairLab's qemu= for a patched line (None: its default, the patched 7.2)."""
    if line == "7.2":
        return None
    # Not in the default test command: a second QEMU build would take CI past its time
    # budget. COLOSPEC_NEED_TCG_QEMU_10_0=1 builds it (once) and runs these.
    if os.environ.get("COLOSPEC_NEED_TCG_QEMU_10_0") != "1" and not os.path.exists(TCG_QEMU_10_0):
        pytest.skip(f"the fixed QEMU {line} is not built: run tests/qemu-tcg/build-qemu.sh {line}"
                    " or set COLOSPEC_NEED_TCG_QEMU_10_0=1")  # fmt: skip
    return (tcg_qemu(line), line)


def status(lab: PairLab, h: str) -> dict:
    return lab.ask(h, {"cmd": "status"})


SILENT_NIC_EVENTS: list[str] = []  # pairs whose secondary NIC went silent (README, Known limits)


@pytest.fixture
def protected(qemu_line):
    """A pair in COLO mode with the guest serving and a client talking to it, on the
    patched QEMU of qemu_line.

    A pair whose secondary NIC went silent at boot protects nothing; the primary's runner
    must notice and drop that secondary (rule secondary-silent). Such a pair is counted
    (printed at the end of the session) and replaced, once."""
    qemu = lab_qemu(qemu_line)
    for attempt in (1, 2):
        lab = PairLab(guest=True, checkpoint_delay_ms=2000, qemu=qemu)
        with lab:
            traffic = serving(lab)
            if traffic is None:
                lab.wait_for("a's runner to drop its silent secondary", lambda lab=lab:
                             status(lab, "a")["phase"] == "alone", timeout=30)  # fmt: skip
                reason = status(lab, "a")["last_failover"]["reason"]
                assert "sends nothing" in reason, reason
                SILENT_NIC_EVENTS.append(lab.name)
                print(f"attempt {attempt}: the secondary's NIC stayed silent; the runner said: "
                      f"{reason}; a new pair")  # fmt: skip
                continue
            try:
                lab.wait_for("a checkpoint after the client started",
                             lambda lab=lab: status(lab, "a")["checkpoints"] >= 2, timeout=30)  # fmt: skip
                yield lab, traffic
            finally:
                traffic.close()
                print(lab.describe()[-3000:])
        assert_nothing_left(lab)
        return
    pytest.fail("two pairs in a row came up with a silent secondary NIC")


@pytest.fixture(scope="module", autouse=True)
def report_silent_nics():
    yield
    print(f"\nsilent secondary NICs seen (and dropped by the runner): {len(SILENT_NIC_EVENTS)}")


def assert_nothing_left(lab: PairLab) -> None:
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(ns in namespaces for ns in lab.ns.values())
    assert not os.path.exists(f"/run/colospec/{lab.name}")
    assert not lab.tmp.exists()
    ps = subprocess.run(["ps", "-eo", "stat,args"], capture_output=True, text=True).stdout
    assert not [p for p in ps.splitlines() if lab.name in p], "processes left behind"


def survived(lab: PairLab, traffic: Traffic, survivor: str, role: str, colo: str) -> None:
    """The promise: same connection, every acknowledged write, the right role."""
    traffic.wait_echoes(50)
    assert traffic.errors == []
    acked = len(traffic.acked)
    traffic.stop()
    assert acked > 5  # records kept flowing (fewer on a loaded machine)
    assert traffic.unreadable_records() == []
    s = lab.status(survivor)
    assert (s["role"], s["colo_mode"], s["vm_status"]) == (role, colo, "running")
    for h in ("a", "b"):  # a diverged secondary shows as kernel oopses on its console
        assert "BUG" not in lab.console(h) and "Oops" not in lab.console(h), lab.console(h)


def promoted(lab: PairLab, h: str = "b") -> None:
    lab.wait_for(f"{h} promoted", lambda: status(lab, h)["colo_mode"] == "none"
                 and status(lab, h)["role"] == "primary", timeout=60)  # fmt: skip


@on_10_0
def test_primary_qemu_killed(protected):
    lab, traffic = protected
    lab.kill_qemu("a")
    promoted(lab)
    survived(lab, traffic, "b", "primary", "none")
    assert lab.status("b")["last_failover"]["from_role"] == "secondary"


@on_10_0
def test_primary_host_lost(protected):
    lab, traffic = protected
    lab.kill_host("a")
    promoted(lab)
    survived(lab, traffic, "b", "primary", "none")


@on_10_0
def test_primary_host_lost_silently(protected):
    lab, traffic = protected
    lab.cut_links("a")  # no RST, no FIN: only missing heartbeats tell
    time.sleep(0.05)
    lab.kill_host("a")
    promoted(lab)
    survived(lab, traffic, "b", "primary", "none")
    assert "no heartbeat" in lab.status("b")["last_failover"]["reason"]


@on_10_0
def test_replication_link_cut_no_split_brain(protected):
    lab, traffic = protected
    lab.expect_running.discard("b")
    for h in ("a", "b"):
        ip("link", "set", "rep0", "down", netns=lab.ns[h])
    lab.wait_for("a serves alone", lambda: status(lab, "a")["colo_mode"] == "none", 60)
    lab.wait_for("b stands down", lambda: lab.procs["b"].poll() is not None, 60)
    assert lab.procs["b"].returncode == 4  # fenced: b never served
    assert "FAILOVER" not in lab.log_text("b")
    survived(lab, traffic, "a", "primary", "none")


@on_10_0
def test_secondary_qemu_killed(protected):
    lab, traffic = protected
    lab.kill_qemu("b")
    lab.wait_for("a drops b", lambda: status(lab, "a")["colo_mode"] == "none", 60)
    survived(lab, traffic, "a", "primary", "none")
    assert lab.status("a")["last_failover"]["from_role"] == "primary"


@pytest.mark.parametrize("h", ["a", "b"])
def test_runner_killed_and_restarted_pair_stays_protected(protected, h):
    lab, traffic = protected
    pid = lab.qemu_pid(h)
    lab.expect_running.discard(h)
    lab.procs[h].kill()
    lab.procs[h].wait()
    time.sleep(1.0)  # longer than the heartbeat budget: nobody may fail over meanwhile
    lab.start(h)
    lab.wait_colo(timeout=60)
    assert lab.qemu_pid(h) == pid
    assert status(lab, "a")["last_failover"] is None
    assert status(lab, "b")["last_failover"] is None
    # Still protected: losing the primary now is survived like any other time.
    lab.kill_qemu("a")
    promoted(lab)
    survived(lab, traffic, "b", "primary", "none")


def test_a_secondary_that_sends_nothing_is_dropped_not_trusted(protected):
    """The silent NIC, made on purpose: the secondary's output to colo-compare is lost.
    The primary's runner must stop counting on that secondary (it could not take over
    with a working network) and keep serving."""
    lab, traffic = protected
    compare = json.loads((lab.host_dir("a") / "plan.json").read_text())["watch"]
    out = compare["secondary_output"]
    rule = f"ip daddr {out['address']} tcp dport {out['port']} drop"
    chain = ("  chain o {\n    type filter hook output priority -300; policy accept;\n"
             f"    {rule}\n  }}")  # fmt: skip
    lab.expect_running.discard("b")
    with nft_table(lab, "b", chain):
        assert status(lab, "a")["protected"] is True
        lab.wait_for("a drops its silent secondary",
                     lambda: status(lab, "a")["colo_mode"] == "none", timeout=60)  # fmt: skip
    s = status(lab, "a")
    assert s["protected"] is False and "sends nothing" in s["last_failover"]["reason"]
    lab.wait_for("b stands down", lambda: lab.procs["b"].poll() is not None, 30)
    assert lab.procs["b"].returncode == 4
    survived(lab, traffic, "a", "primary", "none")
