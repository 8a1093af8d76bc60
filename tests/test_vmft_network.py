"""The vm-ft guide's step 2 for real, in throwaway network namespaces: the guide's own lines,
the generated tc.sh and the runner's pyroute2 path (network_up with ingress_redirect) must
leave the same qdisc and filter (`tc filter show`, parsed), and undo them again.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from colospec.compile import check_spec, render_pair
from colospec.runner.network import NetworkError, network_down, network_up

from conftest import ROOT, guide_commands
from netns import add_bridge, add_tap, ip, namespace

SPEC = ROOT / "examples/vm-ft-seed.yaml"


@pytest.fixture(scope="module")
def host_dir(tmp_path_factory):
    """The primary's tc.sh and plan.json, written out."""
    pair = check_spec(SPEC).pair
    files = render_pair(pair)
    d = tmp_path_factory.mktemp("vmft")
    for name in ("tc.sh", "plan.json"):
        (d / name).write_text(files[f"{pair.primary.name}/{name}"].text)
    return d


def run(ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, check=check, timeout=30
    )


def parse_filters(text: str) -> list[dict]:
    """`tc filter show` output as rules: u32's head and hash-table lines are not rules."""
    rules, rule = [], None
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["filter"]:
            rule = None
            if "fh" in words and words[words.index("fh") + 1].count(":") == 2:
                at = {w: words[i + 1] for i, w in enumerate(words[:-1])}
                rule = {"protocol": at["protocol"], "pref": at["pref"],
                        "kind": words[words.index("pref") + 2], "flowid": at.get("flowid"),
                        "match": [], "actions": []}  # fmt: skip
                rules.append(rule)
        elif rule is not None and words[:1] == ["match"]:
            rule["match"].append(" ".join(words[1:]))
        elif rule is not None and words[:1] == ["action"]:
            rule["actions"].append(" ".join(words[3:]))  # after "action order N:"
    return rules


def state(ns: str, tap: str, ifb: str) -> dict:
    """The tap's qdiscs and ingress filters, and whether the ifb is up."""
    qdiscs = run(ns, "tc", "qdisc", "show", "dev", tap).stdout
    filters = run(ns, "tc", "filter", "show", "dev", tap, "parent", "ffff:").stdout
    link = ip("-d", "link", "show", ifb, netns=ns, check=False)
    return {
        "qdiscs": sorted(" ".join(q.split()[:3]) for q in qdiscs.splitlines()),
        "filters": parse_filters(filters),
        "ifb": ("ifb" in link.stdout, ",UP" in link.stdout) if link.returncode == 0 else None,
    }


def guest_tap(ns: str, plan: dict) -> None:
    """The bridge, and a tap standing in for the one QEMU opens for the guest."""
    add_bridge(ns, plan["network"]["bridge"])
    add_tap(ns, plan["network"]["tap"], plan["network"]["bridge"])


@pytest.fixture(scope="module")
def guide_state(host_dir):
    """What the guide's step 2 leaves, its lines run as they are."""
    plan = json.loads((host_dir / "plan.json").read_text())
    (redirect,) = plan["network"]["ingress_redirect"]
    with namespace() as ns:
        guest_tap(ns, plan)
        for command in guide_commands("step2-libnl.txt"):
            if command[0] == "modprobe":
                # the module's ifb devices exist only in the initial namespace
                ip("link", "add", redirect["to"], "type", "ifb", netns=ns)
                continue
            run(ns, *command)
        return state(ns, redirect["from"], redirect["to"])


def test_guide_state_is_the_redirect(guide_state):
    assert "qdisc ingress ffff:" in guide_state["qdiscs"]
    assert guide_state["filters"] == [
        {"protocol": "ip", "pref": "10", "kind": "u32", "flowid": "not_in_hw",
         "match": ["00000000/00000000 at 0"],
         "actions": ["mirred (Egress Redirect to device ifb0) stolen"]},
    ]  # fmt: skip
    assert guide_state["ifb"] == (True, True)


def test_tc_script_leaves_the_guides_state_and_cleans_up(host_dir, guide_state):
    plan = json.loads((host_dir / "plan.json").read_text())
    (redirect,) = plan["network"]["ingress_redirect"]
    with namespace() as ns:
        guest_tap(ns, plan)
        for _ in range(2):  # idempotent
            run(ns, "bash", str(host_dir / "tc.sh"), "up")
            assert state(ns, redirect["from"], redirect["to"]) == guide_state
        run(ns, "bash", str(host_dir / "tc.sh"), "down")
        run(ns, "bash", str(host_dir / "tc.sh"), "down")
        for name in (redirect["from"], redirect["to"]):
            assert ip("link", "show", name, netns=ns, check=False).returncode != 0


def test_pyroute2_path_leaves_the_guides_state(host_dir, guide_state):
    plan = json.loads((host_dir / "plan.json").read_text())
    net = plan["network"]
    (redirect,) = net["ingress_redirect"]
    with namespace() as ns:
        guest_tap(ns, plan)
        created = network_up(net, netns=ns)
        assert created == [redirect["to"]]  # the tap was there already
        assert network_up(net, netns=ns) == []
        assert state(ns, redirect["from"], redirect["to"]) == guide_state
        network_down(net, created, netns=ns)
        assert state(ns, redirect["from"], redirect["to"])["filters"] == []
        assert ip("link", "show", redirect["to"], netns=ns, check=False).returncode != 0


def test_both_refuse_another_filter_in_the_redirects_place(host_dir):
    plan = json.loads((host_dir / "plan.json").read_text())
    net = plan["network"]
    tap = net["tap"]
    with namespace() as ns:
        guest_tap(ns, plan)
        run(ns, "tc", "qdisc", "add", "dev", tap, "ingress")
        run(ns, "tc", "filter", "add", "dev", tap, "parent", "ffff:", "proto", "ip", "pref", "10",
            "u32", "match", "ip", "dst", "192.0.2.1/32",
            "action", "mirred", "egress", "redirect", "dev", net["bridge"])  # fmt: skip
        result = run(ns, "bash", str(host_dir / "tc.sh"), "up", check=False)
        assert result.returncode == 1
        assert f"{tap} already has another ingress filter at pref 10" in result.stderr
        with pytest.raises(NetworkError, match="another ingress filter at pref 10"):
            network_up(net, netns=ns)
