"""A real systemd as PID 1 for one test "host": `systemctl start` on generated units.

This machine kind has no systemd as PID 1, so SystemdHost boots the installed systemd
in its own PID, mount, UTS, IPC and cgroup namespaces, inside a given network namespace
(a PairLab host), on a throw-away copy-on-write root (tests/systemd-root.sh says why and
how). Units go into its /etc/systemd/system; the lab's directory is shared at the same
path, so the units' paths work unchanged. Commands run inside with nsenter.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SYSTEMD = Path("/lib/systemd/systemd")
BOOT_TARGET = "colospec-test-boot.target"
# Units that would reach beyond the test (clock, consoles, the host's /tmp through a
# shared directory, kernel settings) or only make noise in a container.
MASKED = [
    "systemd-tmpfiles-setup.service", "systemd-tmpfiles-setup-dev.service",
    "systemd-tmpfiles-setup-dev-early.service", "systemd-tmpfiles-clean.timer",
    "systemd-timesyncd.service", "systemd-networkd.service", "systemd-networkd.socket",
    "systemd-resolved.service", "systemd-networkd-wait-online.service",
    "networking.service", "ifupdown-pre.service", "systemd-sysctl.service",
    "systemd-modules-load.service", "systemd-remount-fs.service", "systemd-udevd.service",
    "systemd-udev-trigger.service", "systemd-firstboot.service", "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount", "systemd-pstore.service", "getty@.service",
    "serial-getty@.service", "console-getty.service", "fstrim.timer", "e2scrub_all.timer",
    "apt-daily.timer", "apt-daily-upgrade.timer", "man-db.timer", "dpkg-db-backup.timer",
]  # fmt: skip
JOURNALD_CONF = """[Journal]
Storage=volatile
ReadKMsg=no
Audit=no
ForwardToConsole=no
ForwardToWall=no
ForwardToSyslog=no
"""
BOOT_TARGET_UNIT = """[Unit]
Description=colospec test: systemd with nothing but its journal
DefaultDependencies=no
Wants=systemd-journald.socket systemd-journald.service
"""


def cgroup2_root() -> Path:
    """The host's cgroup2 hierarchy: /sys/fs/cgroup, or /sys/fs/cgroup/unified (hybrid)."""
    root = Path("/sys/fs/cgroup")
    return root if (root / "cgroup.controllers").exists() else root / "unified"


class SystemdHost:
    def __init__(self, netns: str, shared: list[Path], boot_timeout: float = 30):
        self.netns, self.shared, self.boot_timeout = netns, shared, boot_timeout
        self.state = Path(tempfile.mkdtemp(prefix="cs-systemd-"))
        self.units = self.state / "units"
        self.cgroup = cgroup2_root() / f"colospec-test-{self.state.name}"
        self.pid: int | None = None
        self.proc: subprocess.Popen | None = None
        self.console_log = self.state / "console.log"
        self._console: tuple[int, threading.Thread] | None = None
        self._closing = False

    # ----- lifecycle ---------------------------------------------------------------

    def __enter__(self) -> SystemdHost:
        try:
            self._boot()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _boot(self) -> None:
        if not SYSTEMD.exists():
            raise RuntimeError(f"{SYSTEMD} missing: set up with the README's test command")
        self.units.mkdir()
        (self.state / "journald.conf").write_text(JOURNALD_CONF)
        (self.units / BOOT_TARGET).write_text(BOOT_TARGET_UNIT)
        for unit in MASKED:
            (self.units / unit).symlink_to("/dev/null")
        tty = self._open_console()
        self.cgroup.mkdir()
        with self.console_log.open("ab") as out:
            self.proc = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{self.netns}", "--",
                 "unshare", "--pid", "--fork", "--mount", "--mount-proc", "--uts", "--ipc",
                 "--kill-child=SIGKILL", str(HERE / "systemd-root.sh"), "cgroup",
                 str(self.cgroup), str(self.state), tty, *(str(p) for p in self.shared)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + self.boot_timeout
        while True:
            if self.pid is None:
                self.pid = self._child_of(self.proc.pid)
            if self.proc.poll() is not None:
                raise RuntimeError(f"systemd did not boot:\n{self.log()}")
            if self.pid and Path(f"/proc/{self.pid}/root/run/systemd/private").exists():
                state = self.systemctl("is-system-running", check=False).stdout.strip()
                if state in ("running", "degraded"):
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"systemd did not come up in {self.boot_timeout} s:\n"
                                   f"{self.log()}")  # fmt: skip
            time.sleep(0.02)

    def close(self) -> None:
        if self.pid and _alive(self.pid):
            os.kill(self.pid, signal.SIGRTMIN + 4)  # what `systemctl poweroff` sends
            _wait_gone(self.pid, 30)
        if self.proc:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # --kill-child takes the namespace
                self.proc.wait(timeout=10)
        if self.cgroup.exists():
            for left in _cgroup_pids(self.cgroup):
                os.kill(left, signal.SIGKILL)
            for path in [*sorted(self.cgroup.rglob("*"), reverse=True), self.cgroup]:
                if path.is_dir():
                    _rmdir_when_empty(path)
        if self._console:
            fd, reader = self._console
            self._closing = True
            reader.join(timeout=5)
            os.close(fd)
        shutil.rmtree(self.state, ignore_errors=True)

    # ----- inside -------------------------------------------------------------------

    def run(
        self, *argv: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess:
        """Run argv inside this host (its root, PIDs, cgroup and network)."""
        assert self.pid
        return subprocess.run(
            ["nsenter", "-t", str(self.pid), "-m", "-p", "-u", "-i", "-C", "-n", "-r", "-w",
             "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", *argv],
            capture_output=True, text=True, check=check, timeout=timeout,
        )  # fmt: skip

    def systemctl(self, *args: str, check: bool = True, timeout: float = 120):
        return self.run("systemctl", "--no-pager", *args, check=check, timeout=timeout)

    def install_units(self, units: list[Path]) -> None:
        for unit in units:
            shutil.copy(unit, self.units / unit.name)
        self.systemctl("daemon-reload")

    def journal(self, unit: str | None = None) -> str:
        args = ["-u", unit] if unit else []
        return self.run("journalctl", "--no-pager", "-o", "short-monotonic", *args,
                        check=False).stdout  # fmt: skip

    def log(self) -> str:
        return self.console_log.read_text(errors="replace") if self.console_log.exists() else ""

    # ----- plumbing -------------------------------------------------------------------

    def _open_console(self) -> str:
        master, slave = os.openpty()
        tty = os.ttyname(slave)
        os.close(slave)  # systemd opens it itself; the master must be drained or it blocks

        def drain() -> None:
            with self.console_log.open("ab", buffering=0) as out:
                while not self._closing:
                    if not select.select([master], [], [], 0.2)[0]:
                        continue
                    try:
                        out.write(os.read(master, 65536))
                    except OSError:  # EIO while nobody holds the terminal
                        time.sleep(0.05)

        reader = threading.Thread(target=drain, name=f"console-{self.netns}", daemon=True)
        self._console = (master, reader)
        reader.start()
        return tty

    @staticmethod
    def _child_of(pid: int) -> int | None:
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return None
        return int(children[0]) if children else None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)  # PID 1 of its namespace: takes every process along
            return
        time.sleep(0.02)


def _cgroup_pids(cgroup: Path) -> list[int]:
    pids = []
    for procs in cgroup.rglob("cgroup.procs"):
        pids += [int(p) for p in procs.read_text().split()]
    return pids


def _rmdir_when_empty(path: Path, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
