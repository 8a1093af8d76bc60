"""No spec can break the compiler: any mutation ends in a build or in diagnostics.

Deterministic (derandomize): the same examples every run, so CI is repeatable; a failure
prints the mutation's choices, and bench/fuzz.py runs many more from plain seeds.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specfuzz import BASES, mutated_spec, outcome


@settings(
    max_examples=400,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.randoms(use_true_random=False))
def test_any_mutated_spec_builds_or_is_rejected_with_diagnostics(rng):
    assert outcome(mutated_spec(rng)) in ("built", "invalid")


@pytest.mark.parametrize("index", range(len(BASES)))
def test_the_unmutated_bases_build(index):
    # Otherwise every mutation could be 'invalid' for a reason unrelated to the mutation.
    assert outcome(BASES[index].encode()) == "built"


def test_mutations_reach_both_outcomes():
    import random

    seen = {outcome(mutated_spec(random.Random(seed))) for seed in range(60)}
    assert seen == {"built", "invalid"}
