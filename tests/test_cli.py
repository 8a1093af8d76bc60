"""The command line: exit codes, messages on stderr, schema output, strict mode, atomic builds."""

from __future__ import annotations

import json
import shutil

import jsonschema

from conftest import ROOT
from test_invalid_specs import colospec


def test_version_and_help():
    version = colospec("--version")
    assert version.returncode == 0
    assert version.stdout.startswith("colospec ")
    help_ = colospec("--help")
    assert help_.returncode == 0
    for command in ("validate", "build", "schema"):
        assert command in help_.stdout


def test_usage_error_exits_2():
    result = colospec("build")
    assert result.returncode == 2
    assert "usage:" in result.stderr
    assert colospec("no-such-command").returncode == 2


def test_validate_ok_reports_on_stderr():
    result = colospec("validate", "examples/pair.yaml")
    assert result.returncode == 0
    assert result.stdout == ""
    assert "examples/pair.yaml: ok (web1: node-a + node-b)" in result.stderr


def test_missing_file_is_an_invalid_spec_not_a_traceback():
    result = colospec("validate", "no/such/file.yaml")
    assert result.returncode == 2
    assert "no/such/file.yaml:0:0: error: $: cannot read the file" in result.stderr
    assert "Traceback" not in result.stderr


def test_schema_command_prints_a_valid_draft_2020_12_schema():
    result = colospec("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema == json.loads((ROOT / "schemas/pair.v1.json").read_text())


def test_warnings_pass_but_fail_under_strict():
    spec = "tests/cases/kernel-boot.yaml"  # accel: tcg -> the known TCG deadlock warning
    lenient = colospec("validate", spec)
    assert lenient.returncode == 0
    assert "warning: $.vm.accel: known QEMU defect colo-tcg-checkpoint-deadlock" in lenient.stderr
    strict = colospec("validate", "--strict", spec)
    assert strict.returncode == 2
    assert "error: $.vm.accel: known QEMU defect colo-tcg-checkpoint-deadlock" in strict.stderr


def test_two_specs_with_one_pair_name_are_rejected(tmp_path):
    copy = tmp_path / "again.yaml"
    shutil.copy(ROOT / "examples/pair.yaml", copy)
    result = colospec("build", "examples/pair.yaml", str(copy), "-o", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "pair 'web1' is also built by examples/pair.yaml" in result.stderr
    assert not (tmp_path / "out").exists()


def test_build_writes_both_hosts_and_is_deterministic(tmp_path):
    for out in ("a", "b"):
        assert colospec("build", "examples/pair.yaml", "-o", str(tmp_path / out)).returncode == 0
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*"))
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*"))
    assert files_a == files_b
    assert {str(p) for p in files_a} >= {"web1/node-a/qemu.args", "web1/node-b/plan.json"}
    for rel in files_a:
        if (tmp_path / "a" / rel).is_file():
            assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert (tmp_path / "a/web1/node-a/tc.sh").stat().st_mode & 0o111


def test_rebuild_replaces_stale_files_and_leaves_no_temporaries(tmp_path):
    out = tmp_path / "out"
    assert colospec("build", "examples/pair.yaml", "-o", str(out)).returncode == 0
    stale = out / "web1/node-a/stale.txt"
    stale.write_text("left over from an older colospec")
    (out / "unrelated.txt").write_text("not ours")
    assert colospec("build", "examples/pair.yaml", "-o", str(out)).returncode == 0
    assert not stale.exists()
    assert (out / "unrelated.txt").read_text() == "not ours"
    assert sorted(p.name for p in out.iterdir()) == ["unrelated.txt", "web1"]
