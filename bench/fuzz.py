"""Fuzz the compiler: N mutated specs (default 10,000), each must build or end in diagnostics.

Prints how many built, how many were rejected, and the crash count (target 0), with the
seed and error of each crash so that it can be replayed:
    python3 bench/fuzz.py [N] [--from SEED]
A crash is any exception other than colospec's SpecError (the mutations are those of
tests/specfuzz.py, which the property test also uses).
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from specfuzz import mutated_spec, outcome  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", nargs="?", type=int, default=10_000)
    parser.add_argument("--from", dest="first", type=int, default=0, metavar="SEED")
    args = parser.parse_args()
    counts: collections.Counter[str] = collections.Counter()
    crashes: list[tuple[int, str]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="colospec-fuzz-") as tmp:
        for seed in range(args.first, args.first + args.count):
            try:
                counts[outcome(mutated_spec(random.Random(seed)), Path(tmp))] += 1
            except Exception:
                crashes.append((seed, traceback.format_exc(limit=-3)))
    took = time.perf_counter() - started
    for seed, trace in crashes[:20]:
        print(f"--- crash, seed {seed}:\n{trace}")
    print(
        f"{args.count} mutated specs in {took:.1f} s: {counts['built']} built, "
        f"{counts['invalid']} rejected with diagnostics, {len(crashes)} crashes"
    )
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
