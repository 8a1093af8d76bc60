"""The real Node of agent.py: this node's colospec runner, its files and Pacemaker's tools."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from colospec.runner import control
from colospec.runner.artifacts import HostArtifacts
from colospec.runner.hoststate import LOCK_FILE

PROMOTED_MARK = "ocf-promoted"  # in the runner's run directory (/run: gone at reboot)
STATUS_TIMEOUT_S = 5
TAKE_OVER_TIMEOUT_S = 30
TOOL_TIMEOUT_S = 10
QEMU_KILL_WAIT_S = 5


class RunnerNode:
    def __init__(self, arts: HostArtifacts, log_file: Path):
        self.arts, self.log_file = arts, log_file
        self.run_dir = arts.run_dir
        self._spawned: subprocess.Popen | None = None

    # ----- the runner ---------------------------------------------------------------------

    def runner_pid(self) -> int | None:
        """The pid of the runner holding this host's lock, None if none holds it."""
        try:
            fd = os.open(self.run_dir / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        else:
            return None  # nobody holds it (our shared lock ends with the close below)
        finally:
            os.close(fd)

    def runner_alive(self) -> bool:
        return self.runner_pid() is not None or self.spawned_exit() is None

    def status(self) -> dict[str, Any] | None:
        try:
            return asyncio.run(control.ask(self.run_dir, {"cmd": "status"}, STATUS_TIMEOUT_S))
        except (OSError, ValueError, TimeoutError):
            return None

    def spawn(self) -> None:
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            # Its own session, and none of the agent's pipes: Pacemaker's executor waits
            # for the agent's output to close, and the runner outlives the agent.
            self._spawned = subprocess.Popen(
                [sys.executable, "-m", "colospec", "run", "--rejoin", str(self.arts.directory)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True, cwd="/",
            )  # fmt: skip

    def spawned_exit(self) -> int | None:
        """The exit code of the runner this agent spawned, None while it runs (or none)."""
        if self._spawned is None:
            return 0 if self.runner_pid() is None else None
        return self._spawned.poll()

    def stop_runner(self, timeout_s: float) -> bool:
        """SIGTERM: the runner quits its QEMU (killing it after 10 s) and removes its tap."""
        deadline = time.monotonic() + timeout_s
        pid = self.runner_pid()
        if pid and pid > 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        while self.runner_pid() is not None:
            if time.monotonic() > deadline:
                return self._kill(pid)
            time.sleep(0.1)
        if self._spawned is not None:
            self._spawned.wait()
        return True

    def _kill(self, pid: int | None) -> bool:
        """Past the timeout: nothing of this host's part may keep running after a stop."""
        self.log(f"the runner (pid {pid}) did not stop: killing it and its QEMU")
        qemu_pid = (self.run_dir / "qemu.pid").read_text().strip() if (
            self.run_dir / "qemu.pid").exists() else ""  # fmt: skip
        for victim in (pid, int(qemu_pid) if qemu_pid.isdigit() else None):
            if victim and victim > 0:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)
        time.sleep(QEMU_KILL_WAIT_S / 5)
        return self.runner_pid() is None

    def take_over(self) -> dict[str, Any]:
        request = {"cmd": "failover", "force": True}
        try:
            return asyncio.run(control.ask(self.run_dir, request, TAKE_OVER_TIMEOUT_S))
        except (OSError, ValueError, TimeoutError) as exc:
            return {"ok": False, "error": str(exc)}

    # ----- Pacemaker's view -----------------------------------------------------------------

    def promoted(self) -> bool:
        return (self.run_dir / PROMOTED_MARK).exists()

    def set_promoted(self, promoted: bool) -> None:
        mark = self.run_dir / PROMOTED_MARK
        if promoted:
            self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            mark.touch()
        else:
            mark.unlink(missing_ok=True)

    def set_score(self, score: int | None) -> None:
        """The promotion score, a transient node attribute (outside a cluster: ignored)."""
        value = ["-v", str(score)] if score is not None else ["-D"]
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(["crm_attribute", "--promotion", "-l", "reboot", *value],
                           capture_output=True, timeout=TOOL_TIMEOUT_S, check=False)  # fmt: skip

    def log(self, message: str) -> None:
        print(f"colospec-ocf[{self.arts.pair}/{self.arts.host}]: {message}", file=sys.stderr)
