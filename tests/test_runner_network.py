"""colospec.runner.network against the real kernel, inside throwaway namespaces only.

Results are read back with `ip` and `tc`, and the ingress redirect is compared with what the
seed's own tc lines produce in a second namespace.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from colospec.runner import network
from colospec.runner.network import NetworkError, network_down, network_up

from netns import add_bridge, add_tap, ip, namespace, unique_name

NET = {"tap": "tap-web1", "bridge": "br0", "script": "tc.sh"}
REDIRECT = {
    "tap": "tap0",
    "bridge": "br0",
    "script": "tc.sh",
    "ingress_redirect": [{"from": "tap0", "to": "ifb0"}],
}
SEED_TC = [
    "qdisc add dev tap0 ingress",
    "filter add dev tap0 parent ffff: proto ip pref 10 u32 match u32 0 0 "
    "action mirred egress redirect dev ifb0",
]


def tc(netns: str, *args: str) -> str:
    return subprocess.run(
        ["tc", "-n", netns, *args], check=True, capture_output=True, text=True, timeout=30
    ).stdout


def link(netns: str, name: str) -> str | None:
    """`ip -d link show` of one device (bridge timers blanked), None when it does not exist."""
    done = ip("-d", "link", "show", "dev", name, netns=netns, check=False)
    return re.sub(r"(\w+_timer)\s+[\d.]+", r"\1 T", done.stdout) if done.returncode == 0 else None


def flags(details: str) -> set[str]:
    return set(re.search(r"<([^>]*)>", details).group(1).split(","))


def links(netns: str) -> list[str]:
    out = ip("-o", "link", "show", netns=netns).stdout
    return sorted(re.findall(r"^\d+: ([^:@]+)", out, re.M))


def filters(netns: str, dev: str) -> list[str]:
    """`tc filter show … parent ffff:` with what legitimately differs between two namespaces
    (filter handles, hash tables, action indices) replaced."""
    out = tc(netns, "filter", "show", "dev", dev, "parent", "ffff:")
    out = re.sub(r"\bfh [0-9a-f:]+", "fh H", out)
    out = re.sub(r"\bht [0-9a-f]+", "ht T", out)
    out = re.sub(r"\bindex \d+ ref \d+ bind \d+", "index N ref N bind N", out)
    return [line.strip() for line in out.splitlines() if line.strip()]


def qdiscs(netns: str, dev: str) -> list[str]:
    return [line.strip() for line in tc(netns, "qdisc", "show", "dev", dev).splitlines()]


def tun_line(details: str) -> str:
    return re.search(r"^\s*(tun type .*?)\s*$", details, re.M).group(1)


@pytest.fixture(scope="module")
def ifb() -> None:
    """The ingress tests need the kernel's ifb; say so plainly instead of failing obscurely."""
    with namespace("csifb") as ns:
        if ip("link", "add", "ifbchk", "type", "ifb", netns=ns, check=False).returncode:
            if shutil.which("modprobe"):
                subprocess.run(["modprobe", "ifb"], check=False, timeout=30)
            done = ip("link", "add", "ifbchk", "type", "ifb", netns=ns, check=False)
            assert done.returncode == 0, f"kernel lacks ifb (modprobe ifb): {done.stderr}"


@pytest.fixture
def ns():
    with namespace("csnet") as name:
        add_bridge(name, "br0")
        yield name


def test_up_creates_tap_on_bridge_and_up(ns):
    assert link(ns, "tap-web1") is None
    assert network_up(NET, netns=ns) == ["tap-web1"]
    details = link(ns, "tap-web1")
    assert details is not None
    assert "UP" in flags(details)
    assert re.search(r"\bmaster br0\b", details)
    # What `ip tuntap add … mode tap` makes, which QEMU's tap backend then opens.
    assert tun_line(details) == "tun type tap pi off vnet_hdr off persist on"


def test_second_up_is_a_no_op(ns):
    network_up(NET, netns=ns)
    before = (links(ns), link(ns, "tap-web1"), link(ns, "br0"))
    assert network_up(NET, netns=ns) == []
    assert (links(ns), link(ns, "tap-web1"), link(ns, "br0")) == before


def test_up_adopts_an_existing_tap_and_reports_nothing_created(ns):
    ip("tuntap", "add", "dev", "tap-web1", "mode", "tap", netns=ns)
    assert network_up(NET, netns=ns) == []
    details = link(ns, "tap-web1")
    assert "UP" in flags(details) and re.search(r"\bmaster br0\b", details)
    network_down(NET, created=[], netns=ns)
    assert link(ns, "tap-web1") is not None, "a tap the runner did not create must stay"


def test_down_removes_and_twice_is_fine(ns):
    network_up(NET, netns=ns)
    network_down(NET, netns=ns)
    assert link(ns, "tap-web1") is None
    network_down(NET, netns=ns)
    network_down(NET, created=["tap-web1"], netns=ns)
    assert links(ns) == ["br0", "lo"]


def test_missing_bridge_is_an_operator_error(ns):
    net = {**NET, "bridge": "br9"}
    with pytest.raises(NetworkError) as e:
        network_up(net, netns=ns)
    assert str(e.value) == (
        "bridge br9 does not exist on this host — create it first "
        "(the guest's tap tap-web1 joins it)"
    )
    assert link(ns, "tap-web1") is None


def test_bridge_that_is_not_a_bridge(ns):
    ip("tuntap", "add", "dev", "notbr", "mode", "tap", netns=ns)
    with pytest.raises(NetworkError, match=r"^bridge notbr is tap on this host — create it first"):
        network_up({**NET, "bridge": "notbr"}, netns=ns)
    assert link(ns, "tap-web1") is None


def test_tap_name_taken_by_another_kind(ns):
    add_bridge(ns, "tap-web1")
    with pytest.raises(NetworkError, match=r"^tap-web1 exists but is not a tap \(it is bridge\)"):
        network_up(NET, netns=ns)
    network_down(NET, netns=ns)
    assert link(ns, "tap-web1") is not None, "down must not delete a device that is not its tap"


def test_overlong_name_is_refused_not_truncated(ns):
    with pytest.raises(NetworkError, match="must be 1–15 characters"):
        network_up({**NET, "tap": "tap-web1-toolong"}, netns=ns)
    assert links(ns) == ["br0", "lo"]


def test_missing_namespace_is_an_error_and_not_created():
    name = unique_name("csgone")
    try:
        with pytest.raises(NetworkError, match=f"^network namespace {name} does not exist$"):
            network_up(NET, netns=name)
        assert not os.path.exists(f"/var/run/netns/{name}")
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def test_netlink_failure_names_device_and_operation_and_rolls_back(ns, monkeypatch):
    class Failing:
        """A real IPRoute whose enslaving fails (pyroute2's methods are not inheritable)."""

        def __init__(self, **kwargs):
            self._ipr = IPRoute(**kwargs)

        def __getattr__(self, name):
            return getattr(self._ipr, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._ipr.close()

        def link(self, command, **kwargs):
            if command == "set" and "master" in kwargs:
                raise NetlinkError(errno.EBUSY, "Device or resource busy")
            return self._ipr.link(command, **kwargs)

    monkeypatch.setattr(network, "IPRoute", Failing)
    with pytest.raises(NetworkError) as e:
        network_up(NET, netns=ns)
    assert str(e.value) == (
        "cannot attach tap-web1 to bridge br0 and set it up: Device or resource busy"
    )
    assert isinstance(e.value.__cause__, NetlinkError)
    assert link(ns, "tap-web1") is None, "the tap this call created must be removed again"


def seed(netns: str) -> None:
    """The seed's plumbing by hand: ip for the devices, its tc lines verbatim."""
    add_bridge(netns, "br0")
    add_tap(netns, "tap0", "br0")
    ip("link", "add", "ifb0", "type", "ifb", netns=netns)
    ip("link", "set", "ifb0", "up", netns=netns)
    for line in SEED_TC:
        tc(netns, *shlex.split(line))


def test_ingress_redirect_equals_the_seed_tc_lines(ifb):
    with namespace("csours") as ours, namespace("csseed") as theirs:
        add_bridge(ours, "br0")
        seed(theirs)
        assert network_up(REDIRECT, netns=ours) == ["tap0", "ifb0"]

        expected = filters(theirs, "tap0")
        assert any("mirred (Egress Redirect to device ifb0) stolen" in x for x in expected)
        assert filters(ours, "tap0") == expected
        assert qdiscs(ours, "tap0") == qdiscs(theirs, "tap0")
        assert any(
            x.startswith("qdisc ingress ffff: parent ffff:fff1") for x in qdiscs(ours, "tap0")
        )
        assert tun_line(link(ours, "tap0")) == tun_line(link(theirs, "tap0"))
        ifb_details = link(ours, "ifb0")
        assert "UP" in flags(ifb_details)
        assert re.search(r"^\s*ifb\b", ifb_details, re.M)

        # Idempotent: nothing new, no second filter.
        assert network_up(REDIRECT, netns=ours) == []
        assert filters(ours, "tap0") == expected


def test_ingress_redirect_adopts_the_seed_plumbing(ifb):
    with namespace("csseed") as ns:
        seed(ns)
        before = filters(ns, "tap0")
        assert network_up(REDIRECT, netns=ns) == []
        assert filters(ns, "tap0") == before


def test_foreign_filter_at_the_same_pref_is_refused(ifb, ns):
    ip("link", "add", "ifb1", "type", "ifb", netns=ns)
    add_tap(ns, "tap0", "br0")
    tc(ns, "qdisc", "add", "dev", "tap0", "ingress")
    tc(ns, *shlex.split(SEED_TC[1].replace("ifb0", "ifb1")))
    with pytest.raises(NetworkError, match=r"^tap0 already has another ingress filter at pref 10"):
        network_up(REDIRECT, netns=ns)
    assert link(ns, "ifb0") is None, "the ifb this call created must be removed again"


def test_down_removes_ifb_and_qdisc(ifb, ns):
    created = network_up(REDIRECT, netns=ns)
    network_down(REDIRECT, created=created, netns=ns)
    assert link(ns, "tap0") is None
    assert link(ns, "ifb0") is None
    network_down(REDIRECT, created=created, netns=ns)
    network_down(REDIRECT, netns=ns)
    assert links(ns) == ["br0", "lo"]


def test_down_of_adopted_devices_only_removes_the_qdisc(ifb):
    with namespace("csseed") as ns:
        seed(ns)
        created = network_up(REDIRECT, netns=ns)
        assert created == []
        network_down(REDIRECT, created=created, netns=ns)
        assert link(ns, "tap0") is not None and link(ns, "ifb0") is not None
        assert not [x for x in qdiscs(ns, "tap0") if "ingress" in x]
        assert filters(ns, "tap0") == []


def test_without_netns_it_acts_on_the_namespace_it_runs_in(ns):
    """The runner itself normally runs inside the host's namespace and passes netns=None."""
    code = (
        "import json, sys\n"
        "from colospec.runner.network import network_down, network_up\n"
        "net = json.loads(sys.argv[1])\n"
        "print(json.dumps([network_up(net), network_up(net)]))\n"
    )
    run = [sys.executable, "-c", code, json.dumps(NET)]
    done = subprocess.run(
        ["ip", "netns", "exec", ns, *run], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [["tap-web1"], []]
    assert re.search(r"\bmaster br0\b", link(ns, "tap-web1"))
