"""Checks on a finished QEMU command line, including the user's qemu.extra_args.

The renderer builds a correct command line by construction; these checks catch what
extra_args can break, and guard the renderer itself (a violation in colospec's own part
is a colospec bug).
"""

from __future__ import annotations

from dataclasses import dataclass

from colospec.qemu_opts import parse_opts

# Options colospec sets itself; a second copy from extra_args would fight it.
OWNED_OPTIONS = frozenset(
    {
        "-name",
        "-machine",
        "-M",
        "-accel",
        "-enable-kvm",
        "-cpu",
        "-m",
        "-smp",
        "-pidfile",
        "-qmp",
        "-qmp-pretty",
        "-mon",
        "-monitor",
        "-serial",
        "-daemonize",
        "-incoming",
        "-S",
        "-netdev",
        "-nic",
        "-net",
        "-drive",
        "-kernel",
        "-initrd",
        "-append",
        "-vnc",
        "-display",
        "-nographic",
        "-nodefaults",
    }
)
_IMPLIED = {"-netdev": "type", "-object": "qom-type", "-chardev": "backend", "-device": "driver"}
_HDR_AWARE = ("filter-mirror", "filter-redirector", "filter-rewriter", "colo-compare")


@dataclass(frozen=True)
class ArgProblem:
    index: int  # index into argv of the offending argument
    problem: str
    fix: str


def _options(argv: list[str]) -> list[tuple[int, str, str | None]]:
    """(index of the flag, flag, value or None) for each option after the binary."""
    out, i = [], 1
    while i < len(argv):
        flag = argv[i]
        if flag.startswith("-") and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            out.append((i, flag, argv[i + 1]))
            i += 2
        else:
            out.append((i, flag, None))
            i += 1
    return out


def lint_qemu_argv(argv: list[str], first_extra: int) -> list[ArgProblem]:
    """Problems in argv; indexes >= first_extra come from qemu.extra_args."""
    problems: list[ArgProblem] = []
    taps_with_hdr: list[int] = []
    hdr_objects: list[tuple[int, dict[str, str]]] = []
    quorum_ids: set[str] = set()
    top_ids: list[tuple[int, str]] = []
    for index, flag, value in _options(argv):
        if index >= first_extra and flag in OWNED_OPTIONS:
            problems.append(
                ArgProblem(index, f"{flag} is set by colospec itself", "remove it from extra_args")
            )
        if value is None:
            continue
        at = index + 1  # problems with the value point at the value
        if "0.0.0.0" in value or "host=::," in value + ",":
            problems.append(
                ArgProblem(
                    at,
                    f"'{value}' listens on every address",
                    "bind to the host's replication address or loopback",
                )
            )
        opts = parse_opts(value, _IMPLIED.get(flag))
        if flag == "-netdev" and opts.get("type") == "tap":
            if opts.get("vhost", "off") != "off":
                problems.append(
                    ArgProblem(
                        at,
                        "vhost is on for a tap netdev",
                        "COLO needs vhost=off: its filters never see vhost traffic",
                    )
                )
            if opts.get("vnet_hdr") != "off":
                taps_with_hdr.append(at)
        if flag == "-object" and opts.get("qom-type") in _HDR_AWARE:
            hdr_objects.append((at, opts))
        if flag == "-drive":
            if opts.get("driver") == "quorum" and "id" in opts:
                quorum_ids.add(opts["id"])
            if opts.get("driver") == "replication" and opts.get("mode") == "secondary":
                top_ids.append((at, opts.get("top-id", "")))
                if opts.get("if", "ide") != "none" and "id" in opts:
                    # the guest's drive itself (the vm-ft layout): it is its own top
                    quorum_ids.add(opts["id"])
    if taps_with_hdr:
        for index, opts in hdr_objects:
            if opts.get("vnet_hdr_support") != "on":
                problems.append(
                    ArgProblem(
                        index,
                        f"{opts['qom-type']} lacks vnet_hdr_support while the tap passes offload headers",
                        "add vnet_hdr_support=on, or set vnet_hdr=off on the tap",
                    )
                )
    for index, top in top_ids:
        if top not in quorum_ids:
            problems.append(
                ArgProblem(
                    index,
                    f"replication top-id '{top}' is not the quorum's id",
                    "top-id must name the drive the guest uses: the quorum over it, or itself",
                )
            )
    return sorted(problems, key=lambda p: p.index)
