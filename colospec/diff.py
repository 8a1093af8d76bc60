"""`colospec diff`: what a build would change in OUT, as a unified diff (git's layout)."""

from __future__ import annotations

import difflib
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from colospec.compile import Artifact

_DEV_NULL = "/dev/null"


class DiffError(Exception):
    """OUT cannot be read; str() says what about it."""


def _current(pair_dir: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under OUT/<pair> as (content, mode); a symlink counts as a file to replace."""
    if pair_dir.is_symlink() or (pair_dir.exists() and not pair_dir.is_dir()):
        raise DiffError(f"{pair_dir} is not a directory colospec wrote — build would refuse it")
    if not pair_dir.exists():
        return {}
    found: dict[str, tuple[bytes, int]] = {}
    try:
        for root, dirs, files in os.walk(pair_dir, onerror=_raise):
            for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
                path = Path(root, name)
                rel = str(path.relative_to(pair_dir))
                st = path.lstat()
                data = os.readlink(path).encode() if stat.S_ISLNK(st.st_mode) else path.read_bytes()
                found[rel] = (data, stat.S_IMODE(st.st_mode) | stat.S_IFMT(st.st_mode))
    except OSError as exc:
        raise DiffError(f"cannot read {exc.filename or pair_dir}: {exc.strerror}") from None
    return found


def _raise(exc: OSError) -> None:
    raise exc


def _lines(data: bytes | None) -> list[str] | None:
    """Text lines, [] for an absent file, None when the file is not text."""
    if data is None:
        return []
    try:
        lines = data.decode("utf-8").splitlines(keepends=True)
    except UnicodeDecodeError:
        return None
    # A missing final newline shows as a changed last line rather than a garbled hunk.
    return [line if line.endswith("\n") else line + "\n" for line in lines]


def _file_diff(name: str, old: tuple[bytes, int] | None, new: tuple[bytes, int] | None) -> str:
    a = f"a/{name}" if old else _DEV_NULL
    b = f"b/{name}" if new else _DEV_NULL
    head = f"diff --colospec a/{name} b/{name}\n"
    if old and new and old[1] != new[1]:
        head += f"old mode {old[1]:o}\nnew mode {new[1]:o}\n"
    elif not old:
        head += f"new file mode {new[1]:o}\n"
    elif not new:
        head += f"deleted file mode {old[1]:o}\n"
    before, after = _lines(old and old[0]), _lines(new and new[0])
    if before is None or after is None:
        return head + f"Binary files {a} and {b} differ\n"
    return head + "".join(difflib.unified_diff(before, after, a, b))


def diff_trees(out: Path, trees: dict[str, dict[str, Artifact]]) -> str:
    """The unified diff from OUT's current contents to what build would write for trees
    (keyed by pair name); "" when nothing would change."""
    chunks = []
    for pair, files in sorted(trees.items()):
        old = _current(out / pair)
        new = {rel: (art.text.encode(), stat.S_IFREG | art.mode) for rel, art in files.items()}
        for rel in sorted(old.keys() | new.keys()):
            before, after = old.get(rel), new.get(rel)
            if before != after:
                chunks.append(_file_diff(f"{pair}/{rel}", before, after))
    return "".join(chunks)
