"""OUT/<pair>/pacemaker/: the pair as a Pacemaker promotable clone, for specs with
`cluster: {manager: pacemaker}` (README, Many pairs: Pacemaker).

One CIB fragment per pair (the clone of ocf:colospec:pair, and its constraints) and the
script that loads it into a running cluster. What the fragment says, and why:
- a promotable clone, one instance per host, one promoted: where the guest is served;
- -INFINITY everywhere but the pair's two hosts (a third node has no artifacts for it);
- a small promotion preference for the spec's primary, so the first promotion goes where
  the runners bring COLO up as primary; the agent's own score (100 where the guest is
  served) outweighs it after any failover, so nothing moves back;
- resource-stickiness, so a returning host never draws the instance back by itself.
"""

from __future__ import annotations

from colospec.model import Pair
from colospec.render.text import render_template

# Clone settings the agent depends on (colospec/ocf/agent.py).
CLONE_META = {
    "promotable": "true",
    "promoted-max": "1",
    "promoted-node-max": "1",
    "clone-max": "2",
    "clone-node-max": "1",
    "notify": "true",
    "interleave": "true",
    "resource-stickiness": "100",
    # A failed runner is restarted in place, never moved: only two hosts can run it.
    "migration-threshold": "3",
    # A node cut off from the quorum records its promoted instance as failed (it no longer
    # serves); that must not count against the node for good once it is back.
    "failure-timeout": "60s",
}
# Below the agent's 10 for an in-sync secondary and 100 where the guest runs.
FIRST_PRIMARY_SCORE = 5


def resource_id(pair: Pair) -> str:
    return f"colospec-{pair.name}"


def render_pacemaker(pair: Pair) -> dict[str, str]:
    """Files relative to OUT/<pair>/."""
    context = {
        "pair": pair,
        "rid": resource_id(pair),
        "meta": CLONE_META,
        "first_primary_score": FIRST_PRIMARY_SCORE,
        "artifacts_dir": pair.runtime.artifacts_dir,
    }
    return {
        "pacemaker/cib-fragment.xml": render_template("pacemaker/cib-fragment.xml.j2", **context),
        "pacemaker/apply.sh": render_template("pacemaker/apply.sh.j2", **context),
    }
