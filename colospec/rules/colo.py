"""Rules of the colo flavour (upstream QEMU's COLO with colo-compare)."""

from __future__ import annotations

from collections.abc import Iterator

from colospec.diagnostics import Diagnostic
from colospec.loader import LoadedSpec
from colospec.model import Pair
from colospec.rules import Rule
from colospec.versions import syntax_for


def vmft_settings_match_flavor(pair: Pair, spec: LoadedSpec) -> Iterator[Diagnostic]:
    # The same id as vm-ft's own check, which rejects colo settings in a vm-ft spec.
    if pair.vmft is not None:
        yield spec.diagnostic(
            ("vmft",),
            "the vmft section only applies to flavor: vm-ft",
            "remove it, or set flavor: vm-ft",
            key=True,
        )


def qemu_version_verified(pair: Pair, spec: LoadedSpec) -> Iterator[Diagnostic]:
    # colo only: the vm-ft QEMU is its guide's 2.x fork, whatever qemu.version says.
    syntax = syntax_for(pair.qemu.version)
    if syntax is not None and syntax.basis == "docs":
        yield spec.diagnostic(
            ("qemu", "version"),
            f"colospec's syntax for QEMU {pair.qemu.version} rests on QEMU's documentation; "
            "no COLO pair of this release line has run with colospec yet",
            "run the pair in a test setup first (README, 'QEMU versions'), or use a line "
            "marked run there",
            severity="warning",
        )


RULES: tuple[Rule, ...] = (vmft_settings_match_flavor, qemu_version_verified)
