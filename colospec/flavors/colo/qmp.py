"""QMP command scripts of the colo layout (qemu-colo.rst's sequences)."""

from __future__ import annotations

from typing import Any

from colospec.flavors.colo import ids
from colospec.flavors.colo.argv import compare_channels
from colospec.model import Host, Pair
from colospec.render.qmp import (
    Command,
    add_replication_child,
    command,
    drop_replication_child,
    incoming_parameters,
    inet,
    liveness_beacon,
    migrate,
    migration_parameters,
    nbd_server_start,
    script_files,
    set_capabilities,
    takeover_as_secondary,
)
from colospec.versions import QemuSyntax, known_syntax


def qmp_scripts(pair: Pair, host: Host) -> dict[str, list[Command]]:
    syntax = known_syntax(pair.qemu.version)
    if host.role == "secondary":
        setup = {"nbd-export": secondary_setup(pair, host, syntax)}
    else:
        child = syntax.replication_child, ids.NBD_EXPORT, ids.REPLICATION_NODE
        setup = {
            "liveness-beacon": liveness_beacon(pair, host),
            "replication-child": add_replication_child(pair, *child),
            "start-colo": primary_start_colo(pair, syntax, pair.secondary),
        }
    as_primary = failover_as_primary(syntax)
    return script_files(setup, as_primary, failover_as_secondary(pair, host))


def secondary_setup(pair: Pair, host: Host, syntax: QemuSyntax) -> list[Command]:
    out = [set_capabilities(syntax.colo_capabilities)] if syntax.secondary_sets_x_colo else []
    out += incoming_parameters(pair)
    out.append(nbd_server_start(pair, host))
    if syntax.nbd_export == "block-export-add":
        export = {"type": "nbd", "id": "export0", "node-name": ids.PARENT_NODE}
        out.append(
            command("block-export-add", {**export, "name": ids.NBD_EXPORT, "writable": True})
        )
    else:
        export = {"device": ids.PARENT_ID, "name": ids.NBD_EXPORT, "writable": True}
        out.append(command("nbd-server-add", export))
    return out


def primary_start_colo(pair: Pair, syntax: QemuSyntax, peer: Host) -> list[Command]:
    """Start COLO towards peer (the secondary, or a host that joins this one)."""
    return [
        set_capabilities(syntax.colo_capabilities),
        migration_parameters(pair, peer),
        migrate(pair, peer),
    ]


def failover_as_primary(syntax: QemuSyntax) -> list[Command]:
    """The secondary is gone: drop it and keep serving alone.

    colo-compare goes before x-colo-lost-heartbeat because it holds the guest's output
    until its timeout while no secondary answers.
    """
    return [
        *drop_replication_child(syntax.replication_child, ids.REPLICATION_NODE),
        # Stop feeding colo-compare first (m0, redire1): new guest output then goes
        # straight to the tap. The packets comp0 still holds are lost when it is deleted
        # (QEMU 7.2 closes its output before flushing them), so clients resend those
        # after their retransmission timeout.
        *(
            command("object-del", {"id": i})
            for i in ("m0", "redire1", "comp0", "redire0", "iothread1")
        ),
        command("x-colo-lost-heartbeat"),
    ]


def failover_as_secondary(pair: Pair, host: Host) -> list[Command]:
    """The primary is gone: take over, tell the LAN where the guest's MAC now lives, and
    open the channels a future secondary would connect to (qemu-colo.rst's last step)."""

    def chardev(id_: str, where: dict[str, Any], listens: bool) -> Command:
        where = dict(where)
        creds = {k: where.pop(k) for k in ("tls-creds",) if k in where}
        if "path" in where:
            addr = {"type": "unix", "data": where}
        else:
            addr = inet(where["host"], where["port"])
        wait = {"wait": False} if listens else {}
        socket = {"addr": addr, "server": listens, **wait, **creds}
        return command("chardev-add", {"id": id_, "backend": {"type": "socket", "data": socket}})

    return [
        *takeover_as_secondary(),
        *(chardev(*c) for c in compare_channels(pair, host)),
        # takeover_as_secondary stopped the export: the same port answers again, without
        # exports, so that a joining peer's probe can tell this QEMU lives.
        *liveness_beacon(pair, host),
    ]
