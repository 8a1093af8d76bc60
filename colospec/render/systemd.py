"""systemd units for one host: systemd owns every long-running process.

colospec-<pair>.target pulls in, in order:
  -disks.service (oneshot)   active/hidden disks, image checks
  -network.service (oneshot) tap on the bridge (+ifb rules where the flavour needs them)
  -qemu.service              QEMU itself, never restarted by systemd
  -runner.service            `colospec run --attach`: QMP sequence, heartbeats, failover;
                             Type=notify, ready once COLO mode is reached
Stopping the target stops them all (PropagatesStopTo=); nothing restarts QEMU with them.

Every service is sandboxed (README "Least privilege"): the system read-only, writable
only what the unit writes, the devices it opens, the address families and peers it
talks to, no capabilities beyond what it uses. The paths come from the spec, so the
sandbox is computed here and the templates say why.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from colospec.model import Host, Pair
from colospec.render.text import render_template, systemd_quote

TMP_DIRS = ("/tmp", "/var/tmp")  # PrivateTmp= replaces them
HOME_DIRS = ("/home", "/root", "/run/user")  # ProtectHome= hides them
DEV_FILESYSTEMS = ("/dev/shm", "/dev/hugepages", "/dev/mqueue")  # under /dev, not devices
KVM, TUN = "/dev/kvm", "/dev/net/tun"
PATH_MAX, NAME_MAX = 4096, 255
PRIVILEGED_PORTS = 1024  # below: binding needs CAP_NET_BIND_SERVICE


@dataclass(frozen=True)
class FlavorUnits:
    """What a flavour changes in the units every host gets."""

    # Unit part ("qemu", "network"...) -> a template that extends systemd/<part>.service.j2.
    templates: Mapping[str, str] = field(default_factory=dict)
    qemu_env_file: str | None = None  # relative to the host directory: EnvironmentFile=
    qemu_reads: tuple[str, ...] = ()  # beyond the binary and the kernel
    qemu_writes: tuple[str, ...] = ()  # beyond the images
    # QEMU's devices and peers narrowed to what QEMU itself opens and talks to; not where a
    # library linked into QEMU has devices and peers of its own (vm-ft's RDMA-Paxos).
    qemu_confined: bool = True
    # The host's secondary-layout command line, for a unit that joins a peer serving alone
    # (re-protection); empty: the flavour has no re-protection.
    join_argv: tuple[str, ...] = ()


@dataclass
class Sandbox:
    """One unit's view of the system; the path lists are rendered for systemd already."""

    read_write: str = ""  # ReadWritePaths=
    read_only: str = ""  # ReadOnlyPaths=
    inaccessible: str = ""  # InaccessiblePaths=
    tls_read_only: str = ""  # ReadOnlyPaths= for the host's TLS directory (QEMU, runner)
    tls_hidden: str = ""  # InaccessiblePaths= for it (every other unit)
    shared_tmp: bool = False  # its files are in /tmp or /var/tmp: no PrivateTmp=
    home_read_only: bool = False  # ProtectHome=read-only instead of yes
    private_devices: bool = True
    bind_devices: str = ""  # BindPaths= into the private /dev
    device_allow: list[str] = field(default_factory=list)  # one DeviceAllow= each
    bind_service: bool = False  # CAP_NET_BIND_SERVICE: a port below 1024
    ip_allow: str = ""  # IPAddressAllow= (after IPAddressDeny=any)


def render_units(
    pair: Pair, host: Host, qemu_argv: list[str], flavor: FlavorUnits
) -> dict[str, str]:
    lay, env_file = pair.layout(host), flavor.qemu_env_file
    colospec = pair.runtime.colospec
    scratch_dir = posixpath.dirname(lay.active_disk) if host.role == "secondary" else None
    parts = ("disks", "network", "qemu", "runner") + (("qemu-join",) if flavor.join_argv else ())
    ctx = {
        "pair": pair,
        "host": host,
        "lay": lay,
        "units": {p.replace("-", "_"): lay.unit(p) for p in parts},
        "qemu_argv": qemu_argv,
        "disks_argv": [colospec, "prepare", "disks", lay.installed_dir],
        # Before the sandbox: ReadWritePaths= needs the directory to exist.
        "scratch_mkdir_argv": ["/bin/mkdir", "-p", "-m", "0700", scratch_dir]
        if scratch_dir
        else None,
        "network_up_argv": [colospec, "prepare", "network", lay.installed_dir],
        "network_down_argv": [colospec, "cleanup", "network", lay.installed_dir],
        "runner_argv": [colospec, "run", "--attach", lay.installed_dir],
        "join_argv": list(flavor.join_argv),
        "join_mkdir_argv": ["/bin/mkdir", "-p", "-m", "0700", posixpath.dirname(lay.active_disk)],
        "join_disks_argv": [colospec, "prepare", "disks", "--join", lay.installed_dir],
        # Exists while the joining QEMU's unit runs; the pair's QEMU unit does not start then.
        "joining_flag": posixpath.join(lay.run_dir, "joining"),
        "state_mkdir_argv": ["/bin/mkdir", "-p", "-m", "0700", lay.state_dir],
        "run_dir_rel": lay.run_dir.removeprefix("/run/"),
        "qemu_env_file": f"{lay.installed_dir}/{env_file}" if env_file else None,
        "mdwe": pair.vm.accel == "kvm",
    }
    units = {f"systemd/{lay.unit()}": render_template("systemd/pair.target.j2", **ctx)}
    for part, sb in sandboxes_for(pair, host, flavor).items():
        template = flavor.templates.get(part, f"systemd/{part}.service.j2")
        units[f"systemd/{lay.unit(part)}"] = render_template(
            template, **ctx, sb=sb, is_join=part == "qemu-join"
        )
    return units


def sandboxes_for(pair: Pair, host: Host, flavor: FlavorUnits) -> dict[str, Sandbox]:
    """What each service of this host reads, writes, opens and talks to."""
    lay, peer, ports = pair.layout(host), pair.peer_of(host), pair.replication.ports
    secondary = host.role == "secondary"
    scratch = [lay.active_disk, lay.hidden_disk] if secondary else []
    artifacts = [lay.installed_dir]
    key = [pair.security.key_file]
    # The host's TLS certificates and private keys: QEMU's, and the runner checks them.
    tls = [pair.security.tls.host_dir(host)] if pair.security.tls else []
    colospec = [pair.runtime.colospec]
    kernel = (
        [p for p in (pair.vm.kernel.path, pair.vm.kernel.initrd) if p] if pair.vm.kernel else []
    )
    qemu_reads = [pair.qemu.binary, *kernel, *tls, *flavor.qemu_reads]
    qemu_writes = [host.image, *scratch, *flavor.qemu_writes]
    qemu_devices = [(TUN, "rw")] + ([(KVM, "rw")] if pair.vm.accel in ("kvm", "auto") else [])
    image_device = [(host.image, "r")] if _is_device(host.image) else []
    qemu_ports = [p for p in (ports.migration, ports.nbd, ports.mirror, ports.compare) if p]
    scratch_dir = [posixpath.dirname(lay.active_disk)] if secondary else []
    peer_addresses = [peer.address]
    if host.lan_address and peer.lan_address:
        peer_addresses.append(peer.lan_address)

    disks = _sandbox(
        reads=[*colospec, *artifacts, host.image],
        writes=scratch_dir,
        read_only=artifacts,
        inaccessible=key,
        devices=image_device,
    )
    network = _sandbox(
        reads=[*colospec, *artifacts],
        read_only=artifacts,
        inaccessible=key,
        devices=[(TUN, "rw")],
    )
    network.home_read_only = disks.home_read_only = True
    qemu = _sandbox(
        reads=qemu_reads,
        writes=qemu_writes,
        read_only=artifacts,
        inaccessible=key,
        devices=[*qemu_devices, *[(p, "rw") for p, _ in image_device]],
    )
    qemu.bind_service = min(qemu_ports) < PRIVILEGED_PORTS
    if flavor.qemu_confined:
        # QEMU's peers: the peer's QEMU (NBD, migration, the network filters' channels) and
        # runner (its probes), all from its replication address; VNC only on loopback.
        qemu.ip_allow = " ".join(["localhost", peer.address])
    else:
        qemu.private_devices, qemu.bind_devices, qemu.device_allow = False, "", []
    join = None
    if flavor.join_argv:
        # The scratch directory, not its files: `prepare disks --join` creates them, and
        # ReadWritePaths= skips a path missing when the unit starts.
        join = _sandbox(
            reads=[*qemu_reads, *colospec, *artifacts],
            writes=[host.image, posixpath.dirname(lay.active_disk)],
            read_only=artifacts,
            inaccessible=key,
            devices=[*qemu_devices, *[(p, "rw") for p, _ in image_device]],
        )
        join.bind_service, join.ip_allow = qemu.bind_service, qemu.ip_allow
        join.home_read_only = True  # colospec's Python, for its scratch disks
    runner = _sandbox(
        reads=[*colospec, *artifacts, *key, *tls, host.image, pair.qemu.binary],
        writes=[lay.state_dir],
        read_only=artifacts,
        devices=image_device,
    )
    runner.home_read_only = True
    runner.bind_service = ports.heartbeat < PRIVILEGED_PORTS
    runner.ip_allow = " ".join(peer_addresses)
    sandboxes = {"disks": disks, "network": network, "qemu": qemu, "runner": runner}
    sandboxes |= {"qemu-join": join} if join else {}
    for part, sb in sandboxes.items():
        if part in ("disks", "network"):
            sb.tls_hidden = _path_list(_normal(p) for p in tls)
        else:
            sb.tls_read_only = _path_list(_normal(p) for p in tls)
    return sandboxes


def _sandbox(
    *,
    reads: Sequence[str],
    writes: Sequence[str] = (),
    read_only: Sequence[str] = (),
    inaccessible: Sequence[str] = (),
    devices: Sequence[tuple[str, str]] = (),
) -> Sandbox:
    writes = [_normal(p) for p in writes]
    seen = [_normal(p) for p in reads] + writes
    disk_devices = [p for p, _ in devices if p not in (KVM, TUN)]
    sb = Sandbox(
        read_write=_path_list(p for p in writes if not _under(p, ("/dev",))),
        read_only=_path_list(_normal(p) for p in read_only),
        inaccessible=_path_list(_normal(p) for p in inaccessible),
        shared_tmp=any(_under(p, TMP_DIRS) for p in seen),
        home_read_only=any(_under(p, HOME_DIRS) for p in seen),
        # A disk on a device node keeps the host's /dev (and its symlinks), narrowed by
        # the device list; otherwise a private /dev gets the few nodes the unit opens.
        private_devices=not disk_devices,
        device_allow=[f"{_word(_normal(p))} {mode}" for p, mode in devices if _usable(p)],
    )
    if sb.private_devices:
        sb.bind_devices = _path_list(p for p, _ in devices)
    return sb


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == r or path.startswith(r + "/") for r in roots)


def _is_device(path: str) -> bool:
    path = _normal(path)
    return _under(path, ("/dev",)) and not _under(path, DEV_FILESYSTEMS)


def _normal(path: str) -> str:
    """systemd ignores a path with "." or ".." in it (and warns): the lexical equivalent."""
    return "/" + posixpath.normpath(path).lstrip("/")


def _usable(path: str) -> bool:
    """A path Linux can open at all; systemd would warn about (and skip) any other."""
    data = path.encode()
    return len(data) < PATH_MAX and all(len(part) <= NAME_MAX for part in data.split(b"/"))


def _word(path: str, prefix: str = "") -> str:
    """One word of a path list (ReadWritePaths=, DeviceAllow=, ...): systemd unquotes it,
    a backslash escapes the next character, and '%' starts a specifier; '$' is plain
    (tests/test_systemd_units.py reads them back from a real systemd)."""
    return systemd_quote(prefix + path, executable=True)


def _path_list(paths: Iterable[str]) -> str:
    """Paths for a list directive, each "-"-prefixed: one that does not exist is left out
    (and then stays read-only or absent), rather than failing the unit's start."""
    out: list[str] = []
    for p in paths:
        word = _word(p, "-")
        if _usable(p) and word not in out:
            out.append(word)
    return " ".join(out)
