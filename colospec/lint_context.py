"""What the extra_args lint needs to know: what colospec's own command line defines (ids,
device and object types, taps, the guest's drives), and what each -set in extra_args does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from colospec.qemu_cli import DISK_IMAGE, IMPLIED_KEY, Option, is_off
from colospec.qemu_opts import escape

NETDEV_OPTIONS = ("-netdev", "-nic", "-net")
NOT_KEYVAL_OPTIONS = frozenset({"-set", "-global", DISK_IMAGE})  # read by their own syntax
ID_KEYS = frozenset({"id", "node-name"})  # keys (or last dotted parts) that define a name
COLO_FILTERS = ("filter-mirror", "filter-redirector", "filter-rewriter")
DISK_DEVICE = {"virtio": "virtio-blk-pci", "ide": "ide-hd"}  # the device -drive if= creates
# -global matches a type's subtypes (and a virtio proxy's inner device): these names
# reach colospec's devices and objects too.
_PCI = ("pci-device", "device")
GLOBAL_REACH = {
    "e1000": ("e1000-base", *_PCI),
    "rtl8139": _PCI,
    "virtio-net-pci": ("virtio-net-device", "virtio-pci", "virtio-device", *_PCI),
    "virtio-blk-pci": ("virtio-blk-device", "virtio-pci", "virtio-device", *_PCI),
    "ide-hd": ("ide-device", "device"),
    **dict.fromkeys(COLO_FILTERS, ("netfilter",)),
}
SET_ITEM = re.compile(r"([^.=]+)\.([^.=]+)\.([^=]+)=(.*)", re.DOTALL)  # GROUP.ID.PROP=VALUE


@dataclass(frozen=True)
class Context:
    own_ids: frozenset[str]  # every id and node-name colospec defines
    own_types: frozenset[str]  # its device and object types, and the names -global reaches
    extra_defined: frozenset[tuple[str, str]]  # (group, id) of what extra_args define
    taps_pass_headers: bool  # some tap, colospec's or not, passes offload headers
    guest_drives: frozenset[str]  # drive ids the guest uses: a replication top-id names one


def pairs(o: Option) -> list[tuple[str, str]]:
    """The option's key=value pairs, for options whose value is written that way."""
    return [] if o.value is None or o.flag in NOT_KEYVAL_OPTIONS else o.pairs()


def kind(o: Option) -> str | None:
    """What the option creates: netdev type, device driver, object type, chardev backend..."""
    return dict(pairs(o)).get(IMPLIED_KEY.get(o.flag, "driver"))


def defines(o: Option) -> tuple[str, str] | None:
    """(group, id) a -set names it by: ('device', 'nic0') for '-device e1000,id=nic0'."""
    ident = dict(pairs(o)).get("id")
    return (o.flag[1:], ident) if ident else None


def with_set_changes(o: Option, extra: list[Option]) -> Option | None:
    """o as QEMU will see it after the -set items aimed at it, placed at the last of them;
    None if no -set changes it (-set reaches only options written as key=value text)."""
    target, changes, last = defines(o), [], None
    for s in extra:
        m = s.flag == "-set" and SET_ITEM.fullmatch(s.value or "")
        if m and (m[1], m[2]) == target:
            changes.append(f"{m[3]}={escape(m[4])}")
            last = s.value_at
    if last is None or o.value.lstrip().startswith("{"):
        return None
    return replace(o, at=last, value_at=last, value=",".join([o.value, *changes]))


def build_context(own: list[Option], extra: list[Option]) -> Context:
    ids, types = set(), set()
    for o in own:
        opts = dict(pairs(o))
        ids |= {v for k, v in opts.items() if k.rpartition(".")[2] in ID_KEYS}
        if o.flag in ("-device", "-object") and kind(o):
            types.add(kind(o))
        if o.flag == "-drive" and opts.get("if") in DISK_DEVICE:
            types.add(DISK_DEVICE[opts["if"]])
    types |= {name for t in list(types) for name in GLOBAL_REACH.get(t, ())}
    every = [(o, dict(pairs(o))) for o in own + extra]
    taps = [opts for o, opts in every if o.flag in NETDEV_OPTIONS and opts.get("type") == "tap"]
    drives = [opts for o, opts in every if o.flag == "-drive" and "id" in opts]
    return Context(
        own_ids=frozenset(ids),
        own_types=frozenset(types),
        extra_defined=frozenset(filter(None, map(defines, extra))),
        taps_pass_headers=any(not is_off(t.get("vnet_hdr")) for t in taps),  # default: on
        guest_drives=frozenset(
            d["id"]
            for d in drives
            if d.get("driver") == "quorum"
            or (d.get("driver") == "replication" and d.get("if", "ide") != "none")
        ),
    )
