"""QMP command scripts of the vm-ft layout: the guide's steps 3 and 4, plus failover.

Setup is the guide's, command for command (without qmp_capabilities, which the client
negotiates): the secondary exports its base drive with nbd-server-add; the primary adds the
replication child with HMP drive_add, as the guide does, and starts COLO. colospec adds what
its runner needs: the liveness beacon (as in the colo flavour) and failover scripts.
"""

from __future__ import annotations

from typing import Any

from colospec import model as m
from colospec.model import Host, Pair
from colospec.qemu_opts import format_opts
from colospec.render.qmp import (
    primary_liveness_beacon,
    takeover_as_secondary,
)
from colospec.render.vmft_argv import BASE_NODE

Command = dict[str, Any]

# The NBD client under node0. The guide leaves it unnamed; colospec names it so the
# primary's failover can yank it (QEMU 7.2 hangs in x-colo-lost-heartbeat otherwise when
# the replication link is cut while the secondary lives).
NBD_CLIENT_NODE = "nbd0"


def _args(execute: str, arguments: dict[str, Any]) -> Command:
    return {"execute": execute, "arguments": arguments}


def _hmp(command_line: str) -> Command:
    return _args("human-monitor-command", {"command-line": command_line})


def secondary_nbd_export(pair: Pair, host: Host) -> list[Command]:
    """The guide's step 3."""
    port = str(pair.replication.ports.nbd)
    return [
        _args("nbd-server-start", {"addr": {"type": "inet", "data": {"host": host.address,
                                                                       "port": port}}}),
        _args("nbd-server-add", {"device": m.QUORUM_ID, "writable": True}),
    ]  # fmt: skip


def primary_replication_child(pair: Pair) -> list[Command]:
    """The guide's step 4, first half: the secondary's disk as the quorum's second child."""
    peer, port = pair.secondary, pair.replication.ports.nbd
    child = format_opts(None, [
        ("driver", "replication"), ("mode", "primary"), ("file.driver", "nbd"),
        ("file.host", peer.address), ("file.port", port), ("file.export", m.QUORUM_ID),
        ("node-name", BASE_NODE), ("file.node-name", NBD_CLIENT_NODE),
    ])  # fmt: skip
    return [
        _hmp(f"drive_add -n buddy {child}"),
        _args("x-blockdev-change", {"parent": m.QUORUM_ID, "node": BASE_NODE}),
    ]


def primary_start_colo(pair: Pair) -> list[Command]:
    """The guide's step 4, second half."""
    peer, port = pair.secondary, pair.replication.ports.migration
    # The guide's QEMU is a 2.x fork: x-colo alone, whatever qemu.version says.
    x_colo = _args("migrate-set-capabilities",
                   {"capabilities": [{"capability": "x-colo", "state": True}]})  # fmt: skip
    return [x_colo, _args("migrate", {"uri": f"tcp:{peer.address}:{port}"})]


def failover_as_primary() -> list[Command]:
    """The secondary is gone: drop its replication child and leave COLO. No colo-compare
    or filters to remove: in this layout RDMA-Paxos, not QEMU, handles the packets."""
    return [
        _args("yank", {"instances": [{"type": "block-node", "node-name": NBD_CLIENT_NODE}]}),
        _args("x-blockdev-change", {"parent": m.QUORUM_ID, "child": "children.1"}),
        _hmp(f"drive_del {BASE_NODE}"),
        {"execute": "x-colo-lost-heartbeat"},
    ]


def failover_as_secondary() -> list[Command]:
    """The primary is gone: take over, detach the redirectors from RDMA-Paxos's sockets and
    tell the LAN where the guest's MAC now lives."""
    return takeover_as_secondary()


def render_vmft_qmp_scripts(pair: Pair, host: Host) -> dict[str, list[Command]]:
    """{'qmp/NN-name.json': commands} for one host: its setup in order, then both failovers."""
    if host.role == "secondary":
        setup = {"qmp/10-nbd-export.json": secondary_nbd_export(pair, host)}
    else:
        setup = {
            "qmp/05-liveness-beacon.json": primary_liveness_beacon(pair, host),
            "qmp/10-replication-child.json": primary_replication_child(pair),
            "qmp/20-start-colo.json": primary_start_colo(pair),
        }
    return {
        **setup,
        "qmp/90-failover-as-primary.json": failover_as_primary(),
        "qmp/91-failover-as-secondary.json": failover_as_secondary(),
    }
