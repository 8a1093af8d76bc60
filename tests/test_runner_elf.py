"""colospec.runner.elf: DT_NEEDED read from the program headers, checked on real binaries and
on hand-made ELF files (which link a libinterpose that no installed binary links)."""

from __future__ import annotations

import re
import struct
import subprocess

import pytest

from colospec.runner.elf import ElfError, links, needed_libraries

QEMU = "/usr/bin/qemu-system-x86_64"


def make_elf(path, needed: list[str], bits: int = 64, order: str = "<") -> None:
    """An ELF file with one PT_LOAD over everything and a PT_DYNAMIC naming `needed`."""
    word = "Q" if bits == 64 else "I"
    ehsize, phentsize = (64, 56) if bits == 64 else (52, 32)
    base = 0x400000
    strtab = b"\0" + b"".join(n.encode() + b"\0" for n in needed)
    offsets = [1 + sum(len(n) + 1 for n in needed[:i]) for i in range(len(needed))]
    dyn_off = ehsize + 2 * phentsize
    entries = [(1, off) for off in offsets] + [(5, 0), (0, 0)]  # DT_NEEDED…, DT_STRTAB, DT_NULL
    dyn_size = len(entries) * struct.calcsize(order + word * 2)
    str_off = dyn_off + dyn_size
    entries[-2] = (5, base + str_off)
    total = str_off + len(strtab)
    ident = b"\x7fELF" + bytes([1 if bits == 32 else 2, 1 if order == "<" else 2, 1]) + bytes(9)
    if bits == 64:
        header = ident + struct.pack(order + "HHIQQQIHHHHHH", 2, 62, 1, base, ehsize, 0, 0,
                                     ehsize, phentsize, 2, 64, 0, 0)  # fmt: skip
        phdrs = struct.pack(order + "IIQQQQQQ", 1, 5, 0, base, base, total, total, 0x1000)
        phdrs += struct.pack(order + "IIQQQQQQ", 2, 6, dyn_off, base + dyn_off, 0, dyn_size,
                             dyn_size, 8)  # fmt: skip
    else:
        header = ident + struct.pack(order + "HHIIIIIHHHHHH", 2, 3, 1, base, ehsize, 0, 0,
                                     ehsize, phentsize, 2, 40, 0, 0)  # fmt: skip
        phdrs = struct.pack(order + "IIIIIIII", 1, 0, base, base, total, total, 5, 0x1000)
        phdrs += struct.pack(order + "IIIIIIII", 2, dyn_off, base + dyn_off, 0, dyn_size,
                             dyn_size, 6, 4)  # fmt: skip
    dynamic = b"".join(struct.pack(order + word * 2, t, v) for t, v in entries)
    path.write_bytes(header + phdrs + dynamic + strtab)


@pytest.mark.parametrize(("bits", "order"), [(64, "<"), (32, "<"), (64, ">"), (32, ">")])
def test_needed_libraries_of_a_hand_made_elf(tmp_path, bits, order):
    path = tmp_path / "qemu"
    make_elf(path, ["libinterpose.so", "libnl-3.so.200", "libc.so.6"], bits, order)
    assert needed_libraries(str(path)) == ["libinterpose.so", "libnl-3.so.200", "libc.so.6"]
    assert links(str(path), "libinterpose")
    assert links(str(path), "libnl-3")
    assert not links(str(path), "libinter")


def test_the_installed_qemu_names_what_the_dynamic_loader_loads():
    needed = needed_libraries(QEMU)
    loaded = set(re.findall(r"^\s*(\S+) =>", subprocess.run(
        ["ldd", QEMU], capture_output=True, text=True, check=True).stdout, re.M))  # fmt: skip
    assert needed and set(needed) <= loaded
    assert "libc.so.6" in needed
    assert not links(QEMU, "libinterpose")


def test_a_static_elf_needs_nothing(tmp_path):
    path = tmp_path / "static"
    make_elf(path, [])
    assert needed_libraries(str(path)) == []


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"#!/bin/sh\necho QEMU\n", "not an ELF file"), (b"\x7fELF\x02\x01\x01", "truncated")],
)
def test_what_is_not_an_elf_is_said_so(tmp_path, content, problem):
    path = tmp_path / "x"
    path.write_bytes(content)
    with pytest.raises(ElfError, match=problem):
        needed_libraries(str(path))
