"""Check the real QEMU binary against the plan's requirements before the runner starts anything."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from qemu.qmp import QMPClient, QMPError

from colospec.runner.elf import ElfError, links
from colospec.versions import Defect, defects_for, parse_version

TIMEOUT_S = 30.0
_VERSION = re.compile(r"QEMU emulator version (\d+)\.(\d+)\.(\d+)(?: \(([^)\n]*)\))?")


class QemuCheckError(Exception):
    """The QEMU binary is missing, not QEMU, the wrong version, or lacks what the plan needs."""


@dataclass(frozen=True)
class QemuFacts:
    binary: str
    version: str  # "7.2.22", as the binary reports it
    build: str  # the package/build note after it, e.g. "Debian 1:7.2+dfsg-7+deb12u18"
    defects: tuple[Defect, ...]  # known defects for this version and accelerator: warn
    elapsed: float  # seconds the check took


def _version(binary: str, timeout: float) -> tuple[str, str]:
    fix = "fix qemu.binary in the spec and rebuild the artifacts, or install QEMU there"
    try:
        run = subprocess.run(
            [binary, "--version"], capture_output=True, timeout=timeout, check=False,
            encoding="utf-8", errors="replace",
        )  # fmt: skip
    except OSError as e:
        raise QemuCheckError(f"cannot run QEMU '{binary}': {e.strerror}: {fix}") from None
    except subprocess.TimeoutExpired:
        raise QemuCheckError(f"'{binary} --version' took over {timeout:g} s: {fix}") from None
    if m := _VERSION.search(run.stdout):
        return ".".join(m.groups()[:3]), m.group(4) or ""
    said = (run.stdout + run.stderr).strip().partition("\n")[0] or "nothing"
    raise QemuCheckError(f"'{binary}' is not QEMU: --version printed {said!r}: {fix}")


# Whose build links a library the plan requires (plan.json qemu.requires.links).
_BUILDS = {"libinterpose": "the vm-ft build"}


def _check_links(qemu: dict[str, Any]) -> None:
    """Every library in requires.links is among the binary's DT_NEEDED entries."""
    binary = qemu["binary"]
    for library in qemu.get("requires", {}).get("links", []):
        try:
            linked = links(binary, library)
        except (OSError, ElfError) as e:
            raise QemuCheckError(f"cannot read which libraries '{binary}' links: {e}") from None
        if not linked:
            script = qemu.get("build_script")
            how = f"build it with OUT/{script}" if script else "build it"
            raise QemuCheckError(
                f"this QEMU ('{binary}') is not {_BUILDS.get(library, 'the build the plan needs')} "
                f"(it does not link {library}) — {how} and point qemu.binary at the result"
            )


async def _probe(binary: str, timeout: float, tmp_root: str | None) -> list[Any]:
    """query-qmp-schema, qom-list-types and query-migrate-capabilities of a paused QEMU."""
    tmp = tempfile.mkdtemp(prefix="cs-probe-", dir=tmp_root)
    sock, log = os.path.join(tmp, "qmp.sock"), os.path.join(tmp, "stderr")
    client, proc, waits = QMPClient("colospec-check"), None, []
    try:
        if len(os.fsencode(sock)) >= 108:
            raise QemuCheckError(f"socket path '{sock}' is too long: set TMPDIR to a short path")
        await client.start_server(sock)  # QEMU connects to us: no polling, no race
        with open(log, "wb") as err:
            proc = await asyncio.create_subprocess_exec(
                *(binary, "-machine", "none", "-nodefaults", "-no-user-config", "-display"),
                *("none", "-S", "-chardev", f"socket,id=qmp,path={sock.replace(',', ',,')}"),
                *("-mon", "chardev=qmp,mode=control"),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            )  # fmt: skip
        waits = [asyncio.ensure_future(client.accept()), asyncio.ensure_future(proc.wait())]
        await asyncio.wait(waits, timeout=timeout, return_when="FIRST_COMPLETED")
        if not waits[0].done():
            with open(log, errors="replace") as f:
                said = f.read().strip() or "nothing"
            if proc.returncode is None:
                raise QemuCheckError(f"probe '{binary}' did not connect to QMP in {timeout:g} s")
            raise QemuCheckError(f"probe '{binary}' exited ({proc.returncode}) before QMP: {said}")
        waits[0].result()
        names = ("query-qmp-schema", "qom-list-types", "query-migrate-capabilities")
        return [await asyncio.wait_for(client.execute(n), timeout) for n in names]
    except (QMPError, OSError, EOFError, TimeoutError) as e:
        raise QemuCheckError(
            f"probing '{binary}' over QMP failed: {e or type(e).__name__}"
        ) from None
    finally:
        if waits and not waits[0].done():
            client.logger.setLevel(logging.CRITICAL)  # it would log our cancel as an error
        for w in waits:
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
        client.logger.setLevel(logging.NOTSET)
        with contextlib.suppress(Exception):
            await client.disconnect()
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def _block_drivers(by_name: dict[str, Any]) -> set[str]:
    """The BlockdevDriver enum: the type of blockdev-add's "driver" member (names are masked)."""
    with contextlib.suppress(KeyError, IndexError):
        args = by_name[by_name["blockdev-add"]["arg-type"]]
        driver = next(m for m in args["members"] if m["name"] == "driver")
        return set(by_name[driver["type"]]["values"])
    return set()


async def check_qemu_async(
    qemu: dict[str, Any], *, timeout: float = TIMEOUT_S, tmp_root: str | None = None
) -> QemuFacts:
    """Check plan.json's "qemu" object against the real binary; QemuCheckError if unfit."""
    start, binary, want = time.monotonic(), qemu["binary"], qemu["version"]
    # The libraries first: "not the vm-ft build" says more than its version would.
    await asyncio.to_thread(_check_links, qemu)
    have, build = await asyncio.to_thread(_version, binary, timeout)
    (w_major, w_minor, w_micro), (major, minor, micro) = parse_version(want), parse_version(have)
    if (w_major, w_minor) != (major, minor) or w_micro not in (None, micro):
        raise QemuCheckError(
            f"'{binary}' is QEMU {have}, but the artifacts were built for QEMU {want}: rebuild "
            f'them with qemu.version "{major}.{minor}" (if colospec supports it) or install QEMU {want}'
        )
    schema, types, caps = await _probe(binary, timeout, tmp_root)
    by_name = {e["name"]: e for e in schema}
    has = {
        "commands": {n for n, e in by_name.items() if e["meta-type"] == "command"},
        "QOM types": {t["name"] for t in types},
        "migration capabilities": {c["capability"] for c in caps},
        "block drivers": _block_drivers(by_name),
    }
    req = qemu.get("requires", {})
    wanted = {
        "commands": req.get("commands", []),
        "QOM types": req.get("qom_types", []),
        "migration capabilities": ["x-colo", *req.get("migration_capabilities", [])],
        "block drivers": req.get("block_drivers", []),
    }
    missing = [
        f"{kind} {', '.join(lack)}"
        for kind, names in wanted.items()
        if (lack := [n for n in dict.fromkeys(names) if n not in has[kind]])
    ]
    if missing:
        raise QemuCheckError(
            f"QEMU '{binary}' {have} lacks {'; '.join(missing)}: install a QEMU that has them "
            "(Debian 12's qemu-system-x86 does), or point qemu.binary at one and rebuild"
        )
    defects = tuple(defects_for(have, qemu.get("accel", "kvm"), build))
    for d in defects:
        if d.refuse:
            raise QemuCheckError(
                f"'{binary}' is QEMU {have}, which has known defect {d.id}: {d.summary} — {d.fix}"
            )
    return QemuFacts(binary, have, build, defects, time.monotonic() - start)


def check_qemu(
    qemu: dict[str, Any], *, timeout: float = TIMEOUT_S, tmp_root: str | None = None
) -> QemuFacts:
    """check_qemu_async for callers without a running event loop."""
    return asyncio.run(check_qemu_async(qemu, timeout=timeout, tmp_root=tmp_root))
