"""The schema's patterns mean in colospec what they mean in any JSON Schema validator.

JSON Schema patterns are ECMA-262 regular expressions. `regress` is the ECMA-262 engine
check-jsonschema uses; colospec must accept exactly the strings it accepts.
"""

from __future__ import annotations

import json

import pytest
import regress
from hypothesis import given, settings
from hypothesis import strategies as st

from colospec.schema import ecma_regex, pair_schema

from conftest import ROOT


def _patterns(node, where="$") -> list[tuple[str, str]]:
    found = []
    if isinstance(node, dict):
        if isinstance(node.get("pattern"), str):
            found.append((where, node["pattern"]))
        for key, value in node.items():
            found += _patterns(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _patterns(value, f"{where}[{i}]")
    return found


PATTERNS = sorted({p for _, p in _patterns(pair_schema())})
# Strings near every pattern's edges: valid values with a line break or NUL around them,
# other line terminators, Unicode digits and letters, characters outside the BMP.
VALUES = [
    "web1", "node-a", "7.2", "10.22.1.2", "52:54:00:12:34:56", ":7", "127.0.0.1:7", "tap0",
    "/var/lib/colospec/web1/disk.raw", "qemu64,+kvmclock", "pc", "console=ttyS0", "-S", "",
]  # fmt: skip
EDGES = ["\n", "\r", "\r\n", "\u2028", "\u2029", "\x00", "\t", " ", "١", "é", "😀", ".", "$"]
CORPUS = sorted(
    {v for v in VALUES}
    | {v + e for v in VALUES for e in EDGES}
    | {e + v for v in VALUES for e in EDGES}
    | {v[:1] + e + v[1:] for v in VALUES for e in EDGES}
)


def test_the_schema_has_patterns_to_check():
    assert len(PATTERNS) >= 8
    assert "^[a-z][a-z0-9-]{0,30}$" in PATTERNS


@pytest.mark.parametrize("pattern", PATTERNS)
def test_colospec_and_ecma_262_accept_the_same_strings(pattern):
    ecma = regress.Regex(pattern)
    ours = ecma_regex(pattern)
    differ = [s for s in CORPUS if (ours.search(s) is None) != (ecma.find(s) is None)]
    assert differ == []


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.sampled_from(PATTERNS), st.text(max_size=40))
def test_any_string_is_judged_alike(pattern, text):
    assert (ecma_regex(pattern).search(text) is None) == (regress.Regex(pattern).find(text) is None)


@pytest.mark.parametrize(
    "pattern, text, ecma_matches",
    [
        ("^a$", "a\n", False),  # Python's $ would match before the newline
        ("^a.c$", "a\nc", False),
        ("^a.c$", "a\u2028c", False),  # a line terminator to ECMA-262, not to Python
        ("^\\d$", "١", False),  # an Arabic-Indic digit is \d to Python's re, not to ECMA
        ("^\\w+$", "é", False),
        ("^[\\d.]+$", "1.2", True),
    ],
)
def test_translation_of_the_constructs_that_differ(pattern, text, ecma_matches):
    assert (regress.Regex(pattern).find(text) is not None) is ecma_matches
    assert (ecma_regex(pattern).search(text) is not None) is ecma_matches


@pytest.mark.parametrize("pattern", ["^\\s$", "^\\bx$", "^[]$", "^[^]$", "^\\p{L}$"])
def test_unportable_constructs_are_refused(pattern):
    with pytest.raises(ValueError, match="pattern"):
        ecma_regex(pattern)


def test_the_published_schema_is_the_one_validated_against():
    assert json.loads((ROOT / "schemas" / "pair.v1.json").read_text()) == pair_schema()
