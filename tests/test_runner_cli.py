"""Runner commands without a running pair: clear errors, offline status, no tracebacks."""

from __future__ import annotations

import json

from conftest import ROOT
from test_invalid_specs import colospec


def test_run_on_a_directory_that_is_not_built():
    result = colospec("run", "examples")
    assert result.returncode == 1
    assert "plan.json not found — pass a built host directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_status_without_a_runner_reports_what_it_can(tmp_path):
    out = tmp_path / "out"
    assert colospec("build", "examples/pair.yaml", "-o", str(out)).returncode == 0
    result = colospec("status", "--json", str(out / "web1/node-a"))
    assert result.returncode == 3, result.stderr  # as `systemctl status`: not running
    status = json.loads(result.stdout)
    assert list(status) == [
        "role", "colo_mode", "vm_status", "qemu_pid", "peer", "last_failover", "runner",
        "phase", "protected", "epoch", "heartbeats_rejected", "last_resync", "disk", "quorum",
    ]  # fmt: skip
    assert status["protected"] is False  # no runner watches: nothing would fail over
    assert status["qemu_pid"] is None and status["peer"]["name"] == "node-b"
    text = colospec("status", str(out / "web1/node-a"))
    assert "runner:        not running" in text.stdout


def test_failover_without_a_runner_says_so():
    result = colospec("failover", str(ROOT / "out/web1/node-b"))
    assert result.returncode == 1
    assert "no runner answers for node-b" in result.stderr
