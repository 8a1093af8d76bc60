"""Every invalid spec: exit 2, FILE:LINE:COL errors (snapshotted), no traceback, nothing written."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import INVALID, ROOT

LINE = re.compile(r"^tests/invalid/[\w.-]+\.yaml:\d+:\d+: (error|warning): \$\S*: .+ — .+$")


def colospec(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "colospec", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("spec", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_spec_is_rejected_with_positions(spec, snapshot_file):
    rel = spec.relative_to(ROOT).as_posix()
    result = colospec("validate", rel)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines, "an invalid spec must say why"
    for line in lines:
        assert LINE.match(line), line
    assert any(": error: " in line for line in lines)
    assert result.stderr == snapshot_file


@pytest.mark.parametrize("spec", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_spec_builds_nothing(spec, tmp_path):
    out = tmp_path / "out"
    result = colospec("build", str(spec), "-o", str(out))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_one_invalid_spec_among_valid_ones_builds_nothing(tmp_path):
    out = tmp_path / "out"
    result = colospec("build", "examples/pair.yaml", "tests/invalid/q35.yaml", "-o", str(out))
    assert result.returncode == 2
    assert not out.exists()
