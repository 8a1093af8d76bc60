#!/usr/bin/env python3
"""Record what the runner's QEMU check sees of one QEMU binary into tests/data/qemu/VERSION/.

    python tests/qemu-versions/record-qemu.py BINARY [--out DIR] [--source TEXT]

Starts BINARY paused, exactly as colospec/runner/qemu_check.py probes it (-machine none
-nodefaults -no-user-config -display none -S, QMP on a socket QEMU connects to), and writes

    query-version.json           query-version's reply
    qmp-schema.json[.gz]         query-qmp-schema's whole reply, entries sorted by name,
                                 keys sorted, one key per line; gzipped (mtime 0) when the
                                 text is larger than 300 kB
    qom-types.json               qom-list-types: the sorted type names
    migration-capabilities.json  query-migrate-capabilities: the sorted capability names
    block-drivers.json           the BlockdevDriver enum, found as qemu_check does it
                                 (blockdev-add's "driver" member), sorted

and updates this version's row of DIR/RECORDED.md. VERSION is the full version QEMU
reports ("10.0.13"). --source says where the binary comes from; by default it is worked
out from dpkg (a system binary) or from the stamp fetch-qemu.sh writes beside its wrapper.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from colospec.runner.qemu_check import _block_drivers  # noqa: E402  (the runner's own logic)

GZIP_ABOVE = 300_000
TIMEOUT_S = 60.0


async def probe(binary: str) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="cs-record-")
    sock = os.path.join(tmp, "qmp.sock")
    client = QMPClient("colospec-record")
    proc = None
    try:
        await client.start_server(sock)
        proc = await asyncio.create_subprocess_exec(
            binary, "-machine", "none", "-nodefaults", "-no-user-config", "-display", "none",
            "-S", "-chardev", f"socket,id=qmp,path={sock.replace(',', ',,')}",
            "-mon", "chardev=qmp,mode=control",
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        await asyncio.wait_for(client.accept(), TIMEOUT_S)
        names = ["query-version", "query-qmp-schema", "qom-list-types",
                 "query-migrate-capabilities"]  # fmt: skip
        return {n: await asyncio.wait_for(client.execute(n), TIMEOUT_S) for n in names}
    finally:
        await client.disconnect()
        if proc is not None:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def _name_key(entry: dict[str, Any]) -> tuple[int, int, str]:
    # Types are masked as numbers ("123"); commands, events and builtins keep their names.
    name = entry["name"]
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def source_of(binary: str, build_note: str) -> tuple[str, str]:
    """The Debian package the binary comes from, as far as can be told, and how to name the
    binary in RECORDED.md."""
    how = f"record-qemu.py {binary}"
    stamp = Path(binary).resolve().parent.parent / "stamp"
    if stamp.is_file():  # a fetch-qemu.sh wrapper
        fields = dict(line.split(" ", 1) for line in stamp.read_text().splitlines() if " " in line)
        if "qemu-system-x86" in fields and "suite" in fields:
            suite = fields["suite"]
            return (
                f"qemu-system-x86 {fields['qemu-system-x86']} (Debian {suite}), unpacked with "
                "its libraries; modules: qemu-system-common",
                f"record-qemu.py $(fetch-qemu.sh {suite})",
            )
    try:
        owner = subprocess.run(["dpkg-query", "-S", os.path.realpath(binary)],
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
        package = owner.split(":", 1)[0]
        version, source = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}\t${source:Version}", package],
            capture_output=True, text=True, check=True,
        ).stdout.split("\t")  # fmt: skip
        modules = subprocess.run(
            ["dpkg-query", "-S", "/usr/lib/x86_64-linux-gnu/qemu"],
            capture_output=True, text=True, check=False,
        ).stdout.split(":", 1)[0]  # fmt: skip
        return (
            f"{package} {version} (source qemu {source}), installed; "
            f"modules: {modules.replace(' ', '') or 'none'}",
            how,
        )
    except (OSError, subprocess.CalledProcessError):
        return build_note or "unknown", how


def dump(value: Any) -> str:
    return json.dumps(value, indent=1, sort_keys=True) + "\n"


def record(binary: str, out: Path, source: str | None) -> Path:
    replies = asyncio.run(probe(binary))
    version = replies["query-version"]
    q = version["qemu"]
    full = f"{q['major']}.{q['minor']}.{q['micro']}"
    schema = sorted(replies["query-qmp-schema"], key=_name_key)
    by_name = {e["name"]: e for e in schema}
    files = {
        "query-version.json": dump(version),
        "qmp-schema.json": dump(schema),
        "qom-types.json": dump(sorted(t["name"] for t in replies["qom-list-types"])),
        "migration-capabilities.json": dump(
            sorted(c["capability"] for c in replies["query-migrate-capabilities"])
        ),
        "block-drivers.json": dump(sorted(_block_drivers(by_name))),
    }
    target = out / full
    target.mkdir(parents=True, exist_ok=True)
    notes = []
    for name, text in files.items():
        data = text.encode()
        for old in (target / name, target / f"{name}.gz"):
            old.unlink(missing_ok=True)
        if len(data) > GZIP_ABOVE:
            (target / f"{name}.gz").write_bytes(gzip.compress(data, 9, mtime=0))
            notes.append(f"{name} gzipped ({len(data) // 1000} kB of text)")
        else:
            (target / name).write_bytes(data)
    found, how = source_of(binary, version.get("package", "").strip())
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    row = f"| {full} | {source or found} | `{how}` | {today} | {'; '.join(notes) or '-'} |"
    update_recorded(out / "RECORDED.md", full, row)
    return target


HEADER = """# Recorded QEMU data

What colospec's runner check (colospec/runner/qemu_check.py) sees of each QEMU version, for
tests that need no QEMU: `query-version`, the whole `query-qmp-schema` (big: gzipped),
`qom-list-types` names, `query-migrate-capabilities` names and the block drivers (the
BlockdevDriver enum). Recorded with tests/qemu-versions/record-qemu.py, which probes the
binary as qemu_check does (`-machine none -nodefaults -no-user-config -display none -S`).
The QOM type list includes the types of the modules that were installed (column "source").

| version | source | how | date (UTC) | notes |
|---|---|---|---|---|
"""


def update_recorded(path: Path, version: str, row: str) -> None:
    rows = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if m := re.match(r"\| (\d+\.\d+\.\d+) \|", line):
                rows[m.group(1)] = line
    rows[version] = row
    ordered = sorted(rows, key=lambda v: tuple(int(p) for p in v.split(".")))
    path.write_text(HEADER + "".join(rows[v] + "\n" for v in ordered))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("binary")
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "data" / "qemu")
    parser.add_argument("--source", help="where the binary comes from (for RECORDED.md)")
    args = parser.parse_args()
    print(record(args.binary, args.out, args.source))


if __name__ == "__main__":
    main()
