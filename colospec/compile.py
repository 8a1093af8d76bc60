"""The pipeline: load → schema → model → semantic rules → render. No I/O beyond reading."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from colospec.diagnostics import Diagnostic, SpecError
from colospec.lint import lint_extra_args
from colospec.loader import LoadedSpec, load_spec
from colospec.model import Host, Pair, build_pair
from colospec.render.plan import render_plan
from colospec.render.qemu_argv import render_qemu_args_file, render_qemu_argv
from colospec.render.qmp import render_qmp_scripts
from colospec.render.systemd import render_units
from colospec.render.tc import render_tc_script
from colospec.render.vmft_argv import render_vmft_args_file, render_vmft_argv
from colospec.render.vmft_build import (
    paxos_members,
    render_build_dir,
    render_vmft_tc_script,
    render_witness,
)
from colospec.render.vmft_plan import ENV_FILE, render_vmft_plan
from colospec.render.vmft_qmp import render_vmft_qmp_scripts
from colospec.rules import check_rules
from colospec.schema import apply_defaults, validate_schema


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
    pair = build_pair(apply_defaults(spec.data), spec.sha256)
    found = check_rules(pair, spec)
    if not any(d.severity == "error" for d in found):
        found += _lint_argvs(pair, spec)
    if strict:
        found = [d if d.rule in allow else dataclasses.replace(d, severity="error") for d in found]
    errors = [d for d in found if d.severity == "error"]
    if errors:
        raise SpecError(found)
    return Checked(spec, pair, found)


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
    if pair.flavor == "vm-ft":
        return render_vmft_argv(pair, host)
    return render_qemu_argv(pair, host)


def render_host(pair: Pair, host: Host) -> dict[str, Artifact]:
    """Every artifact of one host, keyed by path relative to OUT/<pair>/<host>/."""
    if pair.flavor == "vm-ft":
        return _render_vmft_host(pair, host)
    argv = render_qemu_argv(pair, host)
    scripts = render_qmp_scripts(pair, host)
    files = {
        "qemu.args": Artifact(render_qemu_args_file(argv)),
        "tc.sh": Artifact(render_tc_script(pair, host), 0o755),
        "plan.json": Artifact(_json(render_plan(pair, host, list(scripts)))),
    }
    files |= {name: Artifact(_json(cmds)) for name, cmds in scripts.items()}
    files |= {name: Artifact(text) for name, text in render_units(pair, host, argv).items()}
    return dict(sorted(files.items()))


def _render_vmft_host(pair: Pair, host: Host) -> dict[str, Artifact]:
    argv = render_vmft_argv(pair, host)
    scripts = render_vmft_qmp_scripts(pair, host)
    member = next(m for m in paxos_members(pair) if m.name == host.name)
    files = {
        "qemu.args": Artifact(render_vmft_args_file(argv)),
        "tc.sh": Artifact(render_vmft_tc_script(pair, host), 0o755),
        "plan.json": Artifact(_json(render_vmft_plan(pair, host, scripts))),
    }
    files |= {name: Artifact(_json(cmds)) for name, cmds in scripts.items()}
    files |= {
        name: Artifact(text) for name, text in render_units(pair, host, argv, ENV_FILE).items()
    }
    files |= {name: _text(name, text) for name, text in render_build_dir(pair, member).items()}
    return dict(sorted(files.items()))


def _text(name: str, text: str) -> Artifact:
    return Artifact(text, 0o755 if name.endswith(".sh") else 0o644)


def render_pair(pair: Pair) -> dict[str, Artifact]:
    """Every artifact of the pair, keyed by path relative to OUT/<pair>/."""
    files = {
        f"{host.name}/{name}": art
        for host in pair.hosts
        for name, art in render_host(pair, host).items()
    }
    if pair.flavor == "vm-ft":  # the witness, if any: only its RDMA-Paxos build
        files |= {rel: _text(rel, text) for rel, text in render_witness(pair).items()}
    return files
