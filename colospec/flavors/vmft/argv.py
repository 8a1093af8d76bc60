"""The QEMU command line of one host in the vm-ft layout (the vm-ft/PLOVER guide's step 1).

The guide's options with the guide's values, from the spec. Where colospec must differ, it
says so in qemu.args itself (DIFFERENCES) and README.md ("The vm-ft flavour"); the test
tests/test_vmft_guide.py holds the same list and fails on any other difference.
"""

from __future__ import annotations

from colospec import model as m
from colospec.flavors.vmft import ids
from colospec.model import Host, Pair, VmFt
from colospec.render.qemu_argv import (
    accel,
    display,
    incoming,
    kernel,
    nic,
    opt,
    primary_quorum,
    redirectors,
)

DIFFERENCES = (
    "# vm-ft layout: the vm-ft guide's command for this host, except: -qmp on a unix socket",
    "# instead of stdio (the runner drives QMP); -pidfile (the runner and systemd find QEMU);",
    "# the tap's ifname= (tc.sh names the tap before QEMU starts) and vnet_hdr=",
    '# (vm.nic.vnet_hdr); VNC on an address, 127.0.0.1 for ":N" (vm.vnc).',
    "# README.md, 'The vm-ft flavour', lists them with their reasons.",
)


def qemu_argv(pair: Pair, host: Host) -> list[str]:
    """The complete argv, binary first, including qemu.extra_args."""
    role = _primary(pair, host) if host.role == "primary" else _secondary(pair, host)
    return [pair.qemu.binary, *_common(pair, host), *role, *pair.qemu.extra_args]


def _common(pair: Pair, host: Host) -> list[str]:
    vm, lay = pair.vm, pair.layout(host)
    # The guide's -enable-kvm; TCG and "auto" as in every colospec command line.
    enable = ["-enable-kvm"] if vm.accel == "kvm" else accel(vm.accel)
    # The guide relies on QEMU's default machine, pc.
    machine = ["-machine", vm.machine] if vm.machine != "pc" else []
    return [
        *[*enable, "-boot", "c", "-m", str(vm.memory_mib), "-smp", str(vm.cpus)],
        *opt("-qmp", f"unix:{lay.qmp_socket}", {"server": True, "wait": False}),
        *["-pidfile", lay.pidfile],
        *display(vm),
        *["-name", host.role, "-cpu", vm.cpu, *machine, "-device", "piix3-usb-uhci"],
        *kernel(vm),
    ]


def _network(pair: Pair, host: Host) -> list[str]:
    vmft, card = VmFt.of(pair), pair.vm.nic
    tap = {"id": m.NETDEV_ID, "ifname": host.tap, "vhost": False, "vnet_hdr": card.vnet_hdr}
    scripts = {"script": vmft.tap_up, "downscript": vmft.tap_down}
    return [
        *opt("-netdev", "tap", {**tap, **scripts}),
        *nic(pair, ids.NIC_ID if host.role == "primary" else None),
    ]


def _primary(pair: Pair, host: Host) -> list[str]:
    return [*primary_quorum(pair, host), "-S", *_network(pair, host)]


def _secondary(pair: Pair, host: Host) -> list[str]:
    vm, vmft, lay = pair.vm, VmFt.of(pair), pair.layout(host)
    base = {"if": "none", "id": m.QUORUM_ID, "file.filename": host.image}
    active = {
        "if": vm.disk.bus,
        "id": ids.ACTIVE_ID,
        "driver": "replication",
        "mode": "secondary",
        "file.driver": "qcow2",
        "top-id": ids.ACTIVE_ID,
        "file.file.filename": lay.active_disk,
        "file.backing.driver": "qcow2",
        "file.backing.file.filename": lay.hidden_disk,
        "file.backing.backing": m.QUORUM_ID,
    }
    return [
        *opt("-drive", None, {**base, "driver": vm.disk.format, "node-name": ids.BASE_NODE}),
        *opt("-drive", None, active),
        *_network(pair, host),
        # RDMA-Paxos, inside this QEMU, serves both sockets.
        *redirectors(pair, {"path": vmft.mirror_socket}, {"path": vmft.redirector_socket}),
        *incoming(pair, host),
    ]
