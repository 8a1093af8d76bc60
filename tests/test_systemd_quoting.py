"""What systemd itself runs from the generated units, for values full of its own syntax.

A real systemd (tests/systemd_host.py) starts the units of a spec whose paths and kernel
command line hold spaces, quotes, '$', '%', ';', backslashes and Unicode. The programs the
units name are a recorder that writes down the argv it was started with: each service's
command must arrive, argument for argument, as colospec meant it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from systemd_host import SystemdHost

from colospec.compile import check_spec, qemu_argv, render_pair
from colospec.writer import write_tree

from conftest import ROOT
from netns import namespace

pytestmark = pytest.mark.integration

# Accepted by validation and meaningful to systemd's unit syntax. An executable's path
# may not hold quotes or backslashes (systemd refuses it; validation does too).
ODD_DIR = "a b$x${y}%n%%;é\u202e`id`$(id)"
ODD_ARG = "x'y\"z \\w $HOME ${HOME} $$ %n %% ;"
APPEND = "console=ttyS0 a=\"b c\" d='e' $(id) `id` ;f %n %% \\g ${HOME} $HOME ok"
RECORDER = """#!/usr/bin/python3
import json, os, sys
json.dump(sys.argv, open(os.path.join({out!r}, f"{{os.getpid()}}.json"), "w"))
"""
RECORD_TIMEOUT_S = 30


def _recorder(path: Path, out: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(RECORDER.format(out=str(out)))
    path.chmod(0o755)


def test_systemd_runs_every_command_as_colospec_rendered_it(tmp_path):
    records = tmp_path / "records"
    records.mkdir()
    data = yaml.safe_load((ROOT / "examples/pair.yaml").read_text())
    data["qemu"]["binary"] = str(tmp_path / ODD_DIR / "qemu-system-x86_64")
    data["runtime"] = {
        "colospec": str(tmp_path / ODD_DIR / "colospec"),
        "artifacts_dir": f"/etc/{ODD_ARG}",
    }
    data["vm"]["kernel"]["append"] = APPEND
    data["vm"]["disk"]["image"] = f"/srv/{ODD_ARG},,x/disk.raw"
    spec = tmp_path / "odd.yaml"
    spec.write_text(yaml.safe_dump(data, allow_unicode=True))
    pair = check_spec(spec).pair
    write_tree(tmp_path / "out" / pair.name, render_pair(pair))
    _recorder(Path(pair.qemu.binary), records)
    _recorder(Path(pair.runtime.colospec), records)
    host = pair.primary
    lay = pair.layout(host)
    colospec = pair.runtime.colospec
    expected = sorted(
        [
            qemu_argv(pair, host),
            [colospec, "run", "--attach", lay.installed_dir],
            [colospec, "prepare", "disks", lay.installed_dir],
            [colospec, "prepare", "network", lay.installed_dir],
            [colospec, "cleanup", "network", lay.installed_dir],  # ExecStop=
        ]
    )
    assert any(APPEND in argv for argv in expected)
    units = sorted((tmp_path / "out" / pair.name / host.name / "systemd").iterdir())
    with namespace() as ns, SystemdHost(ns, [tmp_path]) as systemd:
        systemd.install_units(units)
        verify = systemd.run("systemd-analyze", "verify", "--man=no", "--generators=no",
                             *(f"/etc/systemd/system/{u.name}" for u in units), check=False)  # fmt: skip
        systemd.systemctl("start", "--no-block", lay.unit())
        _wait_for(records, len(expected) - 1)
        systemd.systemctl("stop", lay.unit("network"))
        _wait_for(records, len(expected))
        journal = systemd.journal()
    seen = sorted(json.loads(p.read_text()) for p in records.iterdir())
    assert seen == expected, journal
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr


def _wait_for(records: Path, count: int) -> None:
    deadline = time.monotonic() + RECORD_TIMEOUT_S
    while len(list(records.iterdir())) < count and time.monotonic() < deadline:
        time.sleep(0.05)
