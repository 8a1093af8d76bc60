"""The pair's heartbeat key: made by `colospec keygen`, refused by the runner when unsafe."""

from __future__ import annotations

import os
import stat

import pytest
import yaml

from colospec.runner.hbauth import KEY_BYTES, KeyFileError, load_key

from conftest import ROOT
from test_invalid_specs import colospec


def test_keygen_writes_a_root_only_key_and_never_overwrites_one(tmp_path):
    key = tmp_path / "web1.key"
    made = colospec("keygen", str(key))
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    first = key.read_text()
    assert len(load_key(key)) == KEY_BYTES
    again = colospec("keygen", str(key))
    assert again.returncode == 1 and "already exists" in again.stderr
    assert key.read_text() == first
    assert colospec("keygen", "--force", str(key)).returncode == 0
    assert key.read_text() != first
    assert [p.name for p in tmp_path.iterdir()] == ["web1.key"]  # no temporary left


def test_keygen_into_a_missing_directory_says_so(tmp_path):
    made = colospec("keygen", str(tmp_path / "no" / "such.key"))
    assert made.returncode == 1 and "Traceback" not in made.stderr
    assert "cannot write" in made.stderr


@pytest.mark.parametrize(
    "setup, says",
    [
        (lambda p: None, "is missing — create it once with `colospec keygen"),
        (lambda p: (p.write_text("ab" * KEY_BYTES + "\n"), p.chmod(0o644)), "chmod 600"),
        (lambda p: (p.write_text("not a key\n"), p.chmod(0o600)), "is not a colospec key"),
        (lambda p: (p.write_text("ab" * 8 + "\n"), p.chmod(0o600)), "is not a colospec key"),
    ],
    ids=["missing", "world-readable", "garbage", "short"],
)
def test_an_unsafe_or_missing_key_is_refused_with_the_fix(tmp_path, setup, says):
    key = tmp_path / "web1.key"
    setup(key)
    with pytest.raises(KeyFileError, match="heartbeat key") as exc:
        load_key(key)
    assert says in str(exc.value)


def test_a_key_owned_by_another_user_is_refused(tmp_path):
    key = tmp_path / "web1.key"
    key.write_text("ab" * KEY_BYTES + "\n")
    key.chmod(0o600)
    os.chown(key, 65534, 65534)
    with pytest.raises(KeyFileError, match="chown root"):
        load_key(key)


def test_run_refuses_to_start_without_its_key(tmp_path):
    data = yaml.safe_load((ROOT / "examples/pair.yaml").read_text())
    data["security"] = {"key_file": str(tmp_path / "web1.key")}
    spec = tmp_path / "pair.yaml"
    spec.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    assert colospec("build", str(spec), "-o", str(out)).returncode == 0
    assert str(tmp_path / "web1.key") in (out / "web1/node-a/plan.json").read_text()
    result = colospec("run", str(out / "web1/node-a"))
    assert result.returncode == 1
    assert f"heartbeat key {tmp_path}/web1.key is missing" in result.stderr
    assert "Traceback" not in result.stderr
