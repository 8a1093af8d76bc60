"""A restarted runner adopting a QEMU that already runs: what it concludes from QEMU's own
answers and from the state file written for that QEMU (fake QEMU, real built plan)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
import yaml

from colospec.runner.artifacts import load_host_dir
from colospec.runner.hoststate import AlreadyRunning, HostState, take_lock
from colospec.runner.machine import Phase
from colospec.runner.orchestrate import Runner
from colospec.runner.steps import PeerServes

from conftest import ROOT
from test_invalid_specs import colospec

PID = 4242


@pytest.fixture
def host_dirs(tmp_path) -> dict[str, Path]:
    image = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(image), "16M"], check=True)
    data = yaml.safe_load((ROOT / "examples/pair.yaml").read_text())
    data["vm"]["disk"]["image"] = str(image)
    data["runtime"] = {"artifacts_dir": str(tmp_path / "installed")}
    data["security"] = {"key_file": str(tmp_path / "pair.key")}
    assert colospec("keygen", str(tmp_path / "pair.key")).returncode == 0
    spec = tmp_path / "pair.yaml"
    spec.write_text(yaml.safe_dump(data))
    assert colospec("build", str(spec), "-o", str(tmp_path / "out")).returncode == 0
    (tmp_path / "run").mkdir()  # the host's run directory, where state.json lives
    return {h: tmp_path / "out/web1" / h for h in ("node-a", "node-b")}


class Process:
    def __init__(self, running: bool):
        self.pid = PID if running else None
        self.alive = running

    def find_running(self):
        return self.pid

    def adopt(self, pid):
        self.pid = pid

    def kill(self):
        self.alive = False

    async def wait_exit(self, timeout):
        return not self.alive


def runner(host_dir: Path, tmp_path: Path, *, mode="none", reason="none", status="running",
           running=True) -> tuple[Runner, list[str]]:  # fmt: skip
    r = Runner(load_host_dir(host_dir))
    r.run_dir = tmp_path / "run"
    r.run_dir.mkdir(exist_ok=True)
    r.store.run_dir = r.watcher.store.run_dir = r.run_dir
    sent: list[str] = []
    answers = {"query-colo-status": {"mode": mode, "reason": reason, "last-mode": "none"},
               "query-status": {"status": status}}  # fmt: skip
    r.qemu.process = Process(running)

    async def connect():
        pass

    async def execute(name, arguments=None, timeout=30):
        sent.append(name)
        if name == "quit":
            r.qemu.process.alive = False
        return answers.get(name, {})

    r.qemu.connect, r.qemu.execute = connect, execute
    r._remove_stale_files = lambda: None
    return r, sent


def adopt(r: Runner) -> bool:
    return asyncio.run(r._adopt())


def test_no_qemu_is_a_fresh_start_that_forgets_an_earlier_run(host_dirs, tmp_path):
    r, _ = runner(host_dirs["node-b"], tmp_path, running=False)
    HostState(qemu_pid=999, phase=Phase.ALONE, role="primary", epoch=4).save(tmp_path / "run")
    assert adopt(r) is False
    saved = HostState.load(tmp_path / "run")
    assert (saved.qemu_pid, saved.phase, saved.epoch, saved.last_failover) == (
        None, Phase.STARTING, 0, None)  # fmt: skip


def test_a_fresh_qemu_from_its_unit_runs_the_qmp_steps(host_dirs, tmp_path):
    r, _ = runner(host_dirs["node-b"], tmp_path, status="inmigrate")
    assert adopt(r) is False
    assert r.bringup.done == ["check-qemu", "disks", "network", "qemu"]


def test_a_secondary_in_colo_is_adopted_as_one(host_dirs, tmp_path):
    r, _ = runner(host_dirs["node-b"], tmp_path, mode="secondary")
    assert adopt(r) is True
    assert (r.store.state.phase, r.store.state.role) == (Phase.COLO, "secondary")
    assert r.watcher.evidence().stale is False


def test_a_secondary_whose_stream_broke_unwatched_is_stale(host_dirs, tmp_path):
    r, _ = runner(host_dirs["node-b"], tmp_path, mode="secondary", reason="error")
    assert adopt(r) is True
    e = r.watcher.evidence()
    assert e.stale and e.colo_exit_error


def test_a_primary_whose_stream_broke_unwatched_sees_the_break(host_dirs, tmp_path):
    r, _ = runner(host_dirs["node-a"], tmp_path, mode="primary", reason="error")
    assert adopt(r) is True
    e = r.watcher.evidence()
    assert e.colo_exit_error and not e.stale


def test_serving_alone_per_its_own_state_keeps_its_epoch(host_dirs, tmp_path):
    HostState(qemu_pid=PID, phase=Phase.ALONE, role="primary", epoch=3, rank=0).save(
        tmp_path / "run")  # fmt: skip
    r, sent = runner(host_dirs["node-b"], tmp_path, mode="none")
    assert adopt(r) is True
    assert (r.store.state.phase, r.store.state.epoch) == (Phase.ALONE, 3)
    assert "quit" not in sent


def test_a_running_qemu_without_colo_or_state_is_watched_never_quit(host_dirs, tmp_path):
    r, sent = runner(host_dirs["node-a"], tmp_path, mode="none")
    assert adopt(r) is True
    assert (r.store.state.phase, r.store.state.epoch, r.store.state.rank) == (Phase.ALONE, 0, 0)
    assert "quit" not in sent


def test_a_failover_in_progress_is_resumed_with_its_epoch(host_dirs, tmp_path):
    HostState(qemu_pid=PID, phase=Phase.COLO, role="secondary", epoch=1,
              intent="take-over").save(tmp_path / "run")  # fmt: skip
    r, _ = runner(host_dirs["node-b"], tmp_path, mode="secondary")
    assert adopt(r) is True
    assert (r.store.state.intent, r.store.state.epoch) == ("take-over", 1)


def test_a_fence_in_progress_is_finished(host_dirs, tmp_path):
    HostState(qemu_pid=PID, phase=Phase.COLO, role="primary", intent="fence").save(
        tmp_path / "run")  # fmt: skip
    r, sent = runner(host_dirs["node-a"], tmp_path, mode="primary")
    with pytest.raises(PeerServes):
        adopt(r)
    assert sent[-2:] == ["stop", "quit"]
    assert HostState.load(tmp_path / "run").phase is Phase.FENCED


def test_a_second_runner_is_refused_with_the_first_ones_pid(tmp_path):
    fd = take_lock(tmp_path)
    try:
        with pytest.raises(AlreadyRunning, match=r"pid \d+"):
            take_lock(tmp_path)
    finally:
        import os

        os.close(fd)
    os.close(take_lock(tmp_path))  # free again once the first is gone
