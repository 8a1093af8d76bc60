"""The validated spec as typed, frozen data, plus the names derived from it.

Everything a renderer needs is here; renderers never look at raw spec data. Every name
derived from the spec (paths, sockets, the tap's MAC, unit names) is computed once, in
build_pair; the renderers write them out and plan.json carries them to the runner.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

Role = Literal["primary", "secondary"]
ROLES: tuple[Role, Role] = ("primary", "secondary")

# QEMU object and device ids every flavour's command lines and QMP scripts share; a
# flavour's own ids live with it (colospec/flavors/).
NETDEV_ID = "hn0"
QUORUM_ID = "colo-disk0"  # the guest's disk: the primary's quorum (a flavour's secondary too)
NBD_NODE = "nbd0"  # primary: the NBD client under the replication child, yanked at failover
# The secondary's redirectors: filter IN_FILTER gives the guest the client packets arriving on
# chardev IN_CHARDEV; OUT_FILTER sends the guest's output out on OUT_CHARDEV.
IN_FILTER, IN_CHARDEV = "f1", "red0"
OUT_FILTER, OUT_CHARDEV = "f2", "red1"


@dataclass(frozen=True)
class Qemu:
    binary: str
    version: str
    extra_args: tuple[str, ...]


@dataclass(frozen=True)
class Disk:
    image: str
    format: Literal["raw", "qcow2"]
    bus: Literal["virtio", "ide"]


@dataclass(frozen=True)
class Nic:
    model: str
    mac: str
    vhost: bool
    vnet_hdr: bool
    boot_rom: bool


@dataclass(frozen=True)
class Kernel:
    path: str
    initrd: str | None
    append: str | None


@dataclass(frozen=True)
class Vm:
    memory_mib: int
    cpus: int
    cpu: str
    machine: str
    accel: Literal["kvm", "tcg", "auto"]
    disk: Disk
    nic: Nic
    kernel: Kernel | None
    vnc: str | None


@dataclass(frozen=True)
class Host:
    role: Role
    name: str
    address: str
    bridge: str
    tap: str
    scratch_dir: str
    image: str
    lan_address: str | None


@dataclass(frozen=True)
class Ports:
    migration: int
    nbd: int
    mirror: int | None  # colo only
    compare: int | None  # colo only
    heartbeat: int


@dataclass(frozen=True)
class Replication:
    checkpoint_delay_ms: int
    compare_timeout_ms: int
    ports: Ports


@dataclass(frozen=True)
class Failover:
    heartbeat_interval_ms: int
    missed_heartbeats: int
    rejoin: str  # "manual" | "automatic"


@dataclass(frozen=True)
class Cluster:
    """The cluster manager the pair runs under; its node names are the host names."""

    manager: str  # "pacemaker"


@dataclass(frozen=True)
class Runtime:
    colospec: str
    artifacts_dir: str
    state_dir: str


# QEMU's tls-creds-x509 reads these names from its dir= (crypto/tlscredsx509.h); each
# host's directory holds both ends, as a host is the server of some channels and the
# client of others.
TLS_CA_CERT = "ca-cert.pem"
TLS_FILES = {
    "server": (TLS_CA_CERT, "server-cert.pem", "server-key.pem"),
    "client": (TLS_CA_CERT, "client-cert.pem", "client-key.pem"),
}
TLS_KEYS = ("server-key.pem", "client-key.pem")  # root's alone (the runner checks)
# The tls-creds-x509 objects every host's QEMU has, by endpoint.
TLS_CREDS = {"server": "tls-server0", "client": "tls-client0"}


@dataclass(frozen=True)
class Tls:
    """TLS on the replication channels; each host's certificates in dir/<host name>/."""

    dir: str

    def host_dir(self, host: Host) -> str:
        return f"{self.dir.rstrip('/')}/{host.name}"


@dataclass(frozen=True)
class Security:
    key_file: str  # the pair's heartbeat key on both hosts (never in OUT)
    tls: Tls | None = None  # None: the replication channels are plain TCP


@dataclass(frozen=True)
class Witness:
    """A third Paxos member that runs only RDMA-Paxos (vm-ft)."""

    name: str
    address: str


@dataclass(frozen=True)
class VmFt:
    """The vm-ft/PLOVER layout's settings (flavor vm-ft)."""

    root: str  # VMFT_ROOT
    ifb_count: int  # numifbs
    tap_up: str
    tap_down: str
    mirror_socket: str
    redirector_socket: str
    witness: Witness | None

    @staticmethod
    def of(pair: Pair) -> VmFt:
        """A vm-ft pair's settings: the schema requires them with flavor vm-ft."""
        assert pair.vmft is not None, "validated before rendering"
        return pair.vmft

    def ifb_for(self, tap: str) -> str | None:
        """The ifb the vm-ft QEMU buffers a tap's output on: "ifb" + the tap's name from its
        first digit on (migration/output-buffer.c), or None for a tap without a digit."""
        digits = [i for i, c in enumerate(tap) if c.isdigit()]
        return f"ifb{tap[digits[0] :]}" if digits else None


@dataclass(frozen=True)
class FlavorNames:
    """What a flavour calls the things the model derives names for: data the flavour gives
    build_pair, so the model never asks which flavour it holds."""

    scratch_disk: str  # active/hidden disk file name; format fields {pair} and {what}
    replication_node: str  # the primary's replication child (added over NBD)


@dataclass(frozen=True)
class HostLayout:
    """Every path and name colospec derives for one host of a pair (see build_pair)."""

    pair_name: str
    run_dir: str
    qmp_socket: str
    pidfile: str
    console_socket: str
    console_log: str
    active_disk: str
    hidden_disk: str
    installed_dir: str  # where this host's artifact directory lives on the host itself
    state_dir: str  # durable: the epoch this host's disk belongs to (runner/diskstate.py)
    # The host side of the guest's NIC. fe:… (as libvirt does) so a bridge, which takes the
    # lowest MAC among its ports, never adopts it; the rest differs per host, so the two
    # hosts' taps never share a MAC on a common LAN.
    tap_mac: str
    # The primary's replication child, whose I/O errors mean writes no longer reach the
    # secondary; None on the secondary.
    replication_node: str | None

    def local_socket(self, chardev_id: str) -> str:
        """colo-compare's loopback channels: unix sockets instead of TCP ports on 127.0.0.1."""
        return f"{self.run_dir}/{chardev_id}.sock"

    def unit(self, part: str | None = None) -> str:
        if part is None:
            return f"colospec-{self.pair_name}.target"
        return f"colospec-{self.pair_name}-{part}.service"


@dataclass(frozen=True)
class Pair:
    name: str
    flavor: Literal["colo", "vm-ft"]
    qemu: Qemu
    vm: Vm
    primary: Host
    secondary: Host
    replication: Replication
    failover: Failover
    runtime: Runtime
    security: Security
    spec_sha256: str
    layouts: tuple[HostLayout, HostLayout]  # primary's, secondary's
    vmft: VmFt | None = None
    cluster: Cluster | None = None  # None: the two runners alone

    @property
    def hosts(self) -> tuple[Host, Host]:
        return (self.primary, self.secondary)

    def peer_of(self, host: Host) -> Host:
        return self.secondary if host.role == "primary" else self.primary

    def layout(self, host: Host) -> HostLayout:
        return self.layouts[ROLES.index(host.role)]

    def installed_dir(self, node: str) -> str:
        """Where a node's artifact directory (OUT/<pair>/<node>) lives on that node."""
        return _installed_dir(self.runtime, self.name, node)


def default_tap(pair_name: str) -> str:
    return f"tap-{pair_name}"


def build_pair(data: dict[str, Any], spec_sha256: str, names: FlavorNames) -> Pair:
    """Typed model from schema-valid data with defaults applied; names: the flavour's."""
    vm, qemu, rep = data["vm"], data["qemu"], data["replication"]
    runtime = Runtime(**data["runtime"])
    kernel = vm.get("kernel")

    def host(role: Role) -> Host:
        h = data["hosts"][role]
        return Host(
            role=role,
            name=h["name"],
            address=h["address"],
            bridge=h["bridge"],
            tap=h.get("tap", default_tap(data["name"])),
            scratch_dir=h["scratch_dir"],
            image=h.get("image", vm["disk"]["image"]),
            lan_address=h.get("lan_address"),
        )

    ports = rep["ports"]
    primary, secondary = host("primary"), host("secondary")
    return Pair(
        name=data["name"],
        flavor=data["flavor"],
        qemu=Qemu(qemu["binary"], qemu["version"], tuple(qemu["extra_args"])),
        vm=Vm(
            memory_mib=vm["memory_mib"],
            cpus=vm["cpus"],
            cpu=vm["cpu"],
            machine=vm["machine"],
            accel=vm["accel"],
            disk=Disk(**vm["disk"]),
            nic=Nic(**vm["nic"]),
            kernel=Kernel(kernel["path"], kernel.get("initrd"), kernel.get("append"))
            if kernel
            else None,
            vnc=vm.get("vnc"),
        ),
        primary=primary,
        secondary=secondary,
        replication=Replication(
            rep["checkpoint_delay_ms"],
            rep["compare_timeout_ms"],
            Ports(
                ports["migration"],
                ports["nbd"],
                ports.get("mirror"),
                ports.get("compare"),
                ports["heartbeat"],
            ),
        ),
        failover=Failover(**data["failover"]),
        runtime=runtime,
        security=_security(data, runtime),
        spec_sha256=spec_sha256,
        layouts=(
            _layout(data["name"], runtime, primary, names),
            _layout(data["name"], runtime, secondary, names),
        ),
        vmft=_vmft(data["vmft"]) if "vmft" in data else None,
        cluster=Cluster(**data["cluster"]) if "cluster" in data else None,
    )


def _security(data: dict[str, Any], runtime: Runtime) -> Security:
    section, base = data["security"], f"{runtime.artifacts_dir.rstrip('/')}/{data['name']}"
    tls = section.get("tls")
    return Security(
        key_file=section.get("key_file") or f"{base}.key",
        tls=Tls(tls.get("dir") or f"{base}-tls") if tls is not None else None,
    )


def _installed_dir(runtime: Runtime, pair: str, node: str) -> str:
    return f"{runtime.artifacts_dir.rstrip('/')}/{pair}/{node}"


def _layout(pair: str, runtime: Runtime, host: Host, names: FlavorNames) -> HostLayout:
    run_dir = f"/run/colospec/{pair}/{host.name}"
    scratch = host.scratch_dir.rstrip("/")
    mac = hashlib.sha256(f"{pair}/{host.name}".encode()).hexdigest()
    return HostLayout(
        pair_name=pair,
        run_dir=run_dir,
        qmp_socket=f"{run_dir}/qmp.sock",
        pidfile=f"{run_dir}/qemu.pid",
        console_socket=f"{run_dir}/console.sock",
        console_log=f"{run_dir}/console.log",
        active_disk=f"{scratch}/{names.scratch_disk.format(pair=pair, what='active')}",
        hidden_disk=f"{scratch}/{names.scratch_disk.format(pair=pair, what='hidden')}",
        installed_dir=_installed_dir(runtime, pair, host.name),
        state_dir=f"{runtime.state_dir.rstrip('/')}/{pair}/{host.name}",
        tap_mac="fe:" + ":".join(mac[i : i + 2] for i in range(0, 10, 2)),
        replication_node=names.replication_node if host.role == "primary" else None,
    )


def _vmft(v: dict[str, Any]) -> VmFt:
    witness = v.get("witness")
    return VmFt(
        root=v["root"],
        ifb_count=v["ifb"]["count"],
        tap_up=v["tap_scripts"]["up"],
        tap_down=v["tap_scripts"]["down"],
        mirror_socket=v["sockets"]["mirror"],
        redirector_socket=v["sockets"]["redirector"],
        witness=Witness(witness["name"], witness["address"]) if witness else None,
    )
