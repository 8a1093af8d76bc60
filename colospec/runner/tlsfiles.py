"""This host's TLS certificates (security.tls), checked before anything starts: QEMU
itself would say only that it cannot load them, and would load a private key anyone on
the host can read without a word."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any


class TlsFilesError(Exception):
    """A certificate file is missing or a private key unsafe; str() says how to fix it."""


def check_tls_dir(section: dict[str, Any] | None) -> None:
    """plan.json's tls section (None: no TLS): every file there, keys root's alone."""
    if section is None:
        return
    where = Path(section["dir"])
    make = f"make them with `colospec certs SPEC` and copy this host's directory to {where}"
    if not where.is_dir():
        raise TlsFilesError(f"TLS directory {where} is missing — {make}")
    for name in section["files"]:
        path = where / name
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise TlsFilesError(f"TLS file {path} is missing — {make}") from None
        except OSError as exc:
            raise TlsFilesError(f"TLS file {path}: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise TlsFilesError(f"TLS file {path} is not a regular file — {make}")
        if name not in section["private_keys"]:
            continue
        if st.st_uid not in (0, os.geteuid()):
            raise TlsFilesError(f"TLS private key {path} belongs to uid {st.st_uid} — "
                                f"chown root {path}")  # fmt: skip
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise TlsFilesError(
                f"TLS private key {path} is readable by others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}) — chmod 600 {path}"
            )
