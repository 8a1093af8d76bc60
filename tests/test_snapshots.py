"""Golden files: one snapshot per generated artifact per case (libvirt qemuxml2argv style)."""

from __future__ import annotations

import pytest

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
