"""QEMU's option syntax (QemuOpts/keyval): key=value pairs joined by commas, ',' escaped as ',,'."""

from __future__ import annotations

from collections.abc import Iterable

OptValue = str | int | bool


def escape(value: OptValue) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value).replace(",", ",,")


def format_opts(head: str | None, pairs: Iterable[tuple[str, OptValue]]) -> str:
    """format_opts("socket", [("path", "/a,b")]) -> 'socket,path=/a,,b'."""
    parts = [escape(head)] if head is not None else []
    parts += [f"{key}={escape(value)}" for key, value in pairs]
    return ",".join(parts)


def split_opts(text: str) -> list[str]:
    """Split at single commas; ',,' stands for a literal comma."""
    parts, current, i = [], [], 0
    while i < len(text):
        if text[i] == ",":
            if text[i + 1 : i + 2] == ",":
                current.append(",")
                i += 2
                continue
            parts.append("".join(current))
            current = []
        else:
            current.append(text[i])
        i += 1
    parts.append("".join(current))
    return parts


def parse_opts(text: str, implied: str | None = None) -> dict[str, str]:
    """'tap,id=hn0' with implied='type' -> {'type': 'tap', 'id': 'hn0'}."""
    out: dict[str, str] = {}
    for i, part in enumerate(split_opts(text)):
        key, eq, value = part.partition("=")
        if not eq:
            if i == 0 and implied:
                out[implied] = key
            else:
                out[key] = "on"
        else:
            out[key] = value
    return out
