"""The QEMU command line of one host, following qemu-colo.rst's layout.

Differences from the upstream document, on purpose: QMP on a unix socket in the host's
run directory; every listening TCP socket bound to the host's replication address;
colo-compare's loopback channels as unix sockets; chardev servers never wait, so QEMU
comes up (and answers QMP) before its peer does.
"""

from __future__ import annotations

from typing import Any

from colospec import model as m
from colospec.flavors.colo import ids
from colospec.model import Host, Pair
from colospec.qemu_opts import format_opts
from colospec.render import tls
from colospec.render.qemu_argv import (
    accel,
    display,
    incoming,
    kernel,
    net_filter,
    nic,
    opt,
    primary_quorum,
    quorum,
    redirectors,
    vnet_hdr_support,
)
from colospec.versions import known_syntax

SERVER = {"server": True, "wait": False}  # listens, and never waits for its client
VNC_DEVICES = ["-device", "VGA", "-device", "piix3-usb-uhci", "-device", "usb-tablet"]


def qemu_argv(pair: Pair, host: Host, layout: str | None = None) -> list[str]:
    """The complete argv, binary first, including qemu.extra_args. layout: the role this
    host's QEMU starts in (default: its role in the spec); after a failover either host
    may start in either (README, "Re-protection")."""
    layout = layout or host.role
    role = primary_args if layout == "primary" else secondary_args
    return [pair.qemu.binary, *_common(pair, host), *role(pair, host), *pair.qemu.extra_args]


def _common(pair: Pair, host: Host) -> list[str]:
    vm, lay = pair.vm, pair.layout(host)
    name = format_opts(pair.name, [("debug-threads", True)])
    console = {"id": "console", "path": lay.console_socket, **SERVER, "logfile": lay.console_log}
    tap = {"id": m.NETDEV_ID, "ifname": host.tap, "script": "no", "downscript": "no"}
    return [
        *["-name", name, "-nodefaults", "-machine", vm.machine, *accel(vm.accel)],
        *["-cpu", vm.cpu, "-m", str(vm.memory_mib), "-smp", str(vm.cpus)],
        *["-pidfile", lay.pidfile],
        *opt("-chardev", "socket", {"id": "qmp", "path": lay.qmp_socket, **SERVER}),
        *opt("-mon", None, {"chardev": "qmp", "mode": "control"}),
        *opt("-chardev", "socket", console),
        *["-serial", "chardev:console"],
        *display(vm),
        *(VNC_DEVICES if vm.vnc else []),
        *opt("-netdev", "tap", {**tap, "vhost": False, "vnet_hdr": vm.nic.vnet_hdr}),
        *nic(pair, "nic0"),
        *kernel(vm),
        *tls.objects(pair, host),
    ]


def compare_channels(pair: Pair, host: Host) -> list[tuple[str, dict[str, Any], bool]]:
    """colo-compare's chardevs on the primary as (id, where, listens): the command line
    creates them and the secondary's failover re-creates them for a future secondary.
    The two on the replication network are the servers the secondary's redirectors dial:
    their `where` holds their tls-creds too, with TLS on."""
    ports, lay = pair.replication.ports, pair.layout(host)

    def unix(name: str) -> dict[str, Any]:
        return {"path": lay.local_socket(name)}

    server = tls.creds(pair, "server")
    return [
        # The secondary's redirectors connect to these two.
        (ids.MIRROR, {"host": host.address, "port": ports.mirror, **server}, True),
        (ids.SECONDARY_OUTPUT, {"host": host.address, "port": ports.compare, **server}, True),
        ("compare0", unix("compare0"), True),
        ("compare0-0", unix("compare0"), False),
        ("compare_out", unix("compare_out"), True),
        ("compare_out0", unix("compare_out"), False),
    ]


def primary_args(pair: Pair, host: Host) -> list[str]:
    compare = {
        "id": "comp0",
        "primary_in": "compare0-0",
        "secondary_in": ids.SECONDARY_OUTPUT,
        "outdev": "compare_out0",
        "iothread": "iothread1",
        "compare_timeout": pair.replication.compare_timeout_ms,
    }
    return [
        *(arg for channel in compare_channels(pair, host) for arg in _chardev(*channel)),
        *net_filter(pair, "filter-mirror", "m0", queue="tx", outdev=ids.MIRROR),
        *net_filter(pair, "filter-redirector", "redire0", queue="rx", indev="compare_out"),
        *net_filter(pair, "filter-redirector", "redire1", queue="rx", outdev="compare0"),
        *opt("-object", "iothread", {"id": "iothread1"}),
        *opt("-object", "colo-compare", {**compare, **vnet_hdr_support(pair)}),
        *primary_quorum(pair, host),
        "-S",
    ]


def _chardev(id_: str, where: dict[str, Any], listens: bool) -> list[str]:
    return opt("-chardev", "socket", {"id": id_, **where, **(SERVER if listens else {})})


def secondary_args(pair: Pair, host: Host) -> list[str]:
    primary, ports, lay = pair.peer_of(host), pair.replication.ports, pair.layout(host)
    reconnect = dict([known_syntax(pair.qemu.version).chardev_reconnect])
    client = {**reconnect, **tls.creds(pair, "client")}
    replication = {
        "if": "none",
        "id": ids.SECONDARY_CHILD_ID,
        "driver": "replication",
        "mode": "secondary",
        "top-id": m.QUORUM_ID,
        "file.driver": "qcow2",
        "file.file.filename": lay.active_disk,
        "file.backing.driver": "qcow2",
        "file.backing.file.filename": lay.hidden_disk,
        "file.backing.backing": ids.PARENT_ID,
    }
    base = {"if": "none", "id": ids.PARENT_ID, "node-name": ids.PARENT_NODE}
    return [
        *redirectors(
            pair,
            {"host": primary.address, "port": ports.mirror, **client},
            {"host": primary.address, "port": ports.compare, **client},
        ),
        *net_filter(pair, "filter-rewriter", ids.REWRITER, queue="all"),
        *opt("-drive", None, {**base, "file.filename": host.image, "driver": pair.vm.disk.format}),
        *opt("-drive", None, replication),
        *quorum(pair, {"children.0": ids.SECONDARY_CHILD_ID}),
        *incoming(pair, host),
    ]
