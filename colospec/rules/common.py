"""Rules every flavour runs: hosts, addresses, ports, interface names, the guest and QEMU."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from colospec.diagnostics import Diagnostic
from colospec.loader import LoadedSpec
from colospec.model import ROLES, Pair, default_tap
from colospec.rules import Rule
from colospec.versions import defects_for, parse_version, supported_versions, syntax_for


def hosts_differ(pair: Pair, spec: LoadedSpec) -> Iterator[Diagnostic]:
    a, b = pair.primary, pair.secondary
    if a.name == b.name:
        yield spec.diagnostic(
            ("hosts", "secondary", "name"),
            f"both hosts are named '{a.name}'",
            "give each host its own name",
        )
    if a.address == b.address:
        yield spec.diagnostic(
            ("hosts", "secondary", "address"),
            f"both hosts have the address {a.address}",
            "give each host its own replication address",
        )


def unusable_address(text: str) -> tuple[str, str] | None:
    """(problem, fix) when text cannot be one host's IPv4 address, else None."""
    try:
        addr = ipaddress.IPv4Address(text)
    except ValueError:
        return f"'{text}' is not an IPv4 address", "write four numbers 0–255 such as 10.22.1.2"
    if addr.is_unspecified or addr.is_multicast or text == "255.255.255.255":
        return (
            f"{text} cannot be one host's address",
            "use the host's own unicast address on the replication network",
        )
    return None


def addresses_usable(pair: Pair, spec: LoadedSpec) -> Iterator[Diagnostic]:
    for role, key in [(r, k) for r in ROLES for k in ("address", "lan_address")]:
        text = getattr(getattr(pair, role), key)
        if text is not None and (problem := unusable_address(text)):
            yield spec.diagnostic(("hosts", role, key), *problem)


def second_heartbeat_path(pair: Pair, spec: LoadedSpec) -> Iterator[Diagnostic]:
    a, b = pair.primary, pair.secondary
    if (a.lan_address is None) != (b.lan_address is None):
        role = "secondary" if b.lan_address is None else "primary"
        yield spec.diagnostic(
            ("hosts", role),
            "only one host has a lan_address",
            f"add hosts.{role}.lan_address, or remove the other",
        )
    elif a.lan_address is None:
        yield spec.diagnostic(
            ("hosts",),
            "heartbeats use only the replication network, so a cut replication link looks "
            "like a dead primary and both hosts would serve",
            "give both hosts a lan_address on a second network",
            severity="warning",
        )
    else:
        addresses = [a.address, b.address, a.lan_address, b.lan_address]
        if len(set(addresses)) < 4:
            yield spec.diagnostic(
                ("hosts", "secondary", "lan_address"),
                "the LAN addresses repeat a replication address or each other",
                "use each host's own address on the second network",
            )


def ports_distinct(pair: Pair, spec: LoadedSpec) -> Iterator[Diagnostic]:
    seen: dict[int, str] = {}
    ports = pair.replication.ports
    for channel in ("migration", "nbd", "mirror", "compare", "heartbeat"):
        port = getattr(ports, channel)
        if port is None:  # a colo-only channel in a vm-ft spec
            continue
        if port in seen:
            yield spec.diagnostic(
                ("replication", "ports", channel),
                f"port {port} is already used for {seen[port]}",
                "give every channel its own port",
            )
        else:
            seen[port] = channel


def mac_unicast(pair: Pair, spec: LoadedSpec) -> Iterator[Diagnostic]:
    octets = [int(o, 16) for o in pair.vm.nic.mac.split(":")]
    if octets[0] & 1:
        yield spec.diagnostic(
            ("vm", "nic", "mac"),
            f"{pair.vm.nic.mac} is a multicast address",
            "use a unicast MAC: the first octet must be even, e.g. 52:…",
        )
    elif not any(octets):
        yield spec.diagnostic(
            ("vm", "nic", "mac"),
            "the all-zero MAC is not usable",
            "use a locally administered MAC such as 52:54:00:12:34:56",
        )


def machine_supported(pair: Pair, spec: LoadedSpec) -> Iterator[Diagnostic]:
    if "q35" in pair.vm.machine:
        yield spec.diagnostic(
            ("vm", "machine"),
            f"COLO does not support the {pair.vm.machine} machine",
            "use machine: pc",
        )


def vhost_off(pair: Pair, spec: LoadedSpec) -> Iterator[Diagnostic]:
    if pair.vm.nic.vhost:
        yield spec.diagnostic(
            ("vm", "nic", "vhost"),
            "vhost-net bypasses QEMU, so colo-compare and the filters never see the guest's packets",
            "set vhost: false or remove the key",
        )


def vnet_hdr_model(pair: Pair, spec: LoadedSpec) -> Iterator[Diagnostic]:
    nic = pair.vm.nic
    if nic.vnet_hdr and nic.model != "virtio-net-pci":
        yield spec.diagnostic(
            ("vm", "nic", "vnet_hdr"),
            f"{nic.model} does not use virtio offload headers",
            "remove vnet_hdr, or use model: virtio-net-pci",
            severity="warning",
        )


def interface_names(pair: Pair, spec: LoadedSpec) -> Iterator[Diagnostic]:
    derived = default_tap(pair.name)
    if len(derived) > 15 and any(h.tap == derived for h in pair.hosts):
        yield spec.diagnostic(
            ("name",),
            f"the derived tap name '{derived}' is longer than 15 characters",
            "set hosts.primary.tap and hosts.secondary.tap (at most 15 characters)",
        )
    for host in pair.hosts:
        base = ("hosts", host.role)
        for key, name in (("bridge", host.bridge), ("tap", host.tap)):
            if name in (".", ".."):
                yield spec.diagnostic(
                    (*base, key), f"'{name}' is not an interface name", "use a real interface name"
                )
        if host.tap == host.bridge:
            yield spec.diagnostic(
                (*base, "tap"),
                f"the tap and the bridge are both '{host.tap}'",
                "give the tap its own name",
            )


def qemu_version_known(pair: Pair, spec: LoadedSpec) -> Iterator[Diagnostic]:
    version = pair.qemu.version
    if syntax_for(version, pair.flavor) is None:
        yield spec.diagnostic(
            ("qemu", "version"),
            f"colospec has no syntax table for QEMU {version} in flavour {pair.flavor}",
            f"use one of: {', '.join(supported_versions(pair.flavor))}",
        )
    exact = parse_version(version)[2] is not None
    for defect in defects_for(version, pair.vm.accel):
        path = ("vm", "accel") if defect.accels != {"kvm", "tcg", "auto"} else ("qemu", "version")
        # A whole release line may have fixed releases; an exact broken release is an error.
        broken = defect.refuse and exact
        yield spec.diagnostic(
            path,
            f"known QEMU defect {defect.id}: {defect.summary}",
            defect.fix,
            severity="error" if broken else "warning",
            rule=defect.id,
        )


def vnc_on_loopback(pair: Pair, spec: LoadedSpec) -> Iterator[Diagnostic]:
    vnc = pair.vm.vnc
    if not vnc:
        return
    address = vnc.rpartition(":")[0]
    if address:
        try:
            loopback = ipaddress.IPv4Address(address).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            yield spec.diagnostic(
                ("vm", "vnc"),
                f"VNC would listen on {address} on both hosts",
                'use ":N" (loopback; reach it through an SSH tunnel)',
            )


def heartbeat_budget(pair: Pair, spec: LoadedSpec) -> Iterator[Diagnostic]:
    f = pair.failover
    budget = f.heartbeat_interval_ms * f.missed_heartbeats
    if budget >= 1000:
        yield spec.diagnostic(
            ("failover",),
            f"a dead peer is noticed only after {budget} ms without heartbeats",
            "lower heartbeat_interval_ms or missed_heartbeats",
            severity="warning",
        )


def scratch_not_image(pair: Pair, spec: LoadedSpec) -> Iterator[Diagnostic]:
    for host in pair.hosts:
        lay = pair.layout(host)
        if host.image in (lay.active_disk, lay.hidden_disk):
            yield spec.diagnostic(
                ("hosts", host.role, "scratch_dir"),
                f"{host.image} would be overwritten as an active/hidden disk",
                "keep the base image outside scratch_dir or rename it",
            )


RULES: tuple[Rule, ...] = (
    hosts_differ,
    addresses_usable,
    second_heartbeat_path,
    ports_distinct,
    mac_unicast,
    machine_supported,
    vhost_off,
    vnet_hdr_model,
    interface_names,
    qemu_version_known,
    vnc_on_loopback,
    heartbeat_budget,
    scratch_not_image,
)
