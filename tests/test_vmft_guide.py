"""Each command of the vm-ft guide (tests/data/vmft-guide/) against what colospec builds from
examples/vm-ft-seed.yaml, option by option. Every difference must be a documented one:
DOCUMENTED below, and README.md's "The vm-ft flavour" (a test checks both agree).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import pytest
import yaml

from colospec.compile import check_spec, render_pair
from colospec.lint import _options
from colospec.qemu_opts import parse_opts

from conftest import ROOT, VMFT_GUIDE, guide_commands, qemu_args

GUIDE = VMFT_GUIDE
SPEC = ROOT / "examples/vm-ft-seed.yaml"
IMPLIED = {"-netdev": "type", "-device": "driver", "-chardev": "backend", "-object": "qom-type"}
KEYVAL = {*IMPLIED, "-drive"}

# Every difference from the guide, with its reason; README.md names each KEYWORD.
DOCUMENTED = {
    "qmp": "-qmp stdio becomes a unix socket in the host's run directory: the runner drives QMP",
    "pidfile": "-pidfile added: the runner and systemd find (and re-attach to) QEMU by it",
    "ifname": "the tap's ifname= added: tc.sh names the tap before QEMU starts; the guide's "
    "tap0 gets its name from the kernel",
    "vnet_hdr": "vnet_hdr=off added (vm.nic.vnet_hdr): the guide's filter-redirectors do not "
    "handle offload headers, so colospec says so instead of leaving it to QEMU",
    "vnc": 'VNC on 127.0.0.1:7: vm.vnc ":7" means loopback, as colospec binds every listener '
    "to one address",
    "file.node-name": "drive_add names the NBD client (file.node-name=nbd0) so the primary's "
    "failover can yank it",
    "disk size": "active and hidden disks get the base image's size (the guide's note a), "
    "not a fixed 10G",
    "apt-get -y": "apt-get install -y: the build script runs unattended",
    "libnl": "libnl-3-dev, libnl-cli-3-dev, libnl-route-3-dev installed: the guide links "
    "libnl but installs no libnl package",
    "rpath": "-Wl,-rpath,$VMFT_ROOT/rdma-paxos/target added to --extra-ldflags: QEMU finds "
    "libinterpose.so without LD_LIBRARY_PATH",
    "make": "make for QEMU added: the guide runs the binary it builds",
}


@pytest.fixture(scope="module")
def built():
    pair = check_spec(SPEC).pair
    return pair, render_pair(pair)


def guide_qmp(name: str) -> list[dict]:
    """The guide's QMP commands (Python-style quotes), without qmp_capabilities."""
    text, commands, depth, start = (GUIDE / name).read_text(), [], 0, 0
    for i, c in enumerate(text):
        if c == "{":
            depth, start = depth + 1, start if depth else i
        elif c == "}":
            depth -= 1
            if depth == 0:
                commands.append(json.loads(text[start : i + 1].replace("'", '"')))
    return [c for c in commands if c["execute"] != "qmp_capabilities"]


def index_options(argv: list[str]) -> dict[tuple, object]:
    """{identity: value}: key=value options as dicts (order inside them does not matter)."""
    out: dict[tuple, object] = {}
    for _, flag, value in _options(argv):
        if flag in KEYVAL and value is not None:
            opts = parse_opts(value, IMPLIED.get(flag))
            ident = (flag, opts.get("id") or opts.get(IMPLIED.get(flag, "")))
            out[ident] = opts
        else:
            out[(flag,)] = value
    assert len(out) == len(_options(argv)), "an option the comparison cannot tell apart"
    return out


def differences(guide: list[str], ours: list[str]) -> set[tuple]:
    g, o = index_options(guide), index_options(ours)
    found = set()
    for ident in g.keys() | o.keys():
        if ident not in o:
            found.add(("removed", ident, str(g[ident])))
        elif ident not in g:
            found.add(("added", ident, str(o[ident])))
        elif isinstance(g[ident], dict):
            for key in g[ident].keys() | o[ident].keys():
                if g[ident].get(key) != o[ident].get(key):
                    found.add(("changed", ident, key, g[ident].get(key), o[ident].get(key)))
        elif g[ident] != o[ident]:
            found.add(("changed", ident, None, g[ident], o[ident]))
    return found


def documented_qemu_differences(pair, host) -> dict[tuple, str]:
    lay = pair.layout(host)
    qmp = f"unix:{lay.qmp_socket},server=on,wait=off"
    return {
        ("changed", ("-qmp",), None, "stdio", qmp): "qmp",
        ("added", ("-pidfile",), lay.pidfile): "pidfile",
        ("changed", ("-netdev", "hn0"), "ifname", None, host.tap): "ifname",
        ("changed", ("-netdev", "hn0"), "vnet_hdr", None, "off"): "vnet_hdr",
        ("changed", ("-vnc",), None, ":7", "127.0.0.1:7"): "vnc",
    }


@pytest.mark.parametrize("role", ["primary", "secondary"])
def test_qemu_command_has_the_guides_options_and_values(built, role):
    pair, files = built
    host = getattr(pair, role)
    (guide,) = guide_commands(f"step1-{role}.txt")
    ours = qemu_args(files[f"{host.name}/qemu.args"].text)
    # The guide runs x86_64-softmmu/qemu-system-x86_64 in $VMFT_ROOT/qemu.
    assert ours[0] == f"{pair.vmft.root}/qemu/{guide[0]}"
    expected = documented_qemu_differences(pair, host)
    assert differences(guide, ours) == set(expected)
    assert set(expected.values()) <= set(DOCUMENTED)


def test_qemu_args_says_how_it_differs(built):
    pair, files = built
    for host in pair.hosts:
        header = files[f"{host.name}/qemu.args"].text.split("\n/", 1)[0]
        assert header.splitlines()[0].startswith("# generated by colospec")
        for word in ("-qmp", "unix socket", "-pidfile", "ifname=", "vnet_hdr=", "127.0.0.1"):
            assert word in header, word


def test_secondary_disks_are_the_guides(built):
    pair, files = built
    plan = json.loads(files[f"{pair.secondary.name}/plan.json"].text)
    created = {cmd[4]: cmd for cmd in guide_commands("step1-secondary-disks.txt")}
    assert set(created) == set(plan["disks"]["scratch"].values())
    for cmd in created.values():
        assert cmd[:4] == ["qemu-img", "create", "-f", "qcow2"]
        assert cmd[5] == "10G"  # colospec: the base's size instead ("disk size")
    assert "disk size" in DOCUMENTED


def tc_commands(script: str) -> list[list[str]]:
    """tc.sh's command lines with its variables ('name=' at the top) filled in."""
    variables = dict(re.findall(r"^(\w+)='([^']*)'$", script, re.M))

    def fill(word: str) -> str:
        return re.sub(r"\$(\w+)", lambda m: variables.get(m.group(1), m.group(0)), word)

    commands = []
    for line in script.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:  # a line of a multi-line construct
            continue
        if words:
            commands.append([fill(w) for w in words])
    return commands


def test_tc_script_holds_the_guides_libnl_lines(built):
    pair, files = built
    for host in pair.hosts:
        ours = tc_commands(files[f"{host.name}/tc.sh"].text)
        for command in guide_commands("step2-libnl.txt"):
            assert command in ours, command


def test_secondary_qmp_is_the_guides_step_3(built):
    pair, files = built
    ours = json.loads(files[f"{pair.secondary.name}/qmp/10-nbd-export.json"].text)
    assert ours == guide_qmp("step3-secondary.qmp")


def test_primary_qmp_is_the_guides_step_4(built):
    pair, files = built
    host = pair.primary.name
    ours = [
        *json.loads(files[f"{host}/qmp/10-replication-child.json"].text),
        *json.loads(files[f"{host}/qmp/20-start-colo.json"].text),
    ]
    guide = guide_qmp("step4-primary.qmp")
    assert [c["execute"] for c in ours] == [c["execute"] for c in guide]
    assert ours[1:] == guide[1:]
    prefix = "drive_add -n buddy "
    g_line, o_line = (c[0]["arguments"]["command-line"] for c in (guide, ours))
    assert g_line.startswith(prefix) and o_line.startswith(prefix)
    g_opts, o_opts = parse_opts(g_line[len(prefix) :]), parse_opts(o_line[len(prefix) :])
    assert {k: v for k, v in o_opts.items() if k not in g_opts} == {"file.node-name": "nbd0"}
    assert {k: o_opts[k] for k in g_opts} == g_opts
    assert "file.node-name" in DOCUMENTED
    # ... and the failover yanks exactly that node
    failover = json.loads(files[f"{host}/qmp/90-failover-as-primary.json"].text)
    assert failover[0]["arguments"]["instances"][0]["node-name"] == "nbd0"


STUB = """#!/bin/bash
{python} -c 'import json, os, sys
with open(os.environ["STUB_LOG"], "a") as f:
    f.write(json.dumps([os.getcwd(), os.path.basename(sys.argv[1]), sys.argv[2:],
                        os.environ.get("VMFT_ROOT")]) + "\\n")' "$0" "$@"
{output}
"""


def test_build_script_runs_the_guides_commands(tmp_path):
    """build.sh run for real, with apt-get, make, nproc and configure as stubs that log."""
    root = tmp_path / "vm-ft"
    (root / "rdma-paxos/target").mkdir(parents=True)
    (root / "qemu").mkdir()
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name, where, output in [
        ("apt-get", stubs, ""), ("make", stubs, ""), ("nproc", stubs, "echo 2"),
        ("configure", root / "qemu", ""),
    ]:  # fmt: skip
        (where / name).write_text(STUB.format(python=sys.executable, output=output))
        (where / name).chmod(0o755)
    data = yaml.safe_load(SPEC.read_text())
    data["vmft"]["root"] = str(root)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(data))
    pair = check_spec(spec).pair
    script = tmp_path / "build.sh"
    script.write_text(render_pair(pair)[f"{pair.primary.name}/build/build.sh"].text)
    log = tmp_path / "log"
    env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}", "STUB_LOG": str(log)}
    subprocess.run(["bash", str(script)], check=True, env=env, cwd=tmp_path, timeout=60)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    calls = [c for c in calls if c[1] != "nproc"]

    def guide(name: str) -> list[list[str]]:
        return [
            [w.replace("$VMFT_ROOT", str(root)) for w in cmd]
            for cmd in guide_commands(name)
            if cmd[0] not in ("export", "cd")
        ]

    rp_install, rp_make = guide("prepare-rdma-paxos.txt")
    q_install, configure = guide("prepare-qemu.txt")
    assert [c[1] for c in calls] == ["apt-get", "make", "apt-get", "configure", "make"]
    assert all(c[3] == str(root) for c in calls)  # export VMFT_ROOT=…
    # RDMA Paxos: the guide's packages, then make in rdma-paxos/target
    assert calls[0][2] == ["install", "-y", *rp_install[2:]]  # "apt-get -y"
    assert calls[1][:3] == [str(root / "rdma-paxos/target"), "make", rp_make[1:]]
    # QEMU: the guide's packages and libnl's ("libnl"), then configure in qemu/
    libnl = ["libnl-3-dev", "libnl-cli-3-dev", "libnl-route-3-dev"]
    assert calls[2][2] == ["install", "-y", *q_install[2:], *libnl]
    assert calls[3][0] == str(root / "qemu")
    ours = dict(a.split("=", 1) for a in calls[3][2] if "=" in a)
    theirs = dict(a.split("=", 1) for a in configure[1:] if "=" in a)
    assert [a for a in calls[3][2] if "=" not in a] == [a for a in configure[1:] if "=" not in a]
    assert ours.keys() == theirs.keys()
    assert ours["--target-list"] == theirs["--target-list"]
    assert ours["--extra-cflags"] == theirs["--extra-cflags"]
    rpath = f"-Wl,-rpath,{root}/rdma-paxos/target"
    assert ours["--extra-ldflags"].split() == [*theirs["--extra-ldflags"].split(), rpath]
    # and the binary the spec names ("make")
    assert calls[4][:3] == [str(root / "qemu"), "make", ["-j2"]]
    for keyword in ("apt-get -y", "libnl", "rpath", "make"):
        assert keyword in DOCUMENTED


def test_readme_lists_every_documented_difference():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## The vm-ft flavour", 1)[1]
    for keyword in DOCUMENTED:
        assert keyword in section, keyword
