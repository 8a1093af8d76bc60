"""A real COLO pair on one machine: two network namespaces as hosts, a third as the LAN.

    host A (primary)                         host B (secondary)
    br0 ── tap-<pair> (guest)                br0 ── tap-<pair> (guest)
     │  10.66.0.2 (lan_address)               │  10.66.0.3
     └─ veth ──────── LAN ns: brlan ──────────┘
    rep0 10.77.0.2 ────── replication veth ────── rep0 10.77.0.3

Each host runs `colospec run` on its built directory, which starts its own QEMU.
Everything is removed by close(): namespaces (and so every device in them), processes,
run directories, images. Only addresses inside these namespaces are used.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from colospec.runner import control

from netns import ip, kill_all_in, unique_name

ROOT = Path(__file__).resolve().parent.parent
COLOSPEC = [sys.executable, "-m", "colospec"]
REPLICATION = {"a": "10.77.0.2", "b": "10.77.0.3"}
LAN = {"a": "10.66.0.2", "b": "10.66.0.3", "client": "10.66.0.100"}


PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """QEMUs outlive their runner by design; orphans then come to us instead of to PID 1
    (which may not reap them here), and close() reaps them: nothing is left behind."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def reap_orphans(timeout: float = 10) -> None:
    """Wait for every child (killed runners' QEMUs included) until none is left."""
    deadline = time.monotonic() + timeout
    with contextlib.suppress(ChildProcessError):
        while time.monotonic() < deadline:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                time.sleep(0.02)


_ECHO_ONCE = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 9999))
data, peer = s.recvfrom(64)
s.sendto(data, peer)
"""
_PING_UNTIL_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
s.settimeout(0.02)
for _ in range(1000):
    s.sendto(b"ping", (sys.argv[2], 9999))
    try:
        s.recvfrom(64)
        break
    except OSError:
        pass
else:
    sys.exit("no echo across the LAN")
"""


GUEST_IP = "10.66.0.50"


def tcg_qemu(line: str = "7.2") -> str:
    """The QEMU of this line (7.2, 10.0) with the COLO-under-TCG fix (tests/qemu-tcg),
    built once and cached."""
    script = ROOT / "tests/qemu-tcg/build-qemu.sh"
    done = subprocess.run([str(script), line], stdout=subprocess.PIPE, text=True, check=True,
                          timeout=3600)  # fmt: skip
    return done.stdout.strip().splitlines()[-1]


class PairLab:
    def __init__(
        self,
        *,
        checkpoint_delay_ms: int = 500,
        image_mib: int = 64,
        guest: bool = False,
        failover: dict[str, int] | None = None,
        qemu: tuple[str, str] | None = None,
    ):
        """guest=False: firmware-only VMs under KVM with stock QEMU. guest=True: the Linux
        test guest (tests/guest) under TCG on the fixed QEMU, serving at GUEST_IP.
        qemu: (binary, qemu.version) of another QEMU (tests/qemu-versions/fetch-qemu.sh;
        with guest=True a fixed one: (tcg_qemu("10.0"), "10.0"))."""
        self.guest = guest
        self.qemu = qemu
        self.failover = failover
        self.name = unique_name("lab")
        self.tmp = Path(tempfile.mkdtemp(prefix="cs-lab-"))
        self.ns = {h: f"{self.name}{h}"[:15] for h in ("a", "b", "l")}
        self.hosts = {"a": "host-a", "b": "host-b"}
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        self.checkpoint_delay_ms = checkpoint_delay_ms
        self.image_mib = image_mib
        self.out = self.tmp / "out"
        self.expect_running: set[str] = set()  # runners that must not exit while waiting

    # ----- set-up ------------------------------------------------------------------

    def __enter__(self) -> PairLab:
        become_subreaper()
        try:
            self._network()
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _network(self) -> None:
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "add", ns], check=True)
            ip("link", "set", "lo", "up", netns=ns)
        lan = self.ns["l"]
        ip("link", "add", "brlan", "type", "bridge", netns=lan)
        ip("addr", "add", f"{LAN['client']}/24", "dev", "brlan", netns=lan)
        ip("link", "set", "brlan", "up", netns=lan)
        for h in ("a", "b"):
            ns = self.ns[h]
            ip("link", "add", "br0", "type", "bridge", netns=ns)
            ip("addr", "add", f"{LAN[h]}/24", "dev", "br0", netns=ns)
            ip("link", "set", "br0", "up", netns=ns)
            ip("link", "add", "uplink", "netns", ns, "type", "veth", "peer", "name", f"lan-{h}",
               "netns", lan)  # fmt: skip
            ip("link", "set", "uplink", "master", "br0", "up", netns=ns)
            ip("link", "set", f"lan-{h}", "master", "brlan", "up", netns=lan)
        ip("link", "add", "rep0", "netns", self.ns["a"], "type", "veth", "peer", "name", "rep0",
           "netns", self.ns["b"])  # fmt: skip
        for h in ("a", "b"):
            ip("addr", "add", f"{REPLICATION[h]}/24", "dev", "rep0", netns=self.ns[h])
            ip("link", "set", "rep0", "up", netns=self.ns[h])
        self._wait_forwarding(LAN["a"], LAN["b"])

    def _wait_forwarding(self, a: str, b: str) -> None:
        """A new bridged path drops everything for its first half second or so on this
        kernel; runners must not start while their second heartbeat path is deaf."""
        echo = subprocess.Popen(["ip", "netns", "exec", self.ns["b"], sys.executable, "-c",
                                 _ECHO_ONCE, b])  # fmt: skip
        try:
            subprocess.run(["ip", "netns", "exec", self.ns["a"], sys.executable, "-c",
                            _PING_UNTIL_ECHO, a, b], check=True, timeout=30)  # fmt: skip
        finally:
            echo.kill()
            echo.wait()

    def _build(self) -> None:
        images = {}
        for h in ("a", "b"):
            images[h] = self.tmp / h / "disk.raw"
            images[h].parent.mkdir()
            subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(images[h]),
                            f"{self.image_mib}M"], check=True)  # fmt: skip

        def host(h: str) -> dict[str, Any]:
            return {
                "name": self.hosts[h], "address": REPLICATION[h], "lan_address": LAN[h],
                "bridge": "br0", "scratch_dir": str(self.tmp / h / "scratch"),
                "image": str(images[h]),
            }  # fmt: skip

        vm = {
            "memory_mib": 128, "cpus": 1, "cpu": "qemu64", "accel": "kvm",
            "disk": {"image": str(images["a"])},
            "nic": {"model": "e1000", "mac": "52:54:00:c0:10:01"},
        }  # fmt: skip
        binary, version = self.qemu or ("/usr/bin/qemu-system-x86_64", "7.2")
        if self.guest:
            from guestlib import guest_files, kernel_append

            if self.qemu is None:
                binary = tcg_qemu()
            vmlinuz, initrd = guest_files()
            vm |= {
                "memory_mib": 256, "accel": "tcg",
                "nic": {"model": "virtio-net-pci", "mac": "52:54:00:c0:10:01"},
                "kernel": {"path": str(vmlinuz), "initrd": str(initrd),
                           "append": kernel_append(GUEST_IP)},
            }  # fmt: skip
        spec = {
            "apiVersion": "colospec/v1",
            "name": self.name,
            "qemu": {"binary": binary, "version": version},
            "vm": vm,
            "hosts": {"primary": host("a"), "secondary": host("b")},
            "replication": {
                "checkpoint_delay_ms": self.checkpoint_delay_ms,
                "ports": {"migration": 8888, "nbd": 8889, "mirror": 9003, "compare": 9004},
            },
        }
        # The units run the built directories where the lab keeps them.
        spec["runtime"] = {"artifacts_dir": str(self.out), "state_dir": str(self.tmp / "state")}
        self.key_file = self.tmp / "pair.key"
        keygen = subprocess.run([*COLOSPEC, "keygen", str(self.key_file)], capture_output=True,
                                text=True, cwd=ROOT)  # fmt: skip
        if keygen.returncode != 0:
            raise RuntimeError(f"colospec keygen failed: {keygen.stderr}")
        spec["security"] = {"key_file": str(self.key_file)}
        if self.failover:
            spec["failover"] = self.failover
        self.spec = self.tmp / "pair.yaml"
        self.spec.write_text(yaml.safe_dump(spec))
        result = subprocess.run([*COLOSPEC, "build", str(self.spec), "-o", str(self.out)],
                                capture_output=True, text=True, cwd=ROOT)  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"colospec build failed: {result.stderr}")

    def host_dir(self, h: str) -> Path:
        return self.out / self.name / self.hosts[h]

    def run_dir(self, h: str) -> Path:
        return Path(f"/run/colospec/{self.name}/{self.hosts[h]}")

    # ----- runners -----------------------------------------------------------------

    def start(self, h: str, *extra: str) -> subprocess.Popen:
        self.logs[h] = self.tmp / f"runner-{h}.log"
        log = self.logs[h].open("ab")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns[h], *COLOSPEC, "run", str(self.host_dir(h)), *extra],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
        self.procs[h] = proc
        self.expect_running.add(h)
        return proc

    def log_text(self, h: str) -> str:
        return self.logs[h].read_text(errors="replace") if h in self.logs else ""

    def ask(self, h: str, request: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
        return asyncio.run(control.ask(self.run_dir(h), request, timeout))

    def status(self, h: str) -> dict[str, Any]:
        result = subprocess.run([*COLOSPEC, "status", "--json", str(self.host_dir(h))],
                                capture_output=True, text=True, cwd=ROOT, timeout=30)  # fmt: skip
        assert result.returncode in (0, 3), result.stderr  # 3: no runner answers
        return json.loads(result.stdout)

    def wait_for(self, what: str, predicate, timeout: float = 60, every: float = 0.05):
        """Poll until predicate() is truthy; the deadline is a hang guard, not a target."""
        deadline = time.monotonic() + timeout
        while True:
            for h, proc in self.procs.items():
                if proc.poll() is not None and h in self.expect_running:
                    raise AssertionError(
                        f"runner {h} exited ({proc.returncode})\n{self.describe()}"
                    )
            with contextlib.suppress(OSError, ValueError, ConnectionError, TimeoutError):
                value = predicate()
                if value:
                    return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{self.describe()}")
            time.sleep(every)

    def wait_colo(self, timeout: float = 90) -> None:
        """Both hosts in COLO mode and hearing each other on both heartbeat paths (a
        bridged path's first ARP can take a retry, about a second, to resolve)."""
        for h, mode in (("a", "primary"), ("b", "secondary")):

            def protected(h=h, mode=mode) -> bool:
                s = self.ask(h, {"cmd": "status"})
                return s["colo_mode"] == mode and sorted(s["peer"]["paths"]) == [
                    "lan",
                    "replication",
                ]

            self.wait_for(f"{h} in COLO mode with both heartbeat paths", protected, timeout)

    def qemu_pid(self, h: str) -> int:
        return int(Path(self.run_dir(h) / "qemu.pid").read_text())

    def kill_qemu(self, h: str) -> float:
        self.expect_running.discard(h)  # its runner exits once its QEMU is gone
        os.kill(self.qemu_pid(h), signal.SIGKILL)
        return time.monotonic()

    def kill_host(self, h: str) -> float:
        self.expect_running.discard(h)
        kill_all_in(self.ns[h])
        return time.monotonic()

    def console(self, h: str) -> str:
        path = self.run_dir(h) / "console.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def cut_links(self, h: str) -> None:
        """Host h drops off both networks (its processes keep running)."""
        for dev in ("uplink", "rep0"):
            ip("link", "set", dev, "down", netns=self.ns[h])

    def describe(self) -> str:
        logs = [f"--- runner {h} log ---\n{self.log_text(h)[-6000:]}" for h in self.logs]
        if self.guest:
            logs += [f"--- console {h} ---\n{self.console(h)[-2000:]}" for h in ("a", "b")]
        return "\n".join(logs)

    # ----- tear-down ---------------------------------------------------------------

    def close(self) -> None:
        for ns in self.ns.values():
            kill_all_in(ns)
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
        reap_orphans()
        shutil.rmtree(f"/run/colospec/{self.name}", ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
