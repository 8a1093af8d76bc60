"""The shared libraries an ELF executable names (its DT_NEEDED entries), read with struct.

Only what the dynamic loader itself reads: the program headers, the PT_DYNAMIC segment and
the string table DT_STRTAB points at (mapped through the PT_LOAD segments), so a binary
without section headers is read as well.
"""

from __future__ import annotations

import struct

PT_LOAD, PT_DYNAMIC = 1, 2
DT_NULL, DT_NEEDED, DT_STRTAB = 0, 1, 5


class ElfError(Exception):
    """Not an ELF file this reader understands; the message says why."""


def needed_libraries(path: str) -> list[str]:
    """DT_NEEDED names in order, e.g. ['libz.so.1', 'libc.so.6']; [] for a static binary."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF":
        raise ElfError(f"{path} is not an ELF file")
    bits, order = data[4], data[5]
    if bits not in (1, 2) or order not in (1, 2):
        raise ElfError(f"{path}: unknown ELF class {bits} or byte order {order}")
    end = "<" if order == 1 else ">"
    word = "Q" if bits == 2 else "I"  # addresses, offsets and dynamic entries
    try:
        if bits == 2:
            phoff, phentsize, phnum = (
                struct.unpack_from(end + "Q", data, 32)[0],
                *struct.unpack_from(end + "HH", data, 54),
            )
            phdr = end + "IIQQQQQQ"  # type, flags, offset, vaddr, paddr, filesz, memsz, align
        else:
            phoff, phentsize, phnum = (
                struct.unpack_from(end + "I", data, 28)[0],
                *struct.unpack_from(end + "HH", data, 42),
            )
            phdr = end + "IIIIIIII"  # type, offset, vaddr, paddr, filesz, memsz, flags, align
        loads, dynamic = [], None
        for i in range(phnum):
            fields = struct.unpack_from(phdr, data, phoff + i * phentsize)
            if bits == 2:
                p_type, _, offset, vaddr, _, filesz, _, _ = fields
            else:
                p_type, offset, vaddr, _, filesz, _, _, _ = fields
            if p_type == PT_LOAD:
                loads.append((vaddr, offset, filesz))
            elif p_type == PT_DYNAMIC:
                dynamic = (offset, filesz)
        if dynamic is None:
            return []
        entry = struct.calcsize(end + word * 2)
        needed, strtab = [], None
        for pos in range(dynamic[0], dynamic[0] + dynamic[1], entry):
            tag, value = struct.unpack_from(end + word * 2, data, pos)
            if tag == DT_NULL:
                break
            if tag == DT_NEEDED:
                needed.append(value)
            elif tag == DT_STRTAB:
                strtab = value
    except struct.error:
        raise ElfError(f"{path}: truncated ELF headers") from None
    if strtab is None:
        raise ElfError(f"{path}: dynamic section without a string table")
    base = next((off + strtab - va for va, off, size in loads if va <= strtab < va + size), None)
    if base is None:
        raise ElfError(f"{path}: the string table lies outside every loaded segment")
    return [data[base + n : data.index(b"\0", base + n)].decode() for n in needed]


def links(path: str, library: str) -> bool:
    """Whether the executable names library ("libinterpose": libinterpose.so, .so.1, …)."""
    return any(n == library or n.startswith(library + ".") for n in needed_libraries(path))
