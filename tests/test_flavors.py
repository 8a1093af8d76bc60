"""The flavour registry's shape: every flavour implements Flavor, nothing outside the registry
asks which flavour a pair has, and colospec's modules import each other without a circle."""

from __future__ import annotations

import ast
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from colospec.compile import allowable_rule_ids
from colospec.flavors import FLAVORS, Flavor
from colospec.model import FlavorNames
from colospec.rules import common, rule_id
from colospec.versions import DEFECTS

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "colospec"
REGISTRY = PACKAGE / "flavors" / "__init__.py"
# What `validate --allow` and `--format json` name: renaming a rule breaks users' commands.
RULE_IDS = {
    "addresses-usable",
    "binary-is-the-build",
    "cluster-not-for-vmft",
    "heartbeat-budget",
    "hosts-differ",
    "ifb-devices",
    "interface-names",
    "mac-unicast",
    "machine-supported",
    "paxos-group",
    "ports-distinct",
    "qemu-version-known",
    "qemu-version-verified",
    "root-fits-configure",
    "scratch-not-image",
    "second-heartbeat-path",
    "tls-dir-kept",
    "unix-sockets",
    "vhost-off",
    "vmft-settings-match-flavor",
    "vnc-on-loopback",
    "vnet-hdr-model",
}
METHODS = ("qemu_argv", "qemu_args_file", "qmp_scripts", "plan", "network_script", "units")
METHODS += ("host_files", "pair_files")
# Asking which flavour a pair has: comparing with a flavour's name, or branching on whether
# the pair has vm-ft settings.
FLAVOR_TEST = re.compile(r"flavou?r\s*[!=]=|[!=]=\s*['\"]vm-ft['\"]|if (not )?pair\.vmft\s*:")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(module_name(p) for p in PACKAGE.rglob("*.py") if p.name != "__main__.py")


def test_every_flavor_of_the_schema_is_registered():
    schema = json.loads((ROOT / "schemas/pair.v1.json").read_text())
    assert set(FLAVORS) == set(schema["properties"]["flavor"]["enum"])


@pytest.mark.parametrize("name", sorted(FLAVORS))
def test_flavor_implements_the_interface(name):
    flavor = FLAVORS[name]
    assert isinstance(flavor, Flavor)
    assert isinstance(flavor.names, FlavorNames)
    for member in METHODS:
        wanted = inspect.signature(getattr(Flavor, member))
        assert inspect.signature(getattr(type(flavor), member)) == wanted, member


@pytest.mark.parametrize("name", sorted(FLAVORS))
def test_flavor_runs_the_common_rules_once(name):
    rules = FLAVORS[name].rules
    assert set(common.RULES) <= set(rules)
    ids = [rule_id(r) for r in rules]
    assert len(ids) == len(set(ids))


def test_rule_ids_stay_the_same():
    rules = {rule_id(r) for flavor in FLAVORS.values() for r in flavor.rules}
    assert rules == RULE_IDS
    assert allowable_rule_ids() == RULE_IDS | {d.id for d in DEFECTS}


def test_no_flavor_test_outside_the_registry():
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != REGISTRY
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if FLAVOR_TEST.search(line)
    ]
    found += [
        f"{path.relative_to(ROOT)}: {match}"
        for path in sorted((ROOT / "templates").rglob("*.j2"))
        for match in re.findall(r"pair\.(?:flavor|vmft)\b", path.read_text())
    ]
    assert found == []


def _imports(name: str, path: Path) -> set[str]:
    """The colospec modules a module needs loaded while it loads: what it imports at the
    top level (not in functions, nor under `if TYPE_CHECKING:`), with the packages around
    each, except its own packages, which are loading already."""
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}"
                    found.add(submodule if submodule in MODULES else node.module)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                visit(node.body + node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body + node.orelse + node.finalbody)

    visit(ast.parse(path.read_text()).body)
    packages = {target.rsplit(".", n)[0] for target in found for n in range(target.count("."))}
    own = {name.rsplit(".", n)[0] for n in range(name.count(".") + 1)}
    return {m for m in found | packages if m in MODULES} - own


def test_no_import_circle():
    graph = {
        module_name(p): _imports(module_name(p), p)
        for p in PACKAGE.rglob("*.py")
        if p.name != "__main__.py"
    }
    done: set[str] = set()

    def walk(name: str, path: list[str]) -> None:
        if name in path:
            pytest.fail("import circle: " + " -> ".join([*path[path.index(name) :], name]))
        if name not in done:
            for target in sorted(graph[name]):
                walk(target, [*path, name])
            done.add(name)

    for name in sorted(graph):
        walk(name, [])


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_alone(module):
    """Each module imported first, in a fresh interpreter: a circle fails to import from
    some entry point even when the usual import order hides it."""
    run = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True)
    assert run.returncode == 0, run.stderr.decode()
