"""plan.json of a vm-ft host: the colo flavour's step kinds, in the vm-ft guide's order.

The runner executes it like a colo plan. What differs is in the data: the network gets the
guide's ingress redirect to the tap's ifb, and the QEMU must be the vm-ft build (it links
libinterpose, RDMA-Paxos's library) and have every command the scripts use.
"""

from __future__ import annotations

from typing import Any

from colospec.model import Host, Pair
from colospec.render.plan import (
    _qmp_step,
    _step,
    disks_section,
    failover_section,
    heartbeat_section,
    network_section,
    plan_header,
    probe_peer_steps,
    qemu_section,
    units_section,
    watch_section,
)
from colospec.render.vmft_build import paxos_env, paxos_members
from colospec.versions import defects_for

# Commands the runner itself sends, beyond the scripts' (qemu_check has query-qmp-schema).
RUNNER_COMMANDS = ("query-colo-status", "query-status")
BUILD_SCRIPT = "build/build.sh"
# The guide leaves x-checkpoint-delay at QEMU's default (migration.c: 200 * 100 ms).
QEMU_DEFAULT_CHECKPOINT_DELAY_MS = 20_000
ENV_FILE = "build/rdma-paxos.env"  # the qemu unit's EnvironmentFile=, which holds qemu.env


def vmft_steps(host: Host) -> list[dict[str, Any]]:
    steps = [
        _step("check-qemu", "check-qemu"),
        _step("disks", "prepare-disks"),
        _step("network", "prepare-network"),
        _step("qemu", "start-qemu"),
        _step("qmp", "connect-qmp"),
    ]
    if host.role == "secondary":
        steps += [
            _qmp_step("nbd-export", "qmp/10-nbd-export.json"),
            *probe_peer_steps(host),
            _step("colo", "wait-colo", mode="secondary"),
        ]
    else:
        # No wait-chardevs: the secondary's redirectors connect to its own RDMA-Paxos
        # (QEMU does not start unless they do), not to this QEMU.
        steps += [
            _qmp_step("liveness-beacon", "qmp/05-liveness-beacon.json"),
            _step("peer-nbd-export", "wait-peer", step="nbd-export"),
            *probe_peer_steps(host),
            _qmp_step("replication-child", "qmp/10-replication-child.json"),
            _qmp_step("start-colo", "qmp/20-start-colo.json"),
            _step("colo", "wait-colo", mode="primary"),
        ]
    return [*steps, _step("watch", "watch")]


def render_vmft_plan(
    pair: Pair, host: Host, scripts: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    vmft = pair.vmft
    assert vmft is not None, "validated before rendering"
    commands = {c["execute"] for cmds in scripts.values() for c in cmds} | set(RUNNER_COMMANDS)
    member = next(m for m in paxos_members(pair) if m.name == host.name)
    return {
        **plan_header(pair, host),
        "qemu": {
            **qemu_section(pair, host),
            # RDMA-Paxos's group membership, which QEMU must find in its environment:
            # `colospec run` adds these to its own; the qemu unit loads ENV_FILE instead.
            "env": paxos_env(pair, member),
            "build_script": f"{pair.name}/{host.name}/{BUILD_SCRIPT}",
            "requires": {
                "commands": sorted(commands),
                "qom_types": ["filter-redirector"],
                "migration_capabilities": ["x-colo"],
                "block_drivers": ["nbd", "qcow2", "quorum", "replication"],
                "links": ["libinterpose"],
            },
            "known_defects": [d.id for d in defects_for(pair.qemu.version, pair.vm.accel)],
        },
        "disks": disks_section(pair, host),
        "network": {
            **network_section(pair, host),
            "ingress_redirect": [{"from": host.tap, "to": vmft.ifb_for(host.tap)}],
        },
        "heartbeat": heartbeat_section(pair, host),
        # No colo-compare: the secondary's output goes to RDMA-Paxos, not to this QEMU.
        "watch": watch_section(pair, host, QEMU_DEFAULT_CHECKPOINT_DELAY_MS, None),
        "steps": vmft_steps(host),
        "failover": failover_section(),
        "units": units_section(pair, host),
    }
