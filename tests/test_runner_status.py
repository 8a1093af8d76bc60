"""`colospec status DIR` on a built host directory, with no runner and with one answering.

The plan's run directory is moved into tmp_path, so no test touches /run; a runner that
answers is the runner's own control server (control.serve_control) with a canned reply,
and a QEMU that runs is a sleeping Python started the way the plan says QEMU is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from colospec.runner import control
from colospec.runner.commands import STATUS_KEYS

from conftest import ROOT
from test_invalid_specs import colospec

NOT_RUNNING, RUNNING = 3, 0
FAILOVER = {"time": "2024-05-01T10:00:00.000+00:00", "reason": "no heartbeat for 1500 ms",
            "from_role": "secondary", "took_ms": 80.0, "script_ms": 90.0,
            "failed_commands": []}  # fmt: skip


@pytest.fixture
def host_dir(tmp_path) -> Path:
    """node-b of examples/pair.yaml, built with a Python as its "QEMU" binary and its run
    directory under tmp_path."""
    data = yaml.safe_load((ROOT / "examples/pair.yaml").read_text())
    data["qemu"]["binary"] = sys.executable
    spec = tmp_path / "pair.yaml"
    spec.write_text(yaml.safe_dump(data))
    result = colospec("build", str(spec), "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    directory = tmp_path / "out" / data["name"] / "node-b"
    plan = json.loads((directory / "plan.json").read_text())
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    plan["qemu"] |= {"run_dir": str(run_dir), "pidfile": str(run_dir / "qemu.pid"),
                     "qmp_socket": str(run_dir / "qmp.sock")}  # fmt: skip
    plan["state_dir"] = str(tmp_path / "state")
    (directory / "plan.json").write_text(json.dumps(plan))
    return directory


def run_dir(host_dir: Path) -> Path:
    return Path(json.loads((host_dir / "plan.json").read_text())["qemu"]["run_dir"])


def status(host_dir: Path, *flags: str) -> tuple[int, str]:
    result = colospec("status", *flags, str(host_dir))
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stdout


def assert_clean_text(text: str) -> None:
    assert text.endswith("\n") and "None" not in text
    for line in text.splitlines():
        assert line == line.rstrip(), repr(line)


@contextlib.contextmanager
def fake_qemu(host_dir: Path):
    """A live process that QemuProcess.find_running takes for this host's QEMU."""
    qemu = json.loads((host_dir / "plan.json").read_text())["qemu"]
    proc = subprocess.Popen([qemu["binary"], "-c", "import time; time.sleep(60)",
                             qemu["qmp_socket"]])  # fmt: skip
    Path(qemu["pidfile"]).write_text(f"{proc.pid}\n")
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def answering_runner(host_dir: Path, reply: dict[str, Any]):
    """The runner's control socket, answering "status" with reply."""

    async def handler(request: dict[str, Any]) -> dict[str, Any]:
        return reply if request == {"cmd": "status"} else {"ok": False, "error": "unexpected"}

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    serving = asyncio.run_coroutine_threadsafe(
        control.serve_control(run_dir(host_dir), handler), loop
    )
    server = serving.result(5)
    try:
        yield
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_without_a_runner_json_has_every_key_with_nulls_and_exits_3(host_dir):
    code, out = status(host_dir, "--json")
    assert code == NOT_RUNNING
    assert "None" not in out
    report = json.loads(out)
    assert list(report) == list(STATUS_KEYS)
    assert list(STATUS_KEYS[:6]) == [
        "role", "colo_mode", "vm_status", "qemu_pid", "peer", "last_failover"
    ]  # fmt: skip
    assert report == {
        "role": None, "colo_mode": None, "vm_status": None, "qemu_pid": None,
        "peer": {"name": "node-a", "reachable": None, "paths": []},
        "last_failover": None, "runner": "not running",
        "phase": None, "protected": False, "epoch": None, "heartbeats_rejected": None,
        # disk.json is read without a runner: a host with none counts as epoch 0
        "last_resync": None, "disk": {"epoch": 0, "stale": False}, "quorum": None,
    }  # fmt: skip


def test_without_a_runner_text_shows_unknowns_as_dashes_and_exits_3(host_dir):
    code, out = status(host_dir)
    assert code == NOT_RUNNING
    assert_clean_text(out)
    assert out.splitlines() == [
        "host:          node-b (web1)",
        "runner:        not running",
        "protected:     NO",
        "phase:         -",
        "role:          -",
        "COLO mode:     -",
        "VM status:     -",
        "QEMU pid:      -",
        "peer:          node-a",
        "reachable:     -",
        "last failover: -",
        "epoch:         -",
        "rejected:      -",
        "disk:          epoch 0",
    ]


def test_an_earlier_runs_state_is_not_reported(host_dir):
    """state.json outlives runner and QEMU: without the QEMU it was written for, its role
    and failover belong to an earlier run."""
    earlier = {"role": "primary", "alone": True, "qemu_pid": 999999999, "last_failover": FAILOVER}
    control.write_state(run_dir(host_dir), earlier)
    code, out = status(host_dir, "--json")
    report = json.loads(out)
    assert code == NOT_RUNNING
    assert (report["role"], report["qemu_pid"], report["last_failover"]) == (None, None, None)
    with fake_qemu(host_dir) as pid:  # a QEMU, but not the one the state was written for
        report = json.loads(status(host_dir, "--json")[1])
    assert (report["role"], report["qemu_pid"], report["last_failover"]) == ("secondary", pid, None)


def test_the_running_qemus_state_is_reported_without_a_runner(host_dir):
    with fake_qemu(host_dir) as pid:
        state = {"role": "primary", "alone": True, "qemu_pid": pid, "last_failover": FAILOVER}
        control.write_state(run_dir(host_dir), state)
        code, out = status(host_dir, "--json")
        text_code, text = status(host_dir)
    assert (code, text_code) == (NOT_RUNNING, NOT_RUNNING)
    report = json.loads(out)
    assert (report["role"], report["qemu_pid"]) == ("primary", pid)
    assert report["last_failover"] == FAILOVER
    assert_clean_text(text)
    assert f"QEMU pid:      {pid}\n" in text
    assert f"last failover: {FAILOVER['time']} — {FAILOVER['reason']}\n" in text


def test_with_a_runner_answering_exits_0_and_says_running(host_dir):
    reply = {
        "role": "secondary", "colo_mode": "secondary", "vm_status": "running",
        "qemu_pid": 4242, "last_failover": None, "checkpoints": 17,
        "peer": {"name": "node-a", "reachable": True, "paths": ["replication", "lan"]},
        "phase": "colo", "protected": True, "epoch": 0, "heartbeats_rejected": 0,
        "last_resync": None, "disk": {"epoch": 0, "stale": False}, "quorum": None,
    }  # fmt: skip
    with answering_runner(host_dir, reply):
        code, out = status(host_dir, "--json")
        text_code, text = status(host_dir)
    assert (code, text_code) == (RUNNING, RUNNING)
    report = json.loads(out)
    assert list(report) == list(STATUS_KEYS)
    del reply["checkpoints"]  # the runner's, not part of the status contract
    assert report == {**reply, "runner": "running"}
    assert_clean_text(text)
    assert text.splitlines() == [
        "host:          node-b (web1)",
        "runner:        running",
        "protected:     yes",
        "phase:         colo",
        "role:          secondary",
        "COLO mode:     secondary",
        "VM status:     running",
        "QEMU pid:      4242",
        "peer:          node-a",
        "reachable:     yes (replication, lan)",
        "last failover: never",
        "epoch:         0",
        "rejected:      0",
        "disk:          epoch 0",
    ]
