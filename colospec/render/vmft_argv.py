"""The QEMU command line of one host in the vm-ft layout (the vm-ft/PLOVER guide's step 1).

The guide's options with the guide's values, from the spec. Where colospec must differ, it
says so in qemu.args itself (DIFFERENCES) and README.md ("The vm-ft flavour"); the test
tests/test_vmft_guide.py holds the same list and fails on any other difference.
"""

from __future__ import annotations

from colospec import model as m
from colospec.model import Host, Pair
from colospec.qemu_opts import OptValue, format_opts
from colospec.render.qemu_argv import GENERATED_HEADER, kernel_args

# The guide's ids: its QMP sequences and RDMA-Paxos refer to them.
BASE_NODE = "node0"  # secondary: the base image's node, exported over NBD as colo-disk0
ACTIVE_ID = "active-disk0"  # secondary: the replication drive the guest uses
NIC_ID = "e0"  # the primary's NIC (the guide gives the secondary's none)

DIFFERENCES = (
    "# vm-ft layout: the vm-ft guide's command for this host, except: -qmp on a unix socket",
    "# instead of stdio (the runner drives QMP); -pidfile (the runner and systemd find QEMU);",
    "# the tap's ifname= (tc.sh names the tap before QEMU starts) and vnet_hdr=",
    '# (vm.nic.vnet_hdr); VNC on an address, 127.0.0.1 for ":N" (vm.vnc).',
    "# README.md, 'The vm-ft flavour', lists them with their reasons.",
)


def render_vmft_argv(pair: Pair, host: Host) -> list[str]:
    """The complete argv, binary first, including qemu.extra_args."""
    role = _primary(pair, host) if host.role == "primary" else _secondary(pair, host)
    return [pair.qemu.binary, *_common(pair, host), *role, *pair.qemu.extra_args]


def render_vmft_args_file(argv: list[str]) -> str:
    return "\n".join((GENERATED_HEADER, *DIFFERENCES)) + "\n" + "".join(a + "\n" for a in argv)


def _opt(flag: str, head: str | None, *pairs: tuple[str, OptValue]) -> list[str]:
    return [flag, format_opts(head, pairs)]


def _accel(accel: str) -> list[str]:
    return {"kvm": ["-enable-kvm"], "tcg": ["-accel", "tcg"]}.get(
        accel, ["-accel", "kvm", "-accel", "tcg"]
    )


def _common(pair: Pair, host: Host) -> list[str]:
    vm, lay = pair.vm, pair.layout(host)
    args = [
        *_accel(vm.accel),
        "-boot", "c",
        "-m", str(vm.memory_mib),
        "-smp", str(vm.cpus),
        *_opt("-qmp", f"unix:{lay.qmp_socket}", ("server", True), ("wait", False)),
        "-pidfile", lay.pidfile,
    ]  # fmt: skip
    if vm.vnc:
        display, _, number = vm.vnc.rpartition(":")
        args += ["-vnc", f"{display or '127.0.0.1'}:{number}"]
    else:
        args += ["-display", "none"]
    args += ["-name", host.role, "-cpu", vm.cpu]
    if vm.machine != "pc":  # the guide relies on QEMU's default machine, pc
        args += ["-machine", vm.machine]
    args += ["-device", "piix3-usb-uhci"]
    return args + kernel_args(vm)


def _netdev(pair: Pair, host: Host) -> list[str]:
    vmft, nic = pair.vmft, pair.vm.nic
    assert vmft is not None, "validated before rendering"
    rom = [] if nic.boot_rom else [("romfile", "")]
    nic_id = [("id", NIC_ID)] if host.role == "primary" else []
    return [
        *_opt("-netdev", "tap", ("id", m.NETDEV_ID), ("ifname", host.tap), ("vhost", False),
              ("vnet_hdr", nic.vnet_hdr), ("script", vmft.tap_up), ("downscript", vmft.tap_down)),
        *_opt("-device", nic.model, *nic_id, ("netdev", m.NETDEV_ID), ("mac", nic.mac.lower()),
              *rom),
    ]  # fmt: skip


def _primary(pair: Pair, host: Host) -> list[str]:
    vm = pair.vm
    return [
        *_opt("-drive", None, ("if", vm.disk.bus), ("id", m.QUORUM_ID), ("driver", "quorum"),
              ("read-pattern", "fifo"), ("vote-threshold", 1),
              ("children.0.file.filename", host.image), ("children.0.driver", vm.disk.format)),
        "-S",
        *_netdev(pair, host),
    ]  # fmt: skip


def _secondary(pair: Pair, host: Host) -> list[str]:
    vm, vmft, lay = pair.vm, pair.vmft, pair.layout(host)
    assert vmft is not None, "validated before rendering"
    hdr = [("vnet_hdr_support", True)] if vm.nic.vnet_hdr else []
    return [
        *_opt("-drive", None, ("if", "none"), ("id", m.QUORUM_ID),
              ("file.filename", host.image), ("driver", vm.disk.format),
              ("node-name", BASE_NODE)),
        *_opt("-drive", None, ("if", vm.disk.bus), ("id", ACTIVE_ID), ("driver", "replication"),
              ("mode", "secondary"), ("file.driver", "qcow2"), ("top-id", ACTIVE_ID),
              ("file.file.filename", lay.active_disk), ("file.backing.driver", "qcow2"),
              ("file.backing.file.filename", lay.hidden_disk),
              ("file.backing.backing", m.QUORUM_ID)),
        *_netdev(pair, host),
        *_opt("-chardev", "socket", ("id", "red0"), ("path", vmft.mirror_socket)),
        *_opt("-chardev", "socket", ("id", "red1"), ("path", vmft.redirector_socket)),
        *_opt("-object", "filter-redirector", ("id", "f1"), ("netdev", m.NETDEV_ID),
              ("queue", "tx"), ("indev", "red0"), *hdr),
        *_opt("-object", "filter-redirector", ("id", "f2"), ("netdev", m.NETDEV_ID),
              ("queue", "rx"), ("outdev", "red1"), *hdr),
        "-incoming", f"tcp:{host.address}:{pair.replication.ports.migration}",
    ]  # fmt: skip
