"""Mutated specs for the property tests and bench/fuzz.py, and the one question asked of each:
does colospec end in success or diagnostics, never an internal error?

A mutation starts from a valid spec (an example or a test case) and changes its data
(a value, a type, a key), its YAML text (a token inserted or a span deleted) or its bytes.
All choices come from one random.Random, so hypothesis can drive and shrink them and the
benchmark can replay a seed.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

import yaml

from colospec.compile import check_spec, render_pair
from colospec.diagnostics import SpecError

ROOT = Path(__file__).resolve().parent.parent
BASES = [
    p.read_text() for p in sorted([*ROOT.glob("examples/*.yaml"), *ROOT.glob("tests/cases/*.yaml")])
]

# Values that break assumptions: wrong types, edge numbers, hostile text.
ODD_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 2.0, 0.5, 1e308, float("inf"), float("nan"), 2**64, "",
    " ", "\n", "a\nb", ",", ",,", "'", '"', "$(id)", "`id`", ";", "%", "%n", "\x00", "\u202e",
    "x" * 4096, "0.0.0.0", "::", "q35", "7.2", "-S", "/", "/..", "a=b,c=d", [], {}, [1, [2]],
    {"k": "v"}, {"": None}, "über", "😀",
]  # fmt: skip
YAML_TOKENS = [
    ":", ": ", "- ", "&a ", "*a", "*b", "\t", "{", "}", "[", "]", "!!", "!!int ", "!!binary ",
    "!!python/object:os.system ", "'", '"', "\n", "\\", "%YAML 1.1\n", "---\n", "...\n", "? ",
    "|", ">", "#", "~", "@", "`", ",", "<<: ", "  ", "\n  ", "0x", "010", "yes", "on", ".nan",
]  # fmt: skip
# Spliced into a string that is already valid, so that most such specs still validate and
# the text reaches the renderers and the QEMU-argument lint.
FRAGMENTS = [
    "0.0.0.0", ",", ",,", "=", "\n", "'", '"', "$(id)", "`id`", ";", "%", "%%", "\\", " ",
    "\x00", "\u202e", "\t", "::", "[::]", "host=", ",server=on", "-S", "*", "~", "é",
]  # fmt: skip
# Whole QEMU options for qemu.extra_args (flag, value) — both spellings.
EXTRA_ARGS = [
    ["-no-reboot"], ["--no-reboot"], ["-netdev", "tap,id=evil,ifname=tap9"], ["-snapshot"],
    ["--incoming", "tcp:0:4444"], ["-monitor", "tcp::4444,server=on"], ["-s"], ["-S"],
    ["-chardev", "socket,id=c9,port=4444,server=on"], ["-gdb", "tcp::1234"], ["-readconfig"],
    ["-set", "netdev.hn0.vhost=on"], ["-object", "colo-compare,id=x"], ["-machine=q35"],
    ["-device", "e1000,netdev=hn0"], ["-global", "e1000.mac=52:54:00:00:00:01"], ["-m"],
    ["-rtc", "base=utc"], ["-device", "virtio-rng-pci"], ["-spice", "port=5930"], ["-"],
]  # fmt: skip
RAW_BYTES = [
    b"\xff",
    b"\xfe\xff",
    b"\xef\xbb\xbf",
    b"\x00",
    b"\xc3",
    b"\r",
    b"\x85",
    b"\xe2\x80\xa8",
]


def _paths(node: Any, path: tuple = ()) -> list[tuple]:
    found = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _paths(value, (*path, i))
    return found


def _parent(data: Any, path: tuple) -> Any:
    for part in path[:-1]:
        data = data[part]
    return data


def _mutate_data(rng: random.Random, text: str) -> str:
    data = yaml.safe_load(text)
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(_paths(data))
        if not path:
            continue
        parent, last = _parent(data, path), path[-1]
        action = rng.choice(["replace", "delete", "add", "wrap", "splice", "splice", "args"])
        if action == "splice" and isinstance(parent[last], str):
            at = rng.randrange(len(parent[last]) + 1)
            parent[last] = parent[last][:at] + rng.choice(FRAGMENTS) + parent[last][at:]
        elif action == "args":
            qemu = data.setdefault("qemu", {}) if isinstance(data, dict) else {}
            if isinstance(qemu, dict):
                qemu["extra_args"] = [
                    a for _ in range(rng.randint(1, 3)) for a in rng.choice(EXTRA_ARGS)
                ]
        elif action == "replace":
            parent[last] = rng.choice(ODD_VALUES)
        elif action == "delete":
            del parent[last]
        elif action == "add" and isinstance(parent, dict):
            parent[rng.choice(["extra", last + "_", "Name", str(rng.random())])] = rng.choice(
                ODD_VALUES
            )
        elif action == "wrap":
            parent[last] = rng.choice([[parent[last]], {"value": parent[last]}])
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _mutate_text(rng: random.Random, text: str) -> str:
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(text) + 1)
        if rng.random() < 0.6:
            text = text[:at] + rng.choice(YAML_TOKENS) + text[at:]
        else:
            text = text[:at] + text[at + rng.randint(1, 40) :]
    return text


def _mutate_bytes(rng: random.Random, text: str) -> bytes:
    raw = text.encode()
    at = rng.randrange(len(raw) + 1)
    return raw[:at] + rng.choice(RAW_BYTES) + raw[at:]


def mutated_spec(rng: random.Random) -> bytes:
    """One mutated spec, as the bytes of a file."""
    base = rng.choice(BASES)
    kind = rng.choice(["data", "data", "text", "bytes"])
    if kind == "data":
        return _mutate_data(rng, base).encode()
    if kind == "text":
        return _mutate_text(rng, base).encode()
    return _mutate_bytes(rng, base)


def outcome(raw: bytes, directory: Path | None = None) -> str:
    """'built' or 'invalid'; anything else colospec raises propagates (an internal error)."""
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        path = Path(tmp, "spec.yaml")
        path.write_bytes(raw)
        try:
            checked = check_spec(path)
        except SpecError as exc:
            if not exc.diagnostics:
                raise AssertionError("a rejected spec must say why") from None
            return "invalid"
        render_pair(checked.pair)
        return "built"
