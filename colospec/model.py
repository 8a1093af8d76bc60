"""The validated spec as typed, frozen data, plus the names derived from it.

Everything a renderer needs is here; renderers never look at raw spec data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Role = Literal["primary", "secondary"]
ROLES: tuple[Role, Role] = ("primary", "secondary")

# QEMU object and device ids shared by both hosts' command lines and QMP scripts.
NETDEV_ID = "hn0"
QUORUM_ID = "colo-disk0"  # the guest's disk: a quorum on both hosts; also the replication top-id
PARENT_ID = "parent0"  # secondary: the base image drive, exported over NBD
PARENT_NODE = "parent0-base"  # its node name: block-export-add needs a node, not a drive id
SECONDARY_CHILD_ID = "childs0"  # secondary: the replication driver over active/hidden disks
REPLICATION_NODE = "replication0"  # primary: replication child added over NBD
NBD_NODE = "nbd0"  # primary: the NBD client under replication0
VMFT_REPLICATION_NODE = "node0"  # vm-ft primary: the guide's drive_add -n buddy … node-name
NBD_EXPORT = PARENT_ID
QMP_TIMEOUT_S = 30


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


@dataclass(frozen=True)
class Runtime:
    colospec: str
    artifacts_dir: str


@dataclass(frozen=True)
class Security:
    key_file: str  # the pair's heartbeat key on both hosts (never in OUT)


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

    def ifb_for(self, tap: str) -> str | None:
        """The ifb the vm-ft QEMU buffers a tap's output on: "ifb" + the tap's name from its
        first digit on (migration/output-buffer.c), or None for a tap without a digit."""
        digits = [i for i, c in enumerate(tap) if c.isdigit()]
        return f"ifb{tap[digits[0] :]}" if digits else None


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
    vmft: VmFt | None = None

    @property
    def hosts(self) -> tuple[Host, Host]:
        return (self.primary, self.secondary)

    def peer_of(self, host: Host) -> Host:
        return self.secondary if host.role == "primary" else self.primary

    def layout(self, host: Host) -> HostLayout:
        return HostLayout(self, host)

    def replication_node(self, host: Host) -> str | None:
        """The primary's replication child, whose I/O errors mean writes no longer reach
        the secondary; None on the secondary."""
        if host.role != "primary":
            return None
        return VMFT_REPLICATION_NODE if self.flavor == "vm-ft" else REPLICATION_NODE


@dataclass(frozen=True)
class HostLayout:
    """Paths and unit names colospec derives for one host of a pair."""

    pair: Pair
    host: Host

    @property
    def run_dir(self) -> str:
        return f"/run/colospec/{self.pair.name}/{self.host.name}"

    @property
    def qmp_socket(self) -> str:
        return f"{self.run_dir}/qmp.sock"

    @property
    def pidfile(self) -> str:
        return f"{self.run_dir}/qemu.pid"

    @property
    def console_socket(self) -> str:
        return f"{self.run_dir}/console.sock"

    @property
    def console_log(self) -> str:
        return f"{self.run_dir}/console.log"

    def local_socket(self, chardev_id: str) -> str:
        """colo-compare's loopback channels: unix sockets instead of TCP ports on 127.0.0.1."""
        return f"{self.run_dir}/{chardev_id}.sock"

    def _scratch(self, what: str) -> str:
        if self.pair.flavor == "vm-ft":
            # The vm-ft guide's names: one vm-ft pair per scratch_dir.
            return f"{self.host.scratch_dir.rstrip('/')}/{what}_disk.img"
        return f"{self.host.scratch_dir.rstrip('/')}/{self.pair.name}-{what}.qcow2"

    @property
    def active_disk(self) -> str:
        return self._scratch("active")

    @property
    def hidden_disk(self) -> str:
        return self._scratch("hidden")

    @property
    def installed_dir(self) -> str:
        """Where this host's artifact directory lives on the host itself."""
        return f"{self.pair.runtime.artifacts_dir.rstrip('/')}/{self.pair.name}/{self.host.name}"

    def unit(self, part: str | None = None) -> str:
        if part is None:
            return f"colospec-{self.pair.name}.target"
        return f"colospec-{self.pair.name}-{part}.service"


def default_tap(pair_name: str) -> str:
    return f"tap-{pair_name}"


def build_pair(data: dict[str, Any], spec_sha256: str) -> Pair:
    """Typed model from schema-valid data with defaults applied."""
    vm, qemu, rep = data["vm"], data["qemu"], data["replication"]
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
        primary=host("primary"),
        secondary=host("secondary"),
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
        runtime=Runtime(**data["runtime"]),
        security=Security(
            data["security"].get("key_file")
            or f"{data['runtime']['artifacts_dir'].rstrip('/')}/{data['name']}.key"
        ),
        spec_sha256=spec_sha256,
        vmft=_vmft(data["vmft"]) if "vmft" in data else None,
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
