"""tc.sh: the host's network plumbing as a reviewable, idempotent shell script."""

from __future__ import annotations

from colospec.model import Host, Pair
from colospec.render.plan import tap_mac
from colospec.render.text import render_template


def render_tc_script(pair: Pair, host: Host) -> str:
    return render_template("tc.sh.j2", pair=pair, host=host, tap_mac=tap_mac(pair.name, host.name))
