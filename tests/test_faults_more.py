"""More messy faults on a real pair: every TCP port the pair uses refused, the heartbeat port
refused, one-way loss on the LAN, a flapping replication link, the runner killed at every
command of both failover scripts, and a frozen primary while the secondary's runner
restarts.

Each test holds the pair to the same invariants as tests/test_faults.py, judged from QEMU
and the kernel rather than from what the runners believe:

- after faults.SETTLE_S at most one host serves the guest (QEMU's run state and COLO mode);
- no runner's status says `protected: true` unless both QEMUs are in COLO mode
  (query-colo-status: primary and secondary), checkpoints advance (the COLO stream's
  acknowledged bytes grow: COLO sends on it only at checkpoints) and the primary's guest
  drive still has its replication child (query-block) with its NBD connection (ss);
- a write acknowledged through the primary's guest drive (colo-disk0) and carried by a
  checkpoint is readable on whichever host serves at the end.

Where the rule table (colospec/runner/machine.py) makes a fault's outcome certain, the
test asserts exactly that outcome (who serves, who stood down, or that nothing changed)
and names the rule.

Firmware-only pairs under KVM (a pair is up in about two seconds), checkpoints every
300 ms.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from faults import (
    SETTLE_S,
    Invariants,
    claims_protection,
    colo_stream_acked,
    drive_id,
    drop_one_way,
    established,
    flap_link,
    frozen,
    live_qemu_pid,
    path_address,
    peer,
    qmp,
    read_pattern,
    refuse_new_connections,
    refuse_udp,
    reset_connections,
    runner_status,
    settle,
    views,
    watch_serving,
    write_pattern,
)
from netns import ip, kill_all_in
from pairlab import REPLICATION, PairLab, reap_orphans

pytestmark = pytest.mark.integration

# pairlab.py's spec: replication.ports, and the heartbeat port colospec derives.
MIGRATION_PORT, NBD_PORT, MIRROR_PORT, COMPARE_PORT = 8888, 8889, 9003, 9004
HEARTBEAT_PORT = 8890
CHECKPOINT_DELAY_MS = 300
# A 64 KiB write no firmware guest touches, written before every fault.
OFFSET, PATTERN = 2 << 20, 0x5C
# ... and one written during a fault, on the host expected to serve on.
LATE_OFFSET, LATE_PATTERN = 3 << 20, 0xC3
EXIT_FENCED = 4  # `colospec run`'s exit code after standing down
# How long "nothing changed" is watched: longer than every rule's trigger (the heartbeat
# budget, and checkpoints-stalled at 3 delays + 2 s).
QUIET_S = SETTLE_S + 0.5
# The window over which checkpoints must advance: several checkpoint delays.
ADVANCE_S = 1.0
# How long a restarted runner must keep running, serving, after settling.
KEEPS_RUNNING_S = ADVANCE_S
LOG_POLL_S = 0.001  # the runner's log is tailed this often while waiting to kill it
FAILOVER_SCRIPTS = {
    "a": "90-failover-as-primary.json",  # the primary drops its secondary
    "b": "91-failover-as-secondary.json",  # the secondary takes over
}


def reset(lab: PairLab) -> None:
    """Back to a lab where nothing runs: every process in the hosts' namespaces killed and
    reaped, our nft tables gone, every link up, the guest's taps, run and state
    directories, runner logs and scratch disks removed, and fresh empty images (so no test
    reads another's write or inherits its epochs). What is left is what PairLab built: the
    namespaces, links and artifacts."""
    for h in ("a", "b"):
        kill_all_in(lab.ns[h])
    for proc in lab.procs.values():
        proc.wait(timeout=10)
    reap_orphans()
    for h in ("a", "b"):
        ns = lab.ns[h]
        for dev in ("rep0", "uplink"):
            ip("link", "set", dev, "up", netns=ns)
        tap = json.loads((lab.host_dir(h) / "plan.json").read_text())["network"]["tap"]
        ip("link", "del", tap, netns=ns, check=False)
        subprocess.run(
            ["ip", "netns", "exec", ns, "nft", "flush", "ruleset"],
            check=True,
            capture_output=True,
            timeout=10,
        )
        shutil.rmtree(lab.run_dir(h), ignore_errors=True)
        shutil.rmtree(lab.tmp / h / "scratch", ignore_errors=True)
        image = lab.tmp / h / "disk.raw"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "raw", str(image), f"{lab.image_mib}M"],
            check=True,
            timeout=30,
        )
        for state_dir in runner_state_dirs(lab, h):
            shutil.rmtree(state_dir, ignore_errors=True)
    for log in lab.logs.values():
        log.unlink(missing_ok=True)
    lab.procs, lab.logs, lab.expect_running = {}, {}, set()


def runner_state_dirs(lab: PairLab, h: str) -> list[Path]:
    """Where host h's runner keeps state across runs besides its run directory (plan.json's
    state_dir, when the plan has one): only paths named after this lab and host."""
    plan = json.loads((lab.host_dir(h) / "plan.json").read_text())
    dirs = [Path(plan[key]) for key in ("state_dir",) if plan.get(key)]
    return [d for d in dirs if lab.name in d.parts and lab.hosts[h] in d.parts]


def close_lab(lab: PairLab) -> None:
    """PairLab.close(), and the runners' state directories should they lie outside it."""
    dirs = [d for h in ("a", "b") for d in runner_state_dirs(lab, h)]
    lab.close()
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
        with contextlib.suppress(OSError):
            d.parent.rmdir()  # the pair's directory, once both hosts' are gone


@pytest.fixture(scope="module")
def labs() -> Iterator[list[PairLab]]:
    """One PairLab for the module (namespaces, links, build: about two seconds each time),
    reset between tests; replaced by a new one whenever a reset fails."""
    held: list[PairLab] = []
    try:
        yield held
    finally:
        for lab in held:
            close_lab(lab)


@pytest.fixture
def lab(labs: list[PairLab]) -> Iterator[PairLab]:
    if not labs:
        labs.append(PairLab(checkpoint_delay_ms=CHECKPOINT_DELAY_MS).__enter__())
    lab = labs[0]
    try:
        yield lab
    finally:
        try:
            reset(lab)
        except BaseException:
            labs.clear()
            close_lab(lab)
            raise


def bring_up(lab: PairLab, *extra: str) -> PairLab:
    """Both runners up, COLO on both paths, and one write through the primary's guest
    drive carried to the secondary by a checkpoint (the secondary's disk holds it only
    as of the next checkpoint)."""
    lab.start("b", *extra)
    lab.start("a", *extra)
    lab.wait_colo()
    # COLO mode comes before the first checkpoint, and QEMU 7.2's primary starts its
    # replication child only then (its guest is paused until it has): a write through the
    # monitor in between fails on the replication child, and the runner rightly drops the
    # secondary (seen here under load). A guest cannot write in that window; a test can.
    lab.wait_for("the first checkpoint", lambda: (checkpoints(lab) or 0) >= 1, 30)
    write_pattern(lab, "a", OFFSET, PATTERN)
    wait_checkpoints(lab, 2)
    # Runners may exit under these faults (fenced, QEMU gone); the tests judge the guest.
    lab.expect_running.clear()
    return lab


@pytest.fixture
def pair(lab):
    return bring_up(lab)


@pytest.fixture
def verbose_pair(lab):
    """Runners that log every QMP command they send ("QMP -> name arguments")."""
    return bring_up(lab, "--verbose")


# ----- helpers ------------------------------------------------------------------------------


def checkpoints(lab: PairLab, h: str = "a") -> int | None:
    s = runner_status(lab, h)
    return None if s is None else s.get("checkpoints")


def wait_checkpoints(lab: PairLab, n: int) -> None:
    start = checkpoints(lab) or 0
    lab.wait_for(f"{n} checkpoint(s)", lambda: (checkpoints(lab) or 0) >= start + n, 30)


def wait_runner_answers(lab: PairLab, h: str, timeout: float = 30) -> None:
    """A (re)started runner is up once its control socket answers, or it exited."""
    deadline = time.monotonic() + timeout
    while runner_status(lab, h) is None and lab.procs[h].poll() is None:
        assert time.monotonic() < deadline, f"runner {h} never answered\n{lab.describe()}"
        time.sleep(0.02)


def wait_exit(lab: PairLab, h: str, timeout: float) -> int | None:
    """Host h's runner's exit code once it exits within `timeout`, else None."""
    with contextlib.suppress(Exception):
        return lab.procs[h].wait(timeout=timeout)
    return None


def decisions(lab: PairLab, h: str) -> list[str]:
    """The runner's decision, hold and failover lines: the evidence a failing test shows."""
    keys = ("decision ", "holding (", "FAILOVER", "failover ", "fenced", "adopted", "watching",
            "never began", "resum", "paus")  # fmt: skip
    return [line for line in lab.log_text(h).splitlines() if any(k in line for k in keys)]


def replicating(lab: PairLab, h: str = "a") -> bool | None:
    """Does host h's guest drive still write to the secondary: has its quorum a replication
    child (x-blockdev-change takes it out when the primary drops its secondary), and is
    that child's NBD connection to the secondary's export established (a yank or a reset
    ends it)? None when QEMU does not answer."""
    try:
        devices = qmp(lab, h, "query-block")
    except RuntimeError:
        return None
    child = False
    for device in devices:
        if device.get("device") == drive_id(lab, h) and device.get("inserted"):
            spec = device["inserted"]["file"].removeprefix("json:")
            children = json.loads(spec).get("children", []) if spec.startswith("{") else []
            child = any(c.get("driver") == "replication" for c in children)
    return child and established(lab, h, REPLICATION[peer(h)], NBD_PORT) > 0


def check_protection_truthful(
    inv: Invariants, lab: PairLab, when: str, during: Callable[[], Any] = lambda: None
) -> dict[str, Any]:
    """No runner says protected: true unless both QEMUs are in COLO mode, the primary's
    guest drive replicates, and checkpoints advance. Claims and facts are sampled together
    at both ends of a window of several checkpoint delays (at least ADVANCE_S, or while
    `during()` runs): each claim is judged by QEMU's modes and the drive at its moment, a
    claim at the end also by the COLO stream's acknowledged bytes across the window.
    Returns the statuses at its end."""

    def sample() -> tuple[dict[str, Any], dict[str, Any], bool | None, int | None]:
        status = {h: runner_status(lab, h) for h in ("a", "b")}
        return status, views(lab), replicating(lab), colo_stream_acked(lab)

    t0 = time.monotonic()
    first = sample()
    during()
    time.sleep(max(0.0, ADVANCE_S - (time.monotonic() - t0)))
    last = sample()
    acked0, acked1 = first[3], last[3]
    advancing = acked0 is not None and acked1 is not None and acked1 > acked0
    for moment, (status, seen, replicates, _) in (("start", first), ("end", last)):
        claimants = [h for h in ("a", "b") if claims_protection(status[h])]
        if not claimants:
            continue
        in_colo = (seen["a"].colo_mode, seen["b"].colo_mode) == ("primary", "secondary")
        inv.check(
            in_colo and bool(replicates) and (advancing or moment == "start"),
            f"{when}: at the {moment} of a {ADVANCE_S} s window {claimants} claim protected: "
            f"true, but QEMU says [{seen['a']}; {seen['b']}], the primary's guest drive "
            f"{'replicates' if replicates else 'has no replication child or NBD connection'}, "
            f"and the COLO stream's acked bytes went {acked0} -> {acked1}",
        )
    return last[0]


def check_unchanged(inv: Invariants, lab: PairLab, pids: dict[str, int | None], when: str) -> None:
    """Nothing changed: over QUIET_S the primary alone serves throughout, both QEMUs are
    the same processes in the same COLO modes, both runners run, say protected: true and
    are right to (checkpoints advance)."""
    seen: list[set[str]] = []
    status = check_protection_truthful(
        inv, lab, when, lambda: seen.extend(watch_serving(lab, QUIET_S))
    )
    inv.check(seen == [{"a"}], f"{when}: serving hosts over {QUIET_S} s: {seen} (want only a)")
    now = views(lab)
    for h, mode in (("a", "primary"), ("b", "secondary")):
        inv.check(
            now[h].pid == pids[h] and now[h].colo_mode == mode,
            f"{when}: {h} is no longer the same COLO {mode}: {now[h]}",
        )
        inv.check(
            lab.procs[h].poll() is None, f"{when}: {h}'s runner exited ({lab.procs[h].returncode})"
        )
    for h in ("a", "b"):
        s = status[h]
        inv.check(
            s is not None and s.get("protected") is True and s.get("phase") == "colo",
            f"{when}: {h}'s runner should say protected (nothing changed): "
            f"{s and {k: s.get(k) for k in ('phase', 'protected', 'peer')}}",
        )


def check_one_serves(
    inv: Invariants,
    lab: PairLab,
    server: str,
    pids: dict[str, int | None],
    when: str,
    late: bool = False,
) -> None:
    """`server` serves alone after settling (the same QEMU as before the fault), the other
    host stood down (its runner exited 4, its QEMU gone), nobody claims protection, and
    both writes are on the server."""
    final = settle(lab)
    inv.check(final == {server}, f"{when}: {sorted(final)} serve (want {server} alone)")
    other = peer(server)
    rc = wait_exit(lab, other, SETTLE_S)
    inv.check(
        rc == EXIT_FENCED,
        f"{when}: {other} should have stood down (exit "
        f"{EXIT_FENCED}); its runner {'runs' if rc is None else f'exited {rc}'}",
    )
    inv.check(live_qemu_pid(lab, other) is None, f"{when}: {other}'s QEMU still runs")
    inv.check(live_qemu_pid(lab, server) == pids[server], f"{when}: {server}'s QEMU was replaced")
    s = runner_status(lab, server)
    inv.check(
        s is not None
        and (s["role"], s["phase"], s["colo_mode"]) == ("primary", "alone", "none")
        and s["protected"] is False,
        f"{when}: {server}'s runner: {s and {k: s.get(k) for k in ('role', 'phase', 'colo_mode', 'protected')}}",
    )
    check_writes(inv, lab, final, when, late)


def check_writes(
    inv: Invariants, lab: PairLab, final: set[str], when: str, late: bool = False
) -> None:
    for h in sorted(final):
        inv.check(
            read_pattern(lab, h, OFFSET, PATTERN),
            f"{when}: {h} serves but lost the write made before the fault",
        )
        if late:
            inv.check(
                read_pattern(lab, h, LATE_OFFSET, LATE_PATTERN),
                f"{when}: {h} serves but lost the write made during the fault",
            )


def qemu_pids(lab: PairLab) -> dict[str, int | None]:
    return {h: live_qemu_pid(lab, h) for h in ("a", "b")}


# ----- 1. every TCP port of the pair refused, its established connection reset -------------

# (name, the host that listens, the port, what the rule table makes of it)
TCP_PORTS = [
    # The primary's migration client is reset and its reconnection refused: both QEMUs
    # report COLO_EXIT (reason error). a: `colo-stream-broken` -> drop; b: `stale-secondary`
    # (its stream broke while the primary ran on) or `primary-dropped-us` -> fence.
    ("migration", "b", MIGRATION_PORT, "a-alone"),
    # The primary's replication NBD client is reset and cannot reconnect: the write made
    # during the fault fails on the replication child (QUORUM_REPORT_BAD).
    # a: `replication-child-failed` -> drop; b: `primary-dropped-us` -> fence.
    ("nbd-export", "b", NBD_PORT, "a-alone"),
    # The primary's liveness beacon: nothing holds a connection to it (`ss -K` finds none)
    # and a refused probe matters only with silence or a broken stream: no rule matches.
    ("nbd-beacon", "a", NBD_PORT, "unchanged"),
    # The secondary's redirector chardevs (red0 -> mirror0, red1 -> compare1) are reset and
    # their reconnections (every second) refused. No QMP event, heartbeats on both paths,
    # checkpoints go on: no rule matches (`secondary-silent` judges only an established
    # compare connection, and a firmware guest sends nothing anyway).
    ("mirror", "a", MIRROR_PORT, "unchanged"),
    ("compare", "a", COMPARE_PORT, "unchanged"),
]


@pytest.mark.parametrize("how", ["tcp reset", "icmp"])
@pytest.mark.parametrize(
    ("name", "listener", "port", "expect"), TCP_PORTS, ids=[c[0] for c in TCP_PORTS]
)
def test_port_refused_and_connection_reset(pair, name, listener, port, expect, how):
    client = peer(listener)
    pids = qemu_pids(pair)
    inv = Invariants(pair)
    when = f"{name} port {port} refused ({how}) and reset"
    with refuse_new_connections(pair, listener, port, REPLICATION[client], how):
        reset = reset_connections(pair, client, REPLICATION[listener], port)
        wanted = 0 if name == "nbd-beacon" else 1
        assert reset == wanted, (
            f"{when}: `ss -K` reset {reset} connection(s), want {wanted}\n{pair.describe()}"
        )
        if expect == "unchanged":
            check_unchanged(inv, pair, pids, when)
        else:
            write_pattern(pair, "a", LATE_OFFSET, LATE_PATTERN)  # the guest is told: done
            check_one_serves(inv, pair, "a", pids, when, late=True)
    inv.done()


# ----- 1b. the heartbeat port refused on one path ---------------------------------------------

UDP_CASES = [
    # b rejects a's heartbeats on the replication link: b's reports lack "replication".
    # a: `replication-deaf-one-way` -> drop; b meanwhile `replication-lost` (holds, never
    # promotes), then `primary-dropped-us` -> fence.
    ("replication", "a", "a-alone"),
    # a rejects b's heartbeats on the replication link: a's own `replication-lost` needs
    # the probe to find b's QEMU unreachable, and it answers (TCP passes): no rule
    # matches; the peer is heard on the LAN, so both stay protected.
    ("replication", "b", "unchanged"),
    # b rejects a's heartbeats on the LAN: only the replication path is watched for
    # deafness: no rule matches.
    ("lan", "a", "unchanged"),
]


@pytest.mark.parametrize(
    ("path", "sender", "expect"), UDP_CASES, ids=[f"{p}-from-{s}" for p, s, _ in UDP_CASES]
)
def test_heartbeat_port_refused_on_one_path(pair, path, sender, expect):
    receiver = peer(sender)
    pids = qemu_pids(pair)
    inv = Invariants(pair)
    when = f"{receiver} rejects {sender}'s heartbeats on {path} (icmp port-unreachable)"
    with refuse_udp(pair, receiver, HEARTBEAT_PORT, path_address(sender, path)):
        if expect == "unchanged":
            check_unchanged(inv, pair, pids, when)
            s = runner_status(pair, receiver)
            inv.check(
                s is not None and path not in s["peer"]["paths"],
                f"{when}: {receiver} still says it hears {sender} on {path}: {s and s['peer']}",
            )
        else:
            check_one_serves(inv, pair, "a", pids, when)
    inv.done()


# ----- 2. one-way loss on the LAN ---------------------------------------------------------------


@pytest.mark.parametrize("src", ["a", "b"], ids=["a_to_b", "b_to_a"])
def test_one_way_loss_on_the_lan(pair, src):
    """Everything `src` sends to its peer's LAN address is lost; replication intact. The
    peer is still heard on the replication link, so machine.protected() holds on both
    (it wants the peer heard on at least one path), the replication path is not deaf (no
    `replication-deaf-one-way`), and no silence rule can match: nothing changes, and each
    status says which path it hears on."""
    dst = peer(src)
    pids = qemu_pids(pair)
    inv = Invariants(pair)
    when = f"one-way loss {src} -> {dst} on the LAN"
    with drop_one_way(pair, src, path="lan"):
        check_unchanged(inv, pair, pids, when)
        paths = {h: (runner_status(pair, h) or {}).get("peer", {}).get("paths") for h in "ab"}
    inv.check(paths[dst] == ["replication"], f"{when}: {dst} hears on {paths[dst]}")
    inv.check(
        sorted(paths[src] or []) == ["lan", "replication"], f"{when}: {src} hears on {paths[src]}"
    )
    inv.done()


# ----- 3. a flapping replication link ----------------------------------------------------------

FLAP_S = 0.2


@pytest.mark.parametrize("h", ["a", "b"])
def test_replication_link_flap(pair, h):
    """rep0 down for 200 ms in one host (both ends lose carrier): shorter than the heartbeat
    budget, and TCP retransmits across it. Either COLO goes on with checkpoints advancing,
    or exactly one host serves and the other stood down; never both; status truthful."""
    pids = qemu_pids(pair)
    inv = Invariants(pair)
    when = f"rep0 down {FLAP_S * 1000:.0f} ms on {h}"
    flap_link(pair, h, "rep0", FLAP_S)
    final = settle(pair)
    inv.check(len(final) == 1, f"{when}: {sorted(final)} serve (want exactly one)")
    if final == {"a"} and views(pair)["b"].colo_mode == "secondary":
        check_unchanged(inv, pair, pids, when)  # COLO went on
    else:
        if len(final) == 1:
            check_one_serves(inv, pair, next(iter(final)), pids, when)
        check_protection_truthful(inv, pair, when)
    inv.done()


# ----- 4. the runner killed at every command of a failover script -----------------------------


def script(lab: PairLab, h: str, name: str) -> list[dict[str, Any]]:
    return json.loads((lab.host_dir(h) / "qmp" / name).read_text())


def qmp_log_line(command: dict[str, Any]) -> str:
    """How a --verbose runner logs a QMP command it sends (qemu_session.execute)."""
    return f"QMP -> {command['execute']} {command.get('arguments') or ''}"


def kill_runner_at(
    lab: PairLab, h: str, start: int, commands: list[dict[str, Any]], n: int
) -> list[str]:
    """SIGKILL host h's runner as soon as its log, from byte `start`, shows it sending the
    n-th (1-based) command of `commands` after its FAILOVER line. Returns the QMP lines it
    logged during the failover up to then (the command may or may not have reached QEMU:
    the runner logs it just before sending)."""
    wanted = [qmp_log_line(c) for c in commands]
    log, proc = lab.logs[h], lab.procs[h]
    deadline = time.monotonic() + 10
    pending, seen, failover, matched = b"", [], False, 0
    with log.open("rb") as f:
        f.seek(start)
        while True:
            pending += f.read()
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace")
                if not failover:
                    failover = "FAILOVER as" in line
                elif "QMP -> " in line:
                    seen.append(line[line.index("QMP -> ") :])
                    if matched < n and line.endswith(wanted[matched]):
                        matched += 1
                if matched == n:
                    proc.kill()
                    proc.wait()
                    return seen
            assert proc.poll() is None, (
                f"{h}'s runner exited ({proc.returncode}) first\n{lab.describe()}"
            )
            assert time.monotonic() < deadline, (
                f"{h}'s runner never sent command {n} ({wanted[n - 1]}); sent {seen}\n"
                f"{lab.describe()}"
            )
            time.sleep(LOG_POLL_S)


@contextlib.contextmanager
def in_background(call: Callable[[], Any]) -> Iterator[dict[str, Any]]:
    """Run `call` in a thread (say a control request the test is about to cut short);
    joined on the way out; its reply or error lands in the dict yielded."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["reply"] = call()
        except Exception as exc:  # the runner was killed under it: expected
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        thread.join(timeout=35)


def failover_commands() -> dict[str, list[str]]:
    """The command names of each host's failover script, from a build of the lab's spec
    (no namespaces needed): what the kill cases are parametrized over. Each test checks
    that its own lab's script has the same commands."""
    lab = PairLab(checkpoint_delay_ms=CHECKPOINT_DELAY_MS)
    try:
        lab._build()
        return {
            h: [c["execute"] for c in script(lab, h, name)] for h, name in FAILOVER_SCRIPTS.items()
        }
    finally:
        shutil.rmtree(lab.tmp, ignore_errors=True)


COMMANDS = failover_commands()
KILL_CASES = [
    pytest.param(h, n, id=f"{h}-{n:02d}-{name}")
    for h, names in COMMANDS.items()
    for n, name in enumerate(names, 1)
]


@pytest.mark.parametrize(("h", "n"), KILL_CASES)
def test_runner_killed_at_each_failover_command(verbose_pair, h, n):
    """The runner that fails over is SIGKILLed the moment it sends the n-th command of its
    script, then restarted: b's takeover after a's QEMU is killed (91-failover-as-
    secondary), or a's drop of its secondary on the operator's request while b is alive
    (90-failover-as-primary). The restarted runner resumes from its state file: the host
    that was failing over serves alone, its runner keeps running as primary, "alone";
    the other host does not serve."""
    lab = verbose_pair
    commands = script(lab, h, FAILOVER_SCRIPTS[h])
    assert [c["execute"] for c in commands] == COMMANDS[h], "the lab's script changed"
    pid = live_qemu_pid(lab, h)
    start = lab.logs[h].stat().st_size
    when = f"{h}'s runner killed at command {n}/{len(commands)} ({qmp_log_line(commands[n - 1])})"
    with contextlib.ExitStack() as stack:
        if h == "b":
            os.kill(live_qemu_pid(lab, "a"), signal.SIGKILL)
        else:
            s = runner_status(lab, "b")
            assert s is not None and s["colo_mode"] == "secondary" and s["phase"] == "colo", s
            stack.enter_context(in_background(lambda: lab.ask("a", {"cmd": "failover"})))
        sent = kill_runner_at(lab, h, start, commands, n)
    lab.start(h, "--verbose")
    wait_runner_answers(lab, h)
    inv = Invariants(lab)
    final = settle(lab)
    inv.check(
        final == {h},
        f"{when}: {sorted(final)} serve (want {h} alone); sent before the kill: {sent}",
    )
    check_protection_truthful(inv, lab, when)  # also the KEEPS_RUNNING_S it must run
    proc = lab.procs[h]
    inv.check(proc.poll() is None, f"{when}: the restarted runner exited ({proc.returncode})")
    inv.check(live_qemu_pid(lab, h) == pid, f"{when}: {h}'s QEMU is gone or replaced")
    s = runner_status(lab, h)
    inv.check(
        s is not None and (s["role"], s["phase"]) == ("primary", "alone"),
        f"{when}: the restarted runner's status: "
        f"{s and {k: s.get(k) for k in ('role', 'phase', 'colo_mode', 'protected')}}",
    )
    inv.check(
        serving_now(lab) == {h},
        f"{when}: {sorted(serving_now(lab))} serve {KEEPS_RUNNING_S} s later",
    )
    if h == "a":  # b was alive: `primary-dropped-us` -> fence
        rc = wait_exit(lab, "b", SETTLE_S)
        inv.check(
            rc == EXIT_FENCED,
            f"{when}: b should have stood down (exit {EXIT_FENCED}); "
            f"its runner {'runs' if rc is None else f'exited {rc}'}",
        )
    check_writes(inv, lab, final, when)
    if inv.broken:
        inv.broken.append(f"{h}'s decisions:\n  " + "\n  ".join(decisions(lab, h)))
    inv.done()


def test_drop_cut_short_then_primary_lost_keeps_the_write(verbose_pair):
    """The consequence of a drop cut short: a's runner is killed as it sends blockdev-del
    (the replication child is already out of the guest's drive), and restarted; then the
    guest writes on a, checkpoints go on, and a's QEMU dies. Whoever serves then must have
    that write. (A runner that forgot the half-done drop would leave a in COLO mode
    without replication: b keeps receiving checkpoints but no longer a's writes, and
    takes over without them.)"""
    lab = verbose_pair
    commands = script(lab, "a", FAILOVER_SCRIPTS["a"])
    n = next(i for i, c in enumerate(commands, 1) if c["execute"] == "blockdev-del")
    start = lab.logs["a"].stat().st_size
    when = f"a's drop cut short at command {n} ({qmp_log_line(commands[n - 1])}), then a lost"
    with in_background(lambda: lab.ask("a", {"cmd": "failover"})):
        kill_runner_at(lab, "a", start, commands, n)
    lab.start("a", "--verbose")
    wait_runner_answers(lab, "a")
    settle(lab)
    time.sleep(ADVANCE_S)  # past the restarted runner's first look (one budget)
    before = runner_status(lab, "a")
    write_pattern(lab, "a", LATE_OFFSET, LATE_PATTERN)  # the guest is told: done
    time.sleep(3 * CHECKPOINT_DELAY_MS / 1000)  # checkpoints carry it, if COLO goes on
    os.kill(live_qemu_pid(lab, "a"), signal.SIGKILL)
    inv = Invariants(lab)
    # Anyone who serves at any moment from now on (a set that is empty at first, while b
    # decides, must not end the look early).
    seen = watch_serving(lab, SETTLE_S)
    final = settle(lab)
    inv.check(len(final) <= 1, f"{when}: {sorted(final)} serve")
    for h in sorted(h for h in set().union(final, *seen) if live_qemu_pid(lab, h)):
        inv.check(
            read_pattern(lab, h, LATE_OFFSET, LATE_PATTERN),
            f"{when}: {h} serves without the write a's guest was told was done; a's "
            f"restarted runner had said "
            f"{before and {k: before.get(k) for k in ('phase', 'colo_mode', 'protected')}}",
        )
    if inv.broken:
        for x in ("a", "b"):
            inv.broken.append(f"{x}'s decisions:\n  " + "\n  ".join(decisions(lab, x)))
    inv.done()


def serving_now(lab: PairLab) -> set[str]:
    return {h for h, v in views(lab).items() if v.serves}


# ----- 5. the primary frozen while the secondary's runner restarts -----------------------------


@pytest.mark.parametrize("seconds", [0.6, 2.0])
def test_primary_frozen_while_secondary_runner_restarts(pair, seconds):
    """The primary's host stalls; at that very moment the secondary's runner is killed and
    started again, so the runner that must judge the silence has just adopted its QEMU
    with no report of its peer yet."""
    pids = qemu_pids(pair)
    inv = Invariants(pair)
    when = f"a frozen {seconds} s while b's runner restarts"
    with frozen(pair, "a"):
        t0 = time.monotonic()
        pair.procs["b"].kill()
        pair.procs["b"].wait()
        pair.start("b")
        time.sleep(max(0.0, seconds - (time.monotonic() - t0)))
    final = settle(pair)
    inv.check(len(final) == 1, f"{when}: {sorted(final)} serve (want exactly one)")
    if final == {"a"} and views(pair)["b"].colo_mode == "secondary":
        check_unchanged(inv, pair, pids, when)  # the stall was over before b acted
    else:
        if len(final) == 1:
            check_one_serves(inv, pair, next(iter(final)), pids, when)
        check_protection_truthful(inv, pair, when)
    if inv.broken:
        for h in ("a", "b"):
            inv.broken.append(f"{h}'s decisions:\n  " + "\n  ".join(decisions(pair, h)))
    inv.done()
