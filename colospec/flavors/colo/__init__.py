"""The colo flavour: upstream QEMU's COLO as qemu-colo.rst lays it out (colo-compare on the
primary, filter-redirectors and filter-rewriter on the secondary)."""

from __future__ import annotations

from typing import Any

from colospec.flavors.colo import argv, ids, qmp, rejoin
from colospec.model import FlavorNames, Host, Pair
from colospec.render import plan, qemu_argv, tls
from colospec.render.qmp import Command
from colospec.render.systemd import FlavorUnits
from colospec.render.tc import render_tc_script
from colospec.rules import Rule, colo, common
from colospec.versions import known_syntax


class ColoFlavor:
    names = FlavorNames(scratch_disk="{pair}-{what}.qcow2", replication_node=ids.REPLICATION_NODE)
    rules: tuple[Rule, ...] = (*common.RULES, *colo.RULES)

    def qemu_argv(self, pair: Pair, host: Host) -> list[str]:
        return argv.qemu_argv(pair, host)

    def qemu_args_file(self, args: list[str]) -> str:
        return qemu_argv.args_file(args)

    def qmp_scripts(self, pair: Pair, host: Host) -> dict[str, list[Command]]:
        syntax = known_syntax(pair.qemu.version)
        return {**qmp.qmp_scripts(pair, host), **rejoin.qmp_scripts(pair, host, syntax)}

    def plan(self, pair: Pair, host: Host, scripts: dict[str, list[Command]]) -> dict[str, Any]:
        syntax, lay = known_syntax(pair.qemu.version), pair.layout(host)
        # colo-compare's secondary_in (chardev SECONDARY_OUTPUT) listens here whenever this
        # host is the COLO primary: the spec's primary, or either host after re-protection.
        output = {"address": host.address, "port": pair.replication.ports.compare}
        before_qemu: list[plan.Step] = []
        if host.role == "secondary":
            # The secondary's redirectors dial the primary's QEMU and, refused, retry only
            # a second later: start once the primary's QEMU listens.
            before_qemu.append(plan.step("peer-qemu", "wait-peer", step="qmp"))
        # The secondary's redirectors must be connected before COLO starts, or the first
        # packets would reach only the primary.
        chardevs = [ids.MIRROR, ids.SECONDARY_OUTPUT]
        before_start = [plan.step("peer-channels", "wait-chardevs", chardevs=chardevs)]
        return {
            **plan.host_plan(
                pair,
                host,
                qemu={"console_log": lay.console_log},
                # Every command of every script, re-protection's too: checked before start.
                requires=plan.requires(
                    {
                        *syntax.required_commands,
                        *(c["execute"] for cs in scripts.values() for c in cs),
                    },
                    {*syntax.required_qom_types, *tls.qom_types(pair)},
                ),
                network={},
                units={"qemu_join": lay.unit("qemu-join")},
                watch=plan.watch_section(
                    pair,
                    host,
                    pair.replication.checkpoint_delay_ms,
                    output,
                ),
                steps=plan.bring_up_steps(
                    host, before_qemu=before_qemu, before_start_colo=before_start
                ),
            ),
            **rejoin.plan_sections(pair, host),
            **tls.plan_section(pair, host),
        }

    def network_script(self, pair: Pair, host: Host) -> str:
        return render_tc_script(pair, host)

    def units(self, pair: Pair, host: Host) -> FlavorUnits:
        return FlavorUnits(join_argv=tuple(argv.qemu_argv(pair, host, "secondary")))

    def host_files(self, pair: Pair, host: Host) -> dict[str, str]:
        # The other layout's command line, for a failover's aftermath (rejoin.py).
        other = rejoin.other_layout(host)
        args = qemu_argv.args_file(argv.qemu_argv(pair, host, other))
        return {rejoin.args_file(other, host): args}

    def pair_files(self, pair: Pair) -> dict[str, str]:
        return {}
