"""Is the peer's QEMU alive? Connect to its NBD server.

An accepted connection proves the QEMU process lives (its listening socket exists); a
refused one means the host is up but QEMU is gone; silence means the host (or the path
to it) is gone. The probe then aborts the NBD negotiation politely (NBD_OPT_ABORT) so
QEMU has nothing to complain about.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import Literal

ProbeResult = Literal["alive", "dead", "unreachable"]

_GREETING = b"NBDMAGIC" + b"IHAVEOPT"
_CLIENT_FLAGS = struct.pack(">I", 1 | 2)  # FIXED_NEWSTYLE | NO_ZEROES
_OPT_ABORT = b"IHAVEOPT" + struct.pack(">II", 2, 0)


async def probe_qemu(address: str, port: int, timeout: float) -> ProbeResult:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(address, port)
    except ConnectionRefusedError:
        return "dead"
    except (TimeoutError, OSError):
        return "unreachable"
    # Connected: the kernel completed the handshake on QEMU's listening socket, so the
    # process lives even if its main loop is busy (say, loading a checkpoint). Say
    # goodbye properly if it greets us in time, so it logs nothing.
    try:
        async with asyncio.timeout(max(deadline - loop.time(), 0.01)):
            if (await reader.readexactly(18)).startswith(_GREETING):
                writer.write(_CLIENT_FLAGS + _OPT_ABORT)
                await writer.drain()
                await reader.readexactly(20)  # the server's ACK to the abort
    except (TimeoutError, OSError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return "alive"
