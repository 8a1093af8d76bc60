"""A simulated pair for the runner's rule table: two hosts, two heartbeat paths, a clock.

The unit under test is colospec/runner/machine.py (decide, protected, peer_wins). Around it
this module rebuilds, in ticks, what watch.py, peer.py, heartbeat.py and orchestrate.py do
with real sockets and QMP: Evidence is built field by field as Watcher.evidence builds it,
reports as Watcher.publish and Heartbeat.send make them, decisions are carried out as
Watcher.carry_out/failover/fence do, and a restarted runner adopts its QEMU as
Runner._adopt does. Nothing here decides anything: every decision is machine.decide().

Time is in ticks of half a heartbeat interval (the watch loop's period): interval 2
ticks, budget = missed 3 x interval = 6 ticks. A tick: hosts whose stall ends thaw,
datagrams due arrive, probes due answer, each live runner looks once (stall check,
probe, evidence, publish, decide, act, its periodic heartbeat), the guest writes once.

What the world holds (the ground truth the invariants are judged on):
- per host: its QEMU ("primary" / "secondary": COLO mode; "alone": serving without a
  partner; "dead": killed or stopped by a fence or exit), whether that QEMU saw COLO_EXIT
  with reason error (query-colo-status says so to a restarted runner), whether the
  plan-secondary's NBD export (the port the primary's runner probes) still listens
  (a takeover's nbd-server-stop closes it; the primary's beacon stays), state.json, its
  runner (or none), a stall (SIGSTOP of every process; with `net`, also nftables
  dropping every packet), and whether it ever served the guest alone;
- one COLO stream: broken when either QEMU dies or leaves COLO, or by a fault; each QEMU
  still in COLO mode then sees COLO_EXIT reason error (a stalled one when it thaws);
- per path and direction: down until a tick, a delivery delay (0-2 ticks), duplication,
  and jitter (delays alternating 2, 0, 2, ... per datagram: reordering). A receiver takes
  a datagram as heartbeat.py does behind hbauth's replay guard: once per path and sequence
  number, never from an older boot after a newer one, and keeps the latest report.

A host serves when its QEMU runs (the host is not stalled) and is alone, or is the COLO
primary with the stream intact: output of a primary whose stream broke is held by
colo-compare, and a secondary's goes to colo-compare.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from colospec.runner.machine import (
    REPLICATION_PATH,
    Act,
    Decision,
    Evidence,
    PeerView,
    Phase,
    decide,
    protected,
)

INTERVAL = 2  # ticks between heartbeats
BUDGET = 3 * INTERVAL  # missed x interval: a path is heard if a datagram came within it
LATE = 3  # peer.LATE_AFTER_INTERVALS (1.5) x interval: a quieter path triggers a probe
PROBE_TIMEOUT = BUDGET // 2  # peer._probe: an unanswered connect gives up after this
MAX_DELAY = 2  # the longest a datagram is under way
SETTLE = 2 * BUDGET  # after the last fault, this long until at most one host serves
# A killed runner stays down at least this long before its successor starts (systemd's
# RestartSec=1 is 20 ticks; an operator is quicker): its datagrams still under way land first.
MIN_DOWNTIME = MAX_DELAY + 1
PATHS = (REPLICATION_PATH, "lan")
# The takeover script (qmp/91-failover-as-secondary.json) begins with nbd-server-stop: the
# port the primary's runner probes then refuses although that QEMU serves alone.
TAKEOVER_CLOSES_PROBE_PORT = True
HOSTS = ("A", "B")
PLAN_ROLE = {"A": "primary", "B": "secondary"}


def other(host: str) -> str:
    return "B" if host == "A" else "A"


@dataclass
class Link:
    """One direction of one heartbeat path."""

    down_until: int = 0
    delay: int = 0
    dup: bool = False
    jitter: bool = False

    def up(self, now: int) -> bool:
        return now >= self.down_until


@dataclass
class HostState:
    """state.json: written before and after every irreversible step, kept across runners."""

    phase: Phase = Phase.COLO
    role: str = ""
    epoch: int = 0
    rank: int = 0
    intent: str | None = None
    intent_epoch: int | None = None


@dataclass
class Runner:
    boot: int
    started: int
    stall_at: int
    last_tick: int = 0
    next_send: int = 0
    seq: int = 0
    report: dict[str, Any] = field(default_factory=dict)  # what it tells the peer
    peer: dict[str, Any] | None = None  # the peer's latest report
    report_at: int | None = None  # when it arrived
    last_seen: dict[str, int] = field(default_factory=dict)
    deaf_since: int | None = None
    probe: tuple[int, str] | None = None  # (when answered, result)
    probe_due: tuple[int, str] | None = None  # a probe under way: (answers at, result)
    in_colo: bool = True  # QemuSession.in_colo: COLO events count only then
    colo_exit_at: int | None = None  # QMP COLO_EXIT reason error seen (when)
    replication_error: bool = False  # QUORUM_REPORT_BAD on the replication child seen
    replication_error_at: int | None = None
    adopted_broken: bool = False
    peer_broke: bool = False  # Watcher.peer_broke: the primary said its stream/child broke
    guard_boot: int | None = None  # hbauth.ReplayGuard: the boot, newest time, seq per path
    guard_time: int = -(10**9)
    guard_seq: dict[str, int] = field(default_factory=dict)

    def heard(self, now: int) -> tuple[str, ...]:
        return tuple(p for p in PATHS if p in self.last_seen and now - self.last_seen[p] < BUDGET)

    def view(self) -> PeerView | None:
        r = self.peer
        if not r:
            return None
        return PeerView(
            qemu=str(r.get("qemu", "starting")), role=str(r.get("role", "")),
            colo=r.get("colo"), alone=bool(r.get("alone")), epoch=int(r.get("epoch", 0)),
            rank=int(r.get("rank", 0)), hears=tuple(r.get("hears", ())),
            colo_error=bool(r.get("colo_error")),
        )  # fmt: skip

    def receive(self, path: str, msg: dict[str, Any], now: int) -> None:
        """Heartbeat._received (with hbauth.ReplayGuard.fresh) + PeerLink._updated."""
        if msg["boot"] != self.guard_boot:  # a new boot counts only if sent later
            if msg["ts"] <= self.guard_time:
                return
            self.guard_boot, self.guard_time, self.guard_seq = msg["boot"], msg["ts"], {}
        if msg["seq"] <= self.guard_seq.get(path, 0):
            return  # a duplicate, or older than one already taken on this path
        self.guard_seq[path] = msg["seq"]
        self.guard_time = max(self.guard_time, msg["ts"])
        self.last_seen[path] = now
        old = self.peer or {}
        if old.get("boot") == msg["boot"] and old.get("seq", 0) >= msg["seq"]:
            return  # the same report (or an older one) arriving over the other path
        self.peer, self.report_at = msg, now
        if REPLICATION_PATH not in msg.get("hears", ()):
            self.deaf_since = now if self.deaf_since is None else self.deaf_since
        else:
            self.deaf_since = None


@dataclass
class Host:
    name: str
    qemu: str  # "primary" | "secondary" | "alone" | "dead"
    state: HostState
    colo_error: bool = False
    nbd_export: bool = True  # the plan-secondary's probe port (the primary's beacon stays)
    runner: Runner | None = None
    runner_gone_at: int = 0
    frozen_until: int = 0  # stalled while now < frozen_until
    net_frozen: bool = False
    inbox: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # kept while stopped
    pending: list[str] = field(default_factory=list)  # QMP events of a stalled QEMU
    crash_armed: bool = False  # the runner dies in its next failover/fence, intent written
    served_alone: bool = False
    paused: bool = False  # its guest paused (`stop`) by its runner: it serves no one

    def frozen(self, now: int) -> bool:
        return now < self.frozen_until

    def qemu_alive(self) -> bool:
        return self.qemu != "dead"


class InvariantBroken(AssertionError):
    pass


class World:
    def __init__(self) -> None:
        self.now = 0
        self.hosts = {
            "A": Host("A", "primary", HostState(role="primary")),
            "B": Host("B", "secondary", HostState(role="secondary")),
        }
        self.links = {(p, s, other(s)): Link() for p in PATHS for s in HOSTS}
        self.inflight: list[tuple[int, int, str, str, dict[str, Any]]] = []
        self.stream = True
        self.boots = 0
        self.order = 0  # tie-break for datagrams due on the same tick
        self.last_fault = 0  # the end of the latest fault
        self.log: list[str] = []
        for h in HOSTS:
            self._new_runner(h, look_first=False)
            self.hosts[h].runner.report.update(qemu="running", role=PLAN_ROLE[h], alone=False,
                                               epoch=0, rank=0)  # fmt: skip
        self.tick(BUDGET)  # a healthy pair, both runners past their first budget
        self.last_fault = self.now

    # ----- faults ----------------------------------------------------------------------

    def fault(self, end: int | None = None) -> None:
        self.last_fault = max(self.last_fault, self.now if end is None else end)

    def freeze(self, host: str, k: int, net: bool) -> None:
        h = self.hosts[host]
        h.frozen_until, h.net_frozen = self.now + k, net
        self.note(f"{host} stalls for {k} ticks{' (network dropped)' if net else ''}")
        self.fault(self.now + k)

    def kill_qemu(self, host: str) -> None:
        self.note(f"{host}: QEMU killed")
        self._qemu_gone(host)
        self.fault()

    def kill_runner(self, host: str) -> None:
        self.note(f"{host}: runner killed")
        self._runner_gone(host)
        self.fault()

    def arm_crash(self, host: str) -> None:
        self.hosts[host].crash_armed = True

    def break_stream(self) -> None:
        self.note("the COLO stream breaks")
        self._break_stream(exempt=None)
        self.fault()

    def replication_child_fails(self, host: str) -> None:
        """QUORUM_REPORT_BAD on the primary's replication child (its NBD connection reset)."""
        self.note(f"{host}: replication child fails a write")
        self._qemu_event(self.hosts[host], "replication")
        self.fault()

    def path_down(self, path: str, src: str, k: int) -> None:
        self.links[(path, src, other(src))].down_until = self.now + k
        self.note(f"{path} {src}->{other(src)} down for {k} ticks")
        self.fault(self.now + k)

    def knobs(self, path: str, src: str, delay: int, dup: bool, jitter: bool) -> None:
        link = self.links[(path, src, other(src))]
        link.delay, link.dup, link.jitter = delay, dup, jitter

    def cut_after(self, path: str, src: str, k: int) -> int:
        """How long both paths would be down in this direction if `path` went down for k."""
        o = next(p for p in PATHS if p != path)
        until = self.links[(o, src, other(src))].down_until
        return max(0, min(self.now + k, until) - self.now)

    def restart_runner(self, host: str) -> None:
        """Runner._adopt: a new runner adopts the QEMU that still runs, and looks first."""
        h = self.hosts[host]
        assert h.runner is None and h.qemu_alive() and not h.frozen(self.now)
        self.note(f"{host}: runner restarted")
        r = self._new_runner(host, look_first=True)
        r.report.update(qemu="starting", role=PLAN_ROLE[host], phase="starting", epoch=0,
                        rank=0, alone=False)  # fmt: skip
        self.send(host)  # Heartbeat._run sends at once
        st = h.state
        if st.intent == "fence":
            self.fence(host, "finishing the fence an earlier runner began")
            self._runner_gone(host)
            return
        if h.qemu in ("primary", "secondary"):
            h.state = HostState(Phase.COLO, h.qemu, st.epoch, st.rank, st.intent, st.intent_epoch)
            if h.colo_error:  # query-colo-status: reason error
                r.colo_exit_at = self.now
                r.adopted_broken = h.qemu == "secondary"
        elif not (st.phase is Phase.ALONE or st.intent):
            h.state = HostState(Phase.ALONE, "primary")
        r.in_colo = h.state.phase is Phase.COLO
        r.report.update(qemu="running")
        self.send(host)
        # query-colo-status none: the failover had begun, it is finished at once; one still
        # in COLO mode is resumed by resume-take-over / resume-drop after a look.
        if h.state.intent in ("take-over", "drop") and h.qemu == "alone":
            self.failover(host, Act.TAKE_OVER if h.state.intent == "take-over" else Act.DROP)
        self.fault()

    # ----- time --------------------------------------------------------------------------

    def tick(self, n: int = 1, b_first: bool = False) -> None:
        for _ in range(n):
            self.now += 1
            for h in self.hosts.values():
                if h.frozen_until == self.now:
                    self._thaw(h)
            due = sorted(m for m in self.inflight if m[0] <= self.now)
            self.inflight = [m for m in self.inflight if m[0] > self.now]
            for _, _, dst, path, msg in due:
                self._deliver(dst, path, msg)
            for h in self.hosts.values():
                if h.runner and not h.frozen(self.now):
                    self._probe_answers(h.runner)
            for name in ("B", "A") if b_first else ("A", "B"):
                h = self.hosts[name]
                if h.runner is not None and not h.frozen(self.now):
                    self.step(name)
            for h in self.hosts.values():  # the guest writes; who acknowledges it?
                if self.serves(h.name) and h.qemu == "alone":
                    h.served_alone = True
            self.check()

    def _thaw(self, h: Host) -> None:
        self.note(f"{h.name} thaws")
        h.net_frozen = False
        inbox, h.inbox = h.inbox, []
        for path, msg in inbox:
            self._deliver(h.name, path, msg)
        pending, h.pending = h.pending, []
        for event in pending:
            self._qemu_event(h, event)

    def _probe_answers(self, r: Runner) -> None:
        if r.probe_due and r.probe_due[0] <= self.now:
            r.probe, r.probe_due = (self.now, r.probe_due[1]), None

    # ----- one look of one runner (Watcher.run's loop body) ------------------------------

    def step(self, host: str) -> None:
        r, now = self.hosts[host].runner, self.now
        if now - r.last_tick > BUDGET:
            r.stall_at = now
        r.last_tick = now
        self.maybe_probe(host)
        e = self.evidence(host)
        if protected(e):
            self.check_protected(host, e)
        self.publish(host, e)
        d = decide(e)
        if d.act not in (Act.NONE, Act.HOLD):
            self.note(f"{host}: {d.act.value} ({d.rule})")
        self.carry_out(host, d)
        if self.hosts[host].runner is r and now >= r.next_send:
            self.send(host)

    def maybe_probe(self, host: str) -> None:
        r, now = self.hosts[host].runner, self.now
        urgent = r.colo_exit_at is not None and (r.probe is None or r.probe[0] < r.colo_exit_at)
        if r.probe_due:
            return
        silence = max(now - r.last_seen.get(p, -(10**9)) for p in PATHS)
        recent = r.probe is not None and now - r.probe[0] < INTERVAL
        if not (silence > LATE or urgent) or recent:
            return
        result = self.probe(host)
        if result == "unreachable":
            r.probe_due = (now + PROBE_TIMEOUT, result)
        else:
            r.probe = (now, result)

    def probe(self, host: str) -> str:
        """A TCP connect to the peer's QEMU port over the replication network."""
        peer = self.hosts[other(host)]
        there = self.links[(REPLICATION_PATH, host, peer.name)]
        back = self.links[(REPLICATION_PATH, peer.name, host)]
        if not (there.up(self.now) and back.up(self.now)) or peer.net_frozen:
            return "unreachable"
        # A stopped host's kernel still completes the handshake on a listening socket.
        listens = peer.qemu_alive() and (PLAN_ROLE[peer.name] == "primary" or peer.nbd_export)
        return "alive" if listens else "dead"

    def evidence(self, host: str) -> Evidence:
        h, now = self.hosts[host], self.now
        r, st = h.runner, h.state
        view = r.view()
        in_colo = st.phase is Phase.COLO
        broken = in_colo and r.colo_exit_at is not None
        if in_colo and st.role == "secondary" and view is not None and view.colo_error:
            r.peer_broke = True
        probe = r.probe[1] if r.probe and now - r.probe[0] < BUDGET else None
        deaf_for = 0 if r.deaf_since is None else now - r.deaf_since
        breaks = [t for t in (r.colo_exit_at, r.replication_error_at) if t is not None]
        broke_at = min(breaks) if breaks else None  # QemuSession.broke_at
        return Evidence(
            phase=st.phase, role="primary" if st.phase is Phase.ALONE else st.role,
            epoch=st.epoch, rank=st.rank, own_qemu="running" if h.qemu_alive() else "gone",
            colo_exit_error=broken, replication_bad=in_colo and r.replication_error,
            checkpoint_stalled=False, peer_deaf=deaf_for >= BUDGET, secondary_silent=False,
            stalled=now - r.stall_at < BUDGET, watching_for_s=float(now - r.started),
            budget_s=float(BUDGET), paths=PATHS, heard=r.heard(now), peer=view,
            stale=st.role == "secondary" and (r.adopted_broken or r.peer_broke),
            pending_take_over=st.intent == "take-over",
            pending_drop=st.intent == "drop",
            peer_fresh=r.report_at is not None and broke_at is not None and r.report_at > broke_at,
            break_unwitnessed=broke_at is not None and not (
                broke_at - r.stall_at >= BUDGET
                and max(r.last_seen.values(), default=-(10**9)) >= broke_at - BUDGET
            ),
            paused=h.paused,
            probe=probe,
        )  # fmt: skip

    def publish(self, host: str, e: Evidence) -> None:
        colo = {Phase.COLO: e.role, Phase.ALONE: "none"}.get(e.phase)
        self.hosts[host].runner.report.update(
            qemu="running" if e.own_qemu != "gone" else "dead", role=e.role,
            phase=e.phase.value, colo=colo, alone=e.phase is Phase.ALONE, epoch=e.epoch,
            rank=e.rank, colo_error=e.colo_exit_error or e.replication_bad, protected=protected(e),
        )  # fmt: skip

    # ----- acting (Watcher.carry_out, fence, failover) ----------------------------------

    def carry_out(self, host: str, d: Decision) -> None:
        h = self.hosts[host]
        if d.act in (Act.NONE, Act.HOLD):
            return
        if d.act is Act.PAUSE:  # Watcher.carry_out: `stop`, reversible
            h.paused = True
            return
        if d.act in (Act.EXIT, Act.KILL_OWN):
            if d.act is Act.KILL_OWN:
                self._qemu_gone(host)
            self.report(host, qemu="dead")
            self._runner_gone(host)
        elif d.act is Act.FENCE:
            self.fence(host, d.reason)
            if h.runner is not None:
                self._runner_gone(host)
        else:
            self.failover(host, d.act)
            if h.runner is not None:
                h.runner.last_tick = self.now

    def fence(self, host: str, reason: str) -> None:
        h = self.hosts[host]
        h.state.intent = "fence"
        if self._crash(h):
            return
        self._qemu_gone(host)
        h.state = dataclasses.replace(h.state, phase=Phase.FENCED, role="fenced", intent=None)
        self.report(host, qemu="dead", role="fenced", phase="fenced", alone=False,
                    protected=False)  # fmt: skip

    def failover(self, host: str, act: Act) -> None:
        h = self.hosts[host]
        st, r = h.state, h.runner
        if st.phase is not Phase.COLO and st.intent is None:
            return
        was = st.role
        view = r.view()
        if st.intent is None:
            epoch = max(st.epoch, view.epoch if view else 0) + 1
        else:
            epoch = st.intent_epoch if st.intent_epoch is not None else st.epoch
        rank = 1 if was == "primary" else 0
        kind = "take-over" if was == "secondary" else "drop"
        h.state = dataclasses.replace(st, intent=kind, intent_epoch=epoch)
        if kind == "take-over":  # announced first: a primary that was only unreachable stops
            self.report(host, alone=True, epoch=epoch, rank=rank, role="primary")
        if self._crash(h):
            return
        assert h.qemu_alive(), "failover without a QEMU"
        h.qemu = "alone"
        h.paused = False  # `cont` once the script has run
        if kind == "take-over":
            self._export_gone()
            h.nbd_export = not TAKEOVER_CLOSES_PROBE_PORT
        self._break_stream(exempt=host)  # x-colo-lost-heartbeat: reason "request" here
        r.in_colo = False
        h.state = HostState(Phase.ALONE, "primary", epoch, rank, None, None)
        self.report(host, alone=True, epoch=epoch, rank=rank, role="primary", colo="none",
                    phase="alone", protected=False)  # fmt: skip

    def report(self, host: str, **fields: Any) -> None:
        """PeerLink.report(urgent=True): the change goes out at once."""
        self.hosts[host].runner.report.update(fields)
        self.send(host)

    # ----- heartbeats --------------------------------------------------------------------

    def send(self, host: str) -> None:
        r = self.hosts[host].runner
        r.seq += 1
        r.next_send = self.now + INTERVAL
        msg = {**r.report, "boot": r.boot, "seq": r.seq, "ts": self.now, "hears": r.heard(self.now)}
        for path in PATHS:
            link = self.links[(path, host, other(host))]
            if not link.up(self.now):
                continue
            delay = (MAX_DELAY if r.seq % 2 else 0) if link.jitter else link.delay
            self._schedule(self.now + delay, other(host), path, msg)
            if link.dup:
                self._schedule(self.now + min(delay + 1, MAX_DELAY), other(host), path, msg)

    def _schedule(self, at: int, dst: str, path: str, msg: dict[str, Any]) -> None:
        if at <= self.now:
            self._deliver(dst, path, msg)
        else:
            self.order += 1
            self.inflight.append((at, self.order, dst, path, msg))

    def _deliver(self, dst: str, path: str, msg: dict[str, Any]) -> None:
        h = self.hosts[dst]
        if h.net_frozen and h.frozen(self.now):
            return
        if h.frozen(self.now):
            h.inbox.append((path, msg))  # the kernel keeps it for the stopped runner
        elif h.runner is not None:
            h.runner.receive(path, msg, self.now)

    # ----- QEMU --------------------------------------------------------------------------

    def _qemu_gone(self, host: str) -> None:
        h = self.hosts[host]
        if h.qemu == "secondary":
            self._export_gone()
        h.qemu = "dead"
        self._break_stream(exempt=host)

    def _export_gone(self) -> None:
        """The secondary's NBD export closed: the primary's next guest write fails there."""
        for h in self.hosts.values():
            if h.qemu == "primary":
                self._qemu_event(h, "replication")

    def _break_stream(self, exempt: str | None) -> None:
        if not self.stream:
            return
        self.stream = False
        for h in self.hosts.values():
            if h.name != exempt and h.qemu in ("primary", "secondary"):
                h.colo_error = True  # query-colo-status: reason error
                self._qemu_event(h, "colo-exit")

    def _qemu_event(self, h: Host, event: str) -> None:
        """A QMP event (COLO_EXIT reason error, QUORUM_REPORT_BAD) reaches the runner now,
        when a stalled host thaws, or never if no runner listens (a restarted runner asks
        query-colo-status, which tells only of the stream)."""
        if h.frozen(self.now):
            h.pending.append(event)
            return
        r = h.runner
        if r is None or not r.in_colo:
            return
        if event == "colo-exit" and r.colo_exit_at is None:
            r.colo_exit_at = self.now
        elif event == "replication":
            r.replication_error = True
            r.replication_error_at = r.replication_error_at or self.now

    # ----- runners -----------------------------------------------------------------------

    def _new_runner(self, host: str, look_first: bool) -> Runner:
        self.boots += 1
        now = self.now
        r = Runner(boot=self.boots, started=now, last_tick=now, next_send=now,
                   stall_at=now if look_first else now - BUDGET)  # fmt: skip
        self.hosts[host].runner = r
        return r

    def _runner_gone(self, host: str) -> None:
        h = self.hosts[host]
        h.runner, h.runner_gone_at, h.crash_armed = None, self.now, False

    def _crash(self, h: Host) -> bool:
        """An armed crash: the runner dies right after writing its intent."""
        if not h.crash_armed:
            return False
        h.crash_armed = False
        self.note(f"{h.name}: runner dies with intent {h.state.intent} written")
        self._runner_gone(h.name)
        self.fault()
        return True

    # ----- ground truth and invariants ---------------------------------------------------

    def serves(self, host: str) -> bool:
        h = self.hosts[host]
        if h.frozen(self.now):
            return False
        if h.paused:
            return False
        return h.qemu == "alone" or (h.qemu == "primary" and self.stream)

    def check_protected(self, host: str, e: Evidence) -> None:
        a, b = self.hosts.values()
        real = self.stream and {a.qemu, b.qemu} == {"primary", "secondary"} and bool(e.heard)
        if not real:
            stream = "intact" if self.stream else "broken"
            self.fail(f"{host}'s evidence says protected: stream {stream}, QEMUs {a.qemu}/{b.qemu}")

    def check(self) -> None:
        if all(h.served_alone for h in self.hosts.values()):
            self.fail("both hosts have served the guest alone: the later one lacks the "
                      "earlier one's acknowledged writes")  # fmt: skip
        serving = [h for h in HOSTS if self.serves(h)]
        if self.now - self.last_fault >= SETTLE and len(serving) > 1:
            self.fail(f"{SETTLE} ticks after the last fault, both hosts serve")

    def note(self, what: str) -> None:
        self.log.append(f"t={self.now} {what}")

    def fail(self, what: str) -> None:
        raise InvariantBroken(f"t={self.now}: {what}\n" + "\n".join(self.log[-40:]))
