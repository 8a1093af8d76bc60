"""The writer: OUT/<pair> is replaced whole or not at all, and every problem with the output
location is one clear OutputError that leaves the previous output exactly as it was."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from colospec import writer
from colospec.compile import Artifact
from colospec.writer import OutputError, write_tree, write_trees

from conftest import ROOT

OLD = {
    "node-a/qemu.args": Artifact("old\n"),
    "node-a/tc.sh": Artifact("#!/bin/sh\n", 0o755),
    "keep/notes": Artifact("kept\n", 0o600),
}
NEW = {"node-a/qemu.args": Artifact("new\n"), "node-b/plan.json": Artifact("{}\n")}
NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
REPLACE_ONLY_OURS = "colospec replaces only directories it wrote; remove it or choose another -o"
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def state(path) -> dict[str, tuple] | None:
    """Every path under path, itself included ("."): (type, mode bits, contents or link)."""
    if not os.path.lexists(path):
        return None
    found = {}

    def visit(here: str, rel: str) -> None:
        st = os.lstat(here)
        data = None
        if stat.S_ISLNK(st.st_mode):
            data = os.readlink(here)
        elif stat.S_ISREG(st.st_mode):
            data = Path(here).read_bytes()
        found[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), data)
        if stat.S_ISDIR(st.st_mode):
            for name in sorted(os.listdir(here)):
                visit(os.path.join(here, name), name if rel == "." else f"{rel}/{name}")

    visit(os.fspath(path), ".")
    return found


def expected(files: dict[str, Artifact]) -> dict[str, tuple]:
    """The state a fresh write of files must produce."""
    umask = os.umask(0)
    os.umask(umask)
    tree = {".": (stat.S_IFDIR, 0o755, None)}
    for rel, art in files.items():
        parts = rel.split("/")
        for depth in range(1, len(parts)):
            tree["/".join(parts[:depth])] = (stat.S_IFDIR, 0o777 & ~umask, None)
        tree[rel] = (stat.S_IFREG, art.mode, art.text.encode())
    return tree


@pytest.fixture
def out(tmp_path, monkeypatch) -> Path:
    """OUT named as a user would (relative), holding a previous build of pair web1."""
    monkeypatch.chdir(tmp_path)
    write_tree(Path("out/web1"), OLD)
    assert state("out/web1") == expected(OLD)
    return Path("out")


@pytest.fixture(params=["write_tree", "write_trees"])
def write(request):
    """Write pair web1 into OUT through either entry point."""
    if request.param == "write_tree":
        return lambda out, files: write_tree(out / "web1", files)
    return lambda out, files: write_trees(out, {"web1": files})


def fail_exchange(code: int):
    def renameat2(src, dst, flags):
        raise OSError(code, os.strerror(code), os.fspath(src), None, os.fspath(dst))

    return renameat2


# Writing


def test_writes_a_fresh_output_and_its_missing_parents(tmp_path, monkeypatch, write):
    monkeypatch.chdir(tmp_path)
    write(Path("a/b/out"), NEW)
    assert state("a/b/out/web1") == expected(NEW)
    assert os.listdir("a/b/out") == ["web1"]


def test_replaces_the_previous_output_and_leaves_nothing_beside_it(out, write):
    (out / "unrelated.txt").write_text("not ours")
    write(out, NEW)
    assert state(out / "web1") == expected(NEW)
    assert sorted(os.listdir(out)) == ["unrelated.txt", "web1"]


def test_writes_every_pair(out):
    write_trees(out, {"web1": NEW, "web2": OLD})
    assert state(out / "web1") == expected(NEW)
    assert state(out / "web2") == expected(OLD)
    assert sorted(os.listdir(out)) == ["web1", "web2"]


# The output location is wrong: one message, nothing changed


def test_pair_path_that_is_a_symlink_is_left_alone(out, write):
    os.rename(out / "web1", out / "real")
    os.symlink("real", out / "web1")
    before = state(out)
    with pytest.raises(OutputError) as err:
        write(out, NEW)
    assert str(err.value) == f"out/web1 is a symbolic link — {REPLACE_ONLY_OURS}"
    assert state(out) == before


def test_pair_path_that_is_a_file_is_left_alone(out, write):
    shutil.rmtree(out / "web1")
    (out / "web1").write_text("mine")
    (out / "web1").chmod(0o640)
    before = state(out)
    with pytest.raises(OutputError) as err:
        write(out, NEW)
    assert str(err.value) == f"out/web1 is not a directory — {REPLACE_ONLY_OURS}"
    assert state(out) == before


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("file", "file is not a directory — choose another -o"),
        ("file/out", "cannot create file/out: file is not a directory"),
        ("/dev/null", "/dev/null is not a directory — choose another -o"),
        ("/dev/null/out", "cannot create /dev/null/out: /dev/null is not a directory"),
        ("gone", "gone is a symbolic link to nothing — choose another -o"),
    ],
)
def test_output_that_is_not_a_directory(tmp_path, monkeypatch, write, given, message):
    monkeypatch.chdir(tmp_path)
    Path("file").write_text("mine")
    os.symlink("nowhere", "gone")
    before, null = state("."), state("/dev/null")
    with pytest.raises(OutputError) as err:
        write(Path(given), NEW)
    assert str(err.value) == message
    assert state(".") == before
    assert state("/dev/null") == null


@pytest.mark.parametrize("bad", ["a symbolic link", "not a directory"])
def test_a_bad_second_pair_leaves_the_first_pair_alone(out, bad):
    if bad == "a symbolic link":
        os.symlink("web1", out / "web2")
    else:
        (out / "web2").write_text("mine")
    before = state(out)
    with pytest.raises(OutputError) as err:
        write_trees(out, {"web1": NEW, "web2": NEW})
    assert str(err.value) == f"out/web2 is {bad} — {REPLACE_ONLY_OURS}"
    assert state(out) == before


@pytest.fixture
def chattr(tmp_path):
    """chattr(1) on paths; afterwards no flag is left anywhere under tmp_path."""

    def set_flag(flag: str, path: Path) -> None:
        result = subprocess.run(["chattr", flag, path], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"chattr {flag} unsupported here: {result.stderr.strip()}")

    yield set_flag
    # Recursive: a writer that moved a flagged path must not leave it undeletable.
    subprocess.run(["chattr", "-R", "-ia", tmp_path], capture_output=True)


@as_root
@pytest.mark.parametrize(
    ("flag", "where"),
    [("+i", "keep"), ("+a", "keep"), ("+i", "keep/notes"), ("+a", "node-a/tc.sh")],
)
def test_previous_output_root_may_not_remove_is_left_alone(out, write, chattr, flag, where):
    chattr(flag, out / "web1" / where)
    before = state(out)
    with pytest.raises(OutputError) as err:
        write(out, NEW)
    assert str(err.value) == (
        f"cannot replace out/web1: out/web1/{where} cannot be removed (read-only, or "
        "chattr +i/+a) — make it removable or choose another -o"
    )
    assert state(out) == before


# The same as an ordinary user, for whom permissions matter

WRITE_AS_NOBODY = """
import json, sys
from pathlib import Path
from colospec.compile import Artifact
from colospec.writer import OutputError, write_trees
files = {rel: Artifact(text) for rel, text in json.loads(sys.argv[2]).items()}
try:
    write_trees(Path(sys.argv[1]), {"web1": files})
except OutputError as exc:
    print(exc)
    sys.exit(3)
"""
OUTPUT_ERROR_EXIT = 3


@pytest.fixture
def nobody_dir():
    """A directory owned by an ordinary user (pytest's tmp_path is root's alone)."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to act as an ordinary user")
    here = Path(tempfile.mkdtemp(prefix="colospec-writer-"))
    os.chown(here, NOBODY, NOBODY)
    yield here
    shutil.rmtree(here)


def write_as_nobody(cwd: Path, out: str, files: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*AS_NOBODY, sys.executable, "-c", WRITE_AS_NOBODY, out, json.dumps(files)],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_read_only_previous_output_is_left_alone(nobody_dir):
    old = {"node-a/qemu.args": "old\n", "keep/notes": "kept\n", "z/last": "z\n"}
    assert write_as_nobody(nobody_dir, "out", old).returncode == 0
    (nobody_dir / "out/web1/keep").chmod(0o555)
    before = state(nobody_dir)
    result = write_as_nobody(nobody_dir, "out", {"node-a/qemu.args": "new\n"})
    assert (result.returncode, result.stdout, result.stderr) == (
        OUTPUT_ERROR_EXIT,
        "cannot replace out/web1: out/web1/keep cannot be removed (read-only, or chattr +i/+a)"
        " — make it removable or choose another -o\n",
        "",
    )
    assert state(nobody_dir) == before


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("out", "out is not writable — fix its permissions or choose another -o"),
        ("locked/out", "cannot create locked/out: locked is not writable"),
    ],
)
def test_unwritable_output_is_left_alone(nobody_dir, given, message):
    write_tree(nobody_dir / "out/web1", OLD)  # as root: out is not nobody's
    (nobody_dir / "locked").mkdir()
    before = state(nobody_dir)
    result = write_as_nobody(nobody_dir, given, {"node-a/qemu.args": "new\n"})
    assert (result.returncode, result.stdout, result.stderr) == (
        OUTPUT_ERROR_EXIT,
        message + "\n",
        "",
    )
    assert state(nobody_dir) == before


# Failures while writing and swapping


def test_failed_write_keeps_previous_output(out, monkeypatch):
    class Boom(Exception):
        pass

    real_fchmod, calls = os.fchmod, []

    def failing_fchmod(fd, mode):
        calls.append(fd)
        if len(calls) == 2:  # the second file of the new output
            raise Boom
        return real_fchmod(fd, mode)

    before = state(out)
    monkeypatch.setattr(writer.os, "fchmod", failing_fchmod)
    with pytest.raises(Boom):
        write_tree(out / "web1", NEW)
    assert state(out) == before


def test_full_disk_names_the_file_the_user_would_see(out, monkeypatch, write):
    real_open = os.open

    def full_disk(path, *args, **kwargs):
        if os.fspath(path).endswith("plan.json"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path))
        return real_open(path, *args, **kwargs)

    before = state(out)
    monkeypatch.setattr(writer.os, "open", full_disk)
    with pytest.raises(OutputError) as err:
        write(out, NEW)
    assert str(err.value) == "cannot write out/web1/node-b/plan.json: No space left on device"
    assert state(out) == before


@pytest.mark.parametrize("code", [errno.EIO, errno.EPERM, errno.EBUSY])
def test_failed_exchange_is_an_error_and_keeps_previous_output(out, monkeypatch, write, code):
    """Only ENOSYS and EINVAL mean "no exchange here"; no fallback for anything else."""
    before = state(out)
    monkeypatch.setattr(writer, "_renameat2", fail_exchange(code))
    with pytest.raises(OutputError) as err:
        write(out, NEW)
    assert str(err.value) == (
        f"cannot replace out/web1: {os.strerror(code)}; the previous output is unchanged"
    )
    assert state(out) == before


def test_pair_directory_is_always_the_whole_old_or_the_whole_new_output(out, monkeypatch):
    """Seen after every change the writer makes: a "delete, then rename" writer fails this."""
    target = out / "web1"
    old, new, seen = state(target), expected(NEW), []

    def watched(change):
        def change_and_look(*args, **kwargs):
            try:
                return change(*args, **kwargs)
            finally:
                seen.append(state(target))

        return change_and_look

    for module, name in [(os, n) for n in ("rename", "replace", "unlink", "rmdir", "mkdir")] + [
        (shutil, "rmtree"),
        (shutil, "move"),
    ]:
        monkeypatch.setattr(module, name, watched(getattr(module, name)))
    write_tree(target, NEW)
    assert seen, "the writer made no change we could see"
    assert [s for s in seen if s not in (old, new)] == []
    assert state(target) == new
    assert os.listdir(out) == ["web1"]


@pytest.mark.parametrize("code", [errno.ENOSYS, errno.EINVAL])
def test_without_exchange_two_renames_replace_the_output(out, monkeypatch, write, code):
    monkeypatch.setattr(writer, "_renameat2", fail_exchange(code))
    write(out, NEW)
    assert state(out / "web1") == expected(NEW)
    assert os.listdir(out) == ["web1"]


@pytest.mark.parametrize(
    "interruption", [OSError(errno.EIO, "Input/output error"), KeyboardInterrupt()]
)
def test_without_exchange_a_failed_second_rename_puts_the_previous_output_back(
    out, monkeypatch, interruption
):
    real_rename, renames = os.rename, []

    def rename(src, dst):
        renames.append((src, dst))
        if len(renames) == 2:  # the new output into place, the previous one moved aside
            assert not os.path.lexists(out / "web1")
            raise interruption
        return real_rename(src, dst)

    before = state(out)
    monkeypatch.setattr(writer, "_renameat2", fail_exchange(errno.ENOSYS))
    monkeypatch.setattr(writer.os, "rename", rename)
    with pytest.raises((OutputError, KeyboardInterrupt)) as err:
        write_tree(out / "web1", NEW)
    if isinstance(interruption, OSError):
        assert str(err.value) == (
            "cannot replace out/web1: Input/output error; the previous output is unchanged"
        )
    else:
        assert err.type is KeyboardInterrupt
    assert state(out) == before


@pytest.mark.parametrize("exchange", ["renameat2", "two renames"])
def test_failed_removal_of_the_previous_output_puts_it_back(out, monkeypatch, write, exchange):
    real_rmtree, removals = shutil.rmtree, []

    def rmtree(path, *args, **kwargs):
        removals.append(path)
        if len(removals) == 1:  # the swapped-out previous output
            raise PermissionError(
                errno.EACCES, "Permission denied", os.path.join(path, "keep", "notes")
            )
        return real_rmtree(path, *args, **kwargs)

    before = state(out)
    if exchange == "two renames":
        monkeypatch.setattr(writer, "_renameat2", fail_exchange(errno.ENOSYS))
    monkeypatch.setattr(writer.shutil, "rmtree", rmtree)
    with pytest.raises(OutputError) as err:
        write(out, NEW)
    assert str(err.value) == (
        "cannot remove the previous output of out/web1 (out/web1/keep/notes: Permission "
        "denied); it was put back and the new output discarded"
    )
    assert state(out) == before
