"""Re-protection on a real pair: a failed host comes back, joins the host that serves alone,
and COLO protects the guest again — with either host serving, in either layout.

Firmware guests under KVM (as test_integration_run.py): writes go through the serving
QEMU's block layer with qemu-io, so what the disk copy and the replication carry is real.
"""

from __future__ import annotations

import signal
import subprocess

import pytest

from faults import image_has
from pairlab import COLOSPEC, ROOT, PairLab

pytestmark = pytest.mark.integration

PATTERN_AT = {0x11: 0, 0x22: 1 << 20, 0x33: 2 << 20, 0x44: 3 << 20}


def qmp(lab: PairLab, h: str, execute: str, **arguments) -> object:
    reply = lab.ask(h, {"cmd": "qmp", "execute": execute, "arguments": arguments or None})
    assert reply["ok"], reply
    return reply["return"]


def qemu_io(lab: PairLab, h: str, line: str) -> None:
    """A write or read through the QEMU's block layer, as the guest's would go."""
    out = qmp(lab, h, "human-monitor-command",
              **{"command-line": f'qemu-io colo-disk0 "{line}"'})  # fmt: skip
    assert "failed" not in out.lower(), out


def status(lab: PairLab, h: str) -> dict:
    return lab.ask(h, {"cmd": "status"})


def wait_serving_alone(lab: PairLab, h: str) -> dict:
    lab.wait_for(f"{h} serves alone", lambda: status(lab, h)["phase"] == "alone", timeout=30)
    return status(lab, h)


def wait_protected(lab: PairLab, primary: str, secondary: str, timeout: float = 120) -> None:
    def both() -> bool:
        p, s = status(lab, primary), status(lab, secondary)
        return (p["colo_mode"], s["colo_mode"], p["protected"], s["protected"]) == (
            "primary", "secondary", True, True)  # fmt: skip

    lab.wait_for(f"{primary} protected by {secondary}", both, timeout=timeout)


@pytest.fixture
def pair():
    with PairLab(checkpoint_delay_ms=300, failover={"rejoin": "automatic"}) as lab:
        lab.start("b")
        lab.start("a")
        lab.wait_colo()
        yield lab


def test_each_host_fails_and_rejoins_in_turn_and_no_write_is_lost(pair):
    written = []

    def write(h: str, pattern: int) -> None:
        qemu_io(pair, h, f"write -P {pattern:#x} {PATTERN_AT[pattern]} 64k")
        written.append(pattern)

    # 1. the primary a fails: b takes over (its secondary layout) and a rejoins it.
    pair.kill_qemu("a")
    s = wait_serving_alone(pair, "b")
    assert s["last_failover"]["from_role"] == "secondary"
    write("b", 0x11)  # only b has it: a's copy must bring it over
    pair.wait_for("runner a exits", lambda: pair.procs["a"].poll() is not None)
    pair.start("a")
    wait_protected(pair, "b", "a")
    b = status(pair, "b")
    assert b["last_resync"]["took_ms"] > 0
    assert set(b["last_resync"]["stages_ms"]) >= {"mirror", "attach", "colo"}
    assert status(pair, "a")["epoch"] == b["epoch"] == 1
    assert image_has(pair, "a", 0x11, PATTERN_AT[0x11])
    write("b", 0x22)  # replicated from here on, as any write under COLO
    first = status(pair, "b")["checkpoints"]
    pair.wait_for("checkpoints again", lambda: status(pair, "b")["checkpoints"] >= first + 2)

    # 2. b (serving from its secondary layout) fails: a takes over from its secondary layout.
    pair.kill_qemu("b")
    s = wait_serving_alone(pair, "a")
    assert (s["epoch"], s["last_failover"]["from_role"]) == (2, "secondary")
    for pattern in written:
        qemu_io(pair, "a", f"read -P {pattern:#x} {PATTERN_AT[pattern]} 64k")
    write("a", 0x33)
    pair.wait_for("runner b exits", lambda: pair.procs["b"].poll() is not None)
    pair.start("b")
    wait_protected(pair, "a", "b")
    assert image_has(pair, "b", 0x33, PATTERN_AT[0x33])

    # 3. once more the other way: a fails again, b takes over and serves everything written.
    write("a", 0x44)
    first = status(pair, "a")["checkpoints"]
    pair.wait_for("checkpoints", lambda: status(pair, "a")["checkpoints"] >= first + 2)
    pair.kill_qemu("a")
    s = wait_serving_alone(pair, "b")
    assert s["epoch"] == 3
    for pattern in written:
        qemu_io(pair, "b", f"read -P {pattern:#x} {PATTERN_AT[pattern]} 64k")
    assert "Pattern verification failed" not in pair.log_text("b")


def test_manual_rejoin_stands_down_without_the_flag():
    with PairLab(checkpoint_delay_ms=300) as lab:
        lab.start("b")
        lab.start("a")
        lab.wait_colo()
        lab.kill_qemu("a")
        wait_serving_alone(lab, "b")
        lab.wait_for("runner a exits", lambda: lab.procs["a"].poll() is not None)
        lab.start("a")
        lab.expect_running.discard("a")
        lab.wait_for("a stands down", lambda: lab.procs["a"].poll() is not None, 30)
        assert lab.procs["a"].returncode == 4
        assert status(lab, "b")["phase"] == "alone"
        lab.start("a", "--rejoin")
        wait_protected(lab, "b", "a")


def test_a_fenced_secondary_joins_again_at_once(pair):
    """The operator drops the secondary (as rule secondary-silent would): it is fenced,
    and with rejoin automatic its runner joins again instead of exiting."""
    done = pair.ask("a", {"cmd": "failover"})
    assert done["ok"] and done["colo_mode"] == "none"
    wait_protected(pair, "a", "b")
    a = status(pair, "a")
    assert a["epoch"] == 1 and a["last_resync"] is not None
    assert "fenced; joining" in pair.log_text("b")
    assert pair.procs["b"].poll() is None


def test_after_a_drop_a_cold_start_refuses_until_the_newest_disk_serves():
    """The primary drops its secondary and serves on (epoch 1), then the pair stops. A
    normal bring-up would run COLO over two different disks: both hosts refuse, the
    operator serves from the newest (--force-primary) and the other joins it (--rejoin)."""
    with PairLab(checkpoint_delay_ms=300) as lab:
        lab.start("b")
        lab.start("a")
        lab.wait_colo()
        lab.kill_qemu("b")
        wait_serving_alone(lab, "a")
        qemu_io(lab, "a", f"write -P 0x11 {PATTERN_AT[0x11]} 64k")  # b never had it
        lab.wait_for("runner b exits", lambda: lab.procs["b"].poll() is not None)
        lab.expect_running.discard("a")
        lab.procs["a"].send_signal(signal.SIGTERM)
        lab.wait_for("runner a stops", lambda: lab.procs["a"].poll() is not None)
        assert lab.procs["a"].returncode == 0

        for h in ("b", "a"):
            lab.start(h)
            lab.expect_running.discard(h)
        for h in ("a", "b"):
            lab.wait_for(f"{h} refuses", lambda h=h: lab.procs[h].poll() is not None, 60)
            assert lab.procs[h].returncode == 4, lab.describe()
        assert "served at epoch 1, after" in lab.log_text("b")
        assert "--force-primary" in lab.log_text("a")

        lab.start("a", "--force-primary")
        s = wait_serving_alone(lab, "a")
        assert s["epoch"] == 2 and s["vm_status"] == "running"
        lab.start("b", "--rejoin")
        wait_protected(lab, "a", "b")
        assert image_has(lab, "b", 0x11, PATTERN_AT[0x11])


def test_switchover_swaps_the_roles_and_the_pair_stays_protected(pair):
    qemu_io(pair, "a", f"write -P 0x22 {PATTERN_AT[0x22]} 64k")
    first = status(pair, "a")["checkpoints"]
    pair.wait_for("a checkpoint", lambda: status(pair, "a")["checkpoints"] > first)
    done = subprocess.run([*COLOSPEC, "switchover", str(pair.host_dir("a"))],
                          capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "host-b serves" in done.stderr
    wait_protected(pair, "b", "a")
    b = status(pair, "b")
    assert b["last_failover"]["reason"].startswith("the primary asks for a switchover")
    assert b["epoch"] == status(pair, "a")["epoch"] == 1
    qemu_io(pair, "b", f"read -P 0x22 {PATTERN_AT[0x22]} 64k")
    assert "Pattern verification failed" not in pair.log_text("b")
    # the old primary never ran its own drop script (it would have resumed its guest)
    assert "90-failover-as-primary" not in pair.log_text("a")


def test_switchover_is_refused_on_the_secondary(pair):
    done = subprocess.run([*COLOSPEC, "switchover", str(pair.host_dir("b"))],
                          capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert done.returncode == 1 and "run it on the primary" in done.stderr
    assert status(pair, "a")["protected"] is True
