"""Atomic output: a pair's directory is replaced whole or not at all."""

from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
from pathlib import Path

from colospec.compile import Artifact

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with renameat2(RENAME_EXCHANGE); False if unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def _write_files(root: Path, files: dict[str, Artifact]) -> None:
    made: set[str] = set()
    for rel, art in files.items():
        parent = os.path.dirname(rel)
        if parent and parent not in made:
            os.makedirs(root / parent, exist_ok=True)
            made.add(parent)
        fd = os.open(root / rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL, art.mode)
        try:
            os.write(fd, art.text.encode())
            os.fchmod(fd, art.mode)  # exactly the mode asked for, whatever the umask
        finally:
            os.close(fd)


def write_tree(target: Path, files: dict[str, Artifact]) -> None:
    """Write files into a temporary sibling of target, then swap it into place.

    An interrupted or failed write leaves target as it was. Only target and its own
    temporary siblings (.<name>.colospec-*) are ever touched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.colospec-", dir=target.parent))
    try:
        _write_files(tmp, files)
        tmp.chmod(0o755)
        if target.exists() and _exchange(tmp, target):
            shutil.rmtree(tmp)  # now holds the previous output
            return
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.colospec-old-", dir=target.parent))
            os.rename(target, old / "x")
            os.rename(tmp, target)
            shutil.rmtree(old)
        else:
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
