"""The vm-ft flavour: the vm-ft/PLOVER guide's system, QEMU's COLO branch linked against
RDMA-Paxos (libinterpose), which carries the guest's packets instead of colo-compare.

Its plan has the colo flavour's step kinds in the guide's order. What differs is in the
data: the network gets the guide's ingress redirect to the tap's ifb, and the QEMU must be
the vm-ft build (it links libinterpose) and have every command the scripts use.
"""

from __future__ import annotations

import posixpath
from typing import Any

from colospec.flavors.vmft import argv, build, ids, qmp
from colospec.model import FlavorNames, Host, Pair, VmFt
from colospec.render import plan, qemu_argv
from colospec.render.qmp import Command
from colospec.render.systemd import FlavorUnits
from colospec.render.tc import render_tc_script
from colospec.rules import Rule, common, vmft

# Commands the runner itself sends, beyond the scripts' (qemu_check has query-qmp-schema).
RUNNER_COMMANDS = ("query-colo-status", "query-status")
# The guide leaves x-checkpoint-delay at QEMU's default (migration.c: 200 * 100 ms).
QEMU_DEFAULT_CHECKPOINT_DELAY_MS = 20_000


class VmFtFlavor:
    # The guide's names: one vm-ft pair per scratch_dir.
    names = FlavorNames(scratch_disk="{what}_disk.img", replication_node=ids.REPLICATION_NODE)
    rules: tuple[Rule, ...] = (*common.RULES, *vmft.RULES)

    def qemu_argv(self, pair: Pair, host: Host) -> list[str]:
        return argv.qemu_argv(pair, host)

    def qemu_args_file(self, args: list[str]) -> str:
        return qemu_argv.args_file(args, argv.DIFFERENCES)

    def qmp_scripts(self, pair: Pair, host: Host) -> dict[str, list[Command]]:
        return qmp.qmp_scripts(pair, host)

    def plan(self, pair: Pair, host: Host, scripts: dict[str, list[Command]]) -> dict[str, Any]:
        ifb = VmFt.of(pair).ifb_for(host.tap)
        sent = {c["execute"] for commands in scripts.values() for c in commands}
        return plan.host_plan(
            pair,
            host,
            qemu={
                # RDMA-Paxos's group membership, which QEMU must find in its environment:
                # `colospec run` adds these to its own; the qemu unit loads ENV_FILE instead.
                "env": build.paxos_env(pair, build.member(pair, host.name)),
                "build_script": f"{pair.name}/{host.name}/{build.BUILD_SCRIPT}",
            },
            requires=plan.requires(
                sent | set(RUNNER_COMMANDS), ["filter-redirector"], links=["libinterpose"]
            ),
            network={"ingress_redirect": [{"from": host.tap, "to": ifb}]},
            # No colo-compare: the secondary's output goes to RDMA-Paxos, not to this QEMU.
            watch=plan.watch_section(pair, host, QEMU_DEFAULT_CHECKPOINT_DELAY_MS, None),
            # No wait for the peer's chardevs: the secondary's redirectors connect to its own
            # RDMA-Paxos (QEMU does not start unless they do), not to this QEMU.
            steps=plan.bring_up_steps(host),
        )

    def network_script(self, pair: Pair, host: Host) -> str:
        settings = VmFt.of(pair)
        return render_tc_script(
            pair,
            host,
            "vmft-tc.sh.j2",
            ifb=settings.ifb_for(host.tap),
            ifb_count=settings.ifb_count,
        )

    def units(self, pair: Pair, host: Host) -> FlavorUnits:
        settings = VmFt.of(pair)
        sockets = (settings.mirror_socket, settings.redirector_socket)
        return FlavorUnits(
            templates={
                "qemu": "systemd/vmft-qemu.service.j2",
                "network": "systemd/vmft-network.service.j2",
            },
            qemu_env_file=build.ENV_FILE,
            # RDMA-Paxos (linked in) reads its configuration from the artifacts and creates
            # its two unix sockets; the tap scripts run as QEMU's children.
            qemu_reads=(
                settings.root,
                settings.tap_up,
                settings.tap_down,
                pair.layout(host).installed_dir,
            ),
            qemu_writes=tuple(posixpath.dirname(s) for s in sockets),
            # RDMA-Paxos's InfiniBand devices and peers are its own: no device or address list.
            qemu_confined=False,
        )

    def host_files(self, pair: Pair, host: Host) -> dict[str, str]:
        return build.build_dir(pair, build.member(pair, host.name))

    def pair_files(self, pair: Pair) -> dict[str, str]:
        # The witness, if any: only its RDMA-Paxos build.
        return build.witness_files(pair)
