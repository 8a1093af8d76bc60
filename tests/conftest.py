"""Shared fixtures: the spec cases, their rendered artifacts, and single-file snapshots."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml
from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

from colospec.compile import check_spec, render_pair

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
CASES = sorted((ROOT / "tests" / "cases").glob("*.yaml"))
INVALID = sorted((ROOT / "tests" / "invalid").glob("*.yaml"))
VMFT_GUIDE = ROOT / "tests" / "data" / "vmft-guide"
ALL_VALID = EXAMPLES + CASES


def flavor_of(path: Path) -> str:
    return yaml.safe_load(path.read_text()).get("flavor", "colo")


COLO_VALID = [p for p in ALL_VALID if flavor_of(p) == "colo"]
VMFT_VALID = [p for p in ALL_VALID if flavor_of(p) == "vm-ft"]


class TextFileSnapshot(SingleFileSnapshotExtension):
    """One readable text file per snapshot, so a diff shows the artifact itself."""

    _write_mode = WriteMode.TEXT
    file_extension = "txt"


@pytest.fixture
def snapshot_file(snapshot):
    return snapshot.use_extension(TextFileSnapshot)


def case_id(path: Path) -> str:
    return path.stem


def qemu_args(text: str) -> list[str]:
    """qemu.args without its leading '#' lines (as the runner reads it)."""
    lines = text.splitlines()
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return lines


def rendered(path: Path):
    """(pair, {relpath: Artifact}) for a valid spec file."""
    pair = check_spec(path).pair
    return pair, render_pair(pair)


def all_artifacts() -> list[tuple[Path, str]]:
    """(spec, artifact path relative to OUT/<pair>/) for every valid spec."""
    out = []
    for spec in ALL_VALID:
        _, files = rendered(spec)
        out += [(spec, rel) for rel in files]
    return out


def guide_commands(name: str) -> list[list[str]]:
    """The vm-ft guide's commands in one of its blocks (tests/data/vmft-guide/): prompts
    ('# ') and comments dropped, continuation lines joined."""
    commands = []
    for line in (VMFT_GUIDE / name).read_text().replace("\\\n", " ").splitlines():
        words = shlex.split(line.strip().removeprefix("# "), comments=True)
        if words:
            commands.append(words)
    return commands
