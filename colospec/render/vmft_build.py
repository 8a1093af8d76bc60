"""The vm-ft layout's host-side files: tc.sh, and build/ (build script, RDMA-Paxos's node
configuration and group membership). The witness, which runs only RDMA-Paxos, gets build/.
"""

from __future__ import annotations

from dataclasses import dataclass

from colospec.model import Host, Pair, VmFt
from colospec.render.plan import tap_mac
from colospec.render.text import render_template

# The guide's package lists (Ubuntu 16.04 names), in its order.
RDMA_PAXOS_PACKAGES = ("libconfig-dev", "libdb5.3-dev", "libev-dev")
QEMU_PACKAGES = (
    "libglib2.0-dev", "zlib1g-dev", "libpixman-1-dev", "libgcrypt11-dev",
    "libcurl4-gnutls-dev", "libgnutls-dev", "libaio-dev", "libfdt-dev", "libtool",
)  # fmt: skip
# Linked by the guide's --extra-ldflags, installed by none of its commands.
LIBNL_PACKAGES = ("libnl-3-dev", "libnl-cli-3-dev", "libnl-route-3-dev")


@dataclass(frozen=True)
class Member:
    idx: int  # RDMA-Paxos server_idx
    name: str
    address: str
    role: str


def paxos_members(pair: Pair) -> list[Member]:
    vmft = _vmft(pair)
    members = [
        Member(0, pair.primary.name, pair.primary.address, "primary"),
        Member(1, pair.secondary.name, pair.secondary.address, "secondary"),
    ]
    if vmft.witness:
        members.append(Member(2, vmft.witness.name, vmft.witness.address, "witness"))
    return members


def _vmft(pair: Pair) -> VmFt:
    assert pair.vmft is not None, "validated before rendering"
    return pair.vmft


def render_vmft_tc_script(pair: Pair, host: Host) -> str:
    vmft = _vmft(pair)
    return render_template(
        "vmft-tc.sh.j2", pair=pair, host=host, tap_mac=tap_mac(pair.name, host.name),
        ifb=vmft.ifb_for(host.tap), ifb_count=vmft.ifb_count,
    )  # fmt: skip


def paxos_env(pair: Pair, member: Member) -> dict[str, str]:
    """RDMA-Paxos's settings, which it reads from its process's environment: the one source
    of build/rdma-paxos.env (for the qemu unit and the witness) and of plan.json's
    qemu.env (for `colospec run`)."""
    installed = f"{pair.runtime.artifacts_dir.rstrip('/')}/{pair.name}/{member.name}"
    return {
        "server_type": "start",
        "server_idx": str(member.idx),
        "group_size": str(len(paxos_members(pair))),
        "config_path": f"{installed}/build/nodes.local.cfg",
    }


def render_build_dir(pair: Pair, member: Member) -> dict[str, str]:
    """{'build/…': text} for one Paxos member (a host, or the witness)."""
    vmft, members = _vmft(pair), paxos_members(pair)
    ctx = {"pair": pair, "node": member.name, "role": member.role}
    script = render_template(
        "vmft-build.sh.j2", **ctx, root=vmft.root, witness=member.role == "witness",
        rdma_paxos_packages=RDMA_PAXOS_PACKAGES, qemu_packages=QEMU_PACKAGES + LIBNL_PACKAGES,
        binary=pair.qemu.binary,
    )  # fmt: skip
    config = render_template(
        "vmft-nodes.local.cfg.j2", **ctx, members=members, db_name=f"colospec-{pair.name}",
        hb_period=pair.failover.heartbeat_interval_ms / 1000,
    )  # fmt: skip
    env = render_template("vmft-rdma-paxos.env.j2", **ctx, env=paxos_env(pair, member))
    return {"build/build.sh": script, "build/nodes.local.cfg": config, "build/rdma-paxos.env": env}


def render_witness(pair: Pair) -> dict[str, str]:
    """{'<witness>/build/…': text}, or {} without a witness."""
    members = paxos_members(pair)
    if len(members) < 3:
        return {}
    witness = members[2]
    return {f"{witness.name}/{rel}": text for rel, text in render_build_dir(pair, witness).items()}
