"""The runner's command-line verbs: run, status, failover, prepare, cleanup."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from colospec.runner.artifacts import HostArtifacts

# Parsing the command line must stay cheap for `colospec build`: asyncio, qemu.qmp and
# pyroute2 load only inside the runner's own commands.

log = logging.getLogger("colospec")


def setup_logging(verbose: bool, host: str) -> None:
    # Under systemd, journald stamps the time itself.
    stamp = "" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s.%(msecs)03d "
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=f"{stamp}colospec[{host}] %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    # qemu.qmp logs every message at DEBUG; only --verbose wants QMP traffic.
    logging.getLogger("qemu.qmp").setLevel(logging.DEBUG if verbose else logging.CRITICAL)


def _load(args: argparse.Namespace) -> HostArtifacts:
    from colospec.runner.artifacts import load_host_dir

    arts = load_host_dir(args.dir)
    setup_logging(getattr(args, "verbose", False), arts.host)
    return arts


_ERRORS = {
    "colospec.runner.hbauth": "KeyFileError",
    "colospec.runner.hoststate": "AlreadyRunning",
    "colospec.runner.disks": "DiskError",
    "colospec.runner.network": "NetworkError",
    "colospec.runner.qemu_check": "QemuCheckError",
    "colospec.runner.tlsfiles": "TlsFilesError",
}


def _operator_errors() -> tuple[type[Exception], ...]:
    # Only modules already loaded can have raised: importing pyroute2 just to name its
    # error class would slow every command down.
    from colospec.runner.artifacts import ArtifactError

    loaded = [getattr(sys.modules[m], name) for m, name in _ERRORS.items() if m in sys.modules]
    return (ArtifactError, *loaded)


def operator_errors(fn):
    """Known failures become one clear line and exit code 1, never a traceback."""

    @functools.wraps(fn)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except Exception as exc:
            if not isinstance(exc, _operator_errors()):
                raise
            print(f"colospec: error: {exc}", file=sys.stderr)
            return 1

    return wrapper


@operator_errors
def cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    from colospec.runner.orchestrate import Runner

    if args.force_primary and (args.rejoin or args.attach):
        print("colospec run: error: --force-primary goes with neither --rejoin nor --attach",
              file=sys.stderr)  # fmt: skip
        return 2
    arts = _load(args)
    runner = Runner(arts, attach=args.attach, rejoin=args.rejoin, force_primary=args.force_primary)
    return asyncio.run(runner.run())


@operator_errors
def cmd_prepare(args: argparse.Namespace) -> int:
    from colospec.runner.disks import prepare_disks
    from colospec.runner.network import network_up

    arts = _load(args)
    if args.what == "disks":
        rejoin = arts.plan.get("rejoin")
        if args.join and rejoin is None:
            print("colospec prepare: error: this plan has no re-protection (--join)",
                  file=sys.stderr)  # fmt: skip
            return 2
        size = prepare_disks(rejoin["disks"] if args.join else arts.plan["disks"])
        log.info("disks ready: base image %d bytes", size)
    else:
        created = network_up(arts.plan["network"])
        log.info("network ready (created: %s)", ", ".join(created) or "nothing")
    return 0


@operator_errors
def cmd_cleanup(args: argparse.Namespace) -> int:
    from colospec.runner.network import network_down

    arts = _load(args)
    network_down(arts.plan["network"])
    log.info("network removed")
    return 0


# `colospec status` exits as `systemctl status` does: 0 while the runner runs, 3 when not.
STATUS_RUNNING, STATUS_NOT_RUNNING = 0, 3
STATUS_KEYS = (
    "role", "colo_mode", "vm_status", "qemu_pid", "peer", "last_failover", "runner",
    "phase", "protected", "epoch", "heartbeats_rejected", "last_resync", "disk", "quorum",
)  # fmt: skip
STATUS_HELP = """role, COLO mode, VM status, QEMU pid, peer, last failover, runner, phase,
protected, epoch. Exit status 0 while this host's runner answers, 3 when it does not (as
`systemctl status`). --json prints exactly the keys role, colo_mode, vm_status, qemu_pid,
peer ({name, reachable, paths}), last_failover, runner ("running" or "not running"),
phase (starting, waiting-peer, joining, colo, alone, resyncing, fenced, failed),
protected (true only while both QEMUs are in COLO mode, checkpoints advance, the
replication child is healthy and the peer is heard), epoch, heartbeats_rejected
(datagrams dropped as unauthentic or replayed), last_resync (this run's latest
re-protection: time, took_ms, stages_ms), disk ({epoch, stale}: disk.json, README
Re-protection) and quorum (under a cluster manager: {quorate, peer_member}; a node that
is not quorate never serves); null where unknown (text: "-"). Without a runner nothing
is protected; role and phase come from the runner's state file written for the QEMU that
runs now, never from an earlier run's."""


def _offline_status(arts: HostArtifacts) -> dict[str, Any]:
    """What can be known without a runner: whether QEMU lives, and the state file if it
    belongs to that QEMU (an earlier run's role and failover are not this run's)."""
    from colospec.runner import control
    from colospec.runner.qemu_proc import QemuProcess

    q = arts.plan["qemu"]
    pid = QemuProcess(q["binary"], q["pidfile"], q["qmp_socket"]).find_running()
    state = control.read_state(arts.run_dir)
    current = state if pid is not None and state.get("qemu_pid") == pid else {}
    return {
        "role": current.get("role", arts.role) if pid else None,
        "colo_mode": None,
        "vm_status": None,
        "qemu_pid": pid,
        "peer": {"name": arts.plan["peer"]["name"], "reachable": None, "paths": []},
        "last_failover": current.get("last_failover"),
        "phase": current.get("phase"),
        "protected": False,  # no runner watches: nothing would fail over
        "epoch": current.get("epoch"),
        "heartbeats_rejected": None,
        "last_resync": None,
        "disk": _disk_record(arts),
        "quorum": None,
    }


def _disk_line(disk: dict[str, Any] | None) -> str:
    if not disk:
        return "-"
    return f"epoch {disk['epoch']}" + (", stale: may only join" if disk["stale"] else "")


def _quorum_line(quorum: dict[str, Any]) -> str:
    if not quorum["quorate"]:
        return "NOT quorate: this node never serves"
    return "quorate" + ("" if quorum["peer_member"] else ", the peer's node left the cluster")


def _disk_record(arts: HostArtifacts) -> dict[str, Any] | None:
    from colospec.runner.diskstate import DisksDiffer, DiskState

    try:
        return DiskState.load(Path(arts.plan["state_dir"])).report()
    except DisksDiffer:
        return None


def _status_lines(arts: HostArtifacts, status: dict[str, Any]) -> list[str]:
    """One "label: value" line per field; "-" for anything unknown."""

    def shown(value: Any) -> str:
        return "-" if value is None else str(value)

    peer = status.get("peer") or {}
    reachable = {True: "yes", False: "no"}.get(peer.get("reachable"), "-")
    if peer.get("paths"):
        reachable += f" ({', '.join(peer['paths'])})"
    last = status.get("last_failover")
    if last:
        failover = f"{last['time']} — {last['reason']}"
    else:  # only a runner knows that there was none
        failover = "never" if status["runner"] == "running" else "-"
    rows = [
        ("host", f"{arts.host} ({arts.pair})"),
        ("runner", status["runner"]),
        ("protected", "yes" if status.get("protected") else "NO"),
        ("phase", shown(status.get("phase"))),
        ("role", shown(status.get("role"))),
        ("COLO mode", shown(status.get("colo_mode"))),
        ("VM status", shown(status.get("vm_status"))),
        ("QEMU pid", shown(status.get("qemu_pid"))),
        ("peer", shown(peer.get("name"))),
        ("reachable", reachable),
        ("last failover", failover),
        ("epoch", shown(status.get("epoch"))),
        ("rejected", shown(status.get("heartbeats_rejected"))),
        ("disk", _disk_line(status.get("disk"))),
    ]
    if status.get("quorum"):  # under a cluster manager only
        rows.append(("quorum", _quorum_line(status["quorum"])))
    return [f"{label + ':':<15}{value}".rstrip() for label, value in rows]


@operator_errors
def cmd_status(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from colospec.runner import control
    from colospec.runner.artifacts import load_host_dir

    arts = load_host_dir(args.dir)
    try:
        reply = asyncio.run(control.ask(arts.run_dir, {"cmd": "status"}, timeout=10))
        status = {**reply, "runner": "running"}
    except (OSError, ValueError, TimeoutError):
        status = {**_offline_status(arts), "runner": "not running"}
    if args.json:
        print(json.dumps({k: status.get(k) for k in STATUS_KEYS}, indent=2))
    else:
        print("\n".join(_status_lines(arts, status)))
    return STATUS_RUNNING if status["runner"] == "running" else STATUS_NOT_RUNNING


@operator_errors
def cmd_keygen(args: argparse.Namespace) -> int:
    from pathlib import Path

    from colospec.runner.hbauth import write_key_file

    try:
        write_key_file(Path(args.file), force=args.force)
    except OSError as exc:
        print(f"colospec: error: cannot write {args.file}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"wrote {args.file} (mode 0600): copy it to the same path on both hosts of the "
          "pair, owned by root (security.key_file)", file=sys.stderr)  # fmt: skip
    return 0


def _operator_request(args: argparse.Namespace, request: dict[str, Any]) -> dict | None:
    """An operator's command to this host's runner: its reply if it accepted, else None
    (the reason printed)."""
    import asyncio

    from colospec.runner import control
    from colospec.runner.artifacts import load_host_dir

    arts = load_host_dir(args.dir)
    try:
        reply = asyncio.run(control.ask(arts.run_dir, request, timeout=60))
    except (OSError, ValueError, TimeoutError):
        print(f"colospec: error: no runner answers for {arts.host} "
              f"({control.control_socket(arts.run_dir)}) — start `colospec run` first",
              file=sys.stderr)  # fmt: skip
        return None
    if not reply.get("ok"):
        print(f"colospec: {request['cmd']} refused: {reply.get('error')}", file=sys.stderr)
        return None
    return reply | {"host": arts.host}


@operator_errors
def cmd_failover(args: argparse.Namespace) -> int:
    reply = _operator_request(args, {"cmd": "failover", "force": args.force})
    if reply is None:
        return 1
    print(f"failover done in {reply['took_ms']} ms: VM {reply['vm_status']}, "
          f"COLO mode {reply['colo_mode']}", file=sys.stderr)  # fmt: skip
    return 0


@operator_errors
def cmd_switchover(args: argparse.Namespace) -> int:
    reply = _operator_request(args, {"cmd": "switchover"})
    if reply is None:
        return 1
    print(f"switched over in {reply['took_ms']} ms: {reply['new_primary']} serves; "
          f"{reply['host']} joins it as secondary", file=sys.stderr)  # fmt: skip
    return 0


RUN_EXIT_CODES = """exit codes:
  0  stopped on request (SIGTERM, Ctrl-C)
  1  failed (a step, QEMU or its checks; the message says which)
  2  usage: --force-primary with --rejoin or --attach
  3  this host's QEMU is gone (the peer was told at once)
  4  stood down: the peer serves alone (without --rejoin), or the two disks differ
     (README, Re-protection: --force-primary on the newest, --rejoin on the other)"""
_SIMPLE_EXIT_CODES = "exit codes:\n  0  success\n  1  failure"


def add_runner_commands(sub: argparse._SubParsersAction, command) -> None:
    """command(sub, name, help, example, exit codes) makes a subparser, as cli.py's own."""

    def host_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument("dir", metavar="DIR", help="a built host directory, OUT/<pair>/<host>")

    p = command(
        sub,
        "run",
        "bring this host up from its artifacts, watch, fail over",
        "colospec run /etc/colospec/web1/node-a",
        RUN_EXIT_CODES,
    )
    host_dir(p)
    p.add_argument(
        "--attach", action="store_true", help="QEMU, disks and network come from the systemd units"
    )
    p.add_argument(
        "--rejoin",
        action="store_true",
        help="if the peer serves the guest alone, join it as its secondary: it copies its "
        "disk over this host's (the spec's failover.rejoin: automatic does so always)",
    )
    p.add_argument(
        "--force-primary",
        action="store_true",
        help="this host's disk is the newest (the two disks differ): serve the guest from it "
        "without a secondary; the peer then joins with --rejoin",
    )
    p.add_argument("--verbose", "-v", action="store_true", help="log QMP traffic")
    p.set_defaults(func=cmd_run)

    p = command(
        sub,
        "status",
        "role, COLO mode, VM status, peer, last failover",
        "colospec status --json /etc/colospec/web1/node-a",
        "exit codes:\n  0  the runner answers\n  3  no runner answers\n"
        "  1  the directory is not a built host directory",
    )
    p.description = STATUS_HELP
    host_dir(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)

    p = command(
        sub,
        "failover",
        "fail over now (planned maintenance)",
        "colospec failover /etc/colospec/web1/node-a",
        "exit codes:\n  0  failed over\n  1  refused, or no runner answers",
    )
    host_dir(p)
    p.add_argument(
        "--force", action="store_true", help="promote a secondary even though its primary is alive"
    )
    p.set_defaults(func=cmd_failover)

    p = command(
        sub,
        "switchover",
        "swap the roles of a protected pair (planned: the secondary takes over, this "
        "primary joins it)",
        "colospec switchover /etc/colospec/web1/node-a",
        "exit codes:\n  0  the secondary serves, this host joins it\n"
        "  1  refused (not the primary of a protected pair), not taken over in time, or no "
        "runner answers",
    )
    host_dir(p)
    p.set_defaults(func=cmd_switchover)

    p = command(
        sub,
        "keygen",
        "create a pair's heartbeat key (security.key_file)",
        "colospec keygen /etc/colospec/web1.key",
        _SIMPLE_EXIT_CODES,
    )
    p.add_argument("file", metavar="FILE", help="where to write it (mode 0600)")
    p.add_argument("--force", action="store_true", help="replace an existing key")
    p.set_defaults(func=cmd_keygen)

    p = command(
        sub,
        "prepare",
        "one preparation step (used by the systemd units)",
        "colospec prepare disks /etc/colospec/web1/node-b",
        _SIMPLE_EXIT_CODES,
    )
    p.add_argument("what", choices=["disks", "network"])
    p.add_argument(
        "--join",
        action="store_true",
        help="disks: for this host's secondary layout, joining a peer that serves alone",
    )
    host_dir(p)
    p.set_defaults(func=cmd_prepare)

    p = command(
        sub,
        "cleanup",
        "remove what `prepare network` created",
        "colospec cleanup network /etc/colospec/web1/node-a",
        _SIMPLE_EXIT_CODES,
    )
    p.add_argument("what", choices=["network"])
    host_dir(p)
    p.set_defaults(func=cmd_cleanup)
