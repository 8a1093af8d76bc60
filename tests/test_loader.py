"""YAML loading: positions for every node, duplicate keys, alias bombs, defaults."""

from __future__ import annotations

import pytest

from colospec.diagnostics import SpecError, json_path
from colospec.loader import load_spec_text
from colospec.schema import apply_defaults, pair_schema

from conftest import ROOT


def test_positions_of_values_and_keys():
    spec = load_spec_text("a: 1\nb:\n  c: [x, y]\n", "f.yaml")
    assert spec.data == {"a": 1, "b": {"c": ["x", "y"]}}
    assert spec.position(("a",)) == (1, 4)
    assert spec.position(("b", "c", 1)) == (3, 10)
    assert spec.position(("b",), key=True) == (2, 1)
    # a missing node reports its nearest existing ancestor
    assert spec.position(("b", "c", 7)) == (3, 6)


def test_keys_stay_text_even_when_yaml_1_1_would_make_them_booleans():
    assert load_spec_text("on: 1\nyes: 2\n", "f.yaml").data == {"on": 1, "yes": 2}


def test_duplicate_keys_are_errors_at_the_second_key():
    with pytest.raises(SpecError) as exc:
        load_spec_text("vm:\n  cpus: 1\n  cpus: 2\n", "f.yaml")
    (d,) = exc.value.diagnostics
    assert (d.line, d.col, d.path) == (3, 3, "$.vm.cpus")
    assert "first defined on line 2" in d.problem


def test_alias_expansion_is_bounded():
    text = "l0: &l0 [a, a, a, a, a, a, a, a, a, a]\n" + "".join(
        f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]\n" for i in range(1, 12)
    )
    with pytest.raises(SpecError) as exc:
        load_spec_text(text, "lol.yaml")
    assert "through aliases" in exc.value.diagnostics[0].problem


def test_small_aliases_are_fine():
    spec = load_spec_text("a: &x {b: 1}\nc: *x\n", "f.yaml")
    assert spec.data == {"a": {"b": 1}, "c": {"b": 1}}


def test_json_path_rendering():
    assert json_path(()) == "$"
    assert json_path(("qemu", "extra_args", 3)) == "$.qemu.extra_args[3]"
    assert json_path(("hosts", "odd key")) == "$.hosts['odd key']"


def test_defaults_come_from_the_schema():
    spec = load_spec_text((ROOT / "tests/cases/ide-rtl8139.yaml").read_text(), "x.yaml")
    data = apply_defaults(spec.data)
    assert data["flavor"] == "colo"
    assert data["vm"]["accel"] == "kvm"
    assert data["vm"]["disk"]["format"] == "raw"
    assert data["vm"]["nic"]["vhost"] is False
    assert data["replication"]["ports"]["heartbeat"] == 8890
    assert data["failover"] == {
        "heartbeat_interval_ms": 100, "missed_heartbeats": 3, "rejoin": "manual"
    }  # fmt: skip
    assert data["runtime"]["colospec"] == "/opt/colospec/bin/colospec"
    assert data["runtime"]["state_dir"] == "/var/lib/colospec"
    assert "default" in pair_schema()["properties"]["flavor"]
    # the input is not modified
    assert "flavor" not in spec.data


@pytest.mark.parametrize("depth", [100, 500, 999])
@pytest.mark.parametrize("style", ["block", "flow"])
def test_deep_nesting_ends_in_a_diagnostic(depth, style):
    if style == "block":
        text = "".join("  " * i + "a:\n" for i in range(depth)) + "  " * depth + "1\n"
    else:
        text = "x: " + "[" * depth + "]" * depth + "\n"
    with pytest.raises(SpecError) as exc:
        load_spec_text(text, "deep.yaml")
    (d,) = exc.value.diagnostics
    assert d.rule in ("yaml-too-deep", "yaml-syntax") and d.line >= 1


@pytest.mark.parametrize(
    "text, path",
    [("x: &a [*a]\n", "$.x[0]"), ("x: &a {k: *a}\n", "$.x.k"), ("x: &a [1, [*a]]\n", "$.x[1][0]")],
)
def test_an_alias_inside_its_own_anchor_is_an_error(text, path):
    with pytest.raises(SpecError) as exc:
        load_spec_text(text, "loop.yaml")
    (d,) = exc.value.diagnostics
    assert (d.rule, d.path, d.line) == ("yaml-alias-loop", path, 1)


@pytest.mark.parametrize(
    "text, value",
    [
        ("v: false\n", False),
        ("v: True\n", True),
        ("v: 10\n", 10),
        ("v: -3\n", -3),
        ("v: 0\n", 0),
        ("v: 2.5\n", 2.5),
        ('v: "52:54:00:12:34:56"\n', "52:54:00:12:34:56"),
        ("v: '010'\n", "010"),
        ("v: ~\n", None),
        ("v: |\n  no\n", "no\n"),
    ],
)
def test_scalars_every_yaml_reader_takes_alike_are_accepted(text, value):
    assert load_spec_text(text, "f.yaml").data == {"v": value}


@pytest.mark.parametrize(
    "text, says",
    [
        ("v: no\n", "'no' is a boolean to colospec (YAML 1.1) but text to YAML 1.2"),
        ("v: on\n", "'on' is a boolean"),
        ("v: Yes\n", "'Yes' is a boolean"),
        ("v: 52:54:00:12:34:56\n", "is a base-60 number"),
        ("v: 010\n", "'010' is octal 8 to colospec (YAML 1.1) and 10 to YAML 1.2 readers"),
        ("v: 1_000\n", "not written in plain decimal"),
        ("v: 0x1F\n", "not written in plain decimal"),
        ("v: 1:30.5\n", "is a number to colospec (YAML 1.1)"),
        ("v: 0o17\n", "'0o17' is text to colospec (YAML 1.1) but a number to YAML 1.2"),
        ("v: 1e3\n", "'1e3' is text to colospec (YAML 1.1) but a number to YAML 1.2"),
    ],
)
def test_scalars_yaml_1_1_and_1_2_read_differently_are_errors(text, says):
    # Kept as findings beside the data, so the schema's errors are reported in the same run.
    (d,) = load_spec_text(text, "f.yaml").findings
    assert (d.rule, d.path, d.line, d.col) == ("yaml-ambiguous", "$.v", 1, 4)
    assert says in d.problem


def test_a_tag_its_text_cannot_satisfy_is_a_positioned_error():
    with pytest.raises(SpecError) as exc:
        load_spec_text("a: 1\nb: !!int abc\n", "f.yaml")
    (d,) = exc.value.diagnostics
    assert (d.rule, d.path, d.line) == ("yaml-value", "$.b", 2)
