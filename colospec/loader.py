"""Load a spec from YAML, keeping the line and column of every node.

PyYAML's composer gives us the node graph with marks; we turn it into plain Python data
ourselves so that duplicate keys are errors and alias expansion is bounded (a "billion
laughs" document must fail fast instead of expanding exponentially).
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from colospec.diagnostics import Diagnostic, PathT, SpecError, json_path

MAX_SPEC_BYTES = 1 << 20
# A real pair spec has well under 200 nodes; this leaves room for generous anchors while
# stopping exponential alias expansion after a few milliseconds.
MAX_EXPANDED_NODES = 20_000
# The schema's deepest node is five levels down; anything far deeper is a mistake or an
# attack, and must end in a diagnostic long before Python's recursion limit.
MAX_DEPTH = 64
STDIN = "-"
STDIN_NAME = "<stdin>"

_TAG = "tag:yaml.org,2002:"
# Plain scalars that YAML 1.1 (PyYAML) and YAML 1.2 (most other tools and editors) read
# differently; colospec accepts only the forms both read alike (yamllint's truthy and
# octal rules, extended to base-60 numbers and digit separators).
_PORTABLE_BOOL = re.compile(r"true|True|TRUE|false|False|FALSE")
_PORTABLE_INT = re.compile(r"[-+]?(0|[1-9][0-9]*)")
_PORTABLE_FLOAT = re.compile(
    r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)"
)
# YAML 1.2 core schema numbers that YAML 1.1 leaves as text (0o17, 1e3, 0x1F is int in both).
_YAML12_NUMBER = re.compile(r"0o[0-7]+|[-+]?[0-9]+(\.[0-9]*)?[eE][-+]?[0-9]+")


@dataclass(frozen=True)
class LoadedSpec:
    """The spec's data plus the position of every node, for error messages."""

    file: str
    data: Any
    sha256: str
    marks: dict[PathT, tuple[int, int]] = field(repr=False)
    key_marks: dict[PathT, tuple[int, int]] = field(repr=False)
    # Errors that still leave usable data (ambiguous scalars): reported with the schema's.
    findings: tuple[Diagnostic, ...] = ()

    def position(self, path: PathT, *, key: bool = False) -> tuple[int, int]:
        """1-based (line, col) of the node at path, or of its nearest existing ancestor."""
        if key and path in self.key_marks:
            return self.key_marks[path]
        while path not in self.marks and path:
            path = path[:-1]
        return self.marks.get(path, (1, 1))

    def diagnostic(
        self, path: PathT, problem: str, fix: str, *, severity="error", key=False, rule="spec"
    ):
        line, col = self.position(path, key=key)
        return Diagnostic(self.file, line, col, severity, json_path(path), problem, fix, rule)


class _TooLarge(Exception):
    pass


def _ambiguous_scalar(loader, node: yaml.ScalarNode) -> tuple[str, str] | None:
    """(problem, fix) for a plain scalar that YAML 1.1 and 1.2 readers take differently."""
    if node.style:  # quoted or block scalars are always text (libyaml: "", PyYAML: None)
        return None
    if node.tag != loader.resolve(yaml.ScalarNode, node.value, (True, False)):
        return None  # an explicit tag says what it is
    text, tag = node.value, node.tag.removeprefix(_TAG)
    if tag == "bool" and not _PORTABLE_BOOL.fullmatch(text):
        return (
            f"'{text}' is a boolean to colospec (YAML 1.1) but text to YAML 1.2 readers",
            "write true or false, or quote it if it is text",
        )
    if tag == "int" and not _PORTABLE_INT.fullmatch(text):
        digits = text.lstrip("+-")
        if ":" in text:
            why = "a base-60 number to colospec (YAML 1.1) and text to YAML 1.2 readers"
        elif digits[:1] == "0" and digits[1:].isdigit():
            why = f"octal {int(digits, 8)} to colospec (YAML 1.1) and {int(digits)} to YAML 1.2 readers"
        else:
            why = "a number not written in plain decimal (YAML 1.1 and 1.2 differ on such forms)"
        return (
            f"'{text}' is {why}",
            "quote it if it is text (e.g. a MAC address), or write the number in plain decimal",
        )
    if tag == "float" and not _PORTABLE_FLOAT.fullmatch(text):
        return (
            f"'{text}' is a number to colospec (YAML 1.1) that YAML 1.2 readers take differently",
            "quote it if it is text, or write a plain decimal number",
        )
    if tag == "str" and _YAML12_NUMBER.fullmatch(text):
        return (
            f"'{text}' is text to colospec (YAML 1.1) but a number to YAML 1.2 readers",
            "quote it if it is text, or write the number in plain decimal",
        )
    return None


def _pos(mark: yaml.Mark) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1)


class _Converter:
    def __init__(self, loader: yaml.SafeLoader | yaml.CSafeLoader, file: str):
        self.loader = loader
        self.file = file
        self.visited = 0
        self.marks: dict[PathT, tuple[int, int]] = {}
        self.key_marks: dict[PathT, tuple[int, int]] = {}
        self.errors: list[Diagnostic] = []
        self.findings: list[Diagnostic] = []
        self.open: set[int] = set()  # collections being converted: an alias to one is a loop

    def convert(self, node: yaml.Node, path: PathT) -> Any:
        self.visited += 1
        if self.visited > MAX_EXPANDED_NODES:
            raise _TooLarge
        self.marks.setdefault(path, _pos(node.start_mark))
        if isinstance(node, yaml.ScalarNode):
            if ambiguous := _ambiguous_scalar(self.loader, node):
                self.findings.append(self._error(node, path, *ambiguous, rule="yaml-ambiguous"))
            try:
                return self.loader.construct_object(node, deep=True)
            except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
                # An explicit tag the text cannot satisfy (`!!int abc`) or an unsafe one.
                problem = getattr(exc, "problem", None) or str(exc)
                self.errors.append(
                    self._error(
                        node,
                        path,
                        f"cannot read this value: {problem}",
                        "remove the tag or fix the value",
                        rule="yaml-value",
                    )
                )
                return None
        if id(node) in self.open:
            self.errors.append(
                self._error(
                    node,
                    path,
                    "an alias refers to a node that contains it, so the value never ends",
                    "write the value out instead of referring to its own anchor",
                    rule="yaml-alias-loop",
                )
            )
            return None
        if len(path) >= MAX_DEPTH:
            self.errors.append(
                self._error(
                    node,
                    path,
                    f"the document nests deeper than {MAX_DEPTH} levels",
                    "a colospec spec is at most a few levels deep: check the indentation",
                    rule="yaml-too-deep",
                )
            )
            return None
        self.open.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            return [self.convert(item, (*path, i)) for i, item in enumerate(node.value)]
        finally:
            self.open.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: PathT) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.errors.append(
                    self._error(key_node, path, "a key must be a plain name", rule="yaml-key")
                )
                continue
            # Keys are names: take the text as written, so `on:` stays "on", not True.
            key = str(key_node.value)
            child = (*path, key)
            if key in result:
                first = self.key_marks[child][0]
                self.errors.append(
                    self._error(
                        key_node,
                        child,
                        f"duplicate key '{key}' (first defined on line {first})",
                        "keep only one of them",
                        rule="yaml-duplicate-key",
                    )
                )
                continue
            self.key_marks[child] = _pos(key_node.start_mark)
            result[key] = self.convert(value_node, child)
        return result

    def _error(self, node, path, problem, fix="rewrite this node", *, rule):
        line, col = _pos(node.start_mark)
        return Diagnostic(self.file, line, col, "error", json_path(path), problem, fix, rule)


# libyaml's parser when PyYAML has it (Debian's and PyPI's wheels do): same nodes and
# marks, several times faster.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _whole_file(file: str, problem: str, fix: str, rule: str, line=1, col=1) -> SpecError:
    return SpecError([Diagnostic(file, line, col, "error", "$", problem, fix, rule)])


def load_spec_text(text: str, file: str) -> LoadedSpec:
    sha = hashlib.sha256(text.encode()).hexdigest()
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise _whole_file(file, "the file is empty", "write a colospec/v1 spec", "file-empty")
        conv = _Converter(loader, file)
        try:
            data = conv.convert(node, ())
        except _TooLarge:
            raise _whole_file(
                file,
                f"the document expands to more than {MAX_EXPANDED_NODES} nodes through aliases",
                "write the values out instead of nesting aliases",
                "yaml-too-large",
                *_pos(node.start_mark),
            ) from None
    except yaml.MarkedYAMLError as exc:
        raise SpecError([_yaml_error(exc, file)]) from None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
        # A scalar with an explicit tag that cannot hold its text (`!!int abc`).
        raise _whole_file(file, f"not valid YAML: {exc}", "fix the syntax", "yaml-syntax") from None
    except RecursionError:  # only PyYAML's pure-Python parser recurses while parsing
        raise _whole_file(
            file, "the document nests too deeply", "check the indentation", "yaml-too-deep"
        ) from None
    finally:
        loader.dispose()
    if conv.errors:
        raise SpecError(conv.errors + conv.findings)
    return LoadedSpec(file, data, sha, conv.marks, conv.key_marks, tuple(conv.findings))


def _yaml_error(exc: yaml.MarkedYAMLError, file: str) -> Diagnostic:
    mark = exc.problem_mark or exc.context_mark
    line, col = _pos(mark) if mark else (1, 1)
    problem = " ".join(p for p in (exc.context, exc.problem) if p)
    return Diagnostic(
        file, line, col, "error", "$", f"not valid YAML: {problem}", "fix the syntax", "yaml-syntax"
    )


def load_spec(path: str | Path) -> LoadedSpec:
    """Read and parse one spec file ("-": standard input); SpecError with positions on any problem."""
    file = STDIN_NAME if str(path) == STDIN else str(path)
    try:
        if file == STDIN_NAME:
            raw = sys.stdin.buffer.read(MAX_SPEC_BYTES + 1)
        else:
            with open(path, "rb") as f:
                raw = f.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise _whole_file(
            file, f"cannot read the file: {exc.strerror}", "check the path", "file-unreadable", 0, 0
        ) from None
    if len(raw) > MAX_SPEC_BYTES:
        raise _whole_file(file, "the file is larger than 1 MiB", "check the path", "file-too-large")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _whole_file(
            file, f"not UTF-8 text ({exc.reason})", "save as UTF-8", "file-not-utf8"
        ) from None
    return load_spec_text(text, file)
