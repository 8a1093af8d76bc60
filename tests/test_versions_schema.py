"""Every generated QMP script, at every QEMU release line with a recorded binary, against that
line's query-qmp-schema (tests/data/qemu/): no root, no QEMU. Lines without one rest on
QEMU's documentation (validation warns, README "QEMU versions")."""

from __future__ import annotations

import functools
import gzip
import json
import tempfile
from pathlib import Path

import pytest
import yaml

from colospec.compile import check_spec, render_pair
from colospec.versions import SYNTAX, parse_version

from conftest import COLO_VALID, ROOT
from qmp_schema import QmpSchema

DATA = ROOT / "tests/data/qemu"
LINES = sorted((line for line, row in SYNTAX.items() if row.recorded), key=parse_version)


@functools.cache
def recorded(version: str, name: str):
    path = DATA / version / name
    gz = path.with_name(path.name + ".gz")
    return json.loads(gzip.decompress(gz.read_bytes()) if gz.exists() else path.read_text())


@functools.cache
def built_at(spec: Path, line: str):
    data = yaml.safe_load(spec.read_text())
    data["qemu"]["version"] = line
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / spec.name
        path.write_text(yaml.safe_dump(data))
        return render_pair(check_spec(path).pair)


CASES = [(spec, line) for spec in COLO_VALID for line in LINES]


@pytest.mark.parametrize("spec, line", CASES, ids=[f"{s.stem}@{v}" for s, v in CASES])
def test_every_qmp_command_fits_its_versions_schema(spec, line):
    schema = QmpSchema(recorded(SYNTAX[line].recorded, "qmp-schema.json"))
    problems = [
        f"{rel}: {p}"
        for rel, art in built_at(spec, line).items()
        if "/qmp/" in rel
        for command in json.loads(art.text)
        for p in schema.check(command)
    ]
    assert problems == []


@pytest.mark.parametrize("spec, line", CASES, ids=[f"{s.stem}@{v}" for s, v in CASES])
def test_chardev_reconnect_is_spelled_as_the_version_has_it(spec, line):
    # Introspection numbers its types: ChardevSocket is the object with addr and server.
    members = {
        m["name"]: m
        for t in recorded(SYNTAX[line].recorded, "qmp-schema.json")
        if t.get("meta-type") == "object"
        and {"addr", "server"} <= {m["name"] for m in t.get("members", [])}
        for m in t["members"]
    }
    option, _ = SYNTAX[line].chardev_reconnect
    assert option in members and "deprecated" not in members[option].get("features", [])
    args = [a for rel, art in built_at(spec, line).items() if rel.endswith("qemu.args")
            for a in art.text.splitlines()]  # fmt: skip
    assert any(f",{option}=" in a for a in args if a.startswith("socket,"))


@pytest.mark.parametrize("line", LINES)
def test_what_the_plan_requires_is_in_the_recorded_binary(line):
    version = SYNTAX[line].recorded
    plan = json.loads(built_at(ROOT / "examples/pair.yaml", line)["node-a/plan.json"].text)
    req = plan["qemu"]["requires"]
    commands = {e["name"] for e in recorded(version, "qmp-schema.json")
                if e["meta-type"] == "command"}  # fmt: skip
    assert set(req["commands"]) <= commands
    assert set(req["qom_types"]) <= set(recorded(version, "qom-types.json"))
    assert set(req["block_drivers"]) <= set(recorded(version, "block-drivers.json"))
    assert set(SYNTAX[line].colo_capabilities) <= set(
        recorded(version, "migration-capabilities.json")
    )


@pytest.mark.parametrize("line", LINES)
def test_what_the_runner_sends_out_of_band_may_go_so(line):
    """QemuSession sends these with exec-oob; QEMU refuses that for a command without
    allow-oob (and a failover's yank must get through a blocked main loop)."""
    from colospec.runner.qemu_session import OUT_OF_BAND

    schema = {e["name"]: e for e in recorded(SYNTAX[line].recorded, "qmp-schema.json")}
    assert all(schema[c].get("allow-oob") for c in OUT_OF_BAND), line


def test_a_script_the_version_cannot_take_is_caught():
    """The check itself: the 7.2 chardev spelling is gone from 11.1."""
    schema = QmpSchema(recorded("11.1.3", "qmp-schema.json"))
    old = {"execute": "chardev-add", "arguments": {"id": "x", "backend": {"type": "socket",
           "data": {"addr": {"type": "inet", "data": {"host": "10.0.0.1", "port": "1"}},
                    "server": False, "reconnect": 1}}}}  # fmt: skip
    assert schema.check(old) != []
