"""Messy faults for a PairLab pair, and the ground truth of who serves the guest.

The faults model what a real pair meets: a host that stalls (hypervisor pause, kernel
hiccup), a runner that stalls alone, a firewall that refuses one port, a link that loses
one direction, a TCP connection reset mid-stream. Every fault is a context manager that
undoes itself in `finally` (nft tables are deleted, stopped processes continued), so a
failing test leaves nothing behind; the nft tables live inside the lab's namespaces,
which PairLab deletes anyway. Only the lab's namespaces are ever touched.

Who serves is asked of QEMU itself (run state and COLO mode), never taken from a
runner's idea of its role: the invariants these tests hold the runner to are about the
guest, and a runner that believes the wrong thing is exactly what they look for.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient

from netns import ip
from pairlab import LAN, REPLICATION, PairLab

# The bound on "at most one host serves" after a fault ends: the runner's heartbeat
# budget (300 ms) plus a failover script and its retries fit well inside it.
SETTLE_S = 3.0
# How long the set of serving hosts must stay the same to count as settled.
STABLE_S = 0.5
# A QMP answer slower than this counts as none (a stopped or hung QEMU, or its runner).
QMP_TIMEOUT_S = 2.0
# Run states in which the guest executes: "colo" is the primary mid-checkpoint...
RUNNING_STATES = {"running", "colo"}
# ...but a checkpoint pauses the guest for tens of milliseconds: a VM still in "colo"
# after this long is stuck in a checkpoint that will not finish (a dead stream), and
# its guest does not run.
STUCK_CHECKPOINT_S = 1.0
# COLO modes whose guest output reaches the clients: a secondary's goes to colo-compare.
SERVING_MODES = {"primary", "none"}

_tables = itertools.count()
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)  # a refused greeting is expected


def peer(h: str) -> str:
    return "b" if h == "a" else "a"


# ----- nftables inside a lab host -------------------------------------------------------


def _nft(lab: PairLab, h: str, script: str) -> None:
    subprocess.run(["ip", "netns", "exec", lab.ns[h], "nft", "-f", "-"], input=script,
                   text=True, capture_output=True, check=True, timeout=10)  # fmt: skip


@contextlib.contextmanager
def nft_table(lab: PairLab, h: str, chains: str) -> Iterator[str]:
    """A table of our own in host h's namespace, deleted on the way out whatever happens:
    each fault gets its own table, so faults nest and undo independently."""
    name = f"csfault{next(_tables)}"
    _nft(lab, h, f"table inet {name} {{\n{chains}\n}}\n")
    try:
        yield name
    finally:
        # The namespace may be gone already (the lab closed): nothing left to undo then.
        with contextlib.suppress(subprocess.SubprocessError):
            _nft(lab, h, f"delete table inet {name}\n")


def _chain(name: str, hook: str, priority: int, policy: str, *rules: str) -> str:
    body = "".join(f"    {r}\n" for r in rules)
    return (f"  chain {name} {{\n    type filter hook {hook} priority {priority}; "
            f"policy {policy};\n{body}  }}")  # fmt: skip


# ----- processes ------------------------------------------------------------------------


def ns_pids(lab: PairLab, h: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", lab.ns[h]], capture_output=True, text=True,
                         timeout=10).stdout  # fmt: skip
    return [int(p) for p in out.split()]


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    """SIGSTOP one process (say a runner, while its QEMU keeps running), SIGCONT after."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        _signal_all([pid], signal.SIGCONT)


def stop_process(pid: int, seconds: float) -> None:
    """A process that stalls for `seconds` (GC pause, swap storm, debugger) and goes on."""
    with stopped(pid):
        time.sleep(seconds)


@contextlib.contextmanager
def frozen(lab: PairLab, h: str) -> Iterator[list[int]]:
    """Host h stalls as a whole (hypervisor pause, kernel hiccup): every process in its
    namespace is stopped and its NICs pass nothing, so the peer hears nothing and its
    probes get no answer (a stopped process's listening socket would still complete
    handshakes: stopping processes alone does not look like a stall from outside).
    Loopback keeps working, as it does on a stalled host. On the way out the network
    comes back first and the processes then continue, as after a real stall: what the
    peer sent meanwhile waits in their sockets."""
    chains = "\n".join((
        _chain("i", "input", -300, "accept", 'iifname != "lo" drop'),
        _chain("o", "output", -300, "accept", 'oifname != "lo" drop'),
    ))  # fmt: skip
    pids: list[int] = []
    try:
        with nft_table(lab, h, chains):
            pids = ns_pids(lab, h)
            _signal_all(pids, signal.SIGSTOP)
            yield pids
    finally:  # the table is gone by now
        _signal_all(pids, signal.SIGCONT)


def freeze_host(lab: PairLab, h: str, seconds: float) -> None:
    """Host h stalls for `seconds`, then resumes; see frozen()."""
    with frozen(lab, h):
        time.sleep(seconds)


# ----- network faults -------------------------------------------------------------------


@contextlib.contextmanager
def refuse_port(
    lab: PairLab, h: str, port: int, from_addr: str, how: str = "tcp reset"
) -> Iterator[None]:
    """Host h's firewall actively refuses NEW TCP connections to `port` from `from_addr`
    (established ones pass), answering with a TCP reset or ICMP port-unreachable, as
    REJECT rules do by default: to a prober this looks exactly like "nothing listens"."""
    answer = {"tcp reset": "tcp reset", "icmp": "icmp type port-unreachable"}[how]
    rule = f"ip saddr {from_addr} tcp dport {port} ct state new reject with {answer}"
    with nft_table(lab, h, _chain("i", "input", 0, "accept", rule)):
        yield


@contextlib.contextmanager
def refuse_new_connections(
    lab: PairLab, h: str, port: int, from_addr: str, how: str = "tcp reset"
) -> Iterator[None]:
    """As refuse_port(), but only connection attempts (a SYN without ACK) are refused, so
    connections established before the rule keep working until they break for another
    reason. refuse_port()'s `ct state new` does not guarantee that: conntrack, switched on
    in the namespace by the rule itself, picks up an untracked established connection on
    its next packet and calls that packet "new", so the rule resets it (measured: a COLO
    migration stream dies at its next checkpoint under refuse_port on port 8888)."""
    answer = {"tcp reset": "tcp reset", "icmp": "icmp type port-unreachable"}[how]
    rule = (
        f"ip saddr {from_addr} tcp dport {port} tcp flags & (syn | ack) == syn reject with {answer}"
    )
    with nft_table(lab, h, _chain("i", "input", 0, "accept", rule)):
        yield


def path_address(h: str, path: str) -> str:
    """Host h's address on a path: "replication" (rep0) or "lan" (br0)."""
    return {"replication": REPLICATION, "lan": LAN}[path][h]


@contextlib.contextmanager
def drop_one_way(
    lab: PairLab, src_h: str, dst_addr: str | None = None, path: str = "replication"
) -> Iterator[None]:
    """Everything host src_h sends to `dst_addr` (default: the peer's address on `path`)
    is lost; the other direction still works (a half-broken cable, a one-way ACL)."""
    dst = dst_addr or path_address(peer(src_h), path)
    with nft_table(lab, src_h, _chain("o", "output", -300, "accept", f"ip daddr {dst} drop")):
        yield


@contextlib.contextmanager
def refuse_udp(lab: PairLab, h: str, port: int, from_addr: str) -> Iterator[None]:
    """Host h's firewall rejects every UDP datagram to `port` from `from_addr` with ICMP
    port-unreachable (a REJECT rule for one service): the sender gets the ICMP error,
    h never sees the datagram. Other protocols and addresses pass."""
    rule = f"ip saddr {from_addr} udp dport {port} reject with icmp type port-unreachable"
    with nft_table(lab, h, _chain("i", "input", 0, "accept", rule)):
        yield


@contextlib.contextmanager
def link_down(lab: PairLab, h: str, dev: str) -> Iterator[None]:
    """Host h's interface `dev` goes down (carrier lost on both ends of a veth) and comes
    back up on the way out. The kernel drops the routes through it meanwhile and puts
    them back with the link; addresses stay."""
    ip("link", "set", dev, "down", netns=lab.ns[h])
    try:
        yield
    finally:
        # The namespace may be gone already (the lab closed): nothing left to undo then.
        ip("link", "set", dev, "up", netns=lab.ns[h], check=False)


def flap_link(lab: PairLab, h: str, dev: str, seconds: float) -> None:
    """Host h's `dev` down for `seconds`, then up again (a flapping cable or switch port)."""
    with link_down(lab, h, dev):
        time.sleep(seconds)


def colo_stream_acked(lab: PairLab, primary: str = "a", port: int = 8888) -> int | None:
    """Bytes of the COLO migration stream the secondary's kernel has acknowledged, from the
    primary's socket (`ss -ti`), or None when there is no such connection. COLO sends on
    this stream only at checkpoints, so a growing count is the kernel's own evidence that
    checkpoints advance, independent of what any runner counts."""
    dst = path_address(peer(primary), "replication")
    out = subprocess.run(
        ["ip", "netns", "exec", lab.ns[primary], "ss", "-t", "-i", "-n", "-H", "state",
         "established", "dst", dst, "dport", "=", f":{port}"],
        capture_output=True, text=True, check=True, timeout=10,
    ).stdout  # fmt: skip
    counts = [int(n) for n in re.findall(r"\bbytes_acked:(\d+)", out)]
    return sum(counts) if counts else None


def established(lab: PairLab, h: str, dst: str, dport: int) -> int:
    """How many TCP connections from host h to dst:dport are established (`ss`): say the
    primary's replication NBD client's, which a yank or a reset ends."""
    out = subprocess.run(
        ["ip", "netns", "exec", lab.ns[h], "ss", "-t", "-n", "-H", "state", "established",
         "dst", dst, "dport", "=", f":{dport}"],
        capture_output=True, text=True, check=True, timeout=10,
    ).stdout  # fmt: skip
    return len([line for line in out.splitlines() if line.strip()])


def reset_connections(lab: PairLab, h: str, dst: str, dport: int) -> int:
    """Reset the established TCP connections from host h to dst:dport (`ss -K`: the
    kernel aborts the socket and sends a RST), as a middlebox or a flapping link would.
    Returns how many were reset, so a test can check the fault hit something: the
    migration stream is the primary's connection to the secondary's migration port,
    the replication NBD client its connection to the secondary's NBD port."""
    out = subprocess.run(
        ["ip", "netns", "exec", lab.ns[h], "ss", "-K", "-t", "-n", "-H", "dst", dst,
         "dport", "=", f":{dport}"],
        capture_output=True, text=True, check=True, timeout=10,
    ).stdout  # fmt: skip
    return len([line for line in out.splitlines() if line.strip()])


# ----- who serves: QEMU's own answer ----------------------------------------------------


def _proc_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2]  # the field after "(comm)": R, S, T, Z...


def qemu_threads(pid: int) -> list[str]:
    """The names of a QEMU's threads: colospec starts QEMU with -name ...,debug-threads=on,
    so they are named. A COLO secondary's "COLO incoming" thread ends when
    x-colo-lost-heartbeat has promoted it: QEMU's own sign that it failed over, visible
    without QMP (which its runner holds)."""
    names = []
    for comm in Path(f"/proc/{pid}/task").glob("*/comm"):
        with contextlib.suppress(OSError):
            names.append(comm.read_text().strip())
    return names


def live_qemu_pid(lab: PairLab, h: str) -> int | None:
    """Host h's QEMU if it exists and is not a zombie (a QEMU whose runner was killed is
    reparented to the test, which reaps it only at close)."""
    try:
        pid = int((lab.run_dir(h) / "qemu.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    if str(lab.run_dir(h) / "qmp.sock").encode() not in cmdline:
        return None  # a recycled pid
    return pid if _proc_state(pid) not in (None, "Z", "X") else None


async def _direct_qmp(sock: Path, commands: list[str]) -> list[Any]:
    client = QMPClient("colospec-faults")
    try:
        await asyncio.wait_for(client.connect(str(sock)), QMP_TIMEOUT_S)
        return [await asyncio.wait_for(client.execute(c), QMP_TIMEOUT_S) for c in commands]
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()


def runner_status(lab: PairLab, h: str) -> dict[str, Any] | None:
    """The runner's own status over its control socket, or None when no runner answers."""
    try:
        return lab.ask(h, {"cmd": "status"}, timeout=QMP_TIMEOUT_S)
    except (OSError, ValueError, ConnectionError, TimeoutError):
        return None


def qmp(lab: PairLab, h: str, execute: str, **arguments: Any) -> Any:
    """One QMP command to host h's QEMU: through its runner when one answers (QEMU takes
    one QMP client at a time and the runner holds it), else on QEMU's socket directly
    (free once the runner is gone). Raises RuntimeError if QEMU does not answer."""
    request = {"cmd": "qmp", "execute": execute, "arguments": arguments or None}
    try:
        reply = lab.ask(h, request, timeout=QMP_TIMEOUT_S + 1)
    except (OSError, ValueError, ConnectionError):
        reply = None  # no runner: ask QEMU itself
    except TimeoutError:
        raise RuntimeError(f"{h}: the runner holds QMP but does not answer") from None
    if reply is not None:
        if not reply.get("ok"):
            raise RuntimeError(f"{h}: {execute} through the runner: {reply.get('error')}")
        return reply["return"]
    if arguments:
        raise RuntimeError("direct QMP carries commands without arguments only")
    try:
        return asyncio.run(_direct_qmp(lab.run_dir(h) / "qmp.sock", [execute]))[0]
    except Exception as exc:
        raise RuntimeError(f"{h}: direct QMP {execute}: {type(exc).__name__} {exc}") from None


@dataclass(frozen=True)
class HostView:
    """Host h's QEMU as QEMU itself reports it."""

    host: str
    pid: int | None
    vm_status: str | None = None
    colo_mode: str | None = None
    note: str = ""
    stuck: bool = False  # in "colo" for STUCK_CHECKPOINT_S: a checkpoint that hangs

    @property
    def serves(self) -> bool:
        return (
            self.pid is not None
            and self.vm_status in RUNNING_STATES
            and not self.stuck
            and self.colo_mode in SERVING_MODES
        )

    def __str__(self) -> str:
        what = (
            "no QEMU" if self.pid is None else f"pid {self.pid} {self.vm_status}/{self.colo_mode}"
        )
        return f"{self.host}: {what}{' (' + self.note + ')' if self.note else ''}"


def view(lab: PairLab, h: str) -> HostView:
    pid = live_qemu_pid(lab, h)
    if pid is None:
        return HostView(h, None)
    if _proc_state(pid) == "T":
        return HostView(h, pid, note="stopped")
    try:
        status = qmp(lab, h, "query-status")["status"]
        mode = qmp(lab, h, "query-colo-status")["mode"]
        deadline = time.monotonic() + STUCK_CHECKPOINT_S
        while status == "colo" and time.monotonic() < deadline:
            time.sleep(0.02)
            status = qmp(lab, h, "query-status")["status"]
    except RuntimeError as exc:
        # A QEMU that answers nobody (hung main loop) cannot be shown to serve.
        return HostView(h, live_qemu_pid(lab, h), note=str(exc))
    stuck = status == "colo"
    return HostView(h, pid, status, mode, "stuck in a checkpoint" if stuck else "", stuck)


def views(lab: PairLab) -> dict[str, HostView]:
    return {h: view(lab, h) for h in ("a", "b")}


def serving(lab: PairLab) -> set[str]:
    """The hosts whose QEMU serves the guest right now: the process exists, its VM runs
    ("colo" mid-checkpoint counts, unless it stays so for STUCK_CHECKPOINT_S), and its
    COLO mode is primary or none (a secondary's output goes to colo-compare, not to
    clients). A QEMU that is stopped, gone, or answers no QMP does not serve."""
    return {h for h, v in views(lab).items() if v.serves}


def settle(lab: PairLab, within: float = SETTLE_S, stable_for: float = STABLE_S) -> set[str]:
    """The set of serving hosts once it has stopped changing: it must reach its final
    value within `within` seconds (from now, i.e. from the end of the fault) and then
    hold it for `stable_for`. Raises AssertionError, with every change seen, when the
    set still changes after `within`."""
    start = time.monotonic()
    history: list[str] = []
    current: set[str] | None = None
    since = start
    while True:
        seen = views(lab)
        now = {h for h, v in seen.items() if v.serves}
        t = time.monotonic()
        if now != current:
            current, since = now, t
            history.append(
                f"{t - start:5.2f}s {sorted(now)} [{'; '.join(map(str, seen.values()))}]"
            )
        if since - start > within:
            raise AssertionError(
                f"serving hosts still changing {within} s after the fault:\n" + "\n".join(history)
            )
        if t - since >= stable_for:
            return current
        time.sleep(0.05)


def watch_serving(lab: PairLab, seconds: float) -> list[set[str]]:
    """Every distinct set of serving hosts seen over `seconds`, in order."""
    seen: list[set[str]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        now = serving(lab)
        if not seen or seen[-1] != now:
            seen.append(now)
        time.sleep(0.05)
    return seen


def claims_protection(status: dict[str, Any] | None) -> bool:
    """Does a runner's status claim the guest is protected? Its `protected` field when it
    has one, else a COLO mode of primary or secondary. No runner claims nothing."""
    if status is None:
        return False
    if "protected" in status:
        return bool(status["protected"])
    return status.get("colo_mode") in ("primary", "secondary")


def heartbeat_budget_s(lab: PairLab, h: str = "a") -> float:
    hb = json.loads((lab.host_dir(h) / "plan.json").read_text())["heartbeat"]
    return hb["interval_ms"] * hb["missed"] / 1000


# ----- the guest's disk -----------------------------------------------------------------

CHUNK = 64 * 1024


def drive_id(lab: PairLab, h: str) -> str:
    """The id of the guest's drive on host h: the one -drive that is not if=none. Both
    hosts' is the quorum top (colo-disk0): on the primary over its image and, during
    COLO, the replication child; on the secondary over the replication node, which
    after takeover serves the active disk's view, so one id works before and after."""
    args = (lab.host_dir(h) / "qemu.args").read_text().splitlines()
    for flag, value in itertools.pairwise(args):
        if flag == "-drive" and "if=none" not in value:
            return re.search(r"(?:^|,)id=([^,]+)", value).group(1)
    raise AssertionError(f"no guest drive in {lab.host_dir(h) / 'qemu.args'}")


def _qemu_io(lab: PairLab, h: str, command: str, done: re.Pattern[str]) -> str:
    """Run a qemu-io command through HMP and return what QEMU printed for it. HMP's
    qemu-io prints its result on QEMU's stdout (the runner's log here, which QEMU
    inherited), not in the QMP reply; the reply carries only HMP's own errors (say an
    unknown device). So: note where the log ends, run, wait for the result line."""
    log = lab.logs[h]
    before = log.stat().st_size
    line = f'qemu-io {drive_id(lab, h)} "{command}"'
    reply = qmp(lab, h, "human-monitor-command", **{"command-line": line})
    if reply.strip():
        raise AssertionError(f"{h}: HMP {line!r} failed: {reply.strip()}")
    deadline = time.monotonic() + 10
    while True:
        with log.open("rb") as f:
            f.seek(before)
            out = f.read().decode(errors="replace")
        if done.search(out):
            return out
        if time.monotonic() > deadline:
            raise AssertionError(f"{h}: no result for {line!r} in QEMU's output:\n{out}")
        time.sleep(0.01)


def write_pattern(lab: PairLab, h: str, offset: int, pattern: int) -> None:
    """Write 64 KiB of byte `pattern` at `offset` through the guest's drive on host h, as
    the guest would (through the quorum, so on a COLO primary also over NBD)."""
    out = _qemu_io(lab, h, f"write -P 0x{pattern:02x} {offset} 64k",
                   re.compile(rf"wrote {CHUNK}/{CHUNK} bytes at offset {offset}|write failed"))  # fmt: skip
    if "write failed" in out:
        raise AssertionError(f"{h}: the write at {offset} failed: {out.strip()}")


def read_pattern(lab: PairLab, h: str, offset: int, pattern: int) -> bool:
    """True if the 64 KiB at `offset` on host h's guest drive are all byte `pattern`."""
    out = _qemu_io(lab, h, f"read -P 0x{pattern:02x} {offset} 64k",
                   re.compile(rf"read {CHUNK}/{CHUNK} bytes at offset {offset}|read failed"))  # fmt: skip
    return "read failed" not in out and "Pattern verification failed" not in out


# ----- judging --------------------------------------------------------------------------


class Invariants:
    """Collects every broken invariant of a test before failing it, so one run shows the
    whole picture (a runner fix usually mends several at once)."""

    def __init__(self, lab: PairLab):
        self.lab = lab
        self.broken: list[str] = []

    def check(self, ok: bool, what: str) -> bool:
        if not ok:
            self.broken.append(what)
        return ok

    def done(self) -> None:
        if self.broken:
            lines = "\n".join(f"- {b}" for b in self.broken)
            raise AssertionError(
                f"{len(self.broken)} invariant(s) broken:\n{lines}\n{self.lab.describe()}"
            )


def image_has(lab, h: str, pattern: int, offset: int) -> bool:
    """The pattern is in host h's base image file itself (read beside the running QEMU)."""
    done = subprocess.run(
        ["qemu-io", "-f", "raw", "-U", "-r", "-c", f"read -P {pattern:#x} {offset} 64k",
         str(lab.tmp / h / "disk.raw")], capture_output=True, text=True, check=False,
    )  # fmt: skip
    return done.returncode == 0 and "Pattern verification failed" not in done.stdout
