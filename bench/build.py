"""Build speed: one pair as a whole process, and 1,000 pairs in one process.

1. `colospec build examples/pair.yaml` as a whole process, next to
   `python3 -c "import yaml, jinja2, jsonschema"` (the floor any such tool pays), in the
   same run: medians and their ratio. Target: <= 1.5x.
2. A directory of 1,000 generated pair specs built by one `colospec build`. Target: <= 5 s.
usage: python3 bench/build.py [RUNS]
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


# As after a normal install, both sides run from bytecode: a PYTHONDONTWRITEBYTECODE in
# the caller's environment would make only colospec (not site-packages) compile each time.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, cwd=ROOT, capture_output=True, env=ENV)
    return time.perf_counter() - t0


def one_pair(runs: int, tmp: Path) -> None:
    build = [PY, "-m", "colospec", "build", "examples/pair.yaml", "-o", str(tmp / "one")]
    floor = [PY, "-c", "import yaml, jinja2, jsonschema"]
    timed(build)  # warm the page cache and .pyc files
    b, f = [], []
    for _ in range(runs):
        b.append(timed(build))
        f.append(timed(floor))
    mb, mf = statistics.median(b), statistics.median(f)
    print(f"one pair, whole process, median of {runs}:")
    print(f"  colospec build examples/pair.yaml         {mb * 1000:6.0f} ms")
    print(f"  python3 -c 'import yaml, jinja2, jsonschema' {mf * 1000:4.0f} ms")
    print(f"  ratio: {mb / mf:.2f}x   (target <= 1.5x)")


def thousand_pairs(tmp: Path) -> None:
    base = yaml.safe_load((ROOT / "examples/pair.yaml").read_text())
    specs = tmp / "specs"
    specs.mkdir()
    for i in range(1000):
        spec = {**base, "name": f"vm{i:04d}"}
        spec["hosts"] = {
            role: {**h, "name": f"{h['name']}-{i:04d}", "address": f"10.{i // 250}.{i % 250}.{n}"}
            for n, (role, h) in enumerate(base["hosts"].items(), start=1)
        }
        (specs / f"vm{i:04d}.yaml").write_text(yaml.safe_dump(spec))
    argv = [PY, "-m", "colospec", "build", *sorted(map(str, specs.glob("*.yaml"))),
            "-o", str(tmp / "many")]  # fmt: skip
    took = timed(argv)
    files = sum(1 for p in (tmp / "many").rglob("*") if p.is_file())
    print(f"1,000 pairs in one process: {took:.2f} s ({files} files)   (target <= 5 s)")


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    # Next to the repository, where out/ lives: /tmp here is a much slower file system.
    tmp = Path(tempfile.mkdtemp(prefix=".bench-", dir=ROOT))
    try:
        one_pair(runs, tmp)
        thousand_pairs(tmp)
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
