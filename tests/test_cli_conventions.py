"""Operators' conventions: JSON diagnostics with rule ids, --allow, diff, stdin, --help."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from conftest import EXAMPLES, ROOT
from test_invalid_specs import colospec

# A valid spec with exactly one warning (no lan_address: one heartbeat path).
ONE_PATH = "tests/cases/ide-rtl8139.yaml"
ONE_PATH_RULE = "second-heartbeat-path"


def _stdin(args: list[str], text: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "colospec", *args],
        cwd=ROOT,
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_json_diagnostics_carry_every_field_and_a_rule_id():
    result = colospec("validate", "--format", "json", "tests/invalid/q35.yaml")
    assert result.returncode == 2
    report = json.loads(result.stdout)
    assert report["status"] == "fail"
    by_rule = {d["rule"]: d for d in report["diagnostics"]}
    q35 = by_rule["machine-supported"]
    assert q35 == {
        "file": "tests/invalid/q35.yaml",
        "line": 13,
        "column": 12,
        "severity": "error",
        "path": "$.vm.machine",
        "rule": "machine-supported",
        "message": "COLO does not support the q35 machine",
        "hint": "use machine: pc",
    }
    assert by_rule[ONE_PATH_RULE]["severity"] == "warning"


@pytest.mark.parametrize(
    "spec, rule",
    [
        ("tests/invalid/trailing-newline.yaml", "schema-pattern"),
        ("tests/invalid/fractional-integers.yaml", "schema-type"),
        ("tests/invalid/yaml11-scalars.yaml", "yaml-ambiguous"),
        ("tests/invalid/self-alias.yaml", "yaml-alias-loop"),
        ("tests/invalid/duplicate-key.yaml", "yaml-duplicate-key"),
        ("tests/invalid/billion-laughs.yaml", "yaml-too-large"),
    ],
)
def test_each_kind_of_problem_has_its_own_stable_rule(spec, rule):
    report = json.loads(colospec("validate", "--format", "json", spec).stdout)
    assert rule in {d["rule"] for d in report["diagnostics"]}


def test_json_on_a_valid_spec_reports_ok_and_its_warnings():
    result = colospec("validate", "--format", "json", ONE_PATH)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "ok"
    assert [d["rule"] for d in report["diagnostics"]] == [ONE_PATH_RULE]


def test_allow_accepts_that_warning_under_strict_and_no_other():
    assert colospec("validate", "--strict", ONE_PATH).returncode == 2
    allowed = colospec("validate", "--strict", "--allow", ONE_PATH_RULE, ONE_PATH)
    assert allowed.returncode == 0, allowed.stderr
    assert "warning: $.hosts: heartbeats use only" in allowed.stderr  # still shown
    # another warning is not accepted by that id
    tcg = _stdin(
        ["validate", "--strict", "--allow", ONE_PATH_RULE, "-"],
        (ROOT / ONE_PATH).read_text().replace("\nvm:\n", "\nvm:\n  accel: tcg\n"),
    )
    assert tcg.returncode == 2
    assert "error: $.vm.accel: known QEMU defect colo-tcg-checkpoint-deadlock" in tcg.stderr


def test_allow_does_not_accept_errors():
    result = colospec("validate", "--allow", "machine-supported", "tests/invalid/q35.yaml")
    assert result.returncode == 2


def test_an_unknown_rule_id_is_a_usage_error():
    result = colospec("validate", "--strict", "--allow", "second-heartbeat", ONE_PATH)
    assert result.returncode == 2
    assert "no warning has the rule id 'second-heartbeat'" in result.stderr


def test_a_spec_on_stdin_is_named_stdin():
    ok = _stdin(["validate", "-"], (ROOT / "examples/pair.yaml").read_text())
    assert ok.returncode == 0, ok.stderr
    assert "<stdin>: ok (web1: node-a + node-b)" in ok.stderr
    bad = _stdin(["validate", "-"], (ROOT / "tests/invalid/q35.yaml").read_text())
    assert bad.returncode == 2
    assert "<stdin>:13:12: error: $.vm.machine:" in bad.stderr
    assert "-:0:0" not in bad.stderr


def test_the_same_spec_twice_is_named_as_such():
    result = colospec("validate", "examples/pair.yaml", "./examples/pair.yaml")
    assert result.returncode == 2
    assert (
        "./examples/pair.yaml:1:1: error: $: this spec is given twice (as examples/pair.yaml)"
        in result.stderr
    )
    assert "also built by" not in result.stderr


def test_two_specs_of_one_pair_point_at_each_others_name(tmp_path):
    copy = tmp_path / "again.yaml"
    shutil.copy(ROOT / "examples/pair.yaml", copy)
    result = colospec("validate", "examples/pair.yaml", str(copy))
    assert result.returncode == 2
    line = next(i for i, t in enumerate(copy.read_text().splitlines(), 1) if t.startswith("name:"))
    assert (
        f"{copy}:{line}:7: error: $.name: pair 'web1' is also built by examples/pair.yaml:{line}:7"
        in result.stderr
    )


def test_diff_is_empty_for_the_committed_out():
    result = colospec("diff", *map(str, EXAMPLES), "-o", "out")
    assert (result.returncode, result.stdout) == (0, ""), result.stdout + result.stderr


def test_diff_shows_a_change_a_stale_file_and_a_mode(tmp_path):
    out = tmp_path / "out"
    shutil.copytree(ROOT / "out", out)
    plan = out / "web1/node-a/plan.json"
    plan.write_text(plan.read_text().replace('"name": "node-a"', '"name": "node-x"', 1))
    (out / "web1/node-a/stale.txt").write_text("left over\n")
    (out / "web1/node-b/tc.sh").chmod(0o644)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    result = colospec("diff", *map(str, EXAMPLES), "-o", str(out))
    assert result.returncode == 1, result.stderr
    text = result.stdout
    assert "--- a/web1/node-a/plan.json\n+++ b/web1/node-a/plan.json\n" in text
    assert '-    "name": "node-x",\n+    "name": "node-a",\n' in text
    assert "deleted file mode 100644" in text and "-left over\n" in text
    assert "old mode 100644\nnew mode 100755\n" in text
    assert "node-b/qemu.args" not in text  # unchanged files are not shown
    # diff changes nothing
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_diff_of_an_empty_out_adds_every_file(tmp_path):
    result = colospec("diff", "examples/pair.yaml", "-o", str(tmp_path / "none"))
    assert result.returncode == 1
    assert result.stdout.count("new file mode") == sum(
        1 for p in (ROOT / "out/web1").rglob("*") if p.is_file()
    )
    assert not (tmp_path / "none").exists()


def test_diff_of_an_invalid_spec_exits_2():
    result = colospec("diff", "tests/invalid/q35.yaml")
    assert result.returncode == 2
    assert result.stdout == ""


@pytest.mark.parametrize(
    "command", ["validate", "build", "diff", "schema", "run", "status", "failover", "cleanup"]
)
def test_help_shows_an_example_and_the_exit_codes(command):
    result = colospec(command, "--help")
    assert result.returncode == 0
    assert "example" in result.stdout and "exit" in result.stdout
