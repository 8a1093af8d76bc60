"""sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET, if systemd set it."""

from __future__ import annotations

import contextlib
import os
import socket


def sd_notify(**fields: str) -> None:
    """sd_notify(READY="1", STATUS="...") — a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    message = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
    # systemd gone: nothing to tell
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, contextlib.suppress(OSError):
        sock.sendto(message, address)
