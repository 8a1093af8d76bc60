"""Semantic rules: what the schema cannot say. Each rule yields positioned diagnostics.

A rule is a plain function; its module lists it in RULES: common.py for every flavour,
colo.py and vmft.py for one. A flavour names the lists it runs (colospec/flavors/), so
nothing registers itself on import and this package imports no flavour.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator

from colospec.diagnostics import Diagnostic
from colospec.loader import LoadedSpec
from colospec.model import Pair

Rule = Callable[[Pair, LoadedSpec], Iterator[Diagnostic]]


def rule_id(fn: Rule) -> str:
    """A rule's stable id (what `validate --allow` names): its function's name."""
    return fn.__name__.replace("_", "-")


def run_rules(rules: Iterable[Rule], pair: Pair, spec: LoadedSpec) -> list[Diagnostic]:
    # A rule that reports several distinct findings names them itself (known defects).
    return sorted(
        d if d.rule != "spec" else dataclasses.replace(d, rule=rule_id(r))
        for r in rules
        for d in r(pair, spec)
    )
