"""The vm-ft layout's build/ directory: build script, RDMA-Paxos's node configuration and
group membership. Each host gets one, and so does the witness, which runs only RDMA-Paxos.
"""

from __future__ import annotations

from dataclasses import dataclass

from colospec.model import Pair, VmFt
from colospec.render.text import render_template

BUILD_SCRIPT = "build/build.sh"
NODES_CONFIG = "build/nodes.local.cfg"
ENV_FILE = "build/rdma-paxos.env"  # the qemu unit's EnvironmentFile=, which holds qemu.env

# The guide's package lists (Ubuntu 16.04 names), in its order.
RDMA_PAXOS_PACKAGES = ("libconfig-dev", "libdb5.3-dev", "libev-dev")
QEMU_PACKAGES = (
    "libglib2.0-dev",
    "zlib1g-dev",
    "libpixman-1-dev",
    "libgcrypt11-dev",
    "libcurl4-gnutls-dev",
    "libgnutls-dev",
    "libaio-dev",
    "libfdt-dev",
    "libtool",
)
# Linked by the guide's --extra-ldflags, installed by none of its commands.
LIBNL_PACKAGES = ("libnl-3-dev", "libnl-cli-3-dev", "libnl-route-3-dev")


@dataclass(frozen=True)
class Member:
    idx: int  # RDMA-Paxos server_idx
    name: str
    address: str
    role: str


def paxos_members(pair: Pair) -> list[Member]:
    vmft = VmFt.of(pair)
    members = [
        Member(0, pair.primary.name, pair.primary.address, "primary"),
        Member(1, pair.secondary.name, pair.secondary.address, "secondary"),
    ]
    if vmft.witness:
        members.append(Member(2, vmft.witness.name, vmft.witness.address, "witness"))
    return members


def member(pair: Pair, name: str) -> Member:
    return next(m for m in paxos_members(pair) if m.name == name)


def paxos_env(pair: Pair, member: Member) -> dict[str, str]:
    """RDMA-Paxos's settings, which it reads from its process's environment: the one source
    of build/rdma-paxos.env (for the qemu unit and the witness) and of plan.json's
    qemu.env (for `colospec run`)."""
    return {
        "server_type": "start",
        "server_idx": str(member.idx),
        "group_size": str(len(paxos_members(pair))),
        "config_path": f"{pair.installed_dir(member.name)}/{NODES_CONFIG}",
    }


def build_dir(pair: Pair, member: Member) -> dict[str, str]:
    """{'build/…': text} for one Paxos member (a host, or the witness)."""
    vmft, members = VmFt.of(pair), paxos_members(pair)
    ctx = {"pair": pair, "node": member.name, "role": member.role}
    script = render_template(
        "vmft-build.sh.j2",
        **ctx,
        root=vmft.root,
        witness=member.role == "witness",
        rdma_paxos_packages=RDMA_PAXOS_PACKAGES,
        qemu_packages=QEMU_PACKAGES + LIBNL_PACKAGES,
        binary=pair.qemu.binary,
    )
    config = render_template(
        "vmft-nodes.local.cfg.j2",
        **ctx,
        members=members,
        db_name=f"colospec-{pair.name}",
        hb_period=pair.failover.heartbeat_interval_ms / 1000,
    )
    env = render_template("vmft-rdma-paxos.env.j2", **ctx, env=paxos_env(pair, member))
    return {BUILD_SCRIPT: script, NODES_CONFIG: config, ENV_FILE: env}


def witness_files(pair: Pair) -> dict[str, str]:
    """{'<witness>/build/…': text}, or {} without a witness."""
    witness = [m for m in paxos_members(pair) if m.role == "witness"]
    return {f"{w.name}/{rel}": text for w in witness for rel, text in build_dir(pair, w).items()}
