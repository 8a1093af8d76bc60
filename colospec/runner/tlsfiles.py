"""This host's TLS certificates (security.tls), checked before anything starts: QEMU
itself would say only that it cannot load them, and would load a private key anyone on
the host can read without a word."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from colospec.runner.hbauth import owner_only_problem


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
        if name in section["private_keys"] and (
            problem := owner_only_problem(st, path, "TLS private key")
        ):
            raise TlsFilesError(problem)
