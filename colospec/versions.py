"""Everything that depends on the QEMU version, as data: syntax spellings and known defects.

Renderers ask this table how to spell a thing instead of testing version numbers
themselves. Supporting a new QEMU release line is one row here, its recorded QMP schema
(tests/data/qemu/, tests/qemu-versions/record-qemu.py) and regenerated goldens
(README, "QEMU versions").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Version = tuple[int, int, int]
NbdExport = Literal["block-export-add", "nbd-server-add"]
ReplicationChild = Literal["blockdev-add", "drive_add"]


@dataclass(frozen=True)
class QemuSyntax:
    """How one QEMU release spells the things colospec emits."""

    # Client chardev reconnect: option name and the value meaning "retry every second".
    chardev_reconnect: tuple[str, str]
    # Secondary's NBD export: "block-export-add" (QAPI, 5.2+) or "nbd-server-add" (deprecated).
    nbd_export: NbdExport
    # Primary's replication child over NBD: QAPI "blockdev-add"/"blockdev-del", or HMP
    # "drive_add -n buddy"/"drive_del" as in the original COLO docs.
    replication_child: ReplicationChild
    # The secondary must also enable the x-colo capability (refused without it from 8.1).
    secondary_sets_x_colo: bool
    # Migration capabilities to set for COLO, on both hosts: 11.x refuses x-colo without
    # return-path ("Capability 'x-colo' requires capability 'return-path'").
    colo_capabilities: tuple[str, ...]
    # QMP commands and QOM types the generated plan relies on; the runner checks the
    # real binary's query-qmp-schema and qom-list-types for them before starting.
    required_commands: tuple[str, ...]
    required_qom_types: tuple[str, ...]
    # The full version whose query-qmp-schema is recorded in tests/data/qemu/ (None: no
    # binary of this line could be run here) and what the row rests on.
    recorded: str | None
    basis: Literal["ran", "docs"]  # ran: COLO pairs of this line ran here; docs: not yet
    # The flavours whose QEMU this line is: upstream's for colo, the guide's fork for vm-ft.
    flavors: frozenset[str] = frozenset({"colo"})


REQUIRED_COMMANDS = (
    "migrate-set-capabilities",
    "migrate-set-parameters",
    "migrate",
    "nbd-server-start",
    "nbd-server-stop",
    "block-export-add",
    "blockdev-add",
    "blockdev-del",
    "x-blockdev-change",
    "x-colo-lost-heartbeat",
    "query-colo-status",
    "object-del",
    "chardev-add",
    "chardev-remove",
    "announce-self",
    "yank",
    "query-yank",
)

_QOM_TYPES = ("colo-compare", "filter-mirror", "filter-redirector", "filter-rewriter", "iothread")
_RECONNECT_S = ("reconnect", "1")  # seconds; deprecated in 9.2, removed in 10.2
_RECONNECT_MS = ("reconnect-ms", "1000")  # from 9.2


def _row(reconnect, capabilities=("x-colo",), recorded=None, basis="docs") -> QemuSyntax:
    return QemuSyntax(
        chardev_reconnect=reconnect,
        nbd_export="block-export-add",
        replication_child="blockdev-add",
        secondary_sets_x_colo=True,
        colo_capabilities=capabilities,
        required_commands=REQUIRED_COMMANDS,
        required_qom_types=_QOM_TYPES,
        recorded=recorded,
        basis=basis,
    )


# One row per QEMU release line with COLO and a known syntax. The facts and their sources:
# ../shared/notes/qemu-versions.md; what was run: README, "QEMU versions".
SYNTAX: dict[str, QemuSyntax] = {
    "7.2": _row(_RECONNECT_S, recorded="7.2.22", basis="ran"),
    "8.2": _row(_RECONNECT_S),
    "9.2": _row(_RECONNECT_MS),
    "10.0": _row(_RECONNECT_MS, recorded="10.0.13", basis="ran"),
    "10.1": _row(_RECONNECT_MS),
    "10.2": _row(_RECONNECT_MS),
    "11.0": _row(_RECONNECT_MS, ("return-path", "x-colo")),
    "11.1": _row(_RECONNECT_MS, ("return-path", "x-colo"), recorded="11.1.3", basis="ran"),
    # The vm-ft/PLOVER guide's QEMU: the COLO branch of the 2.7 era (its guide spells the
    # export nbd-server-add and the child drive_add -n buddy; no x-colo on the secondary).
    "2.7": QemuSyntax(
        chardev_reconnect=_RECONNECT_S,
        nbd_export="nbd-server-add",
        replication_child="drive_add",
        secondary_sets_x_colo=False,
        colo_capabilities=("x-colo",),
        required_commands=REQUIRED_COMMANDS,
        required_qom_types=_QOM_TYPES,
        recorded=None,
        basis="docs",
        flavors=frozenset({"vm-ft"}),
    ),
}


@dataclass(frozen=True)
class Defect:
    """A known QEMU defect that breaks COLO, for the versions first..last (inclusive)."""

    id: str
    first: Version
    last: Version | None  # None: not fixed in any release we know of
    accels: frozenset[str]  # the defect only bites with these accelerators
    summary: str
    fix: str
    # Builds that carry the fix: a substring of the build note `--version` prints.
    fixed_in_builds: tuple[str, ...] = ()
    # The runner refuses such a binary instead of warning: COLO cannot work with it.
    refuse: bool = False


DEFECTS: tuple[Defect, ...] = (
    Defect(
        id="colo-tcg-checkpoint-deadlock",
        first=(0, 0, 0),
        last=None,
        accels=frozenset({"tcg", "auto"}),
        summary=(
            "stock QEMU deadlocks COLO under TCG at the first checkpoint "
            "(migration/colo.c calls qemu_savevm_live_state() without the iothread lock; "
            "TCG's dirty-bitmap sync then waits on itself)"
        ),
        fix=(
            "use accel: kvm, or a QEMU built with the iothread lock taken around that "
            "call (README.md, 'COLO under TCG')"
        ),
        fixed_in_builds=("colospec colo-tcg",),  # tests/qemu-tcg/build-qemu.sh
    ),
    Defect(
        id="colo-never-entered-10.0",
        first=(10, 0, 0),
        last=(10, 0, 6),
        accels=frozenset({"kvm", "tcg", "auto"}),
        summary=(
            "QEMU 10.0.0 to 10.0.6 complete the migration and never enter COLO "
            "(regression from 'migration: Always set DEVICE state')"
        ),
        fix="use QEMU 10.0.7 or later",
        refuse=True,
    ),
)


def parse_version(text: str) -> tuple[int, int, int | None]:
    parts = [int(p) for p in text.split(".")]
    return (parts[0], parts[1], parts[2] if len(parts) > 2 else None)


def syntax_for(version: str, flavor: str = "colo") -> QemuSyntax | None:
    major, minor, _ = parse_version(version)
    row = SYNTAX.get(f"{major}.{minor}")
    return row if row is not None and flavor in row.flavors else None


def known_syntax(version: str, flavor: str = "colo") -> QemuSyntax:
    """syntax_for a version the rules let through (qemu-version-known refuses the others)."""
    syntax = syntax_for(version, flavor)
    assert syntax is not None, "validated before rendering"
    return syntax


def supported_versions(flavor: str = "colo") -> list[str]:
    return sorted((v for v, row in SYNTAX.items() if flavor in row.flavors), key=parse_version)


def defects_for(version: str, accel: str, build: str = "") -> list[Defect]:
    """Defects that may apply: a version without a micro number covers all its micros;
    `build` is the real binary's build note, when known."""
    major, minor, micro = parse_version(version)
    low = (major, minor, micro if micro is not None else 0)
    high = (major, minor, micro if micro is not None else 999)
    return [
        d
        for d in DEFECTS
        if accel in d.accels
        and high >= d.first
        and (d.last is None or low <= d.last)
        and not any(marker in build for marker in d.fixed_in_builds)
    ]
