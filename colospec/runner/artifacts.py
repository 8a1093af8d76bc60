"""A built host directory, as the runner sees it: plan.json, qemu.args and qmp/*.json.

The runner reads only these files, never the spec, so what was reviewed is what runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from colospec.render.plan import PLAN_FORMAT


class ArtifactError(Exception):
    """The host directory is missing, incomplete or from an incompatible colospec."""


@dataclass(frozen=True)
class HostArtifacts:
    directory: Path
    plan: dict[str, Any]
    qemu_argv: list[str]

    @property
    def pair(self) -> str:
        return self.plan["pair"]

    @property
    def host(self) -> str:
        return self.plan["host"]["name"]

    @property
    def role(self) -> str:
        return self.plan["host"]["role"]

    @property
    def run_dir(self) -> Path:
        return Path(self.plan["qemu"]["run_dir"])

    def argv(self, args_file: str) -> list[str]:
        """Another command line of this host's (rejoin: its QEMU in the other layout)."""
        if args_file == self.plan["qemu"]["args_file"]:
            return self.qemu_argv
        try:
            argv = read_qemu_args(self.directory / args_file)
        except OSError as exc:
            raise ArtifactError(
                f"{self.directory / args_file}: cannot read: {exc.strerror}"
            ) from None
        if not argv or argv[0] != self.plan["qemu"]["binary"]:
            raise ArtifactError(f"{self.directory / args_file} does not start with "
                                f"{self.plan['qemu']['binary']}")  # fmt: skip
        return argv

    def script(self, relpath: str) -> list[dict[str, Any]]:
        path = self.directory / relpath
        try:
            commands = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{path}: cannot read QMP script: {exc}") from None
        if not isinstance(commands, list) or not all(
            isinstance(c, dict) and isinstance(c.get("execute"), str) for c in commands
        ):
            raise ArtifactError(f"{path}: not a list of QMP commands")
        return commands


def read_qemu_args(path: Path) -> list[str]:
    """qemu.args: leading '#' comment lines, then exactly one argument per line."""
    lines = path.read_text().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return lines


def load_host_dir(directory: str | Path) -> HostArtifacts:
    d = Path(directory)
    plan_path = d / "plan.json"
    try:
        plan = json.loads(plan_path.read_text())
    except FileNotFoundError:
        raise ArtifactError(
            f"{plan_path} not found — pass a built host directory (OUT/<pair>/<host>)"
        ) from None
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{plan_path}: cannot read: {exc}") from None
    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT:
        raise ArtifactError(
            f"{plan_path}: not a {PLAN_FORMAT} plan — rebuild it with this colospec"
        )
    try:
        argv = read_qemu_args(d / plan["qemu"]["args_file"])
    except OSError as exc:
        raise ArtifactError(f"{d}: cannot read the QEMU command line: {exc.strerror}") from None
    if not argv or argv[0] != plan["qemu"]["binary"]:
        raise ArtifactError(f"{d}/qemu.args does not start with {plan['qemu']['binary']}")
    return HostArtifacts(d, plan, argv)
