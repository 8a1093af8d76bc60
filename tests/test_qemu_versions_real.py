"""Real pairs on the newer QEMUs Debian ships (trixie's 10.0.13, sid's 11.1.x): firmware-only
guests under KVM reach COLO through `colospec run` and fail over on kill -9 of the
primary's QEMU; bookworm-backports' 10.0.2 (never enters COLO) is refused by the runner."""

from __future__ import annotations

import subprocess

import pytest

from pairlab import ROOT, PairLab

pytestmark = pytest.mark.integration

FETCH = ROOT / "tests/qemu-versions/fetch-qemu.sh"


def fetched(suite: str) -> str:
    """The wrapper of that suite's QEMU, fetched once and cached (README, test command)."""
    done = subprocess.run([str(FETCH), suite], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def status(lab: PairLab, h: str) -> dict:
    return lab.ask(h, {"cmd": "status"})


@pytest.mark.parametrize("suite, line", [("trixie", "10.0"), ("sid", "11.1")])
def test_a_pair_on_a_newer_qemu_reaches_colo_and_fails_over(suite, line):
    with PairLab(checkpoint_delay_ms=300, qemu=(fetched(suite), line)) as lab:
        lab.start("b")
        lab.start("a")
        lab.wait_colo()
        lab.wait_for("a checkpoint", lambda: status(lab, "a")["checkpoints"] >= 1)
        assert f"step check-qemu: {fetched(suite)} {line}." in lab.log_text("a")
        lab.kill_qemu("a")
        lab.wait_for("b takes over", lambda: (status(lab, "b")["phase"],
                     status(lab, "b")["colo_mode"]) == ("alone", "none"))  # fmt: skip
        assert status(lab, "b")["vm_status"] == "running"
        assert status(lab, "b")["last_failover"]["failed_commands"] == []


def test_qemu_10_0_2_is_refused_with_the_defect():
    with PairLab(qemu=(fetched("bookworm-backports"), "10.0")) as lab:
        lab.start("a")
        lab.expect_running.discard("a")
        assert lab.procs["a"].wait(timeout=60) == 1
        log = lab.log_text("a")
        assert "is QEMU 10.0.2, which has known defect colo-never-entered-10.0" in log
        assert "use QEMU 10.0.7 or later" in log
        assert "step qemu:" not in log  # refused before QEMU was started
