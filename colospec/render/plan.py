"""plan.json: everything the runner needs on one host, so it never reads the spec.

Steps run in order. "wait-peer" blocks until the peer's runner reports (over the
heartbeat channel) that it finished the named step: that is how the primary knows the
secondary's NBD export exists before it adds its replication child and migrates.
"""

from __future__ import annotations

import hashlib
from typing import Any

from colospec import __version__
from colospec.model import Host, Pair
from colospec.versions import defects_for, syntax_for

PLAN_FORMAT = "colospec-plan/v1"


def _step(id_: str, kind: str, **extra: Any) -> dict[str, Any]:
    return {"id": id_, "kind": kind, **extra}


def _qmp_step(id_: str, script: str) -> dict[str, Any]:
    return _step(id_, "qmp", script=script, on_error="abort")


def plan_steps(host: Host, scripts: list[str]) -> list[dict[str, Any]]:
    by_name = {s.split("/")[-1].split("-", 1)[1].removesuffix(".json"): s for s in scripts}
    steps = [
        _step("check-qemu", "check-qemu"),
        _step("disks", "prepare-disks"),
        _step("network", "prepare-network"),
    ]
    if host.role == "secondary":
        # The secondary's redirectors dial the primary's QEMU and, refused, retry only
        # a second later: start once the primary's QEMU listens.
        steps.append(_step("peer-qemu", "wait-peer", step="qmp"))
    steps += [_step("qemu", "start-qemu"), _step("qmp", "connect-qmp")]
    if host.role == "secondary":
        steps += [
            _qmp_step("nbd-export", by_name["nbd-export"]),
            *probe_peer_steps(host),
            _step("colo", "wait-colo", mode="secondary"),
        ]
    else:
        steps += [
            _qmp_step("liveness-beacon", by_name["liveness-beacon"]),
            _step("peer-nbd-export", "wait-peer", step="nbd-export"),
            *probe_peer_steps(host),
            _qmp_step("replication-child", by_name["replication-child"]),
            # The secondary's redirectors must be connected before COLO starts, or the
            # first packets would reach only the primary.
            _step("peer-channels", "wait-chardevs", chardevs=["mirror0", "compare1"]),
            _qmp_step("start-colo", by_name["start-colo"]),
            _step("colo", "wait-colo", mode="primary"),
        ]
    steps.append(_step("watch", "watch"))
    return steps


def probe_peer_steps(host: Host) -> list[dict[str, Any]]:
    """Check at bring-up that the peer's QEMU port answers this host: failover decisions
    rely on that probe, and a firewall that rejects it is found now, not at a failover."""
    if host.role == "secondary":
        # The primary's port is its export-less NBD server, started by liveness-beacon.
        return [
            _step("peer-beacon", "wait-peer", step="liveness-beacon"),
            _step("probe-peer", "probe-peer"),
        ]
    return [_step("probe-peer", "probe-peer")]


def tap_mac(pair: str, host: str) -> str:
    """The host side of the guest's NIC. fe:… (as libvirt does) so a bridge, which takes
    the lowest MAC among its ports, never adopts it; the rest differs per host, so the two
    hosts' taps never share a MAC on a common LAN."""
    digest = hashlib.sha256(f"{pair}/{host}".encode()).hexdigest()
    return "fe:" + ":".join(digest[i : i + 2] for i in range(0, 10, 2))


def heartbeat_paths(host: Host, peer: Host) -> list[dict[str, str]]:
    paths = [{"name": "replication", "local": host.address, "peer": peer.address}]
    if host.lan_address and peer.lan_address:
        paths.append({"name": "lan", "local": host.lan_address, "peer": peer.lan_address})
    return paths


def render_plan(pair: Pair, host: Host, scripts: list[str]) -> dict[str, Any]:
    syntax = syntax_for(pair.qemu.version)
    assert syntax is not None, "validated before rendering"
    lay = pair.layout(host)
    return {
        **plan_header(pair, host),
        "qemu": {
            **qemu_section(pair, host),
            "console_log": lay.console_log,
            "requires": {
                "commands": sorted(syntax.required_commands),
                "qom_types": sorted(syntax.required_qom_types),
                "migration_capabilities": ["x-colo"],
                "block_drivers": ["nbd", "qcow2", "quorum", "replication"],
            },
            "known_defects": [d.id for d in defects_for(pair.qemu.version, pair.vm.accel)],
        },
        "disks": disks_section(pair, host),
        "network": network_section(pair, host),
        "heartbeat": heartbeat_section(pair, host),
        "watch": watch_section(
            pair,
            host,
            pair.replication.checkpoint_delay_ms,
            # colo-compare's secondary_in (chardev compare1) listens here on the primary.
            {"address": host.address, "port": pair.replication.ports.compare}
            if host.role == "primary"
            else None,
        ),
        "steps": plan_steps(host, scripts),
        "failover": failover_section(),
        "units": units_section(pair, host),
    }


# The sections below are the same in every flavour's plan.


def plan_header(pair: Pair, host: Host) -> dict[str, Any]:
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
    """Where QEMU runs; each flavour adds what it requires of the binary."""
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
    return {
        "tap": host.tap,
        "tap_mac": tap_mac(pair.name, host.name),
        "bridge": host.bridge,
        "script": "tc.sh",
    }


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


def watch_section(
    pair: Pair, host: Host, checkpoint_delay_ms: int, secondary_output: dict[str, Any] | None
) -> dict[str, Any]:
    """What the runner watches: checkpoints (a stall means COLO stopped); on the primary the
    replication child (an I/O error there means its writes no longer reach the secondary)
    and, where colo-compare runs, the connection that carries the secondary's output."""
    return {
        "checkpoint_delay_ms": checkpoint_delay_ms,
        "replication_node": pair.replication_node(host),
        "secondary_output": secondary_output,
    }


def failover_section() -> dict[str, Any]:
    # promoted_after: the command after which this host serves alone; what follows
    # prepares it to protect the guest again and is not part of the pause.
    return {
        "as_primary": {
            "script": "qmp/90-failover-as-primary.json",
            "on_error": "continue",
            "promoted_after": "x-colo-lost-heartbeat",
        },
        "as_secondary": {
            "script": "qmp/91-failover-as-secondary.json",
            "on_error": "continue",
            "promoted_after": "announce-self",
        },
    }


def units_section(pair: Pair, host: Host) -> dict[str, str]:
    lay = pair.layout(host)
    return {"target": lay.unit(), "qemu": lay.unit("qemu"), "runner": lay.unit("runner")}
