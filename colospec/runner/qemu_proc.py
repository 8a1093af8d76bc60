"""This host's QEMU process: start it from qemu.args, or adopt the one already running.

QEMU runs in its own session, so a runner that dies (or is restarted) leaves the guest
running, and the next runner adopts it through the pidfile. Exit is noticed through a
pidfd, which works for processes that are not our children too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from pathlib import Path


class QemuProcessError(Exception):
    pass


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _is_our_qemu(pid: int, binary: str, qmp_socket: str) -> bool:
    """The pid is alive and is a QEMU started for this host (not a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return (
        bool(cmdline)
        and cmdline[0] == binary.encode()
        and any(qmp_socket.encode() in arg for arg in cmdline)
    )


class QemuProcess:
    def __init__(self, binary: str, pidfile: str, qmp_socket: str):
        self.binary, self.pidfile, self.qmp_socket = binary, Path(pidfile), qmp_socket
        self.pid: int | None = None
        self.exited = asyncio.Event()
        self._popen: subprocess.Popen | None = None
        self._pidfd: int | None = None

    def find_running(self) -> int | None:
        pid = _read_pid(self.pidfile)
        if pid is not None and _is_our_qemu(pid, self.binary, self.qmp_socket):
            return pid
        return None

    def start(self, argv: list[str], env: dict[str, str] | None = None) -> int:
        try:
            self._popen = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, start_new_session=True, close_fds=True, env=env
            )
        except OSError as exc:
            raise QemuProcessError(f"cannot start {argv[0]}: {exc.strerror}") from None
        self._watch(self._popen.pid)
        return self._popen.pid

    def adopt(self, pid: int) -> None:
        self._watch(pid)

    def forget(self) -> None:
        """After this QEMU exited: the next start() or adopt() begins afresh."""
        if self.alive:
            raise QemuProcessError(f"QEMU pid {self.pid} still runs")
        self.pid, self._popen = None, None
        self.exited = asyncio.Event()

    def _watch(self, pid: int) -> None:
        if self.pid is not None:
            self.forget()  # one process object, one QEMU at a time
        self.pid = pid
        self._pidfd = os.pidfd_open(pid)
        asyncio.get_running_loop().add_reader(self._pidfd, self._on_exit)

    def _on_exit(self) -> None:
        loop = asyncio.get_running_loop()
        if self._pidfd is not None:
            loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        if self._popen:
            self._popen.wait()  # reap our child
        self.exited.set()

    @property
    def alive(self) -> bool:
        return self.pid is not None and not self.exited.is_set()

    def exit_status(self) -> str:
        if self._popen and self._popen.returncode is not None:
            rc = self._popen.returncode
            return f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit code {rc}"
        return "exited"

    async def wait_exit(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.exited.wait(), timeout)
        return self.exited.is_set()

    def kill(self) -> None:
        if self.alive and self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
