"""out/ is committed for examples/ so reviews show config diffs; it must never be stale."""

from __future__ import annotations

import subprocess
import sys

from conftest import EXAMPLES, ROOT


def tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_committed_out_matches_a_fresh_build(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "colospec", "build", *map(str, EXAMPLES), "-o", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    fresh, committed = tree(tmp_path), tree(ROOT / "out")
    assert sorted(committed) == sorted(fresh), "run: colospec build examples/*.yaml"
    stale = [rel for rel in fresh if fresh[rel] != committed[rel]]
    assert stale == [], "out/ is stale; run: colospec build examples/*.yaml"


def test_setup_commands_agree():
    """.ci/run runs exactly the README's test command."""
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci/run").read_text()
    command = next(
        line
        for line in ci.splitlines()
        if line
        and not line.startswith("#")
        and not line.startswith("set ")
        and not line.startswith("cd ")
    )
    assert command in readme
