"""Generated scripts and units checked by the real tools: shellcheck, systemd-analyze, ip."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from colospec.compile import check_spec, render_pair
from colospec.writer import write_tree

from conftest import ALL_VALID, flavor_of
from netns import add_bridge, ip, namespace

INSTALLED_QEMU = "/usr/bin/qemu-system-x86_64"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Every valid case written to disk: {(case, host): host directory}."""
    root = tmp_path_factory.mktemp("built")
    dirs = {}
    for spec in ALL_VALID:
        if flavor_of(spec) == "vm-ft":
            # systemd-analyze wants ExecStart's binary to exist; the vm-ft build is not
            # installed here, so the installed QEMU stands in for it.
            data = yaml.safe_load(spec.read_text())
            data["qemu"]["binary"] = INSTALLED_QEMU
            spec = root / spec.name
            spec.write_text(yaml.safe_dump(data))
        pair = check_spec(spec).pair
        write_tree(root / pair.name, render_pair(pair))
        for host in pair.hosts:
            dirs[(spec.stem, host.name)] = (pair, host, root / pair.name / host.name)
    return dirs


def test_shellcheck_passes_on_every_script(built):
    scripts = [str(d / "tc.sh") for _, _, d in built.values()]
    pair_dirs = {d.parent for _, _, d in built.values()}
    # the vm-ft build scripts, also the witness's
    scripts += sorted(str(p) for pair_dir in pair_dirs for p in pair_dir.glob("*/build/*.sh"))
    assert len(scripts) > len(built), "the vm-ft cases have build scripts"
    result = subprocess.run(
        ["shellcheck", "--severity=style", *scripts], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_systemd_analyze_verify_passes_on_every_unit(built):
    colospec = "/opt/colospec/bin/colospec"
    assert os.access(colospec, os.X_OK), (
        f"{colospec} (runtime.colospec's default) is missing: set up with README's test command"
    )
    for pair, host, d in built.values():
        units = sorted(str(p) for p in (d / "systemd").iterdir())
        # disks, network, qemu, runner, the target; colo adds its joining QEMU's unit
        assert len(units) == (6 if pair.flavor == "colo" else 5), units
        result = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", "--generators=no", *units],
            capture_output=True,
            text=True,
            env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"},
        )
        assert result.returncode == 0 and result.stderr == "", (pair.name, host.name, result.stderr)


def test_tc_script_is_idempotent_and_cleans_up(built):
    _pair, host, d = built[("pair", "node-a")]
    with namespace() as ns:
        add_bridge(ns, host.bridge)

        def run(action):
            subprocess.run(
                ["ip", "netns", "exec", ns, "bash", str(d / "tc.sh"), action],
                check=True,
                capture_output=True,
                text=True,
            )

        run("up")
        run("up")
        link = ip("-d", "link", "show", host.tap, netns=ns).stdout
        assert f"master {host.bridge}" in link and "tun" in link and ",UP" in link
        run("down")
        run("down")
        assert ip("link", "show", host.tap, netns=ns, check=False).returncode != 0


def test_tc_script_refuses_a_missing_bridge(built):
    _, _, d = built[("pair", "node-a")]
    with namespace() as ns:
        result = subprocess.run(
            ["ip", "netns", "exec", ns, "bash", str(d / "tc.sh"), "up"],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 1
        assert "bridge br0 does not exist" in result.stderr


def test_tools_are_installed():
    pacemaker = ("crm_verify", "crm_simulate", "cibadmin", "pacemakerd", "corosync", "ocf-tester",
                 "xmllint")  # fmt: skip
    for tool in ("shellcheck", "systemd-analyze", "ip", "qemu-img", *pacemaker):
        assert shutil.which(tool), f"{tool} missing: set up with README's test command"
