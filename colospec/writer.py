"""Atomic output: a pair's directory is replaced whole or not at all.

Each OUT/<pair> is written into a private work directory beside it (.<pair>.colospec-*),
then swapped into place with renameat2(RENAME_EXCHANGE); the previous output is removed
only after the swap, and put back if that removal fails. Every problem with the output
location is reported as one OutputError naming the path the user gave, never a temporary.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

from colospec.compile import Artifact

RENAME_EXCHANGE = 2  # renameat2(2) flag: swap two existing paths in one step
AT_FDCWD = -100  # renameat2(2) directory fd meaning "relative to the working directory"
# renameat2 errnos meaning "no exchange here" (old kernel or libc, or a filesystem without
# RENAME_EXCHANGE); every other errno is a real failure.
EXCHANGE_UNSUPPORTED = frozenset({errno.ENOSYS, errno.EINVAL})
TREE_MODE = 0o755  # OUT/<pair> itself, whatever the umask
ACCESS_TO_EMPTY = os.R_OK | os.W_OK | os.X_OK  # list a directory and unlink its entries
FS_IOC_GETFLAGS = 0x80086601  # ioctl(2): a file's chattr flags (an int; the number says long)
FLAGS_BUFFER_SIZE = 8  # room for the long the request number names
UNDELETABLE_FLAGS = 0x10 | 0x20  # FS_IMMUTABLE_FL | FS_APPEND_FL: unlink fails with EPERM
WORK_PREFIX = ".{}.colospec-"
REPLACE_ONLY_OURS = "colospec replaces only directories it wrote; remove it or choose another -o"


class OutputError(Exception):
    """A problem with the output location; str() is the one-line message for the user."""


def _renameat2(src: Path, dst: Path, flags: int) -> None:
    """renameat2(2), raising OSError; ENOSYS when libc lacks it. Tests replace this seam."""
    try:
        call = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS)) from None
    if call(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), os.fspath(src), None, os.fspath(dst))


def _user_path(filename: str | None, internal: Path, shown: Path) -> Path:
    """The user's name for a path inside one of our work trees (internal is shown as shown)."""
    path = Path(filename or internal)
    return shown / path.relative_to(internal) if path.is_relative_to(internal) else shown


def _undeletable(path: Path) -> bool:
    """True if chattr's immutable or append-only flag blocks removal, even for root."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False  # cannot tell; the removal itself will say
    try:
        flags = fcntl.ioctl(fd, FS_IOC_GETFLAGS, bytes(FLAGS_BUFFER_SIZE))
    except OSError:
        return False  # a filesystem without such flags
    finally:
        os.close(fd)
    return bool(int.from_bytes(flags[:4], sys.byteorder) & UNDELETABLE_FLAGS)


def _unremovable(tree: Path) -> Path | None:
    """The first directory or file in tree that we may not remove, if any.

    The previous output is removed after the swap, and a removal that stops halfway cannot
    be undone; so the usual causes (read-only directories, chattr +i or +a) are looked for
    before anything changes.
    """
    if not os.access(tree, ACCESS_TO_EMPTY) or _undeletable(tree):
        return tree
    for here, dirs, files in os.walk(tree):
        for path in (Path(here, name) for name in dirs):
            if not path.is_symlink() and (
                not os.access(path, ACCESS_TO_EMPTY) or _undeletable(path)
            ):
                return path
        for path in (Path(here, name) for name in files):
            if not path.is_symlink() and path.is_file() and _undeletable(path):
                return path
    return None


def _preflight(target: Path) -> None:
    """Raise OutputError if target (OUT/<pair>) cannot be written or replaced."""
    out = target.parent
    for place in (out, *out.parents):  # the nearest existing one: OUT or where it is created
        try:
            if stat.S_ISDIR(os.stat(place).st_mode):
                break
        except (FileNotFoundError, NotADirectoryError):
            if os.path.islink(place):
                raise OutputError(
                    f"{place} is a symbolic link to nothing — choose another -o"
                ) from None
            continue
        except OSError as exc:
            raise OutputError(f"cannot use {out}: {place}: {exc.strerror}") from None
        if place == out:
            raise OutputError(f"{out} is not a directory — choose another -o")
        raise OutputError(f"cannot create {out}: {place} is not a directory")
    if not os.access(place, os.W_OK | os.X_OK):
        if place == out:
            raise OutputError(f"{out} is not writable — fix its permissions or choose another -o")
        raise OutputError(f"cannot create {out}: {place} is not writable")
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OutputError(f"cannot use {target}: {exc.strerror}") from None
    if stat.S_ISLNK(mode):
        raise OutputError(f"{target} is a symbolic link — {REPLACE_ONLY_OURS}")
    if not stat.S_ISDIR(mode):
        raise OutputError(f"{target} is not a directory — {REPLACE_ONLY_OURS}")
    stuck = _unremovable(target)
    if stuck is not None:
        raise OutputError(
            f"cannot replace {target}: {stuck} cannot be removed (read-only, or chattr +i/+a) — "
            "make it removable or choose another -o"
        )


def _write_files(root: Path, files: dict[str, Artifact]) -> None:
    os.mkdir(root)
    os.chmod(root, TREE_MODE)
    made = {""}  # directories already there; many files share one
    for rel, art in files.items():
        parent = os.path.dirname(rel)
        if parent not in made:
            os.makedirs(root / parent, exist_ok=True)
            made.add(parent)
        fd = os.open(root / rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL, art.mode)
        try:
            os.write(fd, art.text.encode())
            os.fchmod(fd, art.mode)  # exactly the mode asked for, whatever the umask
        finally:
            os.close(fd)


def _swap_in(src: Path, target: Path, aside: Path) -> Path:
    """Put src at target; return where the replaced target now is. Target is never lost."""
    try:
        _renameat2(src, target, RENAME_EXCHANGE)
        return src
    except OSError as exc:
        if exc.errno not in EXCHANGE_UNSUPPORTED:
            raise
    os.rename(target, aside)  # no exchange: two renames, undoing the first if needed
    try:
        os.rename(src, target)
    except BaseException:
        os.rename(aside, target)
        raise
    return aside


def _stranded(aside: Path, target: Path) -> bool:
    """True if a failed swap could not move the previous output back from aside."""
    return os.path.lexists(aside) and not os.path.lexists(target)


def _write_one(target: Path, files: dict[str, Artifact]) -> None:
    out = target.parent
    try:
        out.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=WORK_PREFIX.format(target.name), dir=out))
    except OSError as exc:
        raise OutputError(f"cannot write into {out}: {exc.strerror}") from None
    new, aside = work / "new", work / "previous"
    try:
        try:
            _write_files(new, files)
            if not os.path.lexists(target):
                os.rename(new, target)
                return
        except OSError as exc:
            shown = _user_path(exc.filename, new, target)
            raise OutputError(f"cannot write {shown}: {exc.strerror}") from None
        try:
            previous = _swap_in(new, target, aside)
        except OSError as exc:
            where = f"left in {aside}" if _stranded(aside, target) else "unchanged"
            raise OutputError(
                f"cannot replace {target}: {exc.strerror}; the previous output is {where}"
            ) from None
        try:
            shutil.rmtree(previous)
        except OSError as exc:
            failed = f"{_user_path(exc.filename, previous, target)}: {exc.strerror}"
            try:
                _swap_in(previous, target, work / "rejected")
            except OSError as back:
                raise OutputError(
                    f"cannot remove the previous output of {target} ({failed}) nor put it "
                    f"back ({back.strerror}); {target} holds the new output"
                ) from None
            raise OutputError(
                f"cannot remove the previous output of {target} ({failed}); "
                "it was put back and the new output discarded"
            ) from None
    finally:
        if not _stranded(aside, target):
            shutil.rmtree(work, ignore_errors=True)


def write_tree(target: Path, files: dict[str, Artifact]) -> None:
    """Replace the directory target by files ({relative path: Artifact}), atomically.

    A failed or interrupted write leaves target as it was. Only target and its own work
    directories (.<name>.colospec-*) are touched; OutputError says what went wrong.
    """
    target = Path(target)
    _preflight(target)
    _write_one(target, files)


def write_trees(out: Path, trees: dict[str, dict[str, Artifact]]) -> None:
    """Write OUT/<pair> for every pair, checking every target before replacing any."""
    out = Path(out)
    for pair in trees:
        _preflight(out / pair)
    for pair, files in trees.items():
        _write_one(out / pair, files)
