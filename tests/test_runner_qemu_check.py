"""colospec.runner.qemu_check against the installed QEMU (no mocks)."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from colospec.runner.qemu_check import QemuCheckError, QemuFacts, check_qemu, check_qemu_async

ROOT = Path(__file__).resolve().parent.parent
QEMU = "/usr/bin/qemu-system-x86_64"
PLAN_QEMU = json.loads((ROOT / "out/web1/node-a/plan.json").read_text())["qemu"]


def installed_version() -> str:
    out = subprocess.run([QEMU, "--version"], capture_output=True, text=True, check=True).stdout
    return re.match(r"QEMU emulator version (\d+\.\d+\.\d+)", out).group(1)


def qemu(**changes) -> dict:
    q = copy.deepcopy(PLAN_QEMU)
    q.update(changes)
    return q


def procs_mentioning(text: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if text.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            pass
    return found


@pytest.fixture
def probe_root():
    """A short, empty parent for the probe's temp dir; afterwards nothing may be left."""
    with tempfile.TemporaryDirectory(prefix="cs-qc-") as root:
        yield root
        assert os.listdir(root) == [], "probe temp dir left behind"
        assert procs_mentioning(root) == [], "probe QEMU left running"


def test_plan_requirements_met_by_installed_qemu(probe_root):
    facts = check_qemu(PLAN_QEMU, tmp_root=probe_root)
    assert isinstance(facts, QemuFacts)
    assert facts.binary == QEMU
    assert facts.version == installed_version()
    assert facts.version.startswith(PLAN_QEMU["version"] + ".")
    assert facts.defects == ()  # kvm: no known defect for 7.2
    assert 0 < facts.elapsed < 10


def test_async_variant_and_tcg_defect_reported(probe_root):
    facts = asyncio.run(check_qemu_async(qemu(accel="tcg"), tmp_root=probe_root))
    assert [d.id for d in facts.defects] == ["colo-tcg-checkpoint-deadlock"]


def test_full_version_matching_installed_one_passes(probe_root):
    version = installed_version()
    assert version == "7.2.22", "update these tests for the installed QEMU"
    assert check_qemu(qemu(version=version), tmp_root=probe_root).version == version


@pytest.mark.parametrize("version", ["6.2", "7.1", "7.2.21"])
def test_version_mismatch_names_both_versions(version, probe_root):
    with pytest.raises(QemuCheckError) as e:
        check_qemu(qemu(version=version), tmp_root=probe_root)
    msg = str(e.value)
    assert f"QEMU {installed_version()}" in msg
    assert f"built for QEMU {version}" in msg
    assert "rebuild" in msg and "install" in msg


def test_every_missing_requirement_is_listed_in_one_error(probe_root):
    q = qemu()
    q["requires"]["commands"].append("x-no-such-command")
    q["requires"]["qom_types"].append("no-such-object")
    q["requires"]["block_drivers"].append("no-such-driver")
    q["requires"]["migration_capabilities"].append("x-no-such-cap")
    with pytest.raises(QemuCheckError) as e:
        check_qemu(q, tmp_root=probe_root)
    msg = str(e.value)
    for item in ("x-no-such-command", "no-such-object", "no-such-driver", "x-no-such-cap"):
        assert item in msg
    assert "commands x-no-such-command" in msg and "block drivers no-such-driver" in msg
    for present in PLAN_QEMU["requires"]["commands"] + PLAN_QEMU["requires"]["block_drivers"]:
        assert re.search(rf"[ ,]{re.escape(present)}(,|;|:)", msg) is None, present


@pytest.mark.parametrize("binary", ["/bin/true", "/nonexistent/qemu", "/tmp", "/bin/echo"])
def test_not_qemu_is_a_clear_error(binary, probe_root):
    with pytest.raises(QemuCheckError, match=re.escape(binary)) as e:
        check_qemu(qemu(binary=binary), tmp_root=probe_root)
    assert "qemu.binary" in str(e.value)


def fake_qemu(tmp: str, body: str) -> str:
    path = os.path.join(tmp, "fake-qemu")
    Path(path).write_text(
        f'#!/bin/sh\necho "QEMU emulator version 7.2.22"\n[ "$1" = --version ] && exit 0\n{body}\n'
    )
    os.chmod(path, 0o755)
    return path


def test_probe_that_exits_reports_its_stderr(probe_root):
    with tempfile.TemporaryDirectory(prefix="cs-fake-") as tmp:
        binary = fake_qemu(tmp, "echo 'no colo here' >&2; exit 3")
        with pytest.raises(QemuCheckError, match=r"exited \(3\).*no colo here"):
            check_qemu(qemu(binary=binary), tmp_root=probe_root)


def test_probe_that_never_answers_is_killed(probe_root):
    with tempfile.TemporaryDirectory(prefix="cs-fake-") as tmp:
        # exec keeps the probe's arguments (with probe_root) in its cmdline: procs_mentioning
        binary = fake_qemu(tmp, f"exec {sys.executable} -c 'import time; time.sleep(300)' \"$@\"")
        with pytest.raises(QemuCheckError, match=r"did not connect to QMP in 0\.5 s"):
            check_qemu(qemu(binary=binary), tmp_root=probe_root, timeout=0.5)


def test_cancelled_check_still_kills_the_probe(probe_root):
    with tempfile.TemporaryDirectory(prefix="cs-fake-") as tmp:
        binary = fake_qemu(tmp, f"exec {sys.executable} -c 'import time; time.sleep(300)' \"$@\"")

        async def cancel_midway():
            task = asyncio.ensure_future(check_qemu_async(qemu(binary=binary), tmp_root=probe_root))
            while not procs_mentioning(probe_root):  # the probe is up
                await asyncio.sleep(0.02)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(asyncio.wait_for(cancel_midway(), 10))
