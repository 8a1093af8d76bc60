"""QEMU's command-line grammar, as QEMU itself reads argv (softmmu/vl.c, lookup_opt).

An item starting with '-' names an option ('--x' is '-x'); the option takes the next item
as its value, whatever that item looks like, unless it is one of NO_VALUE_OPTIONS; any
other item is a disk image (as if given with -hda). '-x=value' is not QEMU syntax.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from colospec.qemu_opts import split_opts

# Options without a value, from QEMU 7.2's option table (each probed: `-X -bogus` reports
# -bogus as an invalid option exactly when -X takes no value).
NO_VALUE_OPTIONS = frozenset(
    {
        "-S", "-async-teardown", "-audio-help", "-daemonize", "-enable-kvm",
        "-enable-sync-profile", "-full-screen", "-h", "-help", "-mem-prealloc", "-no-acpi",
        "-no-fd-bootchk", "-no-hpet", "-no-reboot", "-no-shutdown", "-no-user-config",
        "-nodefaults", "-nographic", "-old-param", "-only-migratable", "-portrait",
        "-preconfig", "-s", "-semihosting", "-singlestep", "-snapshot", "-usb", "-version",
        "-win2k-hack", "-xen-attach", "-xen-domid-restrict",
    }
)  # fmt: skip
# The key a value's first, bare word stands for: '-netdev tap,...' means type=tap.
IMPLIED_KEY = {
    "-netdev": "type",
    "-nic": "type",
    "-net": "type",
    "-object": "qom-type",
    "-chardev": "backend",
    "-device": "driver",
    "-display": "type",
}
# QEMU's boolean spellings (qapi_bool_parse).
TRUE_WORDS = frozenset({"on", "yes", "true", "y"})
FALSE_WORDS = frozenset({"off", "no", "false", "n"})
DISK_IMAGE = ""  # the flag of a bare item: QEMU opens it as a disk image


@dataclass(frozen=True)
class Option:
    at: int  # index of the item naming the option (of the image, for a bare item)
    flag: str  # QEMU's name for it: '--netdev' and '-netdev' are both '-netdev'
    value: str | None
    value_at: int  # index of the item holding the value (== at when it shares the item)
    written: str  # the item as written
    joined: bool = False  # written as '-flag=value', which QEMU rejects

    def pairs(self) -> list[tuple[str, str]]:
        return option_pairs(self.flag, self.value or "")

    def opts(self) -> dict[str, str]:
        return dict(self.pairs())  # a repeated key: the last one wins, as in QEMU


def parse_argv(argv: list[str], start: int = 0) -> list[Option]:
    """Every option in argv[start:]. A value missing at the end is None."""
    out, i = [], start
    while i < len(argv):
        item = argv[i]
        if not item.startswith("-"):
            out.append(Option(i, DISK_IMAGE, item, i, item))
            i += 1
            continue
        flag = item[1:] if item.startswith("--") else item
        if "=" in flag:
            flag, _, value = flag.partition("=")
            out.append(Option(i, flag, value, i, item, joined=True))
            i += 1
        elif flag in NO_VALUE_OPTIONS or i + 1 == len(argv):
            out.append(Option(i, flag, None, i, item))
            i += 1
        else:
            out.append(Option(i, flag, argv[i + 1], i + 1, item))
            i += 2
    return out


def option_pairs(flag: str, value: str) -> list[tuple[str, str]]:
    """(key, value) pairs of an option's value, in order: QemuOpts/keyval text, or JSON
    (which -object, -device, -netdev and -blockdev also accept), flattened to dotted keys."""
    if value.lstrip().startswith("{"):
        try:
            return _flatten(json.loads(value), "")
        except ValueError:
            pass  # QEMU rejects it too; read it as text
    implied = IMPLIED_KEY.get(flag)
    out = []
    for i, part in enumerate(split_opts(value)):
        key, eq, text = part.partition("=")
        if eq:
            out.append((key, text))
        elif i == 0 and implied:
            out.append((implied, key))
        elif key:
            out.append((key, "on"))  # a bare key is a flag set on
    return out


def is_on(text: str | None) -> bool:
    return text is not None and text.lower() in TRUE_WORDS


def is_off(text: str | None) -> bool:
    return text is not None and text.lower() in FALSE_WORDS


def _flatten(node: object, prefix: str) -> list[tuple[str, str]]:
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = ((str(i), v) for i, v in enumerate(node))
    elif isinstance(node, bool):
        return [(prefix, "on" if node else "off")]
    else:
        return [] if node is None else [(prefix, str(node))]
    return [pair for key, v in items for pair in _flatten(v, f"{prefix}.{key}" if prefix else key)]
