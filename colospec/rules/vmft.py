"""Rules of the vm-ft flavour (the vm-ft/PLOVER layout).

Sources for the facts they check (hku-systems/plover, wnagchenghku/vm-ft):
qemu/migration/output-buffer.c finds a tap's ifb by the tap's number; rdma-paxos/src/dare/
dare_server.c listens on /dev/shm/mirror.sock and /dev/shm/redirector.sock and warns that
two servers cannot guarantee safety.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from colospec.diagnostics import Diagnostic
from colospec.loader import LoadedSpec
from colospec.model import ROLES, Pair, VmFt
from colospec.rules import Rule
from colospec.rules.common import unusable_address

# What RDMA-Paxos listens on: fixed in its sources, not configurable there.
RDMA_PAXOS_SOCKETS = {"mirror": "/dev/shm/mirror.sock", "redirector": "/dev/shm/redirector.sock"}
SUN_PATH_MAX = 107  # bytes of a unix socket path, without the terminating NUL
QEMU_BUILT_BY_SCRIPT = "qemu/x86_64-softmmu/qemu-system-x86_64"  # relative to VMFT_ROOT

_COLO_ONLY = {
    ("replication", "compare_timeout_ms"): "the vm-ft layout has no colo-compare",
    ("replication", "checkpoint_delay_ms"): (
        "the vm-ft guide leaves x-checkpoint-delay at QEMU's default"
    ),
    ("replication", "ports", "mirror"): (
        "the vm-ft layout has no filter-mirror: RDMA-Paxos carries the client packets "
        "(vmft.sockets)"
    ),
    ("failover", "rejoin"): (
        "colospec re-protects only the colo layout; a vm-ft pair is re-protected by hand"
    ),
    ("security", "tls"): (
        "colospec puts TLS on the colo layout's channels only: the vm-ft layout's client "
        "packets and output cross RDMA-Paxos, which QEMU's tls-creds do not cover, and the "
        "guide's 2.7-era QEMU has not run with them here; keep its networks private"
    ),
    ("replication", "ports", "compare"): (
        "the vm-ft layout has no colo-compare: RDMA-Paxos carries the secondary's output "
        "(vmft.sockets)"
    ),
}


def _present(data: object, path: tuple[str, ...]) -> bool:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return False
        data = data[key]
    return True


def vmft_settings_match_flavor(pair: Pair, spec: LoadedSpec) -> Iterator[Diagnostic]:
    # The same id as colo's own check, which rejects a vmft section in a colo spec.
    for path, why in _COLO_ONLY.items():
        if _present(spec.data, path):
            yield spec.diagnostic(
                path, f"{path[-1]} is not used by flavor vm-ft: {why}", "remove it", key=True
            )


def ifb_devices(pair: Pair, spec: LoadedSpec) -> Iterator[Diagnostic]:
    vmft = VmFt.of(pair)
    count = vmft.ifb_count
    for role in ROLES:
        host = getattr(pair, role)
        ifb = vmft.ifb_for(host.tap)
        where = ("hosts", role, "tap")
        if ifb is None:
            yield spec.diagnostic(
                where,
                f"tap '{host.tap}' has no number, so the vm-ft QEMU finds no ifb device for "
                "it (it buffers tapN's output on ifbN)",
                "name the tap with a number, such as tap0 (its ifb is then ifb0)",
            )
            continue
        number = re.fullmatch(r"ifb(\d+)", ifb)
        if number is None or int(number.group(1)) >= count:
            yield spec.diagnostic(
                where,
                f"the ifb device for tap '{host.tap}' is {ifb}, which is missing: "
                f"modprobe ifb numifbs={count} creates ifb0 to ifb{count - 1}",
                "raise vmft.ifb.count above the tap's number, or use a tap such as tap0",
            )
        elif ifb in (host.tap, host.bridge):
            yield spec.diagnostic(
                where,
                f"{ifb} would be both the ifb device and the {role}'s "
                f"{'tap' if ifb == host.tap else 'bridge'}",
                "rename the tap or the bridge",
            )


def unix_sockets(pair: Pair, spec: LoadedSpec) -> Iterator[Diagnostic]:
    vmft = VmFt.of(pair)
    paths = {"mirror": vmft.mirror_socket, "redirector": vmft.redirector_socket}
    base = ("vmft", "sockets")
    if paths["mirror"] == paths["redirector"]:
        yield spec.diagnostic(
            (*base, "redirector"),
            f"chardevs red0 and red1 would both use {paths['mirror']}",
            "give the mirror and the redirector socket their own paths",
        )
    run_dirs = [pair.layout(h).run_dir for h in pair.hosts]
    for key, path in paths.items():
        if any(path == d or path.startswith(d + "/") for d in run_dirs):
            yield spec.diagnostic(
                (*base, key),
                f"{path} is inside colospec's run directory, next to QEMU's QMP socket",
                f"use a path outside /run/colospec, such as {RDMA_PAXOS_SOCKETS[key]}",
            )
        if len(path.encode()) > SUN_PATH_MAX:
            yield spec.diagnostic(
                (*base, key),
                f"{path} is longer than the {SUN_PATH_MAX} bytes of a unix socket path",
                "use a shorter path",
            )
        elif path != RDMA_PAXOS_SOCKETS[key]:
            yield spec.diagnostic(
                (*base, key),
                f"RDMA-Paxos listens on {RDMA_PAXOS_SOCKETS[key]} (fixed in its "
                "dare_server.c), so QEMU would wait on a socket nobody serves",
                f"keep {RDMA_PAXOS_SOCKETS[key]}, unless your RDMA-Paxos build listens here",
                severity="warning",
            )


def paxos_group(pair: Pair, spec: LoadedSpec) -> Iterator[Diagnostic]:
    vmft = VmFt.of(pair)
    witness = vmft.witness
    if witness is None:
        yield spec.diagnostic(
            ("vmft",),
            f"the Paxos group has two members ({pair.primary.name}, {pair.secondary.name}): "
            "when one fails the other holds no majority, so RDMA-Paxos can neither commit "
            "nor elect (its DARE warns that 2 servers cannot guarantee safety)",
            "add vmft.witness: a third host that runs only RDMA-Paxos",
            severity="warning",
            key=True,
        )
        return
    base = ("vmft", "witness")
    for host in pair.hosts:
        if witness.name == host.name:
            yield spec.diagnostic(
                (*base, "name"),
                f"the witness is named '{witness.name}' like the {host.role}",
                "give the witness its own name",
            )
        if witness.address in (host.address, host.lan_address):
            yield spec.diagnostic(
                (*base, "address"),
                f"the witness shares the address {witness.address} with the {host.role} "
                f"{host.name}, so one machine would hold two of the three votes",
                "run the witness on a third machine, with its own address",
            )
    if problem := unusable_address(witness.address):
        yield spec.diagnostic((*base, "address"), *problem)


def binary_is_the_build(pair: Pair, spec: LoadedSpec) -> Iterator[Diagnostic]:
    vmft = VmFt.of(pair)
    built = f"{vmft.root.rstrip('/')}/{QEMU_BUILT_BY_SCRIPT}"
    if pair.qemu.binary != built:
        yield spec.diagnostic(
            ("qemu", "binary"),
            f"build/build.sh builds {built}, not {pair.qemu.binary}",
            "point qemu.binary at the vm-ft build (the runner refuses a QEMU that does not "
            "link libinterpose)",
            severity="warning",
        )


def root_fits_configure(pair: Pair, spec: LoadedSpec) -> Iterator[Diagnostic]:
    vmft = VmFt.of(pair)
    if not re.fullmatch(r"/[A-Za-z0-9_./+-]*", vmft.root):
        yield spec.diagnostic(
            ("vmft", "root"),
            f"'{vmft.root}' cannot go into QEMU's --extra-ldflags and --extra-cflags, "
            "which configure splits at spaces",
            "use a path of letters, digits and / . _ + -",
        )


def cluster_not_for_vmft(pair: Pair, spec: LoadedSpec) -> Iterator[Diagnostic]:
    if pair.cluster is not None:
        yield spec.diagnostic(
            ("cluster",),
            "the Pacemaker agent runs colospec's runner, which a vm-ft pair does not use",
            "remove cluster, or use flavor: colo",
        )


RULES: tuple[Rule, ...] = (
    vmft_settings_match_flavor,
    ifb_devices,
    unix_sockets,
    paxos_group,
    binary_is_the_build,
    root_fits_configure,
    cluster_not_for_vmft,
)
