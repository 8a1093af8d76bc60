"""README command 1 as a user runs it: a wheel (not -e) in a fresh virtual environment.

The suite itself runs from an editable install, which finds schemas/ and templates/ in the
checkout; only an installed wheel shows whether they were packaged and are found there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EXAMPLES, ROOT

# What a wheel is built from: the sdist's inputs, copied so that a stale build/ in the
# checkout can never put removed modules into the wheel under test.
WHEEL_SOURCES = ("pyproject.toml", "README.md", "colospec", "schemas", "templates")


def _tree(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mode & 0o777)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """bin/ of a fresh venv outside the checkout, colospec installed as README command 1 does."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in WHEEL_SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    venv = work / "venv"
    run = {"check": True, "capture_output": True, "text": True}
    subprocess.run([sys.executable, "-m", "venv", str(venv)], **run)
    # As README command 1: `pip install .`, which builds a wheel (in an isolated build
    # environment) and installs it.
    subprocess.run([venv / "bin" / "pip", "install", "-q", str(src)], **run)
    return venv / "bin"


def _colospec(bin_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [bin_dir / "colospec", *args], cwd=cwd, env=env, capture_output=True, text=True
    )


def test_the_wheel_imports_colospec_from_site_packages(installed, tmp_path):
    found = subprocess.run(
        [installed / "python", "-c", "import colospec, colospec.runner.orchestrate as o; "
         "print(colospec.__file__); print(o.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert all("site-packages" in f and not f.startswith(str(ROOT)) for f in found), found


def test_schema_from_the_wheel_is_the_repositorys(installed, tmp_path):
    result = _colospec(installed, tmp_path, "schema")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (ROOT / "schemas" / "pair.v1.json").read_text()


def test_validate_and_build_from_the_wheel_reproduce_out(installed, tmp_path):
    specs = [str(p) for p in EXAMPLES]
    checked = _colospec(installed, tmp_path, "validate", "--strict", *specs)
    assert checked.returncode == 0, checked.stderr
    built = _colospec(installed, tmp_path, "build", *specs, "-o", "out")
    assert built.returncode == 0, built.stderr
    assert _tree(tmp_path / "out") == _tree(ROOT / "out")
