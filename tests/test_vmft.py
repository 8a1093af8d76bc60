"""The vm-ft flavour's artifacts: what must hold for every vm-ft spec, spec values flowing
through, the Paxos group warning, and the runner refusing a QEMU that is not the vm-ft build."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from colospec.compile import check_spec, render_pair
from colospec.flavors.vmft.build import ENV_FILE
from colospec.qemu_opts import parse_opts
from colospec.runner.qemu_check import QemuCheckError, check_qemu

from conftest import ROOT, VMFT_VALID, qemu_args
from netns import add_bridge, namespace
from test_invalid_specs import colospec

EXAMPLE = ROOT / "examples/vm-ft-seed.yaml"
QEMU = "/usr/bin/qemu-system-x86_64"


def options(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]


def env_file(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    return {k: v.strip("'") for k, v in pairs}


@pytest.mark.parametrize("spec", VMFT_VALID, ids=[p.stem for p in VMFT_VALID])
def test_vmft_layout_invariants(spec):
    pair = check_spec(spec).pair
    files = render_pair(pair)
    vmft, ports = pair.vmft, pair.replication.ports
    for rel, art in files.items():
        assert "0.0.0.0" not in art.text, rel
    sizes = set()
    for host in pair.hosts:
        lay, peer = pair.layout(host), pair.peer_of(host)
        argv = qemu_args(files[f"{host.name}/qemu.args"].text)
        assert argv[0] == pair.qemu.binary
        assert options(argv, "-qmp") == [f"unix:{lay.qmp_socket},server=on,wait=off"]
        assert options(argv, "-pidfile") == [lay.pidfile]
        assert options(argv, "-name") == [host.role]
        (tap,) = [parse_opts(v, "type") for v in options(argv, "-netdev")]
        assert (tap["ifname"], tap["vhost"]) == (host.tap, "off")
        assert (tap["script"], tap["downscript"]) == (vmft.tap_up, vmft.tap_down)
        drives = {d["id"]: d for d in map(parse_opts, options(argv, "-drive"))}
        if host.role == "primary":
            assert "-S" in argv and "-incoming" not in argv
            assert drives["colo-disk0"]["children.0.file.filename"] == host.image
        else:
            assert "-S" not in argv
            assert options(argv, "-incoming") == [f"tcp:{host.address}:{ports.migration}"]
            active = drives["active-disk0"]
            assert active["top-id"] == "active-disk0" and active["file.backing.backing"] == (
                "colo-disk0"
            )
            assert active["file.file.filename"] == lay.active_disk
            assert active["file.backing.file.filename"] == lay.hidden_disk
            assert drives["colo-disk0"]["file.filename"] == host.image
            chardevs = {c["id"]: c["path"] for c in
                        (parse_opts(v, "backend") for v in options(argv, "-chardev"))}  # fmt: skip
            assert chardevs == {"red0": vmft.mirror_socket, "red1": vmft.redirector_socket}
        # plan, tc.sh and the QMP scripts agree with each other and with the spec
        plan = json.loads(files[f"{host.name}/plan.json"].text)
        ifb = vmft.ifb_for(host.tap)
        assert plan["network"]["ingress_redirect"] == [{"from": host.tap, "to": ifb}]
        assert f"\nifb='{ifb}'\n" in files[f"{host.name}/tc.sh"].text
        assert plan["qemu"]["requires"]["links"] == ["libinterpose"]
        scripts = {
            r: json.loads(a.text) for r, a in files.items() if r.startswith(f"{host.name}/qmp/")
        }
        used = {c["execute"] for cmds in scripts.values() for c in cmds}
        assert used <= set(plan["qemu"]["requires"]["commands"])
        for step in plan["steps"]:
            if step["kind"] == "qmp":
                assert f"{host.name}/{step['script']}" in scripts
        assert plan["heartbeat"]["peer_qemu_probe"] == {"address": peer.address, "port": ports.nbd}
        # RDMA-Paxos's membership: where the qemu unit loads it from, and what it says
        env = env_file(files[f"{host.name}/build/rdma-paxos.env"].text)
        unit = files[f"{host.name}/systemd/colospec-{pair.name}-qemu.service"].text
        assert f"EnvironmentFile={lay.installed_dir}/{ENV_FILE}\n" in unit
        assert plan["qemu"]["env"] == env  # what `colospec run` gives QEMU
        assert env["config_path"] == f"{lay.installed_dir}/build/nodes.local.cfg"
        sizes.add(env["group_size"])
    members = [r.split("/")[0] for r in files if r.endswith("build/rdma-paxos.env")]
    assert sizes == {str(len(members))}
    assert len(members) == (3 if vmft.witness else 2)
    indexes = {env_file(files[f"{m}/build/rdma-paxos.env"].text)["server_idx"] for m in members}
    assert indexes == {str(i) for i in range(len(members))}
    if vmft.witness:
        assert sorted(r for r in files if r.startswith(vmft.witness.name + "/")) == [
            f"{vmft.witness.name}/build/{f}"
            for f in ("build.sh", "nodes.local.cfg", "rdma-paxos.env")
        ]
        assert "configure" not in files[f"{vmft.witness.name}/build/build.sh"].text
    # the QMP sequences point at the right host and ports
    sec, pri = pair.secondary.name, pair.primary.name
    export = json.loads(files[f"{sec}/qmp/10-nbd-export.json"].text)
    assert export[0]["arguments"]["addr"]["data"] == {
        "host": pair.secondary.address, "port": str(ports.nbd)
    }  # fmt: skip
    child = json.loads(files[f"{pri}/qmp/10-replication-child.json"].text)
    opts = parse_opts(child[0]["arguments"]["command-line"].removeprefix("drive_add -n buddy "))
    assert (opts["file.host"], opts["file.port"]) == (pair.secondary.address, str(ports.nbd))
    assert opts["file.export"] == export[1]["arguments"]["device"]
    start = json.loads(files[f"{pri}/qmp/20-start-colo.json"].text)
    assert start[-1]["arguments"] == {"uri": f"tcp:{pair.secondary.address}:{ports.migration}"}


def test_spec_values_flow_into_every_vmft_artifact(tmp_path):
    """Change the addresses, ports, taps and VMFT_ROOT: no artifact may keep an old value."""
    data = yaml.safe_load(EXAMPLE.read_text())
    data["hosts"]["primary"].update(address="10.22.9.22", tap="tap41")
    data["hosts"]["secondary"].update(address="10.22.9.33", tap="tap42")
    data["replication"]["ports"] = {"migration": 18888, "nbd": 18889}
    data["vmft"]["root"] = "/srv/vmft2"
    data["qemu"]["binary"] = "/srv/vmft2/qemu/x86_64-softmmu/qemu-system-x86_64"
    spec = tmp_path / "changed.yaml"
    spec.write_text(yaml.safe_dump(data))
    files = render_pair(check_spec(spec).pair)
    text = "\n".join(a.text for a in files.values())
    for old in (r"10\.22\.1\.2\b", r"10\.22\.1\.3\b", r"\b8888\b", r"\b8889\b", r"\btap0\b",
                r"\bifb0\b", "/opt/vm-ft"):  # fmt: skip
        assert not re.search(old, text), old
    assert "tcp:10.22.9.33:18888" in files["node-b/qemu.args"].text
    assert "tcp:10.22.9.33:18888" in files["node-a/qmp/20-start-colo.json"].text
    assert (
        "file.host=10.22.9.33,file.port=18889" in files["node-a/qmp/10-replication-child.json"].text
    )
    assert "ifb41" in files["node-a/tc.sh"].text and "ifb42" in files["node-b/tc.sh"].text
    assert "-L$VMFT_ROOT/rdma-paxos/target" in files["node-a/build/build.sh"].text
    assert "VMFT_ROOT='/srv/vmft2'" in files["node-a/build/build.sh"].text


def test_a_two_member_paxos_group_warns_and_fails_under_strict(tmp_path):
    # The guide's own group: the example without its witness.
    text = EXAMPLE.read_text()
    guide = tmp_path / "guide.yaml"
    guide.write_text(text.replace("\n  witness: {name: node-c, address: 10.22.1.4}", ""))
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith("vmft:"))
    warning = "$.vmft: the Paxos group has two members (node-a, node-b)"
    result = colospec("validate", str(guide))
    assert result.returncode == 0, result.stderr
    assert f"{guide}:{line}:1: warning: {warning}" in result.stderr
    strict = colospec("validate", "--strict", str(guide))
    assert strict.returncode == 2
    assert f"{guide}:{line}:1: error: {warning}" in strict.stderr
    with_witness = colospec("validate", "--strict", str(EXAMPLE))
    assert with_witness.returncode == 0 and "Paxos group" not in with_witness.stderr


def test_qemu_check_refuses_a_qemu_that_does_not_link_libinterpose(tmp_path):
    files = render_pair(check_spec(EXAMPLE).pair)
    q = json.loads(files["node-a/plan.json"].text)["qemu"]
    q["binary"] = QEMU  # Debian's QEMU: every command, but no RDMA-Paxos (and not 2.7)
    with pytest.raises(QemuCheckError) as e:
        check_qemu(q, tmp_root=str(tmp_path))
    assert str(e.value) == (
        f"this QEMU ('{QEMU}') is not the vm-ft build (it does not link libinterpose) — "
        "build it with OUT/vmft/node-a/build/build.sh and point qemu.binary at the result"
    )
    del q["requires"]["links"]  # then its version is what is wrong
    with pytest.raises(QemuCheckError, match=r"built for QEMU 2\.7"):
        check_qemu(q, tmp_root=str(tmp_path))
    q["version"] = "7.2"  # and everything else about it is fine
    assert check_qemu(q, tmp_root=str(tmp_path)).binary == QEMU


def test_colospec_run_refuses_a_qemu_that_does_not_link_libinterpose(tmp_path):
    """`colospec run` on a vm-ft host whose QEMU is Debian's: one clear line, exit 1."""
    name = f"vmftchk{os.getpid() % 10000}"  # its own /run/colospec/<pair>
    data = yaml.safe_load(EXAMPLE.read_text())
    data["name"] = name
    data["qemu"]["binary"] = QEMU
    data["vm"]["disk"]["image"] = str(tmp_path / "disk.raw")
    data["security"] = {"key_file": str(tmp_path / "pair.key")}
    assert colospec("keygen", str(tmp_path / "pair.key")).returncode == 0
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(tmp_path / "disk.raw"), "1M"],
                   check=True)  # fmt: skip
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    assert colospec("build", str(spec), "-o", str(out)).returncode == 0
    host = check_spec(spec).pair.primary
    try:
        with namespace() as ns:
            add_bridge(ns, host.bridge, host.address)
            result = subprocess.run(
                ["ip", "netns", "exec", ns, sys.executable, "-m", "colospec", "run",
                 str(out / name / host.name)],
                capture_output=True, text=True, timeout=60, cwd=ROOT,
            )  # fmt: skip
    finally:
        shutil.rmtree(f"/run/colospec/{name}", ignore_errors=True)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert (
        f"ERROR this QEMU ('{QEMU}') is not the vm-ft build (it does not link "
        f"libinterpose) — build it with OUT/{name}/node-a/build/build.sh" in result.stderr
    )
    assert "start-qemu" not in result.stderr and "step qemu" not in result.stderr


def test_build_scripts_are_only_for_review():
    """Nothing in colospec runs them: no unit or plan step names them."""
    with tempfile.TemporaryDirectory() as tmp:
        assert colospec("build", "examples/vm-ft-seed.yaml", "-o", tmp).returncode == 0
        for path in Path(tmp).rglob("*"):
            if path.is_file() and "/build/" not in str(path):
                assert "build.sh" not in path.read_text() or path.name == "plan.json", path


def test_every_vmft_key_is_described_and_closed():
    from colospec.schema import pair_schema

    def walk(node, path):
        yield path, node
        for key, sub in node.get("properties", {}).items():
            yield from walk(sub, f"{path}.{key}")

    for path, node in walk(pair_schema()["properties"]["vmft"], "vmft"):
        assert node.get("description"), path
        if node.get("type") == "object":
            assert node.get("additionalProperties") is False, path
