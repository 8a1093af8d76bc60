"""systemd units for one host: systemd owns every long-running process.

colospec-<pair>.target pulls in, in order:
  -disks.service (oneshot)   active/hidden disks, image checks
  -network.service (oneshot) tap on the bridge (+ifb rules where the flavour needs them)
  -qemu.service              QEMU itself, never restarted by systemd
  -runner.service            `colospec run --attach`: QMP sequence, heartbeats, failover;
                             Type=notify, ready once COLO mode is reached
Stopping the target stops them all (PropagatesStopTo=); nothing restarts QEMU with them.
"""

from __future__ import annotations

from colospec.model import Host, Pair
from colospec.render.text import render_template


def render_units(
    pair: Pair, host: Host, qemu_argv: list[str], qemu_env_file: str | None = None
) -> dict[str, str]:
    """qemu_env_file: relative to the host directory; QEMU's environment comes from it."""
    lay = pair.layout(host)
    colospec = pair.runtime.colospec
    ctx = {
        "pair": pair,
        "host": host,
        "lay": lay,
        "units": {p: lay.unit(p) for p in ("disks", "network", "qemu", "runner")},
        "qemu_argv": qemu_argv,
        "disks_argv": [colospec, "prepare", "disks", lay.installed_dir],
        "network_up_argv": [colospec, "prepare", "network", lay.installed_dir],
        "network_down_argv": [colospec, "cleanup", "network", lay.installed_dir],
        "runner_argv": [colospec, "run", "--attach", lay.installed_dir],
        "run_dir_rel": lay.run_dir.removeprefix("/run/"),
        "qemu_env_file": f"{lay.installed_dir}/{qemu_env_file}" if qemu_env_file else None,
    }
    return {
        f"systemd/{lay.unit()}": render_template("systemd/pair.target.j2", **ctx),
        f"systemd/{lay.unit('disks')}": render_template("systemd/disks.service.j2", **ctx),
        f"systemd/{lay.unit('network')}": render_template("systemd/network.service.j2", **ctx),
        f"systemd/{lay.unit('qemu')}": render_template("systemd/qemu.service.j2", **ctx),
        f"systemd/{lay.unit('runner')}": render_template("systemd/runner.service.j2", **ctx),
    }
