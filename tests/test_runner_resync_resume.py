"""A rolled-back re-protection resumes the serving guest, however its migration ended.

A fake QEMU (unit test): its run state after a cancelled migration, as QEMU 7.2 shows it.
The real case (the joiner cut off mid-migration) is tests/test_pacemaker_cluster.py's
partition and tests/test_rejoin_faults.py.
"""

from __future__ import annotations

import asyncio

import pytest

from colospec.runner import resync
from colospec.runner.qemu_session import RunError


class FakeQemu:
    """Answers query-status from `states` (the last one repeats); `cont` in finish-migrate
    fails as QEMU's does, and a migration thread lets go after `cancels_needed` cancels."""

    def __init__(self, cancels_needed: int, after: str = "postmigrate"):
        self.state, self.after = "finish-migrate", after
        self.cancels_needed, self.sent = cancels_needed, []

    async def execute(self, name, arguments=None, timeout=None):
        self.sent.append(name)
        if name == "query-status":
            return {"status": self.state}
        if name == "migrate_cancel":
            self.cancels_needed -= 1
            if self.cancels_needed <= 0:
                self.state = self.after
            return {}
        if name == "cont":
            if self.state == "finish-migrate":
                raise RunError("QMP cont failed: GenericError: Migration is not finalized yet")
            self.state = "running"
            return {}
        raise AssertionError(name)


def resume(qemu: FakeQemu) -> None:
    r = resync.Resync.__new__(resync.Resync)
    r.qemu = qemu
    asyncio.run(r._resume_guest())


def test_a_migration_stuck_in_its_last_stage_is_cancelled_until_cont_works(monkeypatch):
    monkeypatch.setattr(resync, "POLL_S", 0.001)
    qemu = FakeQemu(cancels_needed=3)
    resume(qemu)
    assert qemu.state == "running"
    assert qemu.sent.count("migrate_cancel") == 3
    assert qemu.sent[-2:] == ["cont", "query-status"]


@pytest.mark.parametrize("after", ["postmigrate", "paused"])
def test_a_stopped_guest_is_continued(monkeypatch, after):
    monkeypatch.setattr(resync, "POLL_S", 0.001)
    qemu = FakeQemu(cancels_needed=0, after=after)
    qemu.state = after
    resume(qemu)
    assert qemu.state == "running" and "migrate_cancel" not in qemu.sent


def test_it_gives_up_with_an_error_after_its_deadline(monkeypatch, caplog):
    monkeypatch.setattr(resync, "POLL_S", 0.001)
    monkeypatch.setattr(resync, "RESUME_TIMEOUT_S", 0.05)
    qemu = FakeQemu(cancels_needed=10**9)
    resume(qemu)
    assert qemu.state == "finish-migrate"
    assert "the guest does not run (finish-migrate)" in caplog.text
