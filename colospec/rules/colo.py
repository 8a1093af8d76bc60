"""Rules of the colo flavour (upstream QEMU's COLO with colo-compare)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath

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


def tls_dir_kept(pair: Pair, spec: LoadedSpec) -> Iterator[Diagnostic]:
    """The certificates must outlive an install and a reboot: not inside a host's
    artifact directory (replaced by every install: README, "Installing the built
    artifacts") nor under /run (a tmpfs, and the units' runtime directories)."""
    tls = pair.security.tls
    if tls is None:
        return
    for host in pair.hosts:
        where = PurePosixPath(tls.host_dir(host))
        installed = PurePosixPath(pair.installed_dir(host.name))
        if where.is_relative_to(installed) or installed.is_relative_to(where):
            problem = f"is inside or holds {host.name}'s artifact directory {installed}"
        elif where.is_relative_to("/run"):
            problem = "is under /run, which a reboot empties"
        else:
            continue
        yield spec.diagnostic(
            ("security", "tls", "dir")
            if "dir" in spec.data["security"]["tls"]
            else ("security", "tls"),
            f"{host.name}'s TLS directory {where} {problem}",
            "keep the certificates beside the heartbeat key, e.g. "
            f"{pair.runtime.artifacts_dir.rstrip('/')}/{pair.name}-tls (the default)",
        )
        return


RULES: tuple[Rule, ...] = (vmft_settings_match_flavor, qemu_version_verified, tls_dir_kept)
