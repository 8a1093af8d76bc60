"""The pipeline: load → schema → model → semantic rules → render. No I/O beyond reading."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from colospec.diagnostics import Diagnostic, SpecError
from colospec.flavors import FLAVORS
from colospec.lint import lint_extra_args
from colospec.loader import LoadedSpec, load_spec
from colospec.model import Host, Pair, build_pair
from colospec.render.pacemaker import render_pacemaker
from colospec.render.systemd import render_units
from colospec.rules import rule_id, run_rules
from colospec.schema import apply_defaults, validate_schema
from colospec.versions import DEFECTS


@dataclass(frozen=True)
class Artifact:
    text: str
    mode: int = 0o644


@dataclass(frozen=True)
class Checked:
    """A spec that passed validation (warnings may remain)."""

    spec: LoadedSpec
    pair: Pair
    warnings: list[Diagnostic]


def check_spec(
    path: str | Path, *, strict: bool = False, allow: frozenset[str] = frozenset()
) -> Checked:
    """Validate one spec file; raises SpecError with every error (and warning) found.

    strict: warnings count as errors, except those whose rule is in allow.
    """
    spec = load_spec(path)
    # A value the loader already objected to is not judged a second time by the schema.
    seen = {d.path for d in spec.findings}
    errors = [*spec.findings, *(d for d in validate_schema(spec) if d.path not in seen)]
    if errors:
        # Semantic rules assume schema-valid data; schema errors are reported alone.
        raise SpecError(errors)
    data = apply_defaults(spec.data)
    pair = build_pair(data, spec.sha256, FLAVORS[data["flavor"]].names)
    found = check_rules(pair, spec)
    if not any(d.severity == "error" for d in found):
        found += _lint_argvs(pair, spec)
    if strict:
        found = [d if d.rule in allow else dataclasses.replace(d, severity="error") for d in found]
    errors = [d for d in found if d.severity == "error"]
    if errors:
        raise SpecError(found)
    return Checked(spec, pair, found)


def check_rules(pair: Pair, spec: LoadedSpec) -> list[Diagnostic]:
    """The semantic rules of the pair's flavour (common ones included)."""
    return run_rules(FLAVORS[pair.flavor].rules, pair, spec)


def allowable_rule_ids() -> set[str]:
    """Every id a warning can carry."""
    return {rule_id(r) for f in FLAVORS.values() for r in f.rules} | {d.id for d in DEFECTS}


def _lint_argvs(pair: Pair, spec: LoadedSpec) -> list[Diagnostic]:
    """qemu.extra_args judged on each host, against that host's part of the command line."""
    extra = list(pair.qemu.extra_args)
    out: set[Diagnostic] = set()
    for host in pair.hosts:
        argv = qemu_argv(pair, host)
        for p in lint_extra_args(argv[: len(argv) - len(extra)], extra):
            path = ("qemu", "extra_args", p.index)
            out.add(spec.diagnostic(path, p.problem, p.fix, rule=p.rule))
    return sorted(out)


def _json(data) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def qemu_argv(pair: Pair, host: Host) -> list[str]:
    """The host's QEMU command line in its flavour's layout."""
    return FLAVORS[pair.flavor].qemu_argv(pair, host)


def render_host(pair: Pair, host: Host) -> dict[str, Artifact]:
    """Every artifact of one host, keyed by path relative to OUT/<pair>/<host>/."""
    flavor = FLAVORS[pair.flavor]
    argv = flavor.qemu_argv(pair, host)
    scripts = flavor.qmp_scripts(pair, host)
    files = {
        "qemu.args": Artifact(flavor.qemu_args_file(argv)),
        "tc.sh": Artifact(flavor.network_script(pair, host), 0o755),
        "plan.json": Artifact(_json(flavor.plan(pair, host, scripts))),
    }
    files |= {name: Artifact(_json(cmds)) for name, cmds in scripts.items()}
    units = render_units(pair, host, argv, flavor.units(pair, host))
    files |= {name: Artifact(text) for name, text in units.items()}
    files |= {name: _text(name, text) for name, text in flavor.host_files(pair, host).items()}
    return dict(sorted(files.items()))


def render_pair(pair: Pair) -> dict[str, Artifact]:
    """Every artifact of the pair, keyed by path relative to OUT/<pair>/."""
    files = {
        f"{host.name}/{name}": art
        for host in pair.hosts
        for name, art in render_host(pair, host).items()
    }
    pair_files = FLAVORS[pair.flavor].pair_files(pair)
    if pair.cluster is not None:
        pair_files = pair_files | render_pacemaker(pair)
    return files | {rel: _text(rel, text) for rel, text in pair_files.items()}


def _text(name: str, text: str) -> Artifact:
    """A file a flavour adds: scripts executable, the rest not."""
    return Artifact(text, 0o755 if name.endswith(".sh") else 0o644)
