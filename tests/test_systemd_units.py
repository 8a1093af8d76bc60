"""The generated units under a real systemd bring a real pair up, fail over and stop.

This machine kind has no systemd as PID 1, so each lab host gets its own systemd
(tests/systemd_host.py) in the host's network namespace; `systemctl start` on each
host's target brings the pair to COLO mode. The units also pass `systemd-analyze verify`
(tests/test_real_tools.py).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from systemd_host import SystemdHost

from pairlab import ROOT, PairLab

pytestmark = pytest.mark.integration
RESTART_WATCH_S = 3


def unit_commands(unit: Path, key: str) -> list[list[str]]:
    """The argv of each KEY= line, as systemd splits it (our units use its quoting subset)."""
    text = re.sub(r"\\\n", " ", unit.read_text())  # continuation lines
    out = []
    for line in text.splitlines():
        if line.startswith(f"{key}="):
            words = shlex.split(line.removeprefix(f"{key}="), posix=True)
            out.append([w.replace("%%", "%").replace("$$", "$") for w in words])
    return out


def test_unit_quoting_round_trips_through_the_parser(tmp_path):
    from colospec.render.text import exec_line

    argv = ["/bin/x", "-a", "plain", "with space", 'q"uote', "back\\slash", "50%", "$HOME", "a,b"]
    unit = tmp_path / "x.service"
    unit.write_text(f"[Service]\nExecStart={exec_line(argv)}\n")
    assert unit_commands(unit, "ExecStart") == [argv]


def test_systemd_root_script_passes_shellcheck():
    script = ROOT / "tests" / "systemd-root.sh"
    done = subprocess.run(["shellcheck", "--severity=style", str(script)],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_systemctl_start_brings_the_pair_up_and_a_failover_follows():
    with PairLab(checkpoint_delay_ms=500) as lab:
        # The lab's files, and this checkout (an editable install runs colospec from it).
        shared = [lab.tmp, ROOT]
        with SystemdHost(lab.ns["a"], shared) as a, SystemdHost(lab.ns["b"], shared) as b:
            hosts = {"a": a, "b": b}
            try:
                check_pair_under_systemd(lab, hosts)
            except BaseException:
                for h, sd in hosts.items():
                    print(f"--- journal of host {h} ---\n{sd.journal()[-8000:]}")
                raise
            cgroups = [sd.cgroup for sd in hosts.values()]
        assert not any(cg.exists() for cg in cgroups)


def check_pair_under_systemd(lab: PairLab, hosts: dict[str, SystemdHost]) -> None:
    target = f"colospec-{lab.name}.target"
    units = {h: sorted((lab.host_dir(h) / "systemd").iterdir()) for h in hosts}
    for h, sd in hosts.items():
        sd.install_units(units[h])
    # `systemctl start` returns once the target is reached, i.e. after the runner's
    # READY=1 (Type=notify), which each runner sends only in COLO mode.
    with ThreadPoolExecutor(2) as pool:
        starts = {h: pool.submit(sd.systemctl, "start", target, check=False, timeout=120)
                  for h, sd in hosts.items()}  # fmt: skip
        for start in starts.values():
            assert start.result().returncode == 0, start.result().stderr
    for h, sd in hosts.items():
        names = [u.name for u in units[h]]
        assert sd.systemctl("is-active", *names, check=False).stdout.split() == ["active"] * len(
            names
        ), h

    def status(h: str) -> dict:
        colospec = unit_commands(next(u for u in units[h] if u.name.endswith("-runner.service")),
                                 "ExecStart")[0][0]  # fmt: skip
        return json.loads(hosts[h].run(colospec, "status", "--json", str(lab.host_dir(h))).stdout)

    assert (status("a")["role"], status("a")["colo_mode"]) == ("primary", "primary")
    assert (status("b")["role"], status("b")["colo_mode"]) == ("secondary", "secondary")

    # A runner that dies is restarted by systemd and adopts its QEMU: still protected.
    runner, qemu = f"colospec-{lab.name}-runner.service", f"colospec-{lab.name}-qemu.service"

    def main_pid(h: str, unit: str) -> str:
        return hosts[h].systemctl("show", "-P", "MainPID", unit).stdout.strip()

    before, qemu_before = main_pid("b", runner), main_pid("b", qemu)
    hosts["b"].systemctl("kill", "--signal=SIGKILL", runner)
    lab.wait_for("systemd to restart b's runner", lambda: main_pid("b", runner) not in
                 (before, "0") and hosts["b"].systemctl("is-active", runner, check=False)
                 .stdout.strip() == "active")  # fmt: skip
    assert main_pid("b", qemu) == qemu_before, "the runner's restart restarted QEMU"
    assert (status("b")["role"], status("b")["colo_mode"]) == ("secondary", "secondary")
    assert status("a")["peer"]["reachable"]
    # The same for an operator's restart of a runner (e.g. after upgrading colospec).
    qemu_before = main_pid("a", qemu)
    hosts["a"].systemctl("restart", runner)
    assert main_pid("a", qemu) == qemu_before, "restarting the runner restarted QEMU"
    assert (status("a")["role"], status("a")["colo_mode"]) == ("primary", "primary")

    hosts["a"].systemctl("kill", "--signal=SIGKILL", qemu)

    def b_took_over() -> bool:
        s = status("b")
        return (s["role"], s["colo_mode"], s["vm_status"]) == ("primary", "none", "running")

    lab.wait_for("b takes over", b_took_over)
    assert status("b")["last_failover"]["reason"]
    # systemd never starts a second QEMU on a: its runner exits 3 (QEMU gone) and is not
    # restarted, and a restarted runner would only require a running QEMU, not start one.
    lab.wait_for("a's runner to end", lambda: hosts["a"].systemctl(
        "is-active", runner, check=False).stdout.strip() in ("inactive", "failed"))  # fmt: skip
    time.sleep(RESTART_WATCH_S)  # longer than RestartSec=: a restart would have happened
    assert hosts["a"].systemctl("is-active", qemu, check=False).stdout.strip() != "active"
    assert main_pid("a", qemu) == "0", "systemd started a second QEMU after the first died"
    assert hosts["a"].systemctl("is-active", runner, check=False).stdout.strip() != "active"

    # Stopping the target, or the runner (the end of protection), stops everything and
    # removes the tap. systemctl returns once the target itself is down: it stops first,
    # being ordered after the rest.
    for h, what in (("a", target), ("b", runner)):
        sd = hosts[h]
        sd.systemctl("stop", what)
        names = [u.name for u in units[h]]
        lab.wait_for(f"{h}'s units to stop", lambda sd=sd, names=names: set(
            sd.systemctl("is-active", *names, check=False).stdout.split()
        ) <= {"inactive", "failed"})  # fmt: skip
        tap = subprocess.run(["ip", "-n", lab.ns[h], "link", "show", f"tap-{lab.name}"],
                             capture_output=True)  # fmt: skip
        assert tap.returncode != 0, f"{h}: the tap outlived its unit"
