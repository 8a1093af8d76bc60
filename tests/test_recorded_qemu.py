"""The recorded QEMU data (tests/data/qemu/VERSION/): complete, readable, and what it says.

Needs neither root nor QEMU. Recorded by tests/qemu-versions/record-qemu.py. For versions
colospec does not support yet, the differences from 7.2 are printed, not asserted
(`pytest -s tests/test_recorded_qemu.py`, or `python tests/test_recorded_qemu.py` for
the whole report).
"""

from __future__ import annotations

import functools
import gzip
import json
import re
from pathlib import Path
from typing import Any

import pytest

from colospec.versions import REQUIRED_COMMANDS, SYNTAX

from qmp_schema import QmpSchema

DATA = Path(__file__).resolve().parent / "data" / "qemu"
FILES = (
    "query-version.json",
    "qmp-schema.json",
    "qom-types.json",
    "migration-capabilities.json",
    "block-drivers.json",
)
VERSIONS = sorted(
    (p.name for p in DATA.iterdir() if p.is_dir() and re.fullmatch(r"\d+\.\d+\.\d+", p.name)),
    key=lambda v: tuple(int(n) for n in v.split(".")),
)
BASELINE = "7.2"


def supported(version: str) -> str | None:
    """The SYNTAX row ("7.2") this version falls under, if colospec supports it."""
    major_minor = ".".join(version.split(".")[:2])
    return major_minor if major_minor in SYNTAX else None


@functools.cache
def load(version: str, name: str) -> Any:
    plain = DATA / version / name
    if plain.exists():
        return json.loads(plain.read_text())
    return json.loads(gzip.decompress((DATA / version / f"{name}.gz").read_bytes()))


@functools.cache
def schema(version: str) -> QmpSchema:
    return QmpSchema(load(version, "qmp-schema.json"))


# ----- reading the schema --------------------------------------------------------------


def members(s: QmpSchema, type_name: str) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in s.by_name[type_name].get("members", [])}


def variant(s: QmpSchema, type_name: str, case: str) -> str:
    return next(v["type"] for v in s.by_name[type_name]["variants"] if v["case"] == case)


def socket_chardev_options(s: QmpSchema) -> dict[str, dict[str, Any]]:
    """chardev-add's backend "socket": the members of ChardevSocket."""
    backend = members(s, s.command("chardev-add")["arg-type"])["backend"]["type"]
    wrapper = variant(s, backend, "socket")
    return members(s, members(s, wrapper)["data"]["type"])


def command_args(s: QmpSchema, command: str) -> dict[str, dict[str, Any]]:
    entry = s.command(command)
    return members(s, entry["arg-type"]) if entry else {}


def deprecated_below(s: QmpSchema, command: str) -> list[str]:
    """The command itself and every argument (nested) that carries the 'deprecated'
    feature, as paths like "migrate.detach"."""
    entry = s.command(command)
    if entry is None:
        return []
    found = [command] if "deprecated" in entry.get("features", []) else []
    seen: set[str] = set()

    def walk(type_name: str, path: str) -> None:
        if type_name in seen or type_name not in s.by_name:
            return
        seen.add(type_name)
        t = s.by_name[type_name]
        if t["meta-type"] == "enum":  # values with features (newer QEMU): no types below
            found.extend(
                f"{path}={m['name']}"
                for m in t.get("members", [])
                if "deprecated" in m.get("features", [])
            )
            return
        for m in t.get("members", []):
            if t["meta-type"] == "alternate":
                walk(m["type"], path)
                continue
            if "deprecated" in m.get("features", []):
                found.append(f"{path}.{m['name']}")
            walk(m["type"], f"{path}.{m['name']}")
        for v in t.get("variants", []):
            walk(v["type"], f"{path}[{v['case']}]")
        if t["meta-type"] == "array":
            walk(t["element-type"], path)

    walk(entry["arg-type"], command)
    return found


# Commands a re-protection (README, qemu-colo.rst, colod) may use besides REQUIRED_COMMANDS.
ALSO_WATCHED = (
    "block-job-cancel", "block-job-complete", "block-job-dismiss", "block-job-finalize",
    "block-job-pause", "block-job-resume", "nbd-server-add", "drive-mirror", "blockdev-mirror",
    "migrate-continue", "migrate-incoming", "cont", "stop",
)  # fmt: skip

# What colospec sends, in 7.2's spelling: does each version's schema accept it?
PROBES = {
    "chardev-add socket reconnect=1 (7.2 spelling)": {
        "execute": "chardev-add",
        "arguments": {"id": "c", "backend": {"type": "socket", "data": {
            "addr": {"type": "inet", "data": {"host": "10.0.0.1", "port": "9003"}},
            "server": False, "reconnect": 1}}},
    },
    "chardev-add socket reconnect-ms=1000": {
        "execute": "chardev-add",
        "arguments": {"id": "c", "backend": {"type": "socket", "data": {
            "addr": {"type": "inet", "data": {"host": "10.0.0.1", "port": "9003"}},
            "server": False, "reconnect-ms": 1000}}},
    },
    "migrate uri": {"execute": "migrate", "arguments": {"uri": "tcp:10.0.0.2:9998"}},
    "migrate-set-capabilities x-colo": {
        "execute": "migrate-set-capabilities",
        "arguments": {"capabilities": [{"capability": "x-colo", "state": True}]},
    },
    "migrate-set-capabilities x-colo + return-path": {
        "execute": "migrate-set-capabilities",
        "arguments": {"capabilities": [{"capability": "x-colo", "state": True},
                                       {"capability": "return-path", "state": True}]},
    },
}  # fmt: skip


def report(version: str) -> dict[str, Any]:
    """What differs from what colospec's 7.2 syntax relies on, for one version."""
    s = schema(version)
    base = SYNTAX[BASELINE]
    socket = socket_chardev_options(s)
    return {
        "missing commands": [c for c in REQUIRED_COMMANDS if s.command(c) is None],
        "missing QOM types": [
            t for t in base.required_qom_types if t not in load(version, "qom-types.json")
        ],
        "x-colo capability": "x-colo" in load(version, "migration-capabilities.json"),
        "socket chardev reconnect options": {
            name: "deprecated" if "deprecated" in socket[name].get("features", []) else "ok"
            for name in ("reconnect", "reconnect-ms")
            if name in socket
        },
        "migrate arguments": sorted(command_args(s, "migrate")),
        "deprecated": {
            c: d for c in (*REQUIRED_COMMANDS, *ALSO_WATCHED) if (d := deprecated_below(s, c))
        },
        "probes rejected": {
            label: problems for label, cmd in PROBES.items() if (problems := s.check(cmd))
        },
    }


# ----- tests ---------------------------------------------------------------------------


def test_the_baseline_and_the_fetched_versions_are_recorded():
    assert any(v.startswith(f"{BASELINE}.") for v in VERSIONS)
    assert len(VERSIONS) >= 4


def test_recorded_md_has_a_row_per_version():
    text = (DATA / "RECORDED.md").read_text()
    rows = re.findall(r"^\| (\d+\.\d+\.\d+) \|", text, flags=re.MULTILINE)
    assert sorted(rows) == sorted(VERSIONS)


@pytest.mark.parametrize("version", VERSIONS)
def test_all_five_files_are_there_and_parse(version):
    for name in FILES:
        assert (DATA / version / name).exists() or (DATA / version / f"{name}.gz").exists(), name
        assert load(version, name), name
    q = load(version, "query-version.json")["qemu"]
    assert f"{q['major']}.{q['minor']}.{q['micro']}" == version
    entries = load(version, "qmp-schema.json")
    assert all({"name", "meta-type"} <= e.keys() for e in entries)
    assert {"query-qmp-schema", "qom-list-types", "query-migrate-capabilities"} <= {
        e["name"] for e in entries if e["meta-type"] == "command"
    }
    for name in ("qom-types.json", "migration-capabilities.json", "block-drivers.json"):
        names = load(version, name)
        assert names == sorted(set(names)) and all(isinstance(n, str) for n in names), name


@pytest.mark.parametrize("version", VERSIONS)
def test_block_drivers_are_the_schemas_blockdev_driver_enum(version):
    s = schema(version)
    driver = command_args(s, "blockdev-add")["driver"]  # BlockdevOptions: a flat union
    assert set(load(version, "block-drivers.json")) == set(s.by_name[driver["type"]]["values"])
    assert {"raw", "qcow2", "nbd", "quorum", "replication"} <= set(
        load(version, "block-drivers.json")
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_what_colospec_needs_per_version(version):
    """Asserted for the versions colospec supports; printed for the others."""
    found = report(version)
    print(f"\nQEMU {version}:")
    for key, value in found.items():
        print(f"  {key}: {value}")
    if supported(version) is None:
        return
    assert found["missing commands"] == []
    assert found["missing QOM types"] == []
    assert found["x-colo capability"]
    option, _ = SYNTAX[supported(version)].chardev_reconnect  # what colospec emits here
    assert option in found["socket chardev reconnect options"]
    if option == "reconnect":
        assert "chardev-add socket reconnect=1 (7.2 spelling)" not in found["probes rejected"]
    assert "migrate uri" not in found["probes rejected"]


def main() -> None:
    baseline = next(v for v in VERSIONS if v.startswith(f"{BASELINE}."))
    base_caps = set(load(baseline, "migration-capabilities.json"))
    base_drivers = set(load(baseline, "block-drivers.json"))
    for version in VERSIONS:
        print(f"QEMU {version}{'' if supported(version) else ' (not supported by colospec)'}")
        for key, value in report(version).items():
            print(f"  {key}: {value}")
        caps = set(load(version, "migration-capabilities.json"))
        drivers = set(load(version, "block-drivers.json"))
        print(f"  migration capabilities vs {baseline}: +{sorted(caps - base_caps)} "
              f"-{sorted(base_caps - caps)}")  # fmt: skip
        print(f"  block drivers vs {baseline}: +{sorted(drivers - base_drivers)} "
              f"-{sorted(base_drivers - drivers)}")  # fmt: skip


if __name__ == "__main__":
    main()
