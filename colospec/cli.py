"""Command line: colospec validate | build | schema (and the runner's commands)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from colospec import __version__
from colospec.diagnostics import SpecError

if TYPE_CHECKING:
    from colospec.compile import Checked

# The compiler (jinja2, jsonschema, yaml) loads only for the commands that compile, so
# the runner's commands start fast.

EXIT_OK, EXIT_FAILURE, EXIT_INVALID = 0, 1, 2


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _check_all(paths: list[str], strict: bool) -> list[Checked] | None:
    """Validate every spec; print all diagnostics; None if any spec is invalid."""
    from colospec.compile import check_spec

    checked, ok = [], True
    for path in paths:
        try:
            result = check_spec(path, strict=strict)
        except SpecError as exc:
            for d in exc.diagnostics:
                _say(d.format())
            ok = False
            continue
        for d in result.warnings:
            _say(d.format())
        checked.append(result)
    names: dict[str, str] = {}
    for c in checked:
        if c.pair.name in names:
            _say(
                f"{c.spec.file}:1:1: error: $.name: pair '{c.pair.name}' is also built by "
                f"{names[c.pair.name]} — give each pair its own name"
            )
            ok = False
        names[c.pair.name] = c.spec.file
    return checked if ok else None


def cmd_validate(args: argparse.Namespace) -> int:
    checked = _check_all(args.specs, args.strict)
    if checked is None:
        return EXIT_INVALID
    for c in checked:
        _say(f"{c.spec.file}: ok ({c.pair.name}: {c.pair.primary.name} + {c.pair.secondary.name})")
    return EXIT_OK


def cmd_build(args: argparse.Namespace) -> int:
    from colospec.compile import render_pair
    from colospec.writer import write_tree

    checked = _check_all(args.specs, args.strict)
    if checked is None:
        return EXIT_INVALID
    rendered = [(c.pair, render_pair(c.pair)) for c in checked]
    out = Path(args.output)
    for pair, files in rendered:
        write_tree(out / pair.name, files)
        _say(f"wrote {out / pair.name}/ ({pair.primary.name}, {pair.secondary.name})")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from colospec.schema import schema_text

    sys.stdout.write(schema_text())
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="colospec",
        description="Compile a QEMU COLO pair spec into reviewable per-host artifacts, and run them.",
    )
    parser.add_argument("--version", action="version", version=f"colospec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check specs; print FILE:LINE:COL diagnostics")
    p.add_argument("specs", nargs="+", metavar="SPEC")
    p.add_argument("--strict", action="store_true", help="treat warnings as errors")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("build", help="write OUT/<pair>/<host>/ for each spec")
    p.add_argument("specs", nargs="+", metavar="SPEC")
    p.add_argument(
        "-o", "--output", default="out", metavar="OUT", help="output directory (default: out)"
    )
    p.add_argument("--strict", action="store_true", help="treat warnings as errors")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("schema", help="print the spec's JSON Schema")
    p.set_defaults(func=cmd_schema)

    from colospec.runner.commands import add_runner_commands

    add_runner_commands(sub)
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
