"""A stateful property test: two runners' rule tables against a simulated network and clock.

Hypothesis drives the pair of runner_model.py (two hosts, two heartbeat paths, ticks of
half an interval, every decision by machine.decide()) with faults and time; after every
step these invariants hold:

1. SETTLE (2 budgets) after the last fault ended, at most one host serves the guest;
2. never do both hosts serve the guest alone in one run: the later one would lack the
   writes the earlier one acknowledged alone;
3. a runner whose Evidence makes machine.protected() true has both QEMUs in COLO, the
   stream intact and the peer heard (checked at every look of every runner);
and no decide() ever raises.

The rules (faults and time):
- tick(n): time passes; the order in which the two runners look within a tick varies;
- freeze(host, k, net): the host stalls for k ticks, SIGSTOP of every process; with `net`
  nftables also drops every packet (fault-injection.md's "host stall"), so a probe of it
  is "unreachable"; without, its kernel still completes TCP handshakes ("alive") and
  keeps the datagrams sent to it for when it thaws;
- kill_qemu(host); kill_runner(host) and restart_runner(host) (adoption as Runner._adopt
  does it: COLO mode and reason from query-colo-status, state.json's epoch, rank and
  intent, one budget of looking first); crash_in_next_action(host): the runner dies right
  after writing the intent of its next failover or fence (after announcing a take-over);
- break_stream: the COLO migration stream is reset (both QEMUs: COLO_EXIT reason error);
  replication_child_fails(host): QUORUM_REPORT_BAD on the primary's replication child;
- path_down(one path or both, direction, k ticks); knobs(one path or both, direction):
  delay 0-2 ticks, duplication, jitter (alternating delays: reordering); weather: each
  direction's delay at the start. Knobs and weather are not faults.

The scope, what colospec claims to handle:
- No direction has both heartbeat paths down for longer than the budget: that partition
  needs a witness (README, "Split brain with both networks cut ... is not covered"). A
  cut of at most the budget is allowed: with the heartbeat phase and delays it can still
  silence the peer for a whole budget, and the rule table has to cope with that.
- A runner restarted by systemd only attaches to a QEMU that still runs (Requisite=); a
  host whose QEMU is gone stays out (a new bring-up is not modelled); a restarted runner
  starts MIN_DOWNTIME ticks after its predecessor died at the earliest.
- QEMU does not hang with its process alive (own-qemu-hung), checkpoints do not stall
  unnoticed (checkpoint-stalled) and the secondary's NIC is not silent (secondary-silent):
  those take seconds (HUNG_AFTER_S, 3 checkpoint delays, sampling), far beyond the faults
  modelled here, so those Evidence fields stay false.
Every run ends with SETTLE quiet ticks (teardown), so invariant 1 is always judged.

The regression tests below replay, step for step, the sequences this test found (shrunk,
then trimmed by hand); each says which rule fired wrongly and what should have happened.
They fail until the rule table is fixed, and so does the property test.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule
from runner_model import BUDGET, HOSTS, MIN_DOWNTIME, PATHS, SETTLE, World, other

host = st.sampled_from(HOSTS)
paths = st.sampled_from([(p,) for p in PATHS] + [PATHS])  # one path, or both


class PairMachine(RuleBasedStateMachine):
    """Every rule is a no-op where its fault cannot happen, so a printed sequence replays."""

    def __init__(self) -> None:
        super().__init__()
        self.world = World()

    @initialize(delays=st.lists(st.integers(0, 2), min_size=4, max_size=4))
    def weather(self, delays: list[int]) -> None:
        """Each direction of each path starts with its own delay."""
        for (p, src), d in zip(((p, s) for p in PATHS for s in HOSTS), delays, strict=True):
            self.world.knobs(p, src, d, dup=False, jitter=False)

    @rule(n=st.integers(1, 8), b_first=st.booleans())
    def tick(self, n: int, b_first: bool) -> None:
        self.world.tick(n, b_first)

    @rule(h=host, k=st.integers(1, 12), net=st.booleans())
    def freeze(self, h: str, k: int, net: bool) -> None:
        if not self.world.hosts[h].frozen(self.world.now):
            self.world.freeze(h, k, net)

    @rule(h=host)
    def kill_qemu(self, h: str) -> None:
        if self.world.hosts[h].qemu_alive():
            self.world.kill_qemu(h)

    @rule(h=host)
    def kill_runner(self, h: str) -> None:
        if self.world.hosts[h].runner is not None:
            self.world.kill_runner(h)

    @rule(h=host)
    def restart_runner(self, h: str) -> None:
        x, now = self.world.hosts[h], self.world.now
        down_long_enough = now - x.runner_gone_at >= MIN_DOWNTIME
        if x.runner is None and x.qemu_alive() and not x.frozen(now) and down_long_enough:
            self.world.restart_runner(h)

    @rule(h=host)
    def crash_in_next_action(self, h: str) -> None:
        if self.world.hosts[h].runner is not None:
            self.world.arm_crash(h)

    @rule()
    def break_stream(self) -> None:
        if self.world.stream:
            self.world.break_stream()

    @rule(h=host)
    def replication_child_fails(self, h: str) -> None:
        if self.world.hosts[h].qemu == "primary" and self.world.stream:
            self.world.replication_child_fails(h)

    @rule(ps=paths, src=host, k=st.integers(1, 10))
    def path_down(self, ps: tuple[str, ...], src: str, k: int) -> None:
        w = self.world
        for p in ps:
            if w.links[(p, src, other(src))].up(w.now) and w.cut_after(p, src, k) <= BUDGET:
                w.path_down(p, src, k)

    @rule(ps=paths, src=host, delay=st.integers(0, 2), dup=st.booleans(), jitter=st.booleans())
    def knobs(self, ps: tuple[str, ...], src: str, delay: int, dup: bool, jitter: bool) -> None:
        for p in ps:
            self.world.knobs(p, src, delay, dup, jitter)

    def teardown(self) -> None:
        w = self.world
        w.tick(max(0, w.last_fault + SETTLE - w.now) + 1)


# Shrinking a failure takes minutes; the failure's own log (the world's events) usually says
# enough. COLOSPEC_SHRINK=1 shrinks it, to make a regression test of it.
SHRINK = os.environ.get("COLOSPEC_SHRINK") == "1"
TestPair = PairMachine.TestCase
TestPair.settings = settings(
    derandomize=True,
    database=None,
    max_examples=1000,
    stateful_step_count=30,
    deadline=None,
    report_multiple_bugs=False,
    phases=[Phase.explicit, Phase.generate, *([Phase.shrink] if SHRINK else [])],
    suppress_health_check=[HealthCheck.too_slow],
)


# ----- the model itself: the plain faults fail over as the README says ----------------------


def run(*steps: tuple[str, dict]) -> World:
    state = PairMachine()
    for name, args in steps:
        getattr(state, name)(**args)
    state.teardown()
    return state.world


def outcome(w: World) -> dict[str, str]:
    return {h: w.hosts[h].qemu for h in HOSTS}


def test_model_primary_qemu_killed_secondary_takes_over():
    w = run(("kill_qemu", {"h": "A"}))
    assert outcome(w) == {"A": "dead", "B": "alone"}
    assert any("B: take-over (peer-qemu-died)" in line for line in w.log)


def test_model_primary_host_lost_secondary_takes_over_primary_fences_on_return():
    w = run(("freeze", {"h": "A", "k": 20, "net": True}))
    assert outcome(w) == {"A": "dead", "B": "alone"}
    assert any("B: take-over (peer-host-lost)" in line for line in w.log)
    assert any("A: fence (peer-took-over)" in line for line in w.log)


def test_model_primary_stopped_but_reachable_is_not_taken_over():
    w = run(("freeze", {"h": "A", "k": 20, "net": False}))
    assert outcome(w) == {"A": "primary", "B": "secondary"} and w.stream


def test_model_replication_link_cut_primary_drops_secondary_fences():
    w = run(("path_down", {"ps": ("replication",), "src": "A", "k": 10}),
            ("path_down", {"ps": ("replication",), "src": "B", "k": 10}))  # fmt: skip
    assert outcome(w) == {"A": "alone", "B": "dead"}
    assert any("A: drop (replication-lost)" in line for line in w.log)


def test_model_restarted_runner_keeps_the_pair():
    w = run(("kill_runner", {"h": "B"}), ("tick", {"n": 3, "b_first": False}),
            ("restart_runner", {"h": "B"}))  # fmt: skip
    assert outcome(w) == {"A": "primary", "B": "secondary"} and w.stream


# ----- findings: sequences the property test found; each fails until the table is fixed -----


def test_regression_secondary_takes_over_on_silence_after_its_stream_broke():
    # Found: the stream is reset while both paths from A to B are cut for 5 ticks (250 ms,
    # less than the budget). A drops B at once (colo-stream-broken) and serves alone; its
    # reports saying so are lost on the cut. B saw COLO_EXIT (error), hears nothing for 6
    # ticks (the cut, plus the next datagram's delay) and its probe of A times out (A's
    # SYN-ACK is lost): `peer-host-lost` (secondary) takes over with colo_exit_error=True,
    # stale=False. Both served alone; B lacks what A acknowledged from t=7 on.
    # Should: a secondary whose stream broke cannot tell "the primary died" from "the
    # primary dropped me and runs on" (a stream that ends cleanly even says the primary's
    # kernel was up): it must not take over on silence; hold, like
    # stream-broken-primary-alive. Only the primary's runner saying its QEMU died (a report
    # that would also say `alone` had it dropped) justifies it.
    state = PairMachine()
    state.knobs(ps=("replication", "lan"), src="A", delay=1, dup=False, jitter=False)
    state.path_down(ps=("replication", "lan"), src="A", k=5)
    state.break_stream()
    state.teardown()


def test_regression_primary_drops_while_the_takeover_announcement_is_under_way():
    # Found: A stalls for one budget with its packets dropped (not longer than the budget, so
    # its runner does not count it as a stall). B: silence for the budget and a probe that
    # timed out, so `peer-host-lost` takes over at t=12 (right: A looked lost), announcing
    # `alone` first; the announcement takes a tick. The takeover ends the stream and B's
    # NBD export, A's QEMU reports COLO_EXIT (error) and QUORUM_REPORT_BAD at once, and A's
    # runner, back since t=12, decides `replication-child-failed` DROP
    # (`colo-stream-broken` is next in line) before the announcement arrives (peer = B's
    # report from before: secondary, not alone). Both served alone; A (epoch 1, rank 1)
    # outranks B (1, 0), B fences, and the writes B acknowledged are lost.
    # Should: a broken stream (or a failed replication child) is exactly what the
    # secondary's takeover looks like from the primary; the primary should drop only once a
    # report the secondary sent after the break says it does not serve alone (it saw the
    # break, or its QEMU died), and fence when it says it does. Evidence has no such
    # freshness yet (heartbeat's report_at, or the report's ts, against colo_exit_at).
    state = PairMachine()
    state.knobs(ps=("replication", "lan"), src="B", delay=1, dup=False, jitter=False)
    state.freeze(h="A", k=6, net=True)
    state.tick(n=6, b_first=True)
    state.teardown()


def test_regression_restarted_primary_drops_after_a_takeover_it_never_heard_of():
    # Found: A's runner is killed (its QEMU serves on). B hears nothing; its probe, sent
    # while A->B replication is down for 4 ticks, times out: `peer-host-lost` takes over at
    # t=12 (A's output is held from then on: its stream broke). B's runner is then killed
    # (its QEMU serves alone). A's runner restarts, adopts a COLO primary whose stream broke
    # (reason error), looks one budget, hears nothing (no runner on B) and at t=18
    # `colo-stream-broken` drops: both served alone. Its probe says "dead" although B's
    # QEMU serves: the takeover's nbd-server-stop closed the port it probes.
    # Should: as above, no drop on a broken stream without the secondary's word (a restarted
    # primary has not even seen the break). The probe cannot tell a dead secondary from one
    # that took over; a beacon on the former secondary (like the primary's
    # 05-liveness-beacon) would let it.
    state = PairMachine()
    state.kill_runner(h="A")
    state.path_down(ps=("replication",), src="A", k=4)
    state.tick(n=6, b_first=False)
    state.kill_runner(h="B")
    state.restart_runner(h="A")
    state.teardown()


def test_regression_interrupted_drop_is_resumed_after_the_secondary_took_over():
    # Found: A decides DROP (replication-child-failed) at t=7 and its runner dies right
    # after writing intent=drop, epoch 1, rank 1 to state.json, before any QMP command: A's
    # QEMU is still COLO primary, the stream intact. B hears nothing (no runner on A), its
    # probe times out on a one-way replication loss: `peer-host-lost` takes over at t=12
    # (epoch 1, rank 0). A's runner restarts at t=16 and Watcher.run resumes the drop at
    # once, before looking and without decide(): both served alone, B fences at t=17.
    # With a look first it still goes wrong: adoption keeps the interrupted drop's epoch 1
    # and rank 1, so peer_wins((1, 0) > (1, 1)) is false, `peer-took-over` does not fire
    # for the COLO primary, and `colo-stream-broken` drops at t=22.
    # Should: resume only a failover that has begun (query-colo-status mode "none");
    # otherwise clear the intent and decide afresh after looking. A primary still in COLO
    # should fence on any peer that serves alone (as primary-dropped-us does for the
    # secondary), not only on one that outranks an epoch it wrote but never served in.
    state = PairMachine()
    state.crash_in_next_action(h="A")
    state.replication_child_fails(h="A")
    state.tick(n=2, b_first=False)
    state.path_down(ps=("replication",), src="A", k=6)
    state.tick(n=8, b_first=False)
    state.restart_runner(h="A")
    state.teardown()


def test_regression_stalled_primary_drops_after_the_secondary_served_and_died():
    # Found: A stalls for 8 ticks with its packets dropped: a lost host, B rightly takes
    # over at t=12. B's QEMU then dies; B's runner says so (qemu dead, alone) and exits
    # while A is still stalled: the report is lost. A thaws at t=14, sees its own stall and
    # looks one budget: silence, probe "dead". At t=20 `replication-child-failed` (the
    # QUORUM_REPORT_BAD that B's nbd-server-stop caused; colo-stream-broken is next in line)
    # drops: A serves alone on a disk without the writes B acknowledged at t=12.
    # Should: the stream broke while A was not watching; without the secondary's word that
    # it did not serve alone, A must stay down (an operator recovers from B's disk).
    state = PairMachine()
    state.freeze(h="A", k=8, net=True)
    state.tick(n=6, b_first=False)
    state.kill_qemu(h="B")
    state.teardown()


def test_regression_restarted_primary_drops_on_silence_after_an_unheard_takeover():
    # Found: A's runner is killed; A's packets are dropped for 2 ticks, long enough for B's
    # probe to time out, and B takes over at t=12 (silence, unreachable). B then stalls for
    # 7 ticks with its packets dropped. A's runner restarts at t=12, adopts a COLO primary
    # whose stream broke, looks one budget, and at t=18 `colo-stream-broken` drops (peer
    # None, silent, probe unreachable). B thaws at t=19 and fences (A outranks it): the
    # writes B acknowledged at t=12 are lost. Were colo-stream-broken to wait for the
    # secondary's word, `peer-host-lost` (primary) would drop here next.
    # Should: with its stream broken, a silent secondary is no evidence that it did not
    # take over; hold until it is heard, before the silence rows as well.
    state = PairMachine()
    state.kill_runner(h="A")
    state.tick(n=2, b_first=False)
    state.freeze(h="A", k=2, net=True)
    state.tick(n=4, b_first=False)
    state.freeze(h="B", k=7, net=True)
    state.restart_runner(h="A")
    state.teardown()
