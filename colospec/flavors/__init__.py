"""The flavours a spec compiles to, and the one registry compile.py asks: FLAVORS.

A flavour is a layout of a COLO pair (which QEMU objects, which QMP sequences, which host
plumbing). It implements Flavor once and is registered here by the name the spec's
`flavor` key uses; what every flavour does the same way is in colospec/render/, and
nothing outside this package asks which flavour a pair has.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from colospec.flavors.colo import ColoFlavor
from colospec.flavors.vmft import VmFtFlavor
from colospec.model import FlavorNames, Host, Pair
from colospec.render.qmp import Command
from colospec.render.systemd import FlavorUnits
from colospec.rules import Rule


@runtime_checkable
class Flavor(Protocol):
    names: FlavorNames  # what the model calls this flavour's scratch disks and nodes
    rules: tuple[Rule, ...]  # the semantic rules its specs must pass, common ones included

    def qemu_argv(self, pair: Pair, host: Host) -> list[str]:
        """The host's QEMU command line, binary first, qemu.extra_args last."""

    def qemu_args_file(self, args: list[str]) -> str:
        """qemu.args: that command line, one argument a line, after comments."""

    def qmp_scripts(self, pair: Pair, host: Host) -> dict[str, list[Command]]:
        """{'qmp/NN-name.json': commands}: the host's setup, then both failovers."""

    def plan(self, pair: Pair, host: Host, scripts: dict[str, list[Command]]) -> dict[str, Any]:
        """plan.json, all the runner reads; scripts: what qmp_scripts gave for this host."""

    def network_script(self, pair: Pair, host: Host) -> str:
        """tc.sh: the host's network plumbing, for review and for hosts managed by hand."""

    def units(self, pair: Pair, host: Host) -> FlavorUnits:
        """What this flavour changes in the host's systemd units."""

    def host_files(self, pair: Pair, host: Host) -> dict[str, str]:
        """More files in the host's directory, by relative path."""

    def pair_files(self, pair: Pair) -> dict[str, str]:
        """Files outside the hosts' directories (relative to OUT/<pair>/)."""


FLAVORS: dict[str, Flavor] = {"colo": ColoFlavor(), "vm-ft": VmFtFlavor()}
