"""Re-protection after a failover: the host that serves alone copies its disk to the
peer that joins it, re-creates the replication child, colo-compare and the filters, and
starts COLO again (qemu-colo.rst's "Primary/Secondary resume replication", as tried on
QEMU 7.2 here; README, "Re-protection").

Either host may serve in either layout (its QEMU started as primary, or as a secondary
that took over), and either may join; so each host's artifacts hold both command lines
and both variants of the script that re-creates colo-compare's filters.
"""

from __future__ import annotations

from typing import Any

from colospec import model as m
from colospec.flavors.colo import argv, ids
from colospec.flavors.colo.qmp import primary_start_colo, secondary_setup
from colospec.model import Host, Pair
from colospec.render import plan, tls
from colospec.render.qmp import (
    Command,
    command,
    inet,
    nbd_server_start,
    replication_child,
)
from colospec.versions import QemuSyntax

JOB = "resync"  # the mirror's job id
TARGET_NODE = "resync0"  # the mirror's NBD node on the joining host's export
LAYOUTS = ("primary", "secondary")
# A secondary-layout QEMU has filter-rewriter rew0 on the guest's netdev: colo-compare's
# filters go in front of it, as on the primary layout's command line.
BEFORE_REWRITER = {"insert": "before", "position": f"id={ids.REWRITER}"}
SCRIPTS = {
    "join-nbd-export": "qmp/60-join-nbd-export.json",
    "resync-channels": "qmp/70-resync-channels.json",
    "resync-mirror": "qmp/71-resync-mirror.json",
    "resync-attach": "qmp/72-resync-attach.json",
    "resync-colo-primary": "qmp/73-resync-colo-as-primary.json",
    "resync-colo-secondary": "qmp/73-resync-colo-as-secondary.json",
    "resync-rollback": "qmp/79-resync-rollback.json",
    "serve-alone": "qmp/80-serve-alone.json",
}
COMPARE_OBJECTS = ("m0", "redire1", "comp0", "redire0", "iothread1")  # in deletion order


def other_layout(host: Host) -> str:
    return "secondary" if host.role == "primary" else "primary"


def args_file(layout: str, host: Host) -> str:
    return "qemu.args" if layout == host.role else f"qemu-{layout}.args"


def qmp_scripts(pair: Pair, host: Host, syntax: QemuSyntax) -> dict[str, list[Command]]:
    peer = pair.peer_of(host)
    return {
        # The joining host: its own export, as a secondary's bring-up makes it.
        SCRIPTS["join-nbd-export"]: secondary_setup(pair, host, syntax),
        SCRIPTS["resync-channels"]: _channels(pair, host),
        SCRIPTS["resync-mirror"]: _mirror(pair, peer),
        SCRIPTS["resync-attach"]: _attach(pair, peer, syntax),
        SCRIPTS["resync-colo-primary"]: _colo(pair, peer, syntax, {}),
        SCRIPTS["resync-colo-secondary"]: _colo(pair, peer, syntax, BEFORE_REWRITER),
        SCRIPTS["resync-rollback"]: _rollback(),
        SCRIPTS["serve-alone"]: _serve_alone(pair, host),
    }


def _serve_alone(pair: Pair, host: Host) -> list[Command]:
    """A primary-layout QEMU, started without a secondary, made to serve alone: without
    its secondary colo-compare would hold each packet for compare_timeout_ms."""
    return [
        nbd_server_start(pair, host),  # the beacon a joining peer's probe looks for
        *(command("object-del", {"id": i}) for i in COMPARE_OBJECTS),
        command("cont"),
    ]


def _channels(pair: Pair, host: Host) -> list[Command]:
    """The two listeners the joining secondary's redirectors dial, made anew before it
    starts: a listener left without a frontend by a failover never notices that its old
    peer died, and keeps showing it connected."""
    out: list[Command] = []
    for id_, where, _ in argv.compare_channels(pair, host)[:2]:
        addr = inet(where["host"], where["port"])
        socket = {"addr": addr, "server": True, "wait": False, **tls.creds(pair, "server")}
        out += [
            command("chardev-remove", {"id": id_}),
            command("chardev-add", {"id": id_, "backend": {"type": "socket", "data": socket}}),
        ]
    return out


# QEMU 7.2's blockdev-add of an NBD node connects with its main loop blocked: towards a
# peer that does not answer, for the kernel's whole SYN timeout (2 min). Bounded below the
# runner's hung-QEMU limit, the command fails instead and the copy is rolled back.
NBD_OPEN_TIMEOUT_S = 2


def _nbd(pair: Pair, peer: Host, node: str) -> dict[str, Any]:
    server = {"type": "inet", "host": peer.address, "port": str(pair.replication.ports.nbd)}
    return {"driver": "nbd", "node-name": node, "server": server, "export": ids.NBD_EXPORT,
            "open-timeout": NBD_OPEN_TIMEOUT_S, **tls.creds(pair, "client")}  # fmt: skip


def _mirror(pair: Pair, peer: Host) -> list[Command]:
    """Copy the whole disk to the joining host's export while the guest runs."""
    return [
        command("blockdev-add", _nbd(pair, peer, TARGET_NODE)),
        command(
            "blockdev-mirror",
            {"job-id": JOB, "device": m.QUORUM_ID, "target": TARGET_NODE, "sync": "full"},
        ),
    ]


def _attach(pair: Pair, peer: Host, syntax: QemuSyntax) -> list[Command]:
    """The replication child first (its NBD connect takes ~0.1 s: outside the pause), then
    the guest stops and the mirror, in step, is cancelled: the copy is now exact. The guest
    stays stopped until COLO's first checkpoint starts it: 7.2's replication driver fails
    writes before COLO starts, and the secondary would miss them."""
    child = replication_child(
        pair, syntax.replication_child, ids.NBD_EXPORT, ids.REPLICATION_NODE, peer
    )
    if child["execute"] == "blockdev-add":
        child["arguments"]["file"]["open-timeout"] = NBD_OPEN_TIMEOUT_S
    return [child, command("stop"), command("block-job-cancel", {"device": JOB})]


def _colo(pair: Pair, peer: Host, syntax: QemuSyntax, placement: dict[str, str]) -> list[Command]:
    def obj(qom_type: str, id_: str, **props: Any) -> Command:
        return command("object-add", {"qom-type": qom_type, "id": id_, **props})

    hdr = {"vnet_hdr_support": True} if pair.vm.nic.vnet_hdr else {}
    compare = {
        "primary_in": "compare0-0",
        "secondary_in": ids.SECONDARY_OUTPUT,
        "outdev": "compare_out0",
        "iothread": "iothread1",
        "compare_timeout": pair.replication.compare_timeout_ms,
    }
    net = {"netdev": m.NETDEV_ID, **hdr, **placement}
    return [
        command("blockdev-del", {"node-name": TARGET_NODE}),
        command("x-blockdev-change", {"parent": m.QUORUM_ID, "node": ids.REPLICATION_NODE}),
        obj("filter-mirror", "m0", **net, queue="tx", outdev=ids.MIRROR),
        obj("filter-redirector", "redire0", **net, queue="rx", indev="compare_out"),
        obj("filter-redirector", "redire1", **net, queue="rx", outdev="compare0"),
        obj("iothread", "iothread1"),
        obj("colo-compare", "comp0", **compare, **hdr),
        *primary_start_colo(pair, syntax, peer),
    ]


def _rollback() -> list[Command]:
    """Undo whatever part of a re-protection ran, and let the guest run alone again. Each
    command may fail (what it undoes may not exist); each yank names one instance, as a
    yank naming a missing one fails whole."""

    def yank(instance: dict[str, str]) -> Command:
        return command("yank", {"instances": [instance]})

    return [
        yank({"type": "block-node", "node-name": TARGET_NODE}),
        yank({"type": "block-node", "node-name": m.NBD_NODE}),
        yank({"type": "migration"}),
        command("migrate_cancel"),
        command("block-job-cancel", {"device": JOB, "force": True}),
        command("x-blockdev-change", {"parent": m.QUORUM_ID, "child": "children.1"}),
        command("blockdev-del", {"node-name": ids.REPLICATION_NODE}),
        command("blockdev-del", {"node-name": TARGET_NODE}),
        *(command("object-del", {"id": i}) for i in COMPARE_OBJECTS),
        command("cont"),
    ]


def plan_sections(pair: Pair, host: Host) -> dict[str, Any]:
    """plan.json's rejoin and resync sections."""
    lay = pair.layout(host)
    return {
        "rejoin": {
            # automatic: a host that finds its peer serving alone joins it; manual: only
            # with `colospec run --rejoin`.
            "automatic": pair.failover.rejoin == "automatic",
            # Joining as the secondary of the peer that serves: this host's own disk is
            # overwritten by the copy, its scratch disks made fresh.
            "args_file": args_file("secondary", host),
            "disks": {
                "base": {"path": host.image, "format": pair.vm.disk.format},
                "scratch": {"active": lay.active_disk, "hidden": lay.hidden_disk},
            },
            "steps": [
                {"id": "disks", "kind": "prepare-disks", "disks": "rejoin"},
                {"id": "network", "kind": "prepare-network"},
                # Its redirectors dial the serving host's listeners, made anew first.
                {"id": "peer-channels", "kind": "wait-resync", "stage": "channels"},
                {"id": "qemu", "kind": "start-qemu", "args_file": args_file("secondary", host)},
                {"id": "qmp", "kind": "connect-qmp"},
                plan.step(
                    "join-nbd-export", "qmp", script=SCRIPTS["join-nbd-export"], on_error="abort"
                ),
                {"id": "probe-peer", "kind": "probe-peer"},
                {"id": "colo", "kind": "wait-colo", "mode": "secondary"},
            ],
        },
        # `colospec run --force-primary`: this host's disk is the newest; it serves from its
        # primary layout without a secondary, and the peer then joins it.
        "serve_alone": {
            "steps": [
                {"id": "check-qemu", "kind": "check-qemu"},
                {"id": "disks", "kind": "prepare-disks", "disks": "alone"},
                {"id": "network", "kind": "prepare-network"},
                {"id": "qemu", "kind": "start-qemu", "args_file": args_file("primary", host)},
                {"id": "qmp", "kind": "connect-qmp"},
                plan.step("serve-alone", "qmp", script=SCRIPTS["serve-alone"], on_error="abort"),
            ],
        },
        "resync": {
            "job": JOB,
            "channels": SCRIPTS["resync-channels"],
            "mirror": SCRIPTS["resync-mirror"],
            "attach": SCRIPTS["resync-attach"],
            "colo": {layout: SCRIPTS[f"resync-colo-{layout}"] for layout in LAYOUTS},
            "rollback": SCRIPTS["resync-rollback"],
            "chardevs": [ids.MIRROR, ids.SECONDARY_OUTPUT],
            # A running QEMU with this object started from the secondary layout.
            "secondary_layout_object": ids.REWRITER,
        },
        # The layout this host's QEMU starts in from qemu.args.
        "layout": host.role,
    }
