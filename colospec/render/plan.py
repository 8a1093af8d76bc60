"""plan.json: everything the runner needs on one host, so it never reads the spec.

Every flavour's plan has these sections and this bring-up; a flavour fills in what its
QEMU requires and adds its waits. Steps run in order. "wait-peer" blocks until the peer's
runner reports (over the heartbeat channel) that it finished the named step: that is how
the primary knows the secondary's NBD export exists before it adds its replication child
and migrates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from colospec import __version__
from colospec.model import Host, Pair
from colospec.render.qmp import SCRIPTS
from colospec.versions import defects_for

PLAN_FORMAT = "colospec-plan/v1"
# What every flavour's QEMU needs for COLO; a flavour adds its commands, types and more.
MIGRATION_CAPABILITIES = ("x-colo",)
BLOCK_DRIVERS = ("nbd", "qcow2", "quorum", "replication")

Step = dict[str, Any]


def host_plan(
    pair: Pair,
    host: Host,
    *,
    qemu: dict[str, Any],
    requires: dict[str, Any],
    network: dict[str, Any],
    watch: dict[str, Any],
    steps: list[Step],
    units: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One host's plan; qemu, network and units: what the flavour adds to those sections."""
    return {
        **header(pair, host),
        "qemu": {
            **qemu_section(pair, host),
            **qemu,
            "requires": requires,
            "known_defects": [d.id for d in defects_for(pair.qemu.version, pair.vm.accel)],
        },
        "disks": disks_section(pair, host),
        "network": {**network_section(pair, host), **network},
        "heartbeat": heartbeat_section(pair, host),
        "watch": watch,
        "steps": steps,
        "failover": failover_section(),
        "units": {**units_section(pair, host), **(units or {})},
        # Durable (a reboot keeps it): the failover epoch this host's disk belongs to.
        "state_dir": pair.layout(host).state_dir,
        **cluster_section(pair, host),
    }


def cluster_section(pair: Pair, host: Host) -> dict[str, Any]:
    """Under a cluster manager the runner acts as primary only while its node is in the
    quorate partition (runner/quorum.py); node names are the spec's host names."""
    if pair.cluster is None:
        return {}
    return {
        "cluster": {
            "manager": pair.cluster.manager,
            "node": host.name,
            "peer_node": pair.peer_of(host).name,
        }
    }


def requires(commands: Iterable[str], qom_types: Iterable[str], **more: Any) -> dict[str, Any]:
    """What the runner checks the QEMU binary for before it starts it."""
    return {
        "commands": sorted(commands),
        "qom_types": sorted(qom_types),
        "migration_capabilities": list(MIGRATION_CAPABILITIES),
        "block_drivers": list(BLOCK_DRIVERS),
        **more,
    }


def step(id_: str, kind: str, **extra: Any) -> Step:
    return {"id": id_, "kind": kind, **extra}


def qmp_step(id_: str) -> Step:
    return step(id_, "qmp", script=SCRIPTS[id_], on_error="abort")


def bring_up_steps(
    host: Host, *, before_qemu: Iterable[Step] = (), before_start_colo: Iterable[Step] = ()
) -> list[Step]:
    """Every flavour's bring-up; before_qemu and before_start_colo: a flavour's own waits."""
    steps = [
        step("check-qemu", "check-qemu"),
        step("disks", "prepare-disks"),
        step("network", "prepare-network"),
        *before_qemu,
        step("qemu", "start-qemu"),
        step("qmp", "connect-qmp"),
    ]
    if host.role == "secondary":
        steps += [
            qmp_step("nbd-export"),
            *probe_peer_steps(host),
            step("colo", "wait-colo", mode="secondary"),
        ]
    else:
        steps += [
            qmp_step("liveness-beacon"),
            step("peer-nbd-export", "wait-peer", step="nbd-export"),
            *probe_peer_steps(host),
            qmp_step("replication-child"),
            *before_start_colo,
            qmp_step("start-colo"),
            step("colo", "wait-colo", mode="primary"),
        ]
    return [*steps, step("watch", "watch")]


def probe_peer_steps(host: Host) -> list[Step]:
    """Check at bring-up that the peer's QEMU port answers this host: failover decisions
    rely on that probe, and a firewall that rejects it is found now, not at a failover."""
    if host.role == "secondary":
        # The primary's port is its export-less NBD server, started by liveness-beacon.
        return [
            step("peer-beacon", "wait-peer", step="liveness-beacon"),
            step("probe-peer", "probe-peer"),
        ]
    return [step("probe-peer", "probe-peer")]


def header(pair: Pair, host: Host) -> dict[str, Any]:
    peer = pair.peer_of(host)
    return {
        "format": PLAN_FORMAT,
        "generator": f"colospec {__version__}",
        "spec_sha256": pair.spec_sha256,
        "pair": pair.name,
        "flavor": pair.flavor,
        "host": {"name": host.name, "role": host.role, "address": host.address},
        "peer": {"name": peer.name, "role": peer.role, "address": peer.address},
    }


def qemu_section(pair: Pair, host: Host) -> dict[str, Any]:
    lay = pair.layout(host)
    return {
        "binary": pair.qemu.binary,
        "version": pair.qemu.version,
        "accel": pair.vm.accel,
        "args_file": "qemu.args",
        "run_dir": lay.run_dir,
        "qmp_socket": lay.qmp_socket,
        "pidfile": lay.pidfile,
    }


def disks_section(pair: Pair, host: Host) -> dict[str, Any]:
    lay = pair.layout(host)
    scratch = (
        {"active": lay.active_disk, "hidden": lay.hidden_disk} if host.role == "secondary" else None
    )
    return {"base": {"path": host.image, "format": pair.vm.disk.format}, "scratch": scratch}


def network_section(pair: Pair, host: Host) -> dict[str, Any]:
    tap_mac = pair.layout(host).tap_mac
    return {"tap": host.tap, "tap_mac": tap_mac, "bridge": host.bridge, "script": "tc.sh"}


def heartbeat_section(pair: Pair, host: Host) -> dict[str, Any]:
    peer, ports = pair.peer_of(host), pair.replication.ports
    return {
        "port": ports.heartbeat,
        "paths": heartbeat_paths(host, peer),
        "interval_ms": pair.failover.heartbeat_interval_ms,
        "missed": pair.failover.missed_heartbeats,
        # The peer QEMU's NBD server: answers while that QEMU lives.
        "peer_qemu_probe": {"address": peer.address, "port": ports.nbd},
        # Where the key is, never the key: it is made on the hosts by `colospec keygen`.
        "key_file": pair.security.key_file,
    }


def heartbeat_paths(host: Host, peer: Host) -> list[dict[str, str]]:
    paths = [{"name": "replication", "local": host.address, "peer": peer.address}]
    if host.lan_address and peer.lan_address:
        paths.append({"name": "lan", "local": host.lan_address, "peer": peer.lan_address})
    return paths


def watch_section(
    pair: Pair, host: Host, checkpoint_delay_ms: int, secondary_output: dict[str, Any] | None
) -> dict[str, Any]:
    """What the runner watches: checkpoints (a stall means COLO stopped); on the primary the
    replication child (an I/O error there means its writes no longer reach the secondary)
    and, where colo-compare runs, the connection that carries the secondary's output."""
    return {
        "checkpoint_delay_ms": checkpoint_delay_ms,
        "replication_node": pair.layout(host).replication_node,
        "secondary_output": secondary_output,
    }


def failover_section() -> dict[str, Any]:
    # promoted_after: the command after which this host serves alone; what follows
    # prepares it to protect the guest again and is not part of the pause.
    return {
        "as_primary": {
            "script": SCRIPTS["failover-as-primary"],
            "on_error": "continue",
            "promoted_after": "x-colo-lost-heartbeat",
        },
        "as_secondary": {
            "script": SCRIPTS["failover-as-secondary"],
            "on_error": "continue",
            "promoted_after": "announce-self",
        },
    }


def units_section(pair: Pair, host: Host) -> dict[str, str | None]:
    lay = pair.layout(host)
    # qemu_join: the unit that starts QEMU to join a peer serving alone (None: the flavour
    # has no re-protection).
    return {"target": lay.unit(), "qemu": lay.unit("qemu"), "runner": lay.unit("runner"),
            "qemu_join": None}  # fmt: skip
