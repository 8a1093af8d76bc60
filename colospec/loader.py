"""Load a spec from YAML, keeping the line and column of every node.

PyYAML's composer gives us the node graph with marks; we turn it into plain Python data
ourselves so that duplicate keys are errors and alias expansion is bounded (a "billion
laughs" document must fail fast instead of expanding exponentially).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from colospec.diagnostics import Diagnostic, PathT, SpecError, json_path

MAX_SPEC_BYTES = 1 << 20
# A real pair spec has well under 200 nodes; this leaves room for generous anchors while
# stopping exponential alias expansion after a few milliseconds.
MAX_EXPANDED_NODES = 20_000


@dataclass(frozen=True)
class LoadedSpec:
    """The spec's data plus the position of every node, for error messages."""

    file: str
    data: Any
    sha256: str
    marks: dict[PathT, tuple[int, int]] = field(repr=False)
    key_marks: dict[PathT, tuple[int, int]] = field(repr=False)

    def position(self, path: PathT, *, key: bool = False) -> tuple[int, int]:
        """1-based (line, col) of the node at path, or of its nearest existing ancestor."""
        if key and path in self.key_marks:
            return self.key_marks[path]
        while path not in self.marks and path:
            path = path[:-1]
        return self.marks.get(path, (1, 1))

    def diagnostic(self, path: PathT, problem: str, fix: str, *, severity="error", key=False):
        line, col = self.position(path, key=key)
        return Diagnostic(self.file, line, col, severity, json_path(path), problem, fix)


class _TooLarge(Exception):
    pass


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

    def convert(self, node: yaml.Node, path: PathT) -> Any:
        self.visited += 1
        if self.visited > MAX_EXPANDED_NODES:
            raise _TooLarge
        self.marks.setdefault(path, _pos(node.start_mark))
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(item, (*path, i)) for i, item in enumerate(node.value)]
        return self.loader.construct_object(node, deep=True)

    def _mapping(self, node: yaml.MappingNode, path: PathT) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.errors.append(self._error(key_node, path, "a key must be a plain name"))
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
                    )
                )
                continue
            self.key_marks[child] = _pos(key_node.start_mark)
            result[key] = self.convert(value_node, child)
        return result

    def _error(self, node, path, problem, fix="rewrite this node"):
        line, col = _pos(node.start_mark)
        return Diagnostic(self.file, line, col, "error", json_path(path), problem, fix)


# libyaml's parser when PyYAML has it (Debian's and PyPI's wheels do): same nodes and
# marks, several times faster.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_spec_text(text: str, file: str) -> LoadedSpec:
    sha = hashlib.sha256(text.encode()).hexdigest()
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise SpecError(
                [
                    Diagnostic(
                        file, 1, 1, "error", "$", "the file is empty", "write a colospec/v1 spec"
                    )
                ]
            )
        conv = _Converter(loader, file)
        try:
            data = conv.convert(node, ())
        except _TooLarge:
            line, col = _pos(node.start_mark)
            raise SpecError(
                [
                    Diagnostic(
                        file,
                        line,
                        col,
                        "error",
                        "$",
                        f"the document expands to more than {MAX_EXPANDED_NODES} nodes "
                        "through aliases",
                        "write the values out instead of nesting aliases",
                    )
                ]
            ) from None
        except yaml.constructor.ConstructorError as exc:
            raise SpecError([_yaml_error(exc, file)]) from None
    except yaml.MarkedYAMLError as exc:
        raise SpecError([_yaml_error(exc, file)]) from None
    except yaml.YAMLError as exc:
        raise SpecError(
            [Diagnostic(file, 1, 1, "error", "$", f"not valid YAML: {exc}", "fix the syntax")]
        ) from None
    finally:
        loader.dispose()
    if conv.errors:
        raise SpecError(conv.errors)
    return LoadedSpec(file, data, sha, conv.marks, conv.key_marks)


def _yaml_error(exc: yaml.MarkedYAMLError, file: str) -> Diagnostic:
    mark = exc.problem_mark or exc.context_mark
    line, col = _pos(mark) if mark else (1, 1)
    problem = " ".join(p for p in (exc.context, exc.problem) if p)
    return Diagnostic(file, line, col, "error", "$", f"not valid YAML: {problem}", "fix the syntax")


def load_spec(path: str | Path) -> LoadedSpec:
    """Read and parse one spec file; raises SpecError with positions on any problem."""
    file = str(path)
    try:
        raw = Path(path).read_bytes()[: MAX_SPEC_BYTES + 1]
    except OSError as exc:
        raise SpecError(
            [
                Diagnostic(
                    file,
                    0,
                    0,
                    "error",
                    "$",
                    f"cannot read the file: {exc.strerror}",
                    "check the path",
                )
            ]
        ) from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(
            [
                Diagnostic(
                    file, 1, 1, "error", "$", "the file is larger than 1 MiB", "check the path"
                )
            ]
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            [
                Diagnostic(
                    file, 1, 1, "error", "$", f"not UTF-8 text ({exc.reason})", "save as UTF-8"
                )
            ]
        ) from None
    return load_spec_text(text, file)
