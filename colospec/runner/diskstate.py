"""Which failover epoch this host's disk belongs to, kept across reboots.

<state_dir>/disk.json (plan.json's state_dir, on a persistent file system; fsynced):
  epoch  the epoch at which this disk last served or was last a COLO member;
  stale  the disk must never serve again, only be overwritten by a join: its host was
         fenced (the peer served on without it), or a join's copy onto it began.

A normal bring-up assumes both disks identical. That holds only if both hosts were last
COLO members at the same epoch and neither is stale; otherwise one disk lacks the other's
writes, and COLO over them would silently lose them. compare() says which case it is.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FILE = "disk.json"


class DisksDiffer(Exception):
    """The two disks are not the same: a normal bring-up would lose writes."""


@dataclass(frozen=True)
class DiskState:
    epoch: int = 0
    stale: bool = False

    @classmethod
    def load(cls, state_dir: Path) -> DiskState:
        try:
            raw = json.loads((state_dir / FILE).read_text())
            return cls(epoch=int(raw["epoch"]), stale=bool(raw["stale"]))
        except FileNotFoundError:
            return cls()  # a first bring-up: the operator gave both hosts the same image
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DisksDiffer(
                f"{state_dir / FILE} is unreadable ({exc}): this host cannot tell whether its "
                "disk is current — remove the file only if both hosts' disks are identical"
            ) from None

    def save(self, state_dir: Path) -> None:
        """Durably: written, synced and renamed into place, the directory synced too."""
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{FILE}-", dir=state_dir)
        with os.fdopen(fd, "w") as f:
            json.dump(self.report(), f, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, state_dir / FILE)
        dir_fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def report(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "stale": self.stale}


def compare(mine: DiskState, peer: dict[str, Any], peer_name: str) -> None:
    """Raise DisksDiffer unless a normal bring-up with the peer keeps every write."""
    theirs = DiskState(int(peer.get("epoch", 0)), bool(peer.get("stale", False)))
    if mine.stale:
        raise DisksDiffer(
            "this host's disk is stale (it was fenced, or a join's copy onto it did not "
            f"finish): it may only join {peer_name} while that serves — start {peer_name} "
            "with `colospec run --force-primary`, then this host with --rejoin"
        )
    if theirs.stale:
        raise DisksDiffer(
            f"{peer_name}'s disk is stale: start this host with `colospec run --force-primary`; "
            f"{peer_name} then joins it (--rejoin)"
        )
    if theirs.epoch > mine.epoch:
        raise DisksDiffer(
            f"{peer_name}'s disk served at epoch {theirs.epoch}, after this host's "
            f"({mine.epoch}): it has writes this one lacks — start {peer_name} with "
            "`colospec run --force-primary`, then this host with --rejoin"
        )
    if theirs.epoch < mine.epoch:
        raise DisksDiffer(
            f"this host's disk served at epoch {mine.epoch}, after {peer_name}'s "
            f"({theirs.epoch}): start this host with `colospec run --force-primary`; "
            f"{peer_name} then joins it (--rejoin)"
        )
