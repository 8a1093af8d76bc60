"""tc.sh: the host's network plumbing as a reviewable, idempotent shell script."""

from __future__ import annotations

from typing import Any

from colospec.model import Host, Pair
from colospec.render.text import render_template


def render_tc_script(pair: Pair, host: Host, template: str = "tc.sh.j2", **more: Any) -> str:
    """template: tc.sh.j2, or a flavour's template that extends it with more plumbing."""
    tap_mac = pair.layout(host).tap_mac
    return render_template(template, pair=pair, host=host, tap_mac=tap_mac, **more)
