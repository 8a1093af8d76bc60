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
    assert data["failover"] == {"heartbeat_interval_ms": 100, "missed_heartbeats": 3}
    assert data["runtime"]["colospec"] == "/opt/colospec/bin/colospec"
    assert "default" in pair_schema()["properties"]["flavor"]
    # the input is not modified
    assert "flavor" not in spec.data
