"""QMP commands every flavour sends the same way, and the scripts that hold them.

Each script is a JSON list of QMP commands exactly as sent (without qmp_capabilities,
which the client negotiates). Setup scripts stop at the first error; failover scripts run
every command and log failures, because a half-failed-over VM is worse than one whose
cleanup left an object behind (see plan.json's on_error).
"""

from __future__ import annotations

from typing import Any

from colospec import model as m
from colospec.model import Host, Pair
from colospec.qemu_opts import format_opts
from colospec.render import tls
from colospec.versions import ReplicationChild

Command = dict[str, Any]

# Every flavour's scripts, by the plan step (or failover) that runs each.
SCRIPTS = {
    "liveness-beacon": "qmp/05-liveness-beacon.json",
    "nbd-export": "qmp/10-nbd-export.json",
    "replication-child": "qmp/10-replication-child.json",
    "start-colo": "qmp/20-start-colo.json",
    "failover-as-primary": "qmp/90-failover-as-primary.json",
    "failover-as-secondary": "qmp/91-failover-as-secondary.json",
}
# QEMU's own announce defaults: first RARP after 50 ms, 5 rounds, +100 ms each.
ANNOUNCE = {"initial": 50, "max": 550, "rounds": 5, "step": 100}


def script_files(
    setup: dict[str, list[Command]], as_primary: list[Command], as_secondary: list[Command]
) -> dict[str, list[Command]]:
    """{'qmp/NN-name.json': commands}: a host's setup by step id, then both failovers."""
    return {
        **{SCRIPTS[step]: commands for step, commands in setup.items()},
        SCRIPTS["failover-as-primary"]: as_primary,
        SCRIPTS["failover-as-secondary"]: as_secondary,
    }


def command(execute: str, arguments: dict[str, Any] | None = None) -> Command:
    if arguments is None:
        return {"execute": execute}
    return {"execute": execute, "arguments": arguments}


def hmp(command_line: str) -> Command:
    return command("human-monitor-command", {"command-line": command_line})


def inet(host: str, port: int) -> dict[str, Any]:
    return {"type": "inet", "data": {"host": host, "port": str(port)}}


def nbd_server_start(pair: Pair, host: Host) -> Command:
    addr = inet(host.address, pair.replication.ports.nbd)
    return command("nbd-server-start", {"addr": addr, **tls.creds(pair, "server")})


def liveness_beacon(pair: Pair, host: Host) -> list[Command]:
    """An NBD server without exports on the primary's address: the secondary's runner
    connects to it to tell "the primary's runner is silent but its QEMU lives" (a
    greeting) from "its QEMU is gone" (refused) and "the host is gone" (no answer). The
    secondary's own NBD server serves the same purpose the other way round."""
    return [nbd_server_start(pair, host)]


def set_capabilities(names: tuple[str, ...]) -> Command:
    caps = [{"capability": name, "state": True} for name in names]
    return command("migrate-set-capabilities", {"capabilities": caps})


def migration_parameters(pair: Pair, peer: Host) -> Command:
    """COLO's checkpoint delay, and TLS towards the peer this host migrates to."""
    delay = {"x-checkpoint-delay": pair.replication.checkpoint_delay_ms}
    return command(
        "migrate-set-parameters", {**delay, **tls.migration_parameters(pair, "client", peer)}
    )


def incoming_parameters(pair: Pair) -> list[Command]:
    """The destination's side of migration: the TLS it requires of the source."""
    if pair.security.tls is None:
        return []
    return [command("migrate-set-parameters", tls.migration_parameters(pair, "server", None))]


def migrate(pair: Pair, peer: Host | None = None) -> Command:
    """Start COLO's migration to the secondary (or to the peer that joins this host)."""
    peer, port = peer or pair.secondary, pair.replication.ports.migration
    return command("migrate", {"uri": f"tcp:{peer.address}:{port}"})


def replication_child(
    pair: Pair, spelling: ReplicationChild, export: str, node: str, peer: Host | None = None
) -> Command:
    """The secondary's disk (its NBD export), opened as a replication child."""
    peer, port = peer or pair.secondary, pair.replication.ports.nbd
    if spelling == "blockdev-add":
        server = {"type": "inet", "host": peer.address, "port": str(port)}
        nbd = {"driver": "nbd", "node-name": m.NBD_NODE, "server": server, "export": export,
               **tls.creds(pair, "client")}  # fmt: skip
        add = command(
            "blockdev-add",
            {"driver": "replication", "node-name": node, "mode": "primary", "file": nbd},
        )
    else:
        child = {
            "driver": "replication",
            "mode": "primary",
            "file.driver": "nbd",
            "file.host": peer.address,
            "file.port": port,
            "file.export": export,
            "node-name": node,
            "file.node-name": m.NBD_NODE,
        }
        add = hmp(f"drive_add -n buddy {format_opts(None, child.items())}")
    return add


def add_replication_child(
    pair: Pair, spelling: ReplicationChild, export: str, node: str
) -> list[Command]:
    """The secondary's disk (its NBD export) as the primary quorum's second child."""
    return [
        replication_child(pair, spelling, export, node),
        command("x-blockdev-change", {"parent": m.QUORUM_ID, "node": node}),
    ]


def drop_replication_child(spelling: ReplicationChild, node: str) -> list[Command]:
    """The primary's failover starts here: the secondary is gone, so is its child.

    The NBD client is yanked first: with the replication link dead but the peer alive,
    QEMU 7.2 otherwise hangs (in blockdev-del or x-colo-lost-heartbeat, flushing over the
    dead link) with its main loop stuck. Yanking the migration stream does not help, and
    yanking every instance would also drop our own QMP connection.
    """
    return [
        command("yank", {"instances": [{"type": "block-node", "node-name": m.NBD_NODE}]}),
        command("x-blockdev-change", {"parent": m.QUORUM_ID, "child": "children.1"}),
        command("blockdev-del", {"node-name": node})
        if spelling == "blockdev-add"
        else hmp(f"drive_del {node}"),
    ]


def takeover_as_secondary() -> list[Command]:
    """qemu-colo.rst's secondary failover: stop replicating, take over, detach the
    redirectors and tell the LAN where the guest's MAC now lives."""
    return [
        command("nbd-server-stop"),
        command("x-colo-lost-heartbeat"),
        command("object-del", {"id": m.OUT_FILTER}),
        command("object-del", {"id": m.IN_FILTER}),
        command("chardev-remove", {"id": m.OUT_CHARDEV}),
        command("chardev-remove", {"id": m.IN_CHARDEV}),
        command("announce-self", dict(ANNOUNCE)),
    ]
