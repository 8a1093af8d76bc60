"""What a runner persists about its host, so that a restarted runner resumes, not guesses.

state.json lives in the host's run directory beside QEMU's pidfile and belongs to that
QEMU: a state written for another QEMU process (an earlier run) is not this run's. It is
written before every irreversible QMP step (a failover, a fence) with what is about to
happen, and again once it has.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from colospec.runner import control
from colospec.runner.machine import Phase

LOCK_FILE = "runner.lock"


@dataclass(frozen=True)
class HostState:
    qemu_pid: int | None = None
    phase: Phase = Phase.STARTING
    role: str = ""
    epoch: int = 0
    rank: int = 0  # 1 once this host served alone coming from the COLO primary role
    intent: str | None = None  # "take-over" | "drop" | "fence" while it is being done
    intent_epoch: int | None = None  # the epoch a failover in progress serves at once begun
    last_failover: dict[str, Any] | None = None
    # The command line this host's QEMU started from: its own role's, or (after joining
    # its peer) the secondary's; re-protection's colo-compare script depends on it.
    layout: str = ""

    @classmethod
    def load(cls, run_dir: Path) -> HostState:
        raw = control.read_state(run_dir)
        try:
            return cls(
                qemu_pid=raw.get("qemu_pid"),
                phase=Phase(raw.get("phase", Phase.STARTING.value)),
                role=str(raw.get("role", "")),
                epoch=int(raw.get("epoch", 0)),
                rank=int(raw.get("rank", 0)),
                intent=raw.get("intent"),
                intent_epoch=raw.get("intent_epoch"),
                last_failover=raw.get("last_failover"),
                layout=str(raw.get("layout", "")),
            )
        except (ValueError, TypeError):
            return cls()

    def save(self, run_dir: Path) -> None:
        data = dataclasses.asdict(self)
        data["phase"] = self.phase.value
        control.write_state(run_dir, data)

    def belongs_to(self, pid: int | None) -> bool:
        return pid is not None and self.qemu_pid == pid


class AlreadyRunning(Exception):
    """Another runner holds this host's lock; str() names it."""


def take_lock(run_dir: Path) -> int:
    """One runner per host and pair: hold an exclusive lock for the process's lifetime.

    Returns the lock's file descriptor (kept open: closing it releases the lock; the
    kernel releases it when the process dies, however it dies).
    """
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise AlreadyRunning(
            f"another colospec runner (pid {holder}) already runs this host ({run_dir}) — "
            "stop it first; two runners would fight over one QEMU"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class StateStore:
    """The current HostState of this run, saved on every change."""

    def __init__(self, run_dir: Path, state: HostState):
        self.run_dir, self.state = run_dir, state

    def update(self, **changes: Any) -> HostState:
        self.state = dataclasses.replace(self.state, **changes)
        self.state.save(self.run_dir)
        return self.state

    def replace(self, state: HostState) -> None:
        self.state = state
        state.save(self.run_dir)
