"""The generated units' commands, run in the order systemd would, bring a real pair up.

There is no systemd as PID 1 on this machine, so the test plays systemd: it reads each
unit's ExecStart=/ExecStop= (undoing systemd's quoting), starts the units in their
dependency order with RuntimeDirectory= and NOTIFY_SOCKET as systemd provides them, and
waits for the runner unit's READY=1. The units themselves pass `systemd-analyze verify`
(tests/test_real_tools.py).
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
from pathlib import Path

import pytest

from pairlab import PairLab

pytestmark = pytest.mark.integration


def unit_commands(unit: Path, key: str) -> list[list[str]]:
    """The argv of each KEY= line, as systemd splits it (our units use its quoting subset)."""
    text = re.sub(r"\\\n", " ", unit.read_text())  # continuation lines
    out = []
    for line in text.splitlines():
        if line.startswith(f"{key}="):
            words = shlex.split(line.removeprefix(f"{key}="), posix=True)
            out.append([w.replace("%%", "%").replace("$$", "$") for w in words])
    return out


def unit_setting(unit: Path, key: str) -> str | None:
    for line in unit.read_text().splitlines():
        if line.startswith(f"{key}="):
            return line.split("=", 1)[1]
    return None


def test_unit_quoting_round_trips_through_the_parser(tmp_path):
    from colospec.render.text import exec_line

    argv = ["/bin/x", "-a", "plain", "with space", 'q"uote', "back\\slash", "50%", "$HOME", "a,b"]
    unit = tmp_path / "x.service"
    unit.write_text(f"[Service]\nExecStart={exec_line(argv)}\n")
    assert unit_commands(unit, "ExecStart") == [argv]


def test_starting_the_units_in_order_brings_the_pair_up(tmp_path):
    with PairLab(checkpoint_delay_ms=500) as lab:
        notify = {}
        started = []
        try:
            for h in ("a", "b"):

                def name(part: str, h: str = h) -> Path:
                    return next((lab.host_dir(h) / "systemd").glob(f"colospec-*-{part}.service"))

                def run_in_ns(argv, env=None, h: str = h, **kw) -> subprocess.Popen:
                    return subprocess.Popen(["ip", "netns", "exec", lab.ns[h], *argv],
                                            env={**os.environ, **(env or {})}, **kw)  # fmt: skip

                for part in ("disks", "network"):  # Type=oneshot, in order
                    (argv,) = unit_commands(name(part), "ExecStart")
                    assert run_in_ns(argv).wait(timeout=60) == 0, part
                qemu_unit = name("qemu")
                run_dir = Path("/run") / unit_setting(qemu_unit, "RuntimeDirectory")
                run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # RuntimeDirectory=
                (argv,) = unit_commands(qemu_unit, "ExecStart")
                started.append(run_in_ns(argv))
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sock.bind(str(tmp_path / f"notify-{h}"))
                sock.settimeout(90)
                notify[h] = sock
                runner_unit = name("runner")
                assert unit_setting(runner_unit, "Type") == "notify"
                (argv,) = unit_commands(runner_unit, "ExecStart")
                assert "--attach" in argv
                log = (tmp_path / f"runner-{h}.log").open("wb")
                started.append(run_in_ns(argv, {"NOTIFY_SOCKET": str(tmp_path / f"notify-{h}")},
                                         stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
            for h in ("a", "b"):
                while b"READY=1" not in notify[h].recv(4096):
                    pass
            assert lab.status("a")["colo_mode"] == "primary"
            assert lab.status("b")["colo_mode"] == "secondary"
            lab.kill_qemu("a")
            lab.wait_for("b takes over", lambda: lab.status("b")["colo_mode"] == "none"
                         and lab.status("b")["role"] == "primary")  # fmt: skip
        finally:
            for proc in started:
                proc.terminate()
            for proc in started:
                proc.wait(timeout=30)
            for h in ("a", "b"):  # ExecStop= of the network unit
                systemd = lab.host_dir(h) / "systemd"
                (argv,) = unit_commands(
                    next(systemd.glob("colospec-*-network.service")), "ExecStop"
                )
                subprocess.run(["ip", "netns", "exec", lab.ns[h], *argv], check=True)
                tap = f"tap-{lab.name}"
                assert subprocess.run(["ip", "-n", lab.ns[h], "link", "show", tap],
                                      capture_output=True).returncode != 0  # fmt: skip
