"""Command line: colospec validate | build | diff | schema (and the runner's commands)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from colospec import __version__
from colospec.diagnostics import Diagnostic, SpecError

if TYPE_CHECKING:
    from colospec.compile import Checked

# The compiler (jinja2, jsonschema, yaml) loads only for the commands that compile, so
# the runner's commands start fast.

EXIT_OK, EXIT_FAILURE, EXIT_INVALID = 0, 1, 2
EXIT_DIFFERS = 1

_EXIT_CODES = """exit codes:
  0  success
  1  any other failure (e.g. the output directory cannot be written)
  2  invalid spec or usage error (nothing is written)"""


def _say(message: str) -> None:
    print(message, file=sys.stderr)


@dataclass
class Checks:
    """The outcome of validating every spec given on one command line."""

    checked: list[Checked] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(d.severity == "error" for d in self.diagnostics)


def _check_all(paths: list[str], strict: bool, allow: frozenset[str]) -> Checks:
    """Validate every spec, then what the specs must not share with each other."""
    from colospec.compile import check_spec

    checks, seen = Checks(), {}
    for path in paths:
        identity = _file_identity(path)
        if identity in seen:
            also = "" if seen[identity] == path else f" (as {seen[identity]})"
            checks.diagnostics.append(
                Diagnostic(
                    path,
                    1,
                    1,
                    "error",
                    "$",
                    f"this spec is given twice{also}",
                    "give each spec once",
                    "spec-given-twice",
                )
            )
            continue
        seen[identity] = path
        try:
            result = check_spec(path, strict=strict, allow=allow)
        except SpecError as exc:
            checks.diagnostics += exc.diagnostics
            continue
        checks.diagnostics += result.warnings
        checks.checked.append(result)
    names: dict[str, Checked] = {}
    for c in checks.checked:
        if (first := names.setdefault(c.pair.name, c)) is not c:
            line, col = first.spec.position(("name",))
            checks.diagnostics.append(
                c.spec.diagnostic(
                    ("name",),
                    f"pair '{c.pair.name}' is also built by {first.spec.file}:{line}:{col}",
                    "give each pair its own name",
                    rule="pair-name-unique",
                )
            )
    return checks


def _file_identity(path: str) -> tuple[int, int] | str:
    try:
        st = os.stat(path)
    except OSError:
        return path  # reported by the loader
    return (st.st_dev, st.st_ino)


def _report(checks: Checks) -> None:
    for d in checks.diagnostics:
        _say(d.format())


def _compiled_or_none(args: argparse.Namespace) -> Checks | None:
    checks = _check_all(args.specs, args.strict, frozenset(args.allow))
    _report(checks)
    return checks if checks.ok else None


def cmd_validate(args: argparse.Namespace) -> int:
    checks = _check_all(args.specs, args.strict, frozenset(args.allow))
    if args.format == "json":
        print(
            json.dumps(
                {
                    "status": "ok" if checks.ok else "fail",
                    "diagnostics": [d.as_json() for d in checks.diagnostics],
                },
                indent=2,
                ensure_ascii=False,
            )
        )
        return EXIT_OK if checks.ok else EXIT_INVALID
    _report(checks)
    if not checks.ok:
        return EXIT_INVALID
    for c in checks.checked:
        _say(f"{c.spec.file}: ok ({c.pair.name}: {c.pair.primary.name} + {c.pair.secondary.name})")
    return EXIT_OK


def _rendered(checks: Checks) -> dict[str, dict]:
    from colospec.compile import render_pair

    return {c.pair.name: render_pair(c.pair) for c in checks.checked}


def cmd_build(args: argparse.Namespace) -> int:
    from colospec.writer import OutputError, write_trees

    checks = _compiled_or_none(args)
    if checks is None:
        return EXIT_INVALID
    out = Path(args.output)
    try:
        write_trees(out, _rendered(checks))
    except OutputError as exc:
        _say(f"colospec: error: {exc}")
        return EXIT_FAILURE
    for c in checks.checked:
        _say(f"wrote {out / c.pair.name}/ ({c.pair.primary.name}, {c.pair.secondary.name})")
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    from colospec.diff import DiffError, diff_trees

    checks = _compiled_or_none(args)
    if checks is None:
        return EXIT_INVALID
    try:
        text = diff_trees(Path(args.output), _rendered(checks))
    except DiffError as exc:
        _say(f"colospec: error: {exc}")
        return EXIT_INVALID
    sys.stdout.write(text)
    return EXIT_DIFFERS if text else EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from colospec.schema import schema_text

    sys.stdout.write(schema_text())
    return EXIT_OK


def cmd_certs(args: argparse.Namespace) -> int:
    from colospec.certs import CertError, make_pair_certs

    checks = _check_all([args.spec], False, frozenset())
    _report(checks)
    if not checks.ok:
        return EXIT_INVALID
    pair = checks.checked[0].pair
    if pair.security.tls is None:
        _say(f"colospec: error: {args.spec} has no security.tls — add `tls: {{}}` under "
             "security (its dir is where each host keeps its certificates)")  # fmt: skip
        return EXIT_INVALID
    target = Path(args.dir or pair.security.tls.dir)
    try:
        made = make_pair_certs(pair, target, days=args.days, force=args.force)
    except CertError as exc:
        _say(f"colospec: error: {exc}")
        return EXIT_FAILURE
    for host, where in zip(pair.hosts, made, strict=True):
        _say(f"wrote {where}/ ({host.name}, {host.address})")
    _say(f"copy each host's directory to {pair.security.tls.dir}/<host>/ on that host "
         "(keys mode 0600, owned by root); the CA's key is not kept")  # fmt: skip
    return EXIT_OK


def _allow_rule(text: str) -> list[str]:
    from colospec.compile import allowable_rule_ids

    ids = [part.strip() for part in text.split(",") if part.strip()]
    known = allowable_rule_ids()
    for rule in ids:
        if rule not in known:
            raise argparse.ArgumentTypeError(
                f"no warning has the rule id '{rule}' (validate --format json shows each "
                "diagnostic's rule)"
            )
    return ids


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive whole number")
    return int(text)


def _spec_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("specs", nargs="+", metavar="SPEC", help="spec files; '-' reads standard input")
    p.add_argument("--strict", action="store_true", help="treat warnings as errors")
    p.add_argument(
        "--allow",
        type=_allow_rule,
        action="extend",
        default=[],
        metavar="RULE",
        help="with --strict, accept warnings of this rule id (repeat or separate by commas)",
    )


def _command(sub, name: str, help_: str, example: str, codes: str = _EXIT_CODES):
    return sub.add_parser(
        name,
        help=help_,
        description=help_,
        epilog=f"example:\n  {example}\n\n{codes}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="colospec",
        description="Compile a QEMU COLO pair spec into reviewable per-host artifacts, and run them.",
        epilog=f"example:\n  colospec build examples/pair.yaml\n\n{_EXIT_CODES}\n"
        "'colospec COMMAND --help' shows each command's own.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"colospec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _command(
        sub,
        "validate",
        "check specs; print FILE:LINE:COL diagnostics",
        "colospec validate --strict --format json examples/pair.yaml",
        "exit codes:\n  0  every spec is valid\n  2  a spec is invalid, or a usage error",
    )
    _spec_options(p)
    p.add_argument(
        "--format",
        choices=["text", "json"],
        default="text",
        help="json: one object per diagnostic on stdout (file, line, column, severity, path, "
        "rule, message, hint)",
    )
    p.set_defaults(func=cmd_validate)

    p = _command(
        sub,
        "build",
        "write OUT/<pair>/<host>/ for each spec",
        "colospec build examples/*.yaml -o out",
    )
    _spec_options(p)
    p.add_argument("-o", "--output", default="out", metavar="OUT", help="default: out")
    p.set_defaults(func=cmd_build)

    p = _command(
        sub,
        "diff",
        "show what build would change in OUT, as a unified diff",
        "colospec diff examples/*.yaml -o out",
        "exit codes:\n  0  build would change nothing\n  1  build would change OUT\n"
        "  2  invalid spec, usage error, or OUT cannot be read",
    )
    _spec_options(p)
    p.add_argument("-o", "--output", default="out", metavar="OUT", help="default: out")
    p.set_defaults(func=cmd_diff)

    p = _command(
        sub,
        "schema",
        "print the spec's JSON Schema",
        "colospec schema > pair.v1.json",
        "exit codes:\n  0  always",
    )
    p.set_defaults(func=cmd_schema)

    p = _command(
        sub,
        "certs",
        "create a pair CA and both hosts' TLS certificates (security.tls)",
        "colospec certs examples/pair.yaml",
        "exit codes:\n  0  written\n  1  certtool failed, or DIR exists (without --force)\n"
        "  2  invalid spec, a spec without security.tls, or a usage error",
    )
    p.add_argument("spec", metavar="SPEC", help="the pair's spec")
    p.add_argument("--dir", metavar="DIR",
                   help="write DIR/<host>/ (default: security.tls.dir)")  # fmt: skip
    p.add_argument("--days", type=_positive, default=3650, help="validity (default: 3650)")
    p.add_argument("--force", action="store_true", help="replace existing certificates")
    p.set_defaults(func=cmd_certs)

    from colospec.runner.commands import add_runner_commands

    add_runner_commands(sub, _command)

    from colospec.ocf.commands import add_ocf_commands

    add_ocf_commands(sub, _command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        _say("colospec: interrupted")
        return 130
    except OSError as exc:
        _say(f"colospec: error: {exc.filename or ''}: {exc.strerror or exc}")
        return EXIT_FAILURE
    except Exception as exc:
        if os.environ.get("COLOSPEC_DEBUG"):
            raise
        _say(
            f"colospec: internal error: {type(exc).__name__}: {exc} "
            "(a colospec bug; rerun with COLOSPEC_DEBUG=1 for details)"
        )
        return EXIT_FAILURE
