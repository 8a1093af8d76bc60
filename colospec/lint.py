"""Checks on qemu.extra_args, judged against colospec's own part of the command line.

colospec's part is right by construction (tests/test_lint.py lints every rendered case);
it serves here only as context: the ids, netdevs, drives and device types it defines.
The rule: nothing in extra_args may listen on every address, and nothing may change what
colospec owns, however it is spelled ('--x', JSON values, -set, -global, legacy syntax).

Rule ids (stable: `validate --allow` and `--format json` name them):
  extra-args-owned              an option colospec sets; or reaching what colospec defines:
                                using its netdev/drives/chardevs, -set or -global on them,
                                a second colo-compare
  extra-args-id-collision       an id or node-name colospec already defines
  extra-args-wildcard-listener  a listener on an empty, 0.0.0.0-like or :: address
  extra-args-opaque-config      -readconfig: options from a file no check sees
  extra-args-lost-writes        -snapshot, snapshot=on, or a disk outside replication
  extra-args-spelling           '-opt=value', an option without its value, a bad -set
  extra-args-vhost              vhost on a tap, or a vhost-user/vhost-vdpa netdev
  extra-args-vnet-hdr           a COLO filter without vnet_hdr_support while a tap passes headers
  extra-args-top-id             a replication top-id that is not the guest's drive
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from colospec.lint_context import (
    COLO_FILTERS,
    ID_KEYS,
    NETDEV_OPTIONS,
    SET_ITEM,
    Context,
    build_context,
    kind,
    pairs,
    with_set_changes,
)
from colospec.listeners import is_wildcard, listen_hosts
from colospec.qemu_cli import DISK_IMAGE, NO_VALUE_OPTIONS, Option, is_on, parse_argv

OWNED = "extra-args-owned"
ID_COLLISION = "extra-args-id-collision"
WILDCARD = "extra-args-wildcard-listener"
OPAQUE = "extra-args-opaque-config"
LOST_WRITES = "extra-args-lost-writes"
SPELLING = "extra-args-spelling"
VHOST = "extra-args-vhost"
VNET_HDR = "extra-args-vnet-hdr"
TOP_ID = "extra-args-top-id"

# Options whose subject colospec sets itself; a second copy from extra_args would fight it.
OWNED_OPTIONS = frozenset(
    {
        "-name", "-machine", "-M", "-accel", "-enable-kvm", "-cpu", "-m", "-smp", "-boot",
        "-pidfile", "-qmp", "-qmp-pretty", "-mon", "-monitor", "-serial", "-daemonize",
        "-incoming", "-S", "-preconfig", "-netdev", "-nic", "-net", "-drive", "-kernel",
        "-initrd", "-append", "-vnc", "-display", "-nographic", "-nodefaults",
    }
)  # fmt: skip
OPAQUE_CONFIG_OPTIONS = frozenset({"-readconfig"})
# Guest disks no replication covers: their writes are lost when the other host takes over.
UNREPLICATED_DISK_OPTIONS = frozenset(
    {DISK_IMAGE, "-hda", "-hdb", "-hdc", "-hdd", "-fda", "-fdb", "-sd", "-mtdblock", "-pflash"}
)
LEGACY_CHARDEV_OPTIONS = ("-serial", "-parallel", "-monitor", "-qmp", "-qmp-pretty", "-debugcon")
VHOST_NETDEV_TYPES = frozenset({"vhost-user", "vhost-vdpa"})  # they bypass QEMU's filters
VHOST_ON_KEYS = ("vhost", "vhostforce")
VHOST_FD_KEYS = frozenset({"vhostfd", "vhostfds"})  # an open vhost-net device
HDR_AWARE_TYPES = frozenset({*COLO_FILTERS, "colo-compare"})
PASSIVE_FILTERS = frozenset({"filter-dump"})  # copies packets to a file, changes none
ONE_PER_VM_TYPES = frozenset({"colo-compare"})
# Keys (or last dotted parts) whose value names another object, device, chardev or node.
REFERENCE_KEYS = frozenset(
    {"netdev", "chardev", "drive", "indev", "outdev", "primary_in", "secondary_in",
     "notify_dev", "iothread", "top-id", "backing"}
)  # fmt: skip
CHILD_KEY = re.compile(r"children\.\d+")  # a quorum's child drives
GLOBAL_ITEM = re.compile(r"([^.=]+)\.([^=]+)=(.*)", re.DOTALL)  # DRIVER.PROP=VALUE
REMOVE = "remove it from extra_args"
NO_LOST_WRITES = "remove it: COLO must never lose a write the guest saw complete"


@dataclass(frozen=True)
class ArgProblem:
    index: int  # index into extra_args of the offending item
    rule: str
    problem: str
    fix: str


def lint_extra_args(colospec_argv: list[str], extra_args: list[str]) -> list[ArgProblem]:
    """Problems in extra_args, appended to colospec_argv (binary first, colospec's part)."""
    own, extra = parse_argv(colospec_argv, 1), parse_argv(extra_args)
    ctx = build_context(own, extra)
    found = []
    for o in extra:
        plain = judge(o, ctx)
        found += plain
        if changed := with_set_changes(o, extra):  # what a -set adds is the -set's fault
            found += [p for p in judge(changed, ctx) if p.rule not in {q.rule for q in plain}]
    return sorted(dict.fromkeys(found), key=lambda p: p.index)


def judge(o: Option, ctx: Context) -> list[ArgProblem]:
    return [p for check in CHECKS for p in check(o, ctx)]


def _options(argv: list[str]) -> list[tuple[int, str, str | None]]:
    """(index, flag, value) after the binary; tests/test_vmft_guide.py compares argvs with it."""
    return [(o.at, o.flag, o.value) for o in parse_argv(argv, 1)]


Check = Callable[[Option, Context], Iterator[ArgProblem]]


def _spelling(o: Option, ctx: Context) -> Iterator[ArgProblem]:
    if o.joined:
        how = (
            f'"{o.flag}" alone'
            if o.flag in NO_VALUE_OPTIONS
            else f'two items: "{o.flag}", "{o.value}"'
        )
        yield ArgProblem(
            o.at, SPELLING, f"'{o.written}' is not an option QEMU knows", f"write it as {how}"
        )
    elif o.flag == "-":
        yield ArgProblem(o.at, SPELLING, f"'{o.written}' names no QEMU option", REMOVE)
    elif o.value is None and o.flag not in NO_VALUE_OPTIONS:
        yield ArgProblem(o.at, SPELLING, f"{o.flag} needs a value", "add it as the next item")
    elif o.flag == "-set" and not SET_ITEM.fullmatch(o.value or ""):
        yield ArgProblem(o.value_at, SPELLING, "-set takes GROUP.ID.PROPERTY=VALUE", REMOVE)


def _owned_option(o: Option, ctx: Context) -> Iterator[ArgProblem]:
    if o.flag in OWNED_OPTIONS:
        yield ArgProblem(o.at, OWNED, f"{o.flag} is set by colospec itself", REMOVE)
    if o.flag in OPAQUE_CONFIG_OPTIONS:
        problem = f"{o.flag} reads options from a file no check here sees"
        yield ArgProblem(o.at, OPAQUE, problem, "write those options into extra_args")


def _lost_writes(o: Option, ctx: Context) -> Iterator[ArgProblem]:
    if o.flag == "-snapshot":
        problem = "-snapshot sends every disk write to a temporary file QEMU throws away"
        yield ArgProblem(o.at, LOST_WRITES, problem, NO_LOST_WRITES)
    elif o.flag in UNREPLICATED_DISK_OPTIONS:
        disk = (
            f"'{o.value}' (a bare item is a disk image to QEMU)" if o.flag == DISK_IMAGE else o.flag
        )
        problem = f"{disk} adds a disk outside replication: its writes are lost on failover"
        yield ArgProblem(o.at, LOST_WRITES, problem, NO_LOST_WRITES)
    elif o.flag in ("-drive", "-blockdev") and is_on(dict(pairs(o)).get("snapshot")):
        problem = "snapshot=on sends the drive's writes to a temporary file QEMU throws away"
        yield ArgProblem(o.value_at, LOST_WRITES, problem, NO_LOST_WRITES)


def _listeners(o: Option, ctx: Context) -> Iterator[ArgProblem]:
    if any(is_wildcard(host) for host in listen_hosts(o.flag, o.value)):
        what = f"'{o.value}'" if o.value is not None else f"{o.flag} (-gdb tcp::1234)"
        fix = "bind to the host's replication address or loopback"
        yield ArgProblem(o.value_at, WILDCARD, f"{what} listens on every address", fix)


def _references(o: Option) -> list[tuple[str, str]]:
    """(key, name) for each name the option's value refers to."""
    if o.flag in LEGACY_CHARDEV_OPTIONS and (o.value or "").startswith("chardev:"):
        return [("chardev", o.value.removeprefix("chardev:"))]
    # -blockdev's file= names a node; -drive's file= is a path
    keys = (REFERENCE_KEYS | {"file"}) if o.flag == "-blockdev" else REFERENCE_KEYS
    return [
        (key, name)
        for key, name in pairs(o)
        if key.rpartition(".")[2] in keys or CHILD_KEY.fullmatch(key)
    ]


def _reaches_colospec(o: Option, ctx: Context) -> Iterator[ArgProblem]:
    what = kind(o) or o.flag
    for key, name in _references(o):
        if name in ctx.own_ids and not (key == "netdev" and what in PASSIVE_FILTERS):
            problem = f"{what} uses colospec's {key} '{name}'"
            yield ArgProblem(o.value_at, OWNED, problem, "leave colospec's ids to colospec")
    if o.flag == "-object" and what in ONE_PER_VM_TYPES & ctx.own_types:
        yield ArgProblem(o.value_at, OWNED, f"a second {what}: colospec runs one already", REMOVE)
    for key, name in pairs(o):
        if key.rpartition(".")[2] in ID_KEYS and name in ctx.own_ids:
            problem = f"{key} '{name}' is already colospec's"
            yield ArgProblem(o.value_at, ID_COLLISION, problem, "give it a name of its own")


def _set_and_global(o: Option, ctx: Context) -> Iterator[ArgProblem]:
    if o.flag == "-set" and (m := SET_ITEM.fullmatch(o.value or "")):
        group, ident = m[1], m[2]
        if (group, ident) not in ctx.extra_defined:
            whose = "colospec defines" if ident in ctx.own_ids else "extra_args do not define"
            problem = f"-set changes {group} '{ident}', which {whose}"
            yield ArgProblem(
                o.value_at, OWNED, problem, "-set may change only what extra_args define"
            )
    if o.flag == "-global" and o.value is not None:
        m = GLOBAL_ITEM.fullmatch(o.value)
        driver = m[1] if m else o.opts().get("driver")
        if driver in ctx.own_types:
            problem = f"-global changes every {driver}, colospec's too"
            yield ArgProblem(
                o.value_at, OWNED, problem, "set the property on a -device of your own"
            )


def _network_and_disk(o: Option, ctx: Context) -> Iterator[ArgProblem]:
    """The checks colospec's renderer obeys by construction, applied to extra_args."""
    opts, what = dict(pairs(o)), kind(o)
    vhost = any(is_on(opts.get(k)) for k in VHOST_ON_KEYS) or bool(VHOST_FD_KEYS & opts.keys())
    if o.flag in NETDEV_OPTIONS and ((what == "tap" and vhost) or what in VHOST_NETDEV_TYPES):
        problem = "vhost is on for a tap netdev" if what == "tap" else f"a {what} netdev is vhost"
        fix = "COLO needs vhost=off: its filters never see vhost traffic"
        yield ArgProblem(o.value_at, VHOST, problem, fix)
    lacks_hdr = ctx.taps_pass_headers and not is_on(opts.get("vnet_hdr_support"))
    if o.flag == "-object" and what in HDR_AWARE_TYPES and lacks_hdr:
        problem = f"{what} lacks vnet_hdr_support while the tap passes offload headers"
        fix = "add vnet_hdr_support=on, or set vnet_hdr=off on the tap"
        yield ArgProblem(o.value_at, VNET_HDR, problem, fix)
    if what == "replication" and opts.get("mode") == "secondary":
        top = opts.get("top-id", "")
        if top not in ctx.guest_drives:
            problem = f"replication top-id '{top}' is not the quorum's id"
            fix = "top-id must name the drive the guest uses: the quorum over it, or itself"
            yield ArgProblem(o.value_at, TOP_ID, problem, fix)


CHECKS: tuple[Check, ...] = (
    _spelling,
    _owned_option,
    _lost_writes,
    _listeners,
    _reaches_colospec,
    _set_and_global,
    _network_and_disk,
)
