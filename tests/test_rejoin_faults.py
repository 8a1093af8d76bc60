"""Faults during re-protection, on a real pair: the host that serves alone copies its disk
to a host that joins it (README, Re-protection), and something breaks mid-copy.

Every scenario starts the same way: a COLO pair (a primary, b secondary), b's QEMU is
killed, a serves alone, and 48 MiB of real data are written on a (the copy of a sparse
64 MiB disk would otherwise finish in ~150 ms). The replication link (rep0 in both hosts'
namespaces) is slowed with a token bucket, so the copy takes seconds and the fault lands
mid-mirror: the test waits until the serving runner's `resync` block job has copied part
of the disk. Then, whatever the fault, colospec promises:

- the serving host rolls back and serves on: its VM runs, no `resync` job, no replication
  child or NBD node, no COLO filter is left (its QEMU's state is what it was before the
  join), and its phase goes back to `alone`;
- the joiner never serves (its QEMU is never running outside COLO secondary mode);
- a joiner that can retry ends protected and holds the data; one that cannot exits 1,
  its QEMU gone and its disk marked stale.

The faults: 1. the joiner's QEMU killed, 2. the joiner's runner stopped for more than
5 s, 3. the serving host's QEMU killed, 4. the replication link blackholed mid-copy (the
copy stalls for 30 s), 5. the replication link dead before the copy connects (QEMU 7.2's
NBD connect blocks its monitor: bounded by open-timeout, and a hung QEMU serving alone is
never killed).

Who serves is asked of QEMU itself (faults.view), sampled in the background throughout.
Firmware-only guests under KVM with Debian's QEMU 7.2.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from faults import (
    HostView,
    image_has,
    live_qemu_pid,
    nft_table,
    qmp,
    runner_status,
    serving,
    view,
    write_pattern,
)
from pairlab import PairLab

pytestmark = pytest.mark.integration

MIB = 1 << 20
DATA_MIB = 48
DATA = 0x5A  # the 48 MiB written on the serving host before the join
LATER, LATER_AT = 0xC3, 56 * MIB  # one more write while it serves alone after a rollback
CHECK_AT = (0, 16 * MIB, 32 * MIB, DATA_MIB * MIB - 64 * 1024)
# 48 MiB through 80 Mbit/s: the copy takes ~5.5 s here; 24 Mbit/s: ~17 s.
SLOW, SLOWER = "80mbit", "24mbit"
JOB = "resync"  # plan.json resync.job
# What the serving host's QEMU may hold only during a re-protection (qmp/71..73).
RESYNC_NODES = {"resync0", "replication0", "nbd0"}
COLO_OBJECTS = {"m0", "redire0", "redire1", "comp0", "iothread1"}
JOIN_SILENCE_S = 5.0  # steps.JOIN_SILENCE_S
MIRROR_STALL_S = 30  # resync.MIRROR_STALL_S
# The serving guest stops only from `stop` (attach) until COLO's first checkpoint, or in a
# rollback after a hung `stop` (2 s, then a yank): never longer than this.
MAX_PAUSE_S = 3.0


# ----- the pair and the data ---------------------------------------------------------------


@pytest.fixture
def lab():
    with PairLab(checkpoint_delay_ms=300, failover={"rejoin": "automatic"}) as lab:
        yield lab


def status(lab: PairLab, h: str) -> dict[str, Any]:
    return lab.ask(h, {"cmd": "status"})


def write_big(lab: PairLab, h: str, pattern: int, offset: int, length: int) -> None:
    """One big write through host h's guest drive (HMP qemu-io: the result is printed on
    QEMU's stdout, the runner's log, not in the QMP reply)."""
    log = lab.logs[h]
    before = log.stat().st_size
    line = f'qemu-io colo-disk0 "write -P {pattern:#x} {offset} {length}"'
    reply = qmp(lab, h, "human-monitor-command", **{"command-line": line})
    assert not reply.strip(), f"HMP {line!r}: {reply}"
    done = f"wrote {length}/{length} bytes at offset {offset}"

    def written() -> bool:
        with log.open("rb") as f:
            f.seek(before)
            out = f.read().decode(errors="replace")
        assert "write failed" not in out, out
        return done in out

    lab.wait_for(f"{h}: {line}", written, timeout=30)


def a_serves_alone_with_data(lab: PairLab) -> dict[str, Any]:
    """COLO, then b's QEMU dies: a serves alone and gets 48 MiB b does not have. Returns
    a's QEMU state then (what a rollback must come back to)."""
    lab.start("b")
    lab.start("a")
    lab.wait_colo()
    lab.kill_qemu("b")
    lab.wait_for("a serves alone", lambda: status(lab, "a")["phase"] == "alone", 30)
    lab.wait_for("runner b exits", lambda: lab.procs["b"].poll() is not None, 30)
    write_big(lab, "a", DATA, 0, DATA_MIB * MIB)
    assert not any(image_has(lab, "b", DATA, at) for at in CHECK_AT), "b has the data already"
    return qemu_state(lab, "a")


def qemu_state(lab: PairLab, h: str) -> dict[str, Any]:
    """Host h's QEMU as far as re-protection changes it."""
    return {
        "vm": qmp(lab, h, "query-status")["status"],
        "colo": qmp(lab, h, "query-colo-status")["mode"],
        "jobs": sorted(j["device"] for j in qmp(lab, h, "query-block-jobs")),
        "nodes": sorted(n["node-name"] for n in qmp(lab, h, "query-named-block-nodes")),
        "objects": sorted(o["name"] for o in qmp(lab, h, "qom-list", path="/objects")),
        "chardevs": sorted(c["label"] for c in qmp(lab, h, "query-chardev")),
    }


# ----- faults and observation ---------------------------------------------------------------


def _tc(lab: PairLab, h: str, *args: str, check: bool = True) -> None:
    subprocess.run(["tc", "-n", lab.ns[h], "qdisc", *args], check=check, capture_output=True,
                   text=True, timeout=10)  # fmt: skip


@contextlib.contextmanager
def slow_replication(lab: PairLab, rate: str) -> Iterator[Callable[[], None]]:
    """Both hosts' replication interface (rep0) sends at most `rate` (a token bucket). Yields
    a function that lifts the limit early; it is lifted on the way out anyway."""
    for h in ("a", "b"):
        _tc(lab, h, "replace", "dev", "rep0", "root", "tbf", "rate", rate, "burst", "64kb",
            "latency", "100ms")  # fmt: skip

    def lift() -> None:
        for h in ("a", "b"):
            _tc(lab, h, "del", "dev", "rep0", "root", check=False)  # already gone: fine

    try:
        yield lift
    finally:
        lift()


@contextlib.contextmanager
def replication_blackholed(lab: PairLab) -> Iterator[None]:
    """Every packet in or out of rep0 is dropped, on both hosts (the LAN path, and so
    its heartbeats, stays up). Undone on the way out."""
    chains = (
        "  chain i { type filter hook input priority -300; policy accept;\n"
        '    iifname "rep0" drop\n  }\n'
        "  chain o { type filter hook output priority -300; policy accept;\n"
        '    oifname "rep0" drop\n  }'
    )
    with nft_table(lab, "a", chains), nft_table(lab, "b", chains):
        yield


def resync_job(lab: PairLab, h: str = "a") -> dict[str, Any] | None:
    return next((j for j in qmp(lab, h, "query-block-jobs") if j["device"] == JOB), None)


def wait_mid_mirror(lab: PairLab, h: str = "a") -> dict[str, Any]:
    """The serving host's copy has begun, and at least 16 MiB are still to go."""

    def midway() -> dict[str, Any] | None:
        job = resync_job(lab, h)
        if job and 2 * MIB <= job["offset"] <= job["len"] - 16 * MIB:
            return job
        return None

    job = lab.wait_for("the disk copy under way", midway, timeout=60, every=0.02)
    assert job["len"] == lab.image_mib * MIB and not job.get("ready"), job
    return job


def wait_phase(lab: PairLab, h: str, phase: str, timeout: float) -> float:
    lab.wait_for(f"{h} in phase {phase}", lambda: status(lab, h)["phase"] == phase, timeout,
                 every=0.02)  # fmt: skip
    return time.monotonic()


def wait_protected(lab: PairLab, primary: str = "a", secondary: str = "b",
                   timeout: float = 60) -> None:  # fmt: skip
    def both() -> bool:
        p, s = status(lab, primary), status(lab, secondary)
        return (p["colo_mode"], s["colo_mode"], p["protected"], s["protected"]) == (
            "primary", "secondary", True, True)  # fmt: skip

    lab.wait_for(f"{primary} protected by {secondary}", both, timeout=timeout)


def assert_rolled_back(lab: PairLab, before: dict[str, Any]) -> None:
    """Right after phase alone: the serving QEMU is back to its state before the join."""
    after = qemu_state(lab, "a")
    assert after["vm"] == "running", after
    assert after["colo"] == "none", after
    assert JOB not in after["jobs"], f"the copy job is left: {after['jobs']}"
    assert not RESYNC_NODES & set(after["nodes"]), f"block nodes left: {after['nodes']}"
    assert not COLO_OBJECTS & set(after["objects"]), f"objects left: {after['objects']}"
    assert after == before, f"not as before the join:\nbefore {before}\nafter  {after}"
    assert "re-protection rolled back" in lab.log_text("a")


class Sampler:
    """Samples who serves (faults.view: QEMU's own run state and COLO mode), one thread
    per host, so a stopped runner's slow answers do not hide the other host."""

    def __init__(self, lab: PairLab):
        self.lab = lab
        self.samples: dict[str, list[tuple[float, HostView]]] = {"a": [], "b": []}
        self._done = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(h,), daemon=True)
                         for h in ("a", "b")]  # fmt: skip

    def _run(self, h: str) -> None:
        while not self._done.is_set():
            with contextlib.suppress(Exception):  # a lab being torn down, say
                self.samples[h].append((time.monotonic(), view(self.lab, h)))
            self._done.wait(0.05)

    def __enter__(self) -> Sampler:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        for t in self._threads:
            t.join(timeout=10)

    def served(self, h: str) -> list[str]:
        return [f"{t:.2f} {v}" for t, v in self.samples[h] if v.serves]

    def longest_pause(self, h: str) -> float:
        """The longest stretch during which host h's samples said it did not serve."""
        longest, since = 0.0, None
        for t, v in self.samples[h]:
            if not v.serves and since is None:
                since = t
            elif v.serves and since is not None:
                longest, since = max(longest, t - since), None
        if since is not None:
            longest = max(longest, self.samples[h][-1][0] - since)
        return longest


def assert_serving_history(lab: PairLab, seen: Sampler, max_pause: float | None) -> None:
    """b (the joiner) never served; a served throughout, but for pauses up to max_pause
    (None: a's QEMU was killed by the test, its pauses say nothing)."""
    assert len(seen.samples["a"]) > 20 and len(seen.samples["b"]) > 5, "too few samples"
    assert not seen.served("b"), (
        f"the joiner served the guest:\n{seen.served('b')[:5]}\n{lab.describe()}"
    )
    if max_pause is not None:
        pause = seen.longest_pause("a")
        assert pause < max_pause, f"the serving guest did not serve for {pause:.1f} s"


# ----- 1. the joiner's QEMU killed mid-copy ------------------------------------------------


def test_joiner_qemu_killed_mid_mirror_rolls_back_and_the_retry_protects(lab):
    before = a_serves_alone_with_data(lab)
    pid_a = live_qemu_pid(lab, "a")
    with Sampler(lab) as seen, slow_replication(lab, SLOW) as lift:
        lab.start("b")
        wait_mid_mirror(lab)
        b = status(lab, "b")
        assert b["phase"] == "joining" and b["disk"]["stale"] is True, b
        os.kill(live_qemu_pid(lab, "b"), signal.SIGKILL)  # its runner must retry, not exit
        killed = time.monotonic()
        rolled_back = wait_phase(lab, "a", "alone", 15)
        assert_rolled_back(lab, before)
        assert rolled_back - killed < JOIN_SILENCE_S + 1, "the rollback waited for silence"
        lift()
        write_pattern(lab, "a", LATER_AT, LATER)  # alone again: b's next copy must carry it
        wait_protected(lab)
    assert live_qemu_pid(lab, "a") == pid_a, "the serving QEMU was replaced"
    assert_serving_history(lab, seen, MAX_PAUSE_S)
    log_b = lab.log_text("b")
    assert "failed (attempt 1 of 3)" in log_b and "attempt 2 of 3" not in log_b, log_b[-3000:]
    a, b = status(lab, "a"), status(lab, "b")
    assert b["disk"] == {"epoch": a["epoch"], "stale": False}, b
    assert a["last_resync"] and a["last_resync"]["stages_ms"]["mirror"] > 0, a
    for at in CHECK_AT:
        assert image_has(lab, "b", DATA, at), f"b lacks the data at {at}"
    assert image_has(lab, "b", LATER, LATER_AT), "b lacks the write made after the rollback"


# ----- 2. the joiner's runner stalls mid-copy -----------------------------------------------


def test_joiner_runner_stalled_mid_mirror_rolls_back_and_never_serves(lab):
    before = a_serves_alone_with_data(lab)
    with Sampler(lab) as seen, slow_replication(lab, SLOWER) as lift:
        lab.start("b")
        wait_mid_mirror(lab)
        runner_b = lab.procs["b"].pid
        os.kill(runner_b, signal.SIGSTOP)  # its QEMU, and so its NBD export, go on
        stopped_at = time.monotonic()
        try:
            rolled_back = wait_phase(lab, "a", "alone", JOIN_SILENCE_S + 5)
            assert_rolled_back(lab, before)
            time.sleep(max(0.0, stopped_at + JOIN_SILENCE_S + 1.5 - time.monotonic()))
        finally:
            os.kill(runner_b, signal.SIGCONT)
        silent = rolled_back - stopped_at
        assert JOIN_SILENCE_S - 0.5 < silent < JOIN_SILENCE_S + 3, (
            f"rolled back after {silent:.1f} s"
        )
        lift()
        wait_protected(lab)
    assert_serving_history(lab, seen, MAX_PAUSE_S)
    assert lab.procs["b"].poll() is None, "the joiner's runner exited"
    assert "went silent" in lab.log_text("a")
    assert "failed (attempt 1 of 3)" in lab.log_text("b")
    for at in CHECK_AT:
        assert image_has(lab, "b", DATA, at), f"b lacks the data at {at}"


# ----- 3. the serving host's QEMU dies mid-copy ---------------------------------------------


def test_serving_qemu_killed_mid_mirror_the_joiner_gives_up_and_never_serves(lab):
    a_serves_alone_with_data(lab)
    with Sampler(lab) as seen, slow_replication(lab, SLOW):
        lab.start("b")
        wait_mid_mirror(lab)
        lab.kill_qemu("a")
        lab.expect_running.discard("b")  # it may give up: that is what is tested
        lab.wait_for("runner a exits", lambda: lab.procs["a"].poll() is not None, 30)
        lab.wait_for("runner b gives up", lambda: lab.procs["b"].poll() is not None, 60)
        assert serving(lab) == set()
    assert_serving_history(lab, seen, None)
    assert lab.procs["b"].returncode == 1, lab.describe()
    assert "failed (attempt 3 of 3)" in lab.log_text("b"), lab.describe()
    assert live_qemu_pid(lab, "b") is None, "the joiner's QEMU outlived its runner"
    assert runner_status(lab, "b") is None
    offline = lab.status("b")  # colospec status --json, no runner
    assert offline["runner"] == "not running" and offline["qemu_pid"] is None, offline
    assert offline["disk"]["stale"] is True, offline
    assert offline["protected"] is False, offline


# ----- 4. the replication link blackholed mid-copy ------------------------------------------


def test_replication_blackholed_mid_mirror_stalls_rolls_back_and_rejoins(lab):
    before = a_serves_alone_with_data(lab)
    with Sampler(lab) as seen, slow_replication(lab, SLOW) as lift:
        lab.start("b")
        wait_mid_mirror(lab)
        with replication_blackholed(lab):
            dropped = time.monotonic()
            time.sleep(1.0)  # what was on the wire drains, or is lost
            stalled = resync_job(lab)["offset"]
            time.sleep(3.0)
            assert resync_job(lab)["offset"] == stalled, "the copy went on over a dropped link"
            a = status(lab, "a")
            assert a["peer"]["paths"] == ["lan"], f"heartbeats not on the LAN only: {a['peer']}"
            assert a["phase"] == "resyncing", a
            rolled_back = wait_phase(lab, "a", "alone", MIRROR_STALL_S + 15)
        # Lifted at once: the joiner retries 2 s after the rollback (test 5 is the case of
        # a link still dead then).
        lift()
        assert_rolled_back(lab, before)
        took = rolled_back - dropped
        assert MIRROR_STALL_S - 2 < took < MIRROR_STALL_S + 10, f"rolled back after {took:.1f} s"
        assert f"no progress for {MIRROR_STALL_S} s" in lab.log_text("a")
        wait_protected(lab)
    assert_serving_history(lab, seen, MAX_PAUSE_S)
    assert "failed (attempt 1 of 3)" in lab.log_text("b")
    for at in CHECK_AT:
        assert image_has(lab, "b", DATA, at), f"b lacks the data at {at}"


# ----- 5. the replication link dead when the copy starts ------------------------------------


def test_replication_blackholed_when_the_copy_starts_keeps_the_guest_serving(lab):
    """The joiner's heartbeats and export report arrive over the LAN, but its replication
    address is dead (a firewall, a cable): the serving host's copy cannot even connect.
    It must roll back and serve on, not lose the guest; once the link is back, the
    joiner joins (its own retries, or a restart with --rejoin once they are used up)."""
    a_serves_alone_with_data(lab)
    pid_a = live_qemu_pid(lab, "a")
    with Sampler(lab) as seen:
        with replication_blackholed(lab):
            lab.start("b")
            lab.expect_running.discard("b")  # it may use up its attempts: allowed here
            wait_phase(lab, "a", "resyncing", 30)
            deadline = time.monotonic() + 20  # past two of the joiner's attempts
            while time.monotonic() < deadline:
                assert live_qemu_pid(lab, "a") == pid_a, (
                    f"the serving host's QEMU is gone while it re-protected\n{lab.describe()}"
                )
                assert lab.procs["a"].poll() is None, f"runner a exited\n{lab.describe()}"
                time.sleep(0.1)
        wait_phase(lab, "a", "alone", 30)
        assert qemu_state(lab, "a")["vm"] == "running"
        if lab.procs["b"].poll() is not None:
            assert lab.procs["b"].returncode == 1, lab.describe()
            lab.start("b", "--rejoin")
        wait_protected(lab)
    assert live_qemu_pid(lab, "a") == pid_a
    # Each failed connect may hold a's monitor (so its main loop) up to a bounded timeout.
    assert_serving_history(lab, seen, 2 * MAX_PAUSE_S)
    for at in CHECK_AT:
        assert image_has(lab, "b", DATA, at), f"b lacks the data at {at}"
