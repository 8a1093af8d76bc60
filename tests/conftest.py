"""Shared fixtures: the spec cases, their rendered artifacts, and single-file snapshots."""

from __future__ import annotations

from pathlib import Path

import pytest
from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

from colospec.compile import check_spec, render_pair

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
CASES = sorted((ROOT / "tests" / "cases").glob("*.yaml"))
INVALID = sorted((ROOT / "tests" / "invalid").glob("*.yaml"))
ALL_VALID = EXAMPLES + CASES


class TextFileSnapshot(SingleFileSnapshotExtension):
    """One readable text file per snapshot, so a diff shows the artifact itself."""

    _write_mode = WriteMode.TEXT
    file_extension = "txt"


@pytest.fixture
def snapshot_file(snapshot):
    return snapshot.use_extension(TextFileSnapshot)


def case_id(path: Path) -> str:
    return path.stem


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
