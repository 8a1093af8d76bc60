"""Hostile text in every string field: rejected with a diagnostic, or carried exactly.

The fields come from the schema itself, so a new string field is covered without
editing this test. Each hostile value is first tried in each field alone (it must be
rejected at that field's path, or accepted); then, per hostile value, one spec carries
it in every field that accepted it, is built by `colospec build`, and every artifact is
checked by the tool that reads it: qemu.args by the runner's reader, JSON by a parser,
tc.sh and build scripts by bash -n and shellcheck, the units by systemd-analyze verify.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from colospec.compile import check_spec, qemu_argv
from colospec.diagnostics import SpecError, json_path
from colospec.qemu_opts import escape
from colospec.render.text import shell_quote, systemd_quote
from colospec.runner.artifacts import read_qemu_args
from colospec.schema import pair_schema

from conftest import ROOT
from test_invalid_specs import colospec

HOSTILE = {
    "newline": "\nx",
    "comma": ",x",
    "double-comma": ",,x",
    "quotes": "'\"x",
    "command": "$(touch /tmp/colospec-pwned)",
    "backtick": "`id`",
    "semicolon": ";x",
    "percent": "%n%%x",
    "nul": "\x00x",
    "control": "\x1b[0m\tx",
    "rtl": "\u202ex\u200f",
    "4k": "y" * 4096,
}
BASES = {"colo": ROOT / "examples/pair.yaml", "vm-ft": ROOT / "examples/vm-ft-seed.yaml"}
# Sample values for string fields a base spec leaves out, by the schema's definition.
SAMPLES = {
    "path": "/srv/colospec/x",
    "executable": "/usr/bin/x",
    "ifname": "tapx7",
    "name": "x",
    "ipv4": "10.9.9.9",
}
# Left out of the combined spec: it would hide vm.disk.image, which the secondary then uses.
OVERRIDING = {("hosts", "secondary", "image")}
INSTALLED = {"qemu": Path("/usr/bin/qemu-system-x86_64"), "colospec": Path("/opt/colospec/bin/colospec")}  # fmt: skip


def _resolve(node: dict) -> tuple[dict, str | None]:
    ref = node.get("$ref", "")
    if not ref:
        return node, None
    name = ref.rsplit("/", 1)[-1]
    return {**pair_schema()["$defs"][name], **{k: v for k, v in node.items() if k != "$ref"}}, name


def string_fields(node: dict | None = None, path: tuple = ()) -> list[tuple[tuple, str | None]]:
    """(path, $defs name) of every free-text string field; array items at index 0."""
    node, name = _resolve(node if node is not None else pair_schema())
    if node.get("type") == "string" and "enum" not in node and "const" not in node:
        return [(path, name)]
    found = []
    for key, sub in node.get("properties", {}).items():
        found += string_fields(sub, (*path, key))
    if isinstance(node.get("items"), dict):
        found += string_fields(node["items"], (*path, 0))
    return found


FIELDS = string_fields()


def _base(path: tuple) -> dict[str, Any]:
    return yaml.safe_load(BASES["vm-ft" if path[0] == "vmft" else "colo"].read_text())


def _get(data: Any, path: tuple) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError):
            return None
    return data


def _put(data: dict, path: tuple, value: str) -> None:
    for part in path[:-1]:
        data = data.setdefault(part, {})
    if isinstance(path[-1], int):  # a list field: the value as its only item
        data.clear() if isinstance(data, list) else None
        return
    data[path[-1]] = value


def _with(data: dict, path: tuple, value: str) -> dict:
    if isinstance(path[-1], int):
        holder = data
        for part in path[:-2]:
            holder = holder.setdefault(part, {})
        holder[path[-2]] = [value]
    else:
        _put(data, path, value)
    return data


def _valid_value(path: tuple, defname: str | None) -> str:
    current = _get(_base(path), path)
    if isinstance(current, str):
        return current
    if path[-1] == 0:
        return "-no-reboot"
    return SAMPLES[defname]


def _check(data: dict, tmp_path: Path) -> SpecError | None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(data, allow_unicode=True, width=1 << 20))
    try:
        check_spec(spec)
    except SpecError as exc:
        return exc
    return None


def test_the_schema_has_the_string_fields_we_know():
    paths = {p for p, _ in FIELDS}
    assert {("name",), ("qemu", "binary"), ("qemu", "extra_args", 0), ("vm", "kernel", "append"),
            ("hosts", "primary", "scratch_dir"), ("vmft", "sockets", "mirror")} <= paths  # fmt: skip
    assert len(paths) >= 25


@pytest.fixture(scope="module")
def accepted(tmp_path_factory) -> dict[str, list[tuple[tuple, str]]]:
    """{hostile id: [(field path, full value)]} for the fields that accepted that value."""
    tmp = tmp_path_factory.mktemp("fields")
    found: dict[str, list[tuple[tuple, str]]] = {h: [] for h in HOSTILE}
    for path, defname in FIELDS:
        for hid, hostile in HOSTILE.items():
            value = _valid_value(path, defname) + hostile
            error = _check(_with(_base(path), path, value), tmp)
            if error is None:
                found[hid].append((path, value))
                continue
            where = json_path(path)
            assert any(d.path.startswith(where) for d in error.diagnostics), (
                f"{hid} in {where} was rejected, but not at that field: {error}"
            )
    return found


def test_line_breaks_nul_and_other_control_characters_are_rejected_everywhere(accepted):
    assert accepted["newline"] == accepted["nul"] == accepted["control"] == []


def test_free_text_fields_take_shell_and_quote_characters(accepted):
    # Paths, the kernel command line and extra_args are free text: these must be carried.
    fields = {path for path, _ in accepted["command"]}
    assert ("qemu", "binary") in fields and ("vm", "kernel", "append") in fields


def _combined(hid: str, accepted, tmp: Path) -> list[tuple[tuple, str]]:
    """One spec per flavour with hid's value in every field that took it; written to tmp."""
    carried = []
    for flavor, base in BASES.items():
        data = yaml.safe_load(base.read_text())
        data["qemu"]["binary"] = str(INSTALLED["qemu"])  # the vm-ft build is not installed
        for path, value in accepted[hid]:
            if (path[0] == "vmft") != (flavor == "vm-ft") or path in OVERRIDING:
                continue
            if path in (("qemu", "binary"), ("runtime", "colospec")):
                # systemd-analyze wants ExecStart's program to exist: make it so.
                link = tmp / "bin" / Path(value).name[-200:]
                link.parent.mkdir(exist_ok=True)
                real = INSTALLED["qemu" if path[0] == "qemu" else "colospec"]
                link.unlink(missing_ok=True)
                link.symlink_to(real)
                value = str(link)
            _with(data, path, value)
            carried.append((path, value))
        (tmp / f"{flavor}.yaml").write_text(yaml.safe_dump(data, allow_unicode=True, width=1 << 20))
    return carried


def _json_strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in _json_strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _json_strings(v)]
    return []


@pytest.mark.parametrize("hid", [h for h in HOSTILE if h not in ("newline", "nul", "control")])
def test_accepted_values_are_carried_exactly(hid, accepted, tmp_path):
    carried = _combined(hid, accepted, tmp_path)
    specs = [str(tmp_path / f"{f}.yaml") for f in BASES]
    built = colospec("build", *specs, "-o", str(tmp_path / "out"))
    assert built.returncode == 0, built.stderr
    texts: list[str] = []  # every parsed value in every artifact
    scripts, units = [], []
    for spec in specs:
        pair = check_spec(spec).pair
        for host in pair.hosts:
            d = tmp_path / "out" / pair.name / host.name
            argv = read_qemu_args(d / "qemu.args")
            assert argv == qemu_argv(pair, host), "qemu.args must read back as rendered"
            texts += argv
            for f in d.rglob("*.json"):
                texts += _json_strings(json.loads(f.read_text()))
            units += sorted((d / "systemd").iterdir())
        scripts += sorted((tmp_path / "out" / pair.name).glob("*/*.sh"))
        scripts += sorted((tmp_path / "out" / pair.name).glob("*/build/*.sh"))
    unit_text = "".join(u.read_text() for u in units)
    script_text = "".join(s.read_text() for s in scripts)
    for path, value in carried:
        forms = [value, escape(value)]
        assert (
            any(form in t for t in texts for form in forms)
            or any(systemd_quote(form).strip('"') in unit_text for form in forms)
            or shell_quote(value) in script_text
        ), f"{json_path(path)} = {value!r} is in no artifact"
    checked = subprocess.run(["bash", "-n", *map(str, scripts)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    linted = subprocess.run(
        ["shellcheck", "--severity=style", *map(str, scripts)], capture_output=True, text=True
    )
    assert linted.returncode == 0, linted.stdout
    verified = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", "--generators=no", *map(str, units)],
        capture_output=True,
        text=True,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"},
    )
    assert verified.returncode == 0 and verified.stderr == "", verified.stderr
