"""`colospec ocf agent ACTION` (what the installed agent runs) and `colospec ocf install`.

Pacemaker gives the action as the argument and the parameters as OCF_RESKEY_* variables.
Bad input becomes an OCF error code and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import socket
import subprocess
import sys
from importlib import resources
from pathlib import Path

from colospec import __version__
from colospec.ocf import agent

PROVIDER, AGENT = "colospec", "pair"
DEFAULT_ROOT = "/usr/lib/ocf/resource.d"
NAME = re.compile(r"[a-z][a-z0-9-]{0,30}")  # the spec's pattern for pair and host names
DEFAULT_TIMEOUT_S = 20
TIMEOUT_MARGIN_S = 2  # answer Pacemaker before it gives up on the action itself
ACTIONS = ("start", "stop", "monitor", "promote", "demote", "notify", "meta-data",
           "validate-all")  # fmt: skip


def metadata() -> str:
    text = resources.files("colospec.ocf").joinpath("metadata.xml").read_text()
    return text.replace("@VERSION@", __version__)


def agent_script(python: str) -> str:
    text = resources.files("colospec.ocf").joinpath("pair.sh").read_text()
    return text.replace("@PYTHON@", shlex.quote(python)).replace("@METADATA@", metadata())


def _param(name: str, default: str = "") -> str:
    return os.environ.get(f"OCF_RESKEY_{name}", "") or default


def _node_name() -> str:
    """The spec's host name for this node: the parameter, else Pacemaker's node name."""
    if explicit := _param("node"):
        return explicit
    if on_node := _param("CRM_meta_on_node"):
        return on_node
    try:
        done = subprocess.run(["crm_node", "-n"], capture_output=True, text=True, timeout=10)
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return socket.gethostname()


def _deadline(clock: agent.Clock) -> float:
    raw = _param("CRM_meta_timeout")
    timeout = int(raw) / 1000 if raw.isdigit() else DEFAULT_TIMEOUT_S
    return clock.now() + max(timeout - TIMEOUT_MARGIN_S, 1.0)


def _say(message: str) -> None:
    print(f"colospec-ocf: {message}", file=sys.stderr)


def _host_dir() -> tuple[int, Path | str]:
    """(OCF_SUCCESS, this node's built directory) or (an OCF error, why)."""
    pair, node = _param("pair"), _node_name()
    if not pair:
        return agent.OCF_ERR_CONFIGURED, "the parameter 'pair' is required"
    for what, value in (("pair", pair), ("node", node)):
        if not NAME.fullmatch(value):
            return agent.OCF_ERR_CONFIGURED, f"{what} {value!r} is not a colospec name"
    return agent.OCF_SUCCESS, Path(_param("artifacts_dir", "/etc/colospec")) / pair / node


def run_action(action: str) -> int:
    if action == "meta-data":
        sys.stdout.write(metadata())
        return agent.OCF_SUCCESS
    if action not in ACTIONS:
        _say(f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
        return agent.OCF_ERR_UNIMPLEMENTED
    code, where = _host_dir()
    if code != agent.OCF_SUCCESS:
        _say(str(where))
        # A probe of a misconfigured resource must still say "not running" (no action ran).
        return agent.OCF_NOT_RUNNING if action in ("monitor", "stop") else code
    from colospec.runner.artifacts import ArtifactError, load_host_dir

    try:
        arts = load_host_dir(where)
    except ArtifactError as exc:
        if action in ("monitor", "stop", "notify", "demote"):
            # Pacemaker probes every node, also those that do not host this pair.
            return agent.OCF_NOT_RUNNING if action == "monitor" else agent.OCF_SUCCESS
        _say(str(exc))
        return agent.OCF_ERR_INSTALLED
    if action == "validate-all":
        return agent.OCF_SUCCESS
    from colospec.ocf.node import RunnerNode

    log_dir = Path(_param("log_dir", "/var/log/colospec"))
    node = RunnerNode(arts, log_dir / f"{arts.pair}-{arts.host}.log")
    clock = agent.Clock()
    if action == "monitor":
        return agent.monitor(node)
    if action == "notify":
        kind = _param("CRM_meta_notify_type")
        return agent.notify(node, kind, _param("CRM_meta_notify_operation"))
    waiting = {"start": agent.start, "stop": agent.stop, "promote": agent.promote,
               "demote": agent.demote}  # fmt: skip
    return waiting[action](node, _deadline(clock), clock)


def cmd_agent(args: argparse.Namespace) -> int:
    try:
        return run_action(args.action)
    except Exception as exc:  # an agent must answer with a code, never a traceback
        if os.environ.get("COLOSPEC_DEBUG"):
            raise
        _say(f"internal error in {args.action}: {type(exc).__name__}: {exc}")
        return agent.OCF_ERR_GENERIC


def cmd_install(args: argparse.Namespace) -> int:
    target = Path(args.root) / PROVIDER / AGENT
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{AGENT}.tmp")
        tmp.write_text(agent_script(args.python))
        tmp.chmod(0o755)
        tmp.replace(target)
    except OSError as exc:
        print(f"colospec: error: cannot write {target}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"installed {target} (ocf:{PROVIDER}:{AGENT}); do the same on every node",
          file=sys.stderr)  # fmt: skip
    return 0


def add_ocf_commands(sub, command) -> None:
    """command(sub, name, help, example, exit codes) makes a subparser, as cli.py's own."""
    p = command(
        sub,
        "ocf",
        "Pacemaker: install or run the OCF resource agent ocf:colospec:pair",
        "colospec ocf install",
        "exit codes:\n  install: 0 installed, 1 cannot write\n"
        "  agent: the OCF codes (0 success, 7 not running, 8 promoted, ...)",
    )
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    q = verbs.add_parser("install", help=f"write the agent to ROOT/{PROVIDER}/{AGENT}")
    q.add_argument("--root", default=DEFAULT_ROOT, help=f"default: {DEFAULT_ROOT}")
    q.add_argument("--python", default=sys.executable, help="the interpreter colospec is in")
    q.set_defaults(func=cmd_install)
    q = verbs.add_parser("agent", help="one OCF action (what the installed agent runs)")
    q.add_argument("action", nargs="?", default="", help=", ".join(ACTIONS))
    q.set_defaults(func=cmd_agent)
