"""The OCF agent's actions (colospec/ocf/agent.py) against a fake node, one case each;
and its command line: codes, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from colospec.ocf import agent

ROOT = Path(__file__).resolve().parent.parent
PRIMARY = {"phase": "colo", "role": "primary", "protected": True, "vm_status": "running"}
SECONDARY = {"phase": "colo", "role": "secondary", "protected": True, "vm_status": "running"}
ALONE = {"phase": "alone", "role": "primary", "protected": False, "vm_status": "running"}
JOINING = {"phase": "joining", "role": "secondary", "protected": False, "vm_status": None}


class FakeClock(agent.Clock):
    def __init__(self):
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


class FakeNode:
    def __init__(self, status=None, alive=None, promoted=False):
        self.statuses = [status]  # each status() call takes the next; the last one repeats
        self.alive = status is not None if alive is None else alive
        self.is_promoted = promoted
        self.score: int | None = None
        self.calls: list[str] = []
        self.exit_code: int | None = None
        self.take_over_makes: dict | None = None

    def runner_alive(self):
        return self.alive

    def status(self):
        if len(self.statuses) > 1:
            return self.statuses.pop(0)
        return self.statuses[0] if self.alive else None

    def spawn(self):
        self.calls.append("spawn")
        self.alive = True

    def spawned_exit(self):
        return self.exit_code

    def stop_runner(self, timeout_s):
        self.calls.append("stop")
        self.alive = False
        return True

    def take_over(self):
        self.calls.append("take-over")
        if self.take_over_makes:
            self.statuses = [self.take_over_makes]
        return {"ok": True}

    def promoted(self):
        return self.is_promoted

    def set_promoted(self, promoted):
        self.is_promoted = promoted

    def set_score(self, score):
        self.score = score

    def log(self, message):
        self.calls.append(f"log: {message}")


@pytest.mark.parametrize(
    ("status", "promoted", "code", "score"),
    [
        (None, False, agent.OCF_NOT_RUNNING, None),
        (None, True, agent.OCF_FAILED_PROMOTED, None),
        # Serving, but Pacemaker has not promoted it yet: unpromoted, with the top score.
        (PRIMARY, False, agent.OCF_SUCCESS, agent.SCORE_SERVING),
        (PRIMARY, True, agent.OCF_RUNNING_PROMOTED, agent.SCORE_SERVING),
        (ALONE, True, agent.OCF_RUNNING_PROMOTED, agent.SCORE_SERVING),
        (SECONDARY, False, agent.OCF_SUCCESS, agent.SCORE_SECONDARY),
        (JOINING, False, agent.OCF_SUCCESS, agent.SCORE_NONE),
        ({**SECONDARY, "protected": False}, False, agent.OCF_SUCCESS, agent.SCORE_NONE),
        # Promoted, and the runner no longer serves (fenced by a newer peer): failed.
        ({**SECONDARY, "phase": "fenced"}, True, agent.OCF_FAILED_PROMOTED, agent.SCORE_NONE),
        ({**PRIMARY, "phase": "failed"}, False, agent.OCF_ERR_GENERIC, None),
        # A node outside the quorate partition never counts as serving.
        ({**ALONE, "quorum": {"quorate": False}}, True, agent.OCF_FAILED_PROMOTED, 0),
        ({**PRIMARY, "quorum": {"quorate": True}}, True, agent.OCF_RUNNING_PROMOTED, 100),
        # Paused by a checkpoint or a re-protection's attach: still the one that serves.
        (
            {**ALONE, "phase": "resyncing", "vm_status": "paused"},
            True,
            agent.OCF_RUNNING_PROMOTED,
            agent.SCORE_SERVING,
        ),
    ],
)
def test_monitor(status, promoted, code, score):
    node = FakeNode(status, promoted=promoted)
    assert agent.monitor(node) == code
    assert node.score == score


def test_monitor_of_a_busy_runner_keeps_the_role():
    node = FakeNode(None, alive=True, promoted=True)
    assert agent.monitor(node) == agent.OCF_RUNNING_PROMOTED


def test_start_clears_the_promoted_mark_and_spawns():
    node = FakeNode(None, alive=False, promoted=True)
    node.statuses = [None, JOINING]
    assert agent.start(node, 10, FakeClock()) == agent.OCF_SUCCESS
    assert node.calls == ["spawn"] and not node.is_promoted


def test_start_of_a_running_runner_does_nothing():
    node = FakeNode(SECONDARY)
    assert agent.start(node, 10, FakeClock()) == agent.OCF_SUCCESS
    assert node.calls == []


def test_start_fails_when_the_runner_exits():
    node = FakeNode(None, alive=False)
    node.exit_code = 4
    assert agent.start(node, 10, FakeClock()) == agent.OCF_ERR_GENERIC


def test_start_times_out():
    node = FakeNode(None, alive=False)
    node.spawn = lambda: None
    assert agent.start(node, 10, FakeClock()) == agent.OCF_ERR_GENERIC


def test_stop():
    node = FakeNode(PRIMARY, promoted=True)
    node.score = 100
    assert agent.stop(node, 10, FakeClock()) == agent.OCF_SUCCESS
    assert node.calls == ["stop"] and not node.is_promoted and node.score is None
    assert agent.stop(node, 10, FakeClock()) == agent.OCF_SUCCESS  # stopped: nothing to do
    assert node.calls == ["stop"]


def test_promote_acknowledges_a_serving_runner():
    node = FakeNode(PRIMARY)
    assert agent.promote(node, 10, FakeClock()) == agent.OCF_SUCCESS
    assert node.is_promoted and node.score == agent.SCORE_SERVING and node.calls == []


def test_promote_waits_for_the_runner_to_take_over_by_itself():
    node = FakeNode(SECONDARY)
    node.statuses = [SECONDARY, SECONDARY, ALONE]
    assert agent.promote(node, 10, FakeClock()) == agent.OCF_SUCCESS
    assert "take-over" not in node.calls


def test_promote_asks_a_secondary_that_stays_one_to_take_over():
    node = FakeNode(SECONDARY)
    node.take_over_makes = ALONE
    assert agent.promote(node, 30, FakeClock()) == agent.OCF_SUCCESS
    assert node.calls.count("take-over") == 1


def test_promote_never_forces_a_node_without_quorum():
    node = FakeNode({**SECONDARY, "quorum": {"quorate": False}})
    assert agent.promote(node, 10, FakeClock()) == agent.OCF_ERR_GENERIC
    assert "take-over" not in node.calls and not node.is_promoted


def test_promote_without_a_runner_fails():
    assert agent.promote(FakeNode(None), 10, FakeClock()) == agent.OCF_ERR_GENERIC


def test_demote_stops_and_restarts_as_a_joiner():
    node = FakeNode(PRIMARY, promoted=True)
    assert agent.demote(node, 10, FakeClock()) == agent.OCF_SUCCESS
    assert node.calls == ["stop", "spawn"] and not node.is_promoted


def test_demote_lets_a_copy_to_the_peer_finish_first():
    node = FakeNode(PRIMARY, promoted=True)
    node.statuses = [{**ALONE, "phase": "resyncing"}] * 3 + [PRIMARY]
    clock = FakeClock()
    assert agent.demote(node, 60, clock) == agent.OCF_SUCCESS
    assert node.calls == ["stop", "spawn"] and clock.t == pytest.approx(3 * agent.POLL_S)


def test_demote_of_an_unpromoted_instance_does_nothing():
    node = FakeNode(SECONDARY)
    assert agent.demote(node, 10, FakeClock()) == agent.OCF_SUCCESS
    assert node.calls == []


def test_notify_always_succeeds():
    assert agent.notify(FakeNode(ALONE), "post", "start") == agent.OCF_SUCCESS
    assert agent.notify(FakeNode(None), "pre", "stop") == agent.OCF_SUCCESS


# ----- the command line ---------------------------------------------------------------


def ocf(action: str, **params: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCF_")}
    env |= {f"OCF_RESKEY_{k}": v for k, v in params.items()}
    return subprocess.run([sys.executable, "-m", "colospec", "ocf", "agent", action],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)  # fmt: skip


@pytest.mark.parametrize(
    ("action", "params", "code"),
    [
        ("bogus", {}, agent.OCF_ERR_UNIMPLEMENTED),
        ("", {}, agent.OCF_ERR_UNIMPLEMENTED),
        ("validate-all", {}, agent.OCF_ERR_CONFIGURED),
        ("validate-all", {"pair": "Bad Name"}, agent.OCF_ERR_CONFIGURED),
        ("validate-all", {"pair": "web1", "node": "../x"}, agent.OCF_ERR_CONFIGURED),
        ("validate-all", {"pair": "web1", "node": "n1", "artifacts_dir": "/nonexistent"},
         agent.OCF_ERR_INSTALLED),
        ("start", {"pair": "web1", "node": "n1", "artifacts_dir": "/nonexistent"},
         agent.OCF_ERR_INSTALLED),
        # Probes on a node that does not host the pair: not running, no error.
        ("monitor", {"pair": "web1", "node": "n1", "artifacts_dir": "/nonexistent"},
         agent.OCF_NOT_RUNNING),
        ("stop", {"pair": "web1", "node": "n1", "artifacts_dir": "/nonexistent"},
         agent.OCF_SUCCESS),
        ("monitor", {}, agent.OCF_NOT_RUNNING),
    ],
)  # fmt: skip
def test_command_line_codes(action, params, code):
    done = ocf(action, **params)
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr


def test_a_built_host_directory_validates():
    done = ocf("validate-all", pair="web1", node="node-a", artifacts_dir=str(ROOT / "out"))
    assert done.returncode == agent.OCF_SUCCESS, done.stderr


def test_install_writes_an_executable_agent(tmp_path):
    done = subprocess.run([sys.executable, "-m", "colospec", "ocf", "install", "--root",
                           str(tmp_path)], capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    script = tmp_path / "colospec" / "pair"
    assert script.stat().st_mode & 0o777 == 0o755
    meta = subprocess.run([str(script), "meta-data"], capture_output=True, text=True)
    assert meta.returncode == 0 and '<resource-agent name="pair"' in meta.stdout
