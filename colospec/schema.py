"""JSON Schema validation of a loaded spec, with errors mapped to file positions."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import re
from collections.abc import Iterator
from functools import cache
from typing import Any

import jsonschema
from jsonschema import ValidationError

from colospec.diagnostics import Diagnostic, PathT
from colospec.loader import LoadedSpec
from colospec.resources import resource_dir

SCHEMA_FILE = "pair.v1.json"
# Rule ids of schema diagnostics are "schema-<keyword>", except where a name says more.
_RULE_IDS = {
    "additionalProperties": "schema-unknown-key",
    "minimum": "schema-range",
    "maximum": "schema-range",
}
_JSON_TYPES = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}


@cache
def pair_schema() -> dict[str, Any]:
    return json.loads((resource_dir("schemas") / SCHEMA_FILE).read_text())


def schema_text() -> str:
    return (resource_dir("schemas") / SCHEMA_FILE).read_text()


# ECMA-262 regular expressions (what JSON Schema's `pattern` means) differ from Python's
# where the schema could notice: `$` also matches before a final newline in Python, and
# `.`, `\d`, `\w` mean more there. Each schema pattern is translated, never reinterpreted;
# escapes the translation does not know are refused (tests/test_schema_patterns.py runs
# every pattern against an ECMA-262 engine too).
_ECMA_ESCAPES = {"d": "0-9", "w": "A-Za-z0-9_"}
_ECMA_DOT = "[^\n\r\u2028\u2029]"
_UNPORTABLE = set("sSbBDWcpPk")


def ecma_regex(pattern: str) -> re.Pattern[str]:
    """Compile a JSON Schema pattern so that Python's re matches what ECMA-262 matches."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            nxt = pattern[i + 1 : i + 2]
            if nxt in _UNPORTABLE:
                raise ValueError(f"pattern {pattern!r}: \\{nxt} is not portable to ECMA-262")
            if nxt in _ECMA_ESCAPES:
                out.append(_ECMA_ESCAPES[nxt] if in_class else f"[{_ECMA_ESCAPES[nxt]}]")
            else:
                out.append(ch + nxt)
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
            out.append(ch)
        elif ch == "[":
            if pattern[i + 1 : i + 2] == "]" or pattern[i + 1 : i + 3] == "^]":
                raise ValueError(f"pattern {pattern!r}: [] and [^] mean other things in Python")
            in_class = True
            out.append(ch)
        elif ch == "$":
            out.append("\\Z")
        elif ch == ".":
            out.append(_ECMA_DOT)
        else:
            out.append(ch)
        i += 1
    return re.compile("".join(out))


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return ecma_regex(pattern)


def _pattern(validator, pattern: str, instance: Any, schema) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _compiled(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _strict_integer(checker, instance: Any) -> bool:
    # JSON Schema counts 2.0 as an integer; QEMU would be handed "-smp 2.0".
    return isinstance(instance, int) and not isinstance(instance, bool)


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    validators={"pattern": _pattern},
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _strict_integer),
)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref:
        target = pair_schema()
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        return {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _schema_at(path: PathT) -> dict[str, Any]:
    """The schema's own definition of the node at path ({} where it has none)."""
    node = _resolve(pair_schema())
    for part in path:
        node = _resolve(node.get("properties", {}).get(part, {}))
    return node


def validate_schema(spec: LoadedSpec) -> list[Diagnostic]:
    """Every schema violation, as positioned diagnostics."""
    validator = _Validator(pair_schema())
    out: list[Diagnostic] = []
    for error in validator.iter_errors(spec.data):
        rule = _RULE_IDS.get(error.validator, f"schema-{error.validator}")
        out.extend(dataclasses.replace(d, rule=rule) for d in _diagnose(spec, error))
    return sorted(set(out))


def _diagnose(spec: LoadedSpec, error: jsonschema.ValidationError) -> list[Diagnostic]:
    path: PathT = tuple(error.absolute_path)
    value = error.instance
    schema = _resolve(error.schema) if isinstance(error.schema, dict) else {}
    hint = schema.get("x-hint")
    kind = error.validator
    if kind == "additionalProperties":
        known = list(schema.get("properties", {}))
        diags = []
        for key in value:
            if key in known:
                continue
            close = difflib.get_close_matches(key, known, n=1)
            fix = f"did you mean '{close[0]}'?" if close else "remove it"
            if not close:
                fix += f" (allowed here: {', '.join(known)})"
            diags.append(spec.diagnostic((*path, key), f"unknown key '{key}'", fix, key=True))
        return diags
    if kind == "required":
        diags = []
        # A conditional ("if"/"then") requirement's schema has no properties: describe the
        # key from where the schema defines it.
        props = schema.get("properties") or _schema_at(path).get("properties", {})
        for key in error.validator_value:
            if isinstance(value, dict) and key not in value:
                sub = _resolve(props.get(key, {}))
                what = sub.get("description", "")
                fix = f"add '{key}:'" + (f" ({what})" if what else "")
                diags.append(spec.diagnostic(path, f"missing required key '{key}'", fix, key=True))
        return diags
    if kind == "type":
        expected = error.validator_value
        want = {"object": "a mapping", "array": "a list", "string": "a string"}.get(
            expected, f"an {expected}" if expected[0] in "aeiou" else f"a {expected}"
        )
        problem = f"expected {want}, got {_kind(value)}"
        if expected == "string" and isinstance(value, int | float | bool):
            fix = "quote the value" + (f": {hint}" if hint else "")
        elif expected == "integer" and isinstance(value, float) and value.is_integer():
            fix = f"write {int(value)}, without a fraction"
        else:
            fix = hint or f"write {want}"
        return [spec.diagnostic(path, problem, fix)]
    if kind == "enum":
        options = ", ".join(str(o) for o in error.validator_value)
        return [spec.diagnostic(path, f"{value!r} is not allowed", f"use one of: {options}")]
    if kind == "const":
        fix = hint or f"write {error.validator_value!r}"
        return [spec.diagnostic(path, f"{value!r} is not supported", fix)]
    if kind == "pattern":
        fix = hint or f"match {error.validator_value}"
        return [spec.diagnostic(path, f"{value!r} is not of the required form", fix)]
    if kind in ("minimum", "maximum"):
        low, high = schema.get("minimum"), schema.get("maximum")
        return [spec.diagnostic(path, f"{value} is out of range", f"use {low}..{high}")]
    return [spec.diagnostic(path, error.message, hint or "see the spec reference in README.md")]


def apply_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of schema-valid data with every schema default filled in."""
    data = copy.deepcopy(data)
    _fill(data, pair_schema())
    return data


def _fill(node: Any, schema: dict[str, Any]) -> None:
    schema = _resolve(schema)
    if not isinstance(node, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        sub = _resolve(sub)
        if key not in node and "default" in sub:
            node[key] = copy.deepcopy(sub["default"])
        if key in node:
            _fill(node[key], sub)
