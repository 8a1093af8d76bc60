"""QEMU's environment on a vm-ft host: `colospec run` must give QEMU what the qemu unit's
EnvironmentFile= gives it, so RDMA-Paxos finds the same settings either way."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from colospec.compile import check_spec
from colospec.flavors.vmft.build import ENV_FILE
from colospec.runner.artifacts import HostArtifacts, load_host_dir
from colospec.runner.steps import BringUp

from conftest import VMFT_VALID
from test_invalid_specs import colospec


def sourced(env_file: Path) -> dict[str, str]:
    """What the env file sets, read by a shell as its own comment says (`set -a; .`). For
    what colospec writes there (plain words, single-quoted paths) systemd's EnvironmentFile=
    reads the same: quotes removed, nothing expanded."""

    def environment(script: str) -> dict[str, str]:
        out = subprocess.run(["env", "-i", "bash", "-c", script, "bash", str(env_file)],
                             capture_output=True, check=True).stdout  # fmt: skip
        return dict(item.split("=", 1) for item in out.decode().split("\0") if item)

    before, after = environment("env -0"), environment('set -a; . "$1"; env -0')
    return {k: v for k, v in after.items() if before.get(k) != v}


class RecordingQemu:
    def start(self, argv: list[str], env: dict[str, str] | None = None) -> int:
        self.argv, self.env = argv, env
        return 4242


class RecordingSession:
    """Stands in for the runner's QemuSession: only its process is used by start-qemu."""

    def __init__(self):
        self.process = RecordingQemu()


def environment_given_to_qemu(arts: HostArtifacts) -> dict[str, str]:
    qemu = RecordingSession()
    bringup = BringUp(arts, qemu, peer=None, attach=False, set_phase=print, stopping=bool)
    asyncio.run(bringup._start_qemu({"id": "qemu", "kind": "start-qemu"}))
    assert qemu.process.argv == arts.qemu_argv
    return dict(os.environ) if qemu.process.env is None else qemu.process.env


@pytest.mark.parametrize("spec", VMFT_VALID, ids=[p.stem for p in VMFT_VALID])
def test_colospec_run_gives_qemu_the_qemu_units_environment(spec, tmp_path):
    result = colospec("build", str(spec), "-o", str(tmp_path))
    assert result.returncode == 0, result.stderr
    pair = check_spec(spec).pair
    for host in pair.hosts:
        host_dir = tmp_path / pair.name / host.name
        unit = (host_dir / "systemd" / pair.layout(host).unit("qemu")).read_text()
        assert f"EnvironmentFile={pair.layout(host).installed_dir}/{ENV_FILE}\n" in unit
        unit_env = sourced(host_dir / ENV_FILE)
        assert set(unit_env) == {"server_type", "server_idx", "group_size", "config_path"}
        assert unit_env["config_path"] == f"{pair.layout(host).installed_dir}/build/nodes.local.cfg"
        assert environment_given_to_qemu(load_host_dir(host_dir)) == {**os.environ, **unit_env}
