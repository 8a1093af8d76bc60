"""Golden files: one snapshot per generated artifact per case (libvirt qemuxml2argv style)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import yaml

from colospec.versions import SYNTAX

from conftest import all_artifacts, rendered

ARTIFACTS = all_artifacts()


@pytest.mark.parametrize(
    ("spec", "artifact"),
    ARTIFACTS,
    ids=[f"{s.stem}--{a.replace('/', '--')}" for s, a in ARTIFACTS],
)
def test_golden(spec, artifact, snapshot_file):
    _, files = rendered(spec)
    assert files[artifact].text == snapshot_file


def _at(line: str):
    """examples/pair.yaml's artifacts with qemu.version set to a release line."""

    from colospec.compile import check_spec, render_pair

    from conftest import ROOT

    data = yaml.safe_load((ROOT / "examples/pair.yaml").read_text())
    data["qemu"]["version"] = line
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "pair.yaml"
        spec.write_text(yaml.safe_dump(data))
        return render_pair(check_spec(spec).pair)


# Every release line but the first, for the artifacts a version can change: a reviewer
# diffs test_golden[pair--…] against test_golden_per_version[pair@LINE--…].
VERSION_DEPENDENT = ("qemu.args", "plan.json", "qmp/")
PER_VERSION = [
    (line, rel)
    for line in sorted(SYNTAX)
    if line != "7.2" and "colo" in SYNTAX[line].flavors
    for rel in sorted(_at(line))
    if rel.split("/", 1)[1].startswith(VERSION_DEPENDENT)
]


@pytest.mark.parametrize(
    ("line", "artifact"),
    PER_VERSION,
    ids=[f"pair@{line}--{a.replace('/', '--')}" for line, a in PER_VERSION],
)
def test_golden_per_version(line, artifact, snapshot_file):
    assert _at(line)[artifact].text == snapshot_file
