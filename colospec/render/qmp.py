"""QMP command scripts, per host, in execution order (qemu-colo.rst's sequences).

Each script is a JSON list of QMP commands exactly as sent (without qmp_capabilities,
which the client negotiates). Setup scripts stop at the first error; failover scripts run
every command and log failures, because a half-failed-over VM is worse than one whose
cleanup left an object behind (see plan.json's on_error).
"""

from __future__ import annotations

from typing import Any

from colospec import model as m
from colospec.model import Host, Pair
from colospec.versions import QemuSyntax, syntax_for

Command = dict[str, Any]

# QEMU's own announce defaults: first RARP after 50 ms, 5 rounds, +100 ms each.
ANNOUNCE = {"initial": 50, "max": 550, "rounds": 5, "step": 100}


def _args(execute: str, arguments: dict[str, Any]) -> Command:
    return {"execute": execute, "arguments": arguments}


def colo_capabilities(syntax: QemuSyntax) -> Command:
    caps = [{"capability": c, "state": True} for c in syntax.colo_capabilities]
    return _args("migrate-set-capabilities", {"capabilities": caps})


def _inet(host: str, port: int) -> dict[str, Any]:
    return {"type": "inet", "data": {"host": host, "port": str(port)}}


def secondary_setup(pair: Pair, host: Host, syntax: QemuSyntax) -> list[Command]:
    nbd_port = pair.replication.ports.nbd
    out = [colo_capabilities(syntax)] if syntax.secondary_sets_x_colo else []
    out.append(_args("nbd-server-start", {"addr": _inet(host.address, nbd_port)}))
    if syntax.nbd_export == "block-export-add":
        out.append(_args("block-export-add", {
            "type": "nbd", "id": "export0", "node-name": m.PARENT_NODE,
            "name": m.NBD_EXPORT, "writable": True,
        }))  # fmt: skip
    else:
        out.append(_args("nbd-server-add", {"device": m.PARENT_ID, "name": m.NBD_EXPORT,
                                            "writable": True}))  # fmt: skip
    return out


def primary_liveness_beacon(pair: Pair, host: Host) -> list[Command]:
    """An NBD server without exports on the primary's address: the secondary's runner
    connects to it to tell "the primary's runner is silent but its QEMU lives" (a
    greeting) from "its QEMU is gone" (refused) and "the host is gone" (no answer). The
    secondary's own NBD server serves the same purpose the other way round."""
    return [_args("nbd-server-start", {"addr": _inet(host.address, pair.replication.ports.nbd)})]


def primary_replication_child(pair: Pair, syntax: QemuSyntax) -> list[Command]:
    peer, nbd_port = pair.secondary, pair.replication.ports.nbd
    if syntax.replication_child == "blockdev-add":
        add = _args("blockdev-add", {
            "driver": "replication", "node-name": m.REPLICATION_NODE, "mode": "primary",
            "file": {"driver": "nbd", "node-name": m.NBD_NODE,
                     "server": {"type": "inet", "host": peer.address, "port": str(nbd_port)},
                     "export": m.NBD_EXPORT},
        })  # fmt: skip
    else:
        add = _args("human-monitor-command", {"command-line": (
            f"drive_add -n buddy driver=replication,mode=primary,file.driver=nbd,"
            f"file.host={peer.address},file.port={nbd_port},file.export={m.NBD_EXPORT},"
            f"node-name={m.REPLICATION_NODE}")})  # fmt: skip
    return [add, _args("x-blockdev-change", {"parent": m.QUORUM_ID, "node": m.REPLICATION_NODE})]


def primary_start_colo(pair: Pair, syntax: QemuSyntax) -> list[Command]:
    rep, peer = pair.replication, pair.secondary
    return [
        colo_capabilities(syntax),
        _args("migrate-set-parameters", {"x-checkpoint-delay": rep.checkpoint_delay_ms}),
        _args("migrate", {"uri": f"tcp:{peer.address}:{rep.ports.migration}"}),
    ]


def failover_as_primary(pair: Pair, syntax: QemuSyntax) -> list[Command]:
    """The secondary is gone: drop it and keep serving alone.

    The NBD client is yanked first: with the replication link dead but the peer alive,
    QEMU 7.2 otherwise hangs (in blockdev-del or x-colo-lost-heartbeat, flushing over the
    dead link) with its main loop stuck. Yanking the migration stream does not help, and
    yanking every instance would also drop our own QMP connection. colo-compare goes
    before x-colo-lost-heartbeat because it holds the guest's output until its timeout
    while no secondary answers.
    """
    drop_child = (
        _args("blockdev-del", {"node-name": m.REPLICATION_NODE})
        if syntax.replication_child == "blockdev-add"
        else _args("human-monitor-command", {"command-line": f"drive_del {m.REPLICATION_NODE}"})
    )
    return [
        _args("yank", {"instances": [{"type": "block-node", "node-name": m.NBD_NODE}]}),
        _args("x-blockdev-change", {"parent": m.QUORUM_ID, "child": "children.1"}),
        drop_child,
        # Stop feeding colo-compare first (m0, redire1): new guest output then goes
        # straight to the tap. The packets comp0 still holds are lost when it is deleted
        # (QEMU 7.2 closes its output before flushing them), so clients resend those
        # after their retransmission timeout.
        *(_args("object-del", {"id": i}) for i in ("m0", "redire1", "comp0", "redire0", "iothread1")),
        {"execute": "x-colo-lost-heartbeat"},
    ]  # fmt: skip


def takeover_as_secondary() -> list[Command]:
    """qemu-colo.rst's secondary failover, both flavours: stop replicating, take over,
    detach the redirectors and tell the LAN where the guest's MAC now lives."""
    return [
        {"execute": "nbd-server-stop"},
        {"execute": "x-colo-lost-heartbeat"},
        _args("object-del", {"id": "f2"}),
        _args("object-del", {"id": "f1"}),
        _args("chardev-remove", {"id": "red1"}),
        _args("chardev-remove", {"id": "red0"}),
        _args("announce-self", dict(ANNOUNCE)),
    ]


def failover_as_secondary(pair: Pair, host: Host) -> list[Command]:
    """The primary is gone: take over, tell the LAN where the guest's MAC now lives, and
    open the channels a future secondary would connect to (qemu-colo.rst's last step)."""
    ports, lay = pair.replication.ports, pair.layout(host)

    def socket(id_: str, addr: dict[str, Any], server: bool) -> Command:
        return _args("chardev-add", {"id": id_, "backend": {"type": "socket", "data": {
            "addr": addr, "server": server, **({"wait": False} if server else {})}}})  # fmt: skip

    def unix(name: str) -> dict[str, Any]:
        return {"type": "unix", "data": {"path": lay.local_socket(name)}}

    return [
        *takeover_as_secondary(),
        socket("mirror0", _inet(host.address, ports.mirror), True),
        socket("compare1", _inet(host.address, ports.compare), True),
        socket("compare0", unix("compare0"), True),
        socket("compare0-0", unix("compare0"), False),
        socket("compare_out", unix("compare_out"), True),
        socket("compare_out0", unix("compare_out"), False),
    ]


def render_qmp_scripts(pair: Pair, host: Host) -> dict[str, list[Command]]:
    """{'qmp/NN-name.json': commands} for one host: its setup in order, then both failovers."""
    syntax = syntax_for(pair.qemu.version)
    assert syntax is not None, "validated before rendering"
    if host.role == "secondary":
        setup = {"qmp/10-nbd-export.json": secondary_setup(pair, host, syntax)}
    else:
        setup = {
            "qmp/05-liveness-beacon.json": primary_liveness_beacon(pair, host),
            "qmp/10-replication-child.json": primary_replication_child(pair, syntax),
            "qmp/20-start-colo.json": primary_start_colo(pair, syntax),
        }
    return {
        **setup,
        "qmp/90-failover-as-primary.json": failover_as_primary(pair, syntax),
        "qmp/91-failover-as-secondary.json": failover_as_secondary(pair, host),
    }
