"""Prepare a host's disks: check the base image, and give a secondary fresh active/hidden disks."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

QEMU_IMG = "qemu-img"
TIMEOUT_S = 60


class DiskError(Exception):
    """A disk problem, worded for the operator: which path, and what to do."""


def _qemu_img(*args: str) -> str:
    try:
        done = subprocess.run(
            [QEMU_IMG, *args], capture_output=True, text=True, timeout=TIMEOUT_S, check=False
        )
    except FileNotFoundError:
        raise DiskError(f"{QEMU_IMG} not found: install qemu-utils") from None
    except subprocess.TimeoutExpired:
        raise DiskError(f"{QEMU_IMG} {' '.join(args)} took over {TIMEOUT_S} s") from None
    if done.returncode != 0:
        said = done.stderr.strip().replace("\n", " ")
        raise DiskError(said or f"{QEMU_IMG} {args[0]} exited with status {done.returncode}")
    return done.stdout


def _info(path: str) -> dict[str, Any]:
    # Absolute paths: "name:rest" would otherwise be read as a protocol prefix. -U: the image
    # may be open in a running QEMU (a restarted runner re-attaching).
    return json.loads(_qemu_img("info", "--output=json", "-U", os.path.abspath(path)))


def image_size(path: str) -> int:
    """The virtual size of the image at path, in bytes."""
    try:
        return int(_info(path)["virtual-size"])
    except DiskError as e:
        raise DiskError(f"cannot read disk image '{path}': {e}") from None


def prepare_disks(disks: dict[str, Any]) -> int:
    """Check the base image and (re)create the scratch disks; returns the base's virtual size."""
    base, fmt = disks["base"]["path"], disks["base"]["format"]
    if not os.path.exists(base):
        raise DiskError(
            f"base image '{base}' does not exist: copy the pair's disk image there (each host "
            "holds its own identical copy), or fix the image path in the spec and rebuild"
        )
    try:
        info = _info(base)
    except DiskError as e:
        raise DiskError(f"cannot read base image '{base}': {e}") from None
    if info.get("format") != fmt:
        raise DiskError(
            f"base image '{base}' is {info.get('format')}, but the plan says {fmt}: convert it "
            f"(qemu-img convert -O {fmt}) or set vm.disk.format in the spec and rebuild"
        )
    size = int(info["virtual-size"])
    scratch = disks.get("scratch")
    if scratch is None:
        return size
    for role in ("active", "hidden"):
        path = os.path.abspath(scratch[role])
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        except OSError as e:
            raise DiskError(f"cannot create the scratch directory for '{path}': {e}") from None
        # Created over any old file (never unlinked first): qemu-img truncates it to an empty
        # image, and refuses with a lock error while a running QEMU still has it open.
        try:
            _qemu_img("create", "-q", "-f", "qcow2", path, str(size))
        except DiskError as e:
            hint = " — stop the QEMU that has it open first" if "Failed to get" in str(e) else ""
            raise DiskError(f"cannot create the {role} disk '{path}': {e}{hint}") from None
        got = image_size(path)
        if got != size:
            raise DiskError(
                f"the {role} disk '{path}' is {got} bytes, not the base's {size} bytes: "
                "check the scratch file system and qemu-img"
            )
    return size
