"""JSON Schema validation of a loaded spec, with errors mapped to file positions."""

from __future__ import annotations

import copy
import difflib
import json
from functools import cache
from typing import Any

import jsonschema

from colospec.diagnostics import Diagnostic, PathT
from colospec.loader import LoadedSpec
from colospec.resources import resource_dir

SCHEMA_FILE = "pair.v1.json"
_JSON_TYPES = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}


@cache
def pair_schema() -> dict[str, Any]:
    return json.loads((resource_dir("schemas") / SCHEMA_FILE).read_text())


def schema_text() -> str:
    return (resource_dir("schemas") / SCHEMA_FILE).read_text()


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
    validator = jsonschema.Draft202012Validator(pair_schema())
    out: list[Diagnostic] = []
    for error in validator.iter_errors(spec.data):
        out.extend(_diagnose(spec, error))
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
