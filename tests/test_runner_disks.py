"""colospec.runner.disks with the real qemu-img and qemu-io (no mocks)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time

import pytest

from colospec.runner.disks import DiskError, image_size, prepare_disks

MIB = 1 << 20


@pytest.fixture
def tmp():
    """A directory whose name has a comma and a space, as the plan's paths may."""
    with tempfile.TemporaryDirectory(prefix="cs, disks-") as d:
        yield d


def make_base(tmp: str, fmt: str, size: int) -> str:
    path = os.path.join(tmp, f"base, 1.{fmt}")
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, path, str(size)], check=True)
    return path


def info(path: str) -> dict:
    out = subprocess.run(["qemu-img", "info", "--output=json", "-U", path], capture_output=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def qemu_io(path: str, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", command, path], capture_output=True, text=True
    )


def write_locked(path: str) -> bool:
    """Whether a process locks path's byte 201: QEMU's "write not shared" image lock."""
    st = os.stat(path)
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with open("/proc/locks") as f:
        spans = [line.split()[-2:] for line in f if inode in line.split()]
    return any(int(start) <= 201 <= (1 << 63 if end == "EOF" else int(end)) for start, end in spans)


def scratch(tmp: str) -> dict:
    d = os.path.join(tmp, "scratch, dir", "sub")  # does not exist yet
    return {"active": os.path.join(d, "active, x.qcow2"), "hidden": os.path.join(d, "hidden.qcow2")}


@pytest.mark.parametrize(("fmt", "size"), [("raw", 64 * MIB + 512), ("qcow2", 3 * MIB)])
def test_creates_active_and_hidden_of_the_base_size(tmp, fmt, size):
    base, s = make_base(tmp, fmt, size), scratch(tmp)
    assert prepare_disks({"base": {"path": base, "format": fmt}, "scratch": s}) == size
    for path in s.values():
        got = info(path)
        assert (got["format"], got["virtual-size"]) == ("qcow2", size)
        assert "backing-filename" not in got
    assert image_size(base) == size


def test_scratch_null_only_returns_the_size(tmp):
    base = make_base(tmp, "raw", 5 * MIB)
    before = sorted(os.listdir(tmp))
    assert prepare_disks({"base": {"path": base, "format": "raw"}, "scratch": None}) == 5 * MIB
    assert sorted(os.listdir(tmp)) == before


def test_missing_base_is_refused(tmp):
    s = scratch(tmp)
    missing = os.path.join(tmp, "gone, really.raw")
    with pytest.raises(DiskError, match="does not exist") as e:
        prepare_disks({"base": {"path": missing, "format": "raw"}, "scratch": s})
    assert missing in str(e.value)
    assert not os.path.exists(os.path.dirname(s["active"]))


def test_unreadable_base_is_refused_with_qemu_img_message(tmp):
    with pytest.raises(DiskError, match=r"cannot read base image .*regular file"):
        prepare_disks({"base": {"path": tmp, "format": "raw"}, "scratch": None})
    with pytest.raises(DiskError, match="cannot read disk image"):
        image_size(os.path.join(tmp, "nothing"))


@pytest.mark.parametrize(("real", "planned"), [("qcow2", "raw"), ("raw", "qcow2")])
def test_format_mismatch_is_refused(tmp, real, planned):
    base, s = make_base(tmp, real, MIB), scratch(tmp)
    with pytest.raises(DiskError) as e:
        prepare_disks({"base": {"path": base, "format": planned}, "scratch": s})
    assert f"'{base}' is {real}, but the plan says {planned}" in str(e.value)
    assert not os.path.exists(s["active"])


def test_preparing_again_wipes_stale_overlay_data(tmp):
    base, s = make_base(tmp, "raw", 4 * MIB), scratch(tmp)
    disks = {"base": {"path": base, "format": "raw"}, "scratch": s}
    prepare_disks(disks)
    for path in s.values():
        assert qemu_io(path, "write -P 0x5a 0 4k").returncode == 0
        assert qemu_io(path, "read -P 0x5a 0 4k").returncode == 0
        assert qemu_io(path, "read -P 0 0 4k").returncode != 0
    prepare_disks(disks)
    for path in s.values():
        done = qemu_io(path, "read -P 0 0 4k")
        assert done.returncode == 0 and "Pattern verification failed" not in done.stdout


def test_images_held_by_a_running_qemu(tmp):
    """The base is read while QEMU has it open (-U); a held scratch disk is never wiped."""
    base, s = make_base(tmp, "qcow2", MIB), scratch(tmp)
    disks = {"base": {"path": base, "format": "qcow2"}, "scratch": s}
    prepare_disks(disks)
    b, a = base.replace(",", ",,"), s["active"].replace(",", ",,")
    proc = subprocess.Popen(
        ["/usr/bin/qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none",
         "-S", "-blockdev", f"driver=qcow2,node-name=b,file.driver=file,file.filename={b}",
         "-blockdev", f"driver=qcow2,node-name=a,file.driver=file,file.filename={a}"],
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(200):  # until QEMU has opened (and locked) the images
            assert proc.poll() is None, "QEMU holding the images exited"
            if write_locked(base) and write_locked(s["active"]):
                break
            time.sleep(0.05)
        else:
            raise AssertionError("QEMU never locked the images")
        with pytest.raises(DiskError, match=r"cannot create the active disk .*lock.*stop the QEMU"):
            prepare_disks(disks)
        assert prepare_disks(dict(disks, scratch=None)) == MIB
    finally:
        proc.kill()
        proc.wait()
