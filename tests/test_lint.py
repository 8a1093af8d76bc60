"""The qemu.extra_args lint: it judges only what extra_args add, against colospec's own part.

Most cases go through check_spec, the pipeline `colospec validate` runs, so they test what
a user sees: the error, its rule id and the extra_args item it points at.
"""

from __future__ import annotations

import re

import pytest
import yaml

from colospec import lint
from colospec.compile import check_spec, qemu_argv
from colospec.diagnostics import SpecError
from colospec.lint import lint_extra_args
from colospec.listeners import is_wildcard

from conftest import ALL_VALID, ROOT

COLO, VMFT = ROOT / "examples/pair.yaml", ROOT / "examples/vm-ft-seed.yaml"
OWNED, WILDCARD, SPELLING = lint.OWNED, lint.WILDCARD, lint.SPELLING
EXTRA_ARGS = "$.qemu.extra_args"


def write_spec(tmp_path, base=COLO, extra_args=(), patch=None):
    data = yaml.safe_load(base.read_text())
    data["qemu"]["extra_args"] = list(extra_args)
    if patch:
        patch(data)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def errors(tmp_path, extra_args, base=COLO) -> set[tuple[int, str]]:
    """(extra_args index, rule) of every error check_spec reports; empty if it passes."""
    try:
        check_spec(write_spec(tmp_path, base, extra_args))
    except SpecError as e:
        found = {d for d in e.diagnostics if d.severity == "error"}
        assert all(d.path.startswith(EXTRA_ARGS) for d in found), found
        return {(int(re.search(r"\[(\d+)\]", d.path)[1]), d.rule) for d in found}
    return set()


# --- colospec's own part is context, never judged ---------------------------------------


def _kernel_append(data):
    data["vm"]["kernel"]["append"] = "console=ttyS0 ip=10.22.1.50:0.0.0.0:10.22.1.1:255.0.0.0::eth0"


def _host_address(data):
    data["hosts"]["primary"]["address"] = "10.0.0.0"


def _image_path(data):
    data["vm"]["disk"]["image"] = "/srv/0.0.0.0/disk.raw"


@pytest.mark.parametrize("patch", [_kernel_append, _host_address, _image_path])
def test_0_0_0_0_in_colospecs_own_values_is_no_error(tmp_path, patch):
    """These used to raise AssertionError ('a colospec bug') on a valid spec."""
    assert check_spec(write_spec(tmp_path, patch=patch)).pair


@pytest.mark.parametrize("base", [COLO, VMFT], ids=["colo", "vm-ft"])
def test_a_tap_from_extra_args_is_reported_not_blamed_on_colospec(tmp_path, base):
    """A tap passing headers makes colospec's own filters look wrong; only the tap counts."""
    assert errors(tmp_path, ["-netdev", "tap,id=evil,ifname=tap9"], base) == {(0, OWNED)}


def test_a_bad_value_in_colospecs_part_is_not_judged():
    own = ["qemu", "-chardev", "socket,id=x,host=0.0.0.0,port=1,server=on", "-snapshot"]
    assert lint_extra_args(own, []) == []
    assert lint_extra_args(own, ["-rtc", "base=utc"]) == []


@pytest.mark.parametrize("spec", ALL_VALID, ids=[p.stem for p in ALL_VALID])
def test_every_valid_case_passes(spec):
    pair = check_spec(spec).pair
    extra = list(pair.qemu.extra_args)
    for host in pair.hosts:
        argv = qemu_argv(pair, host)
        assert lint_extra_args(argv[: len(argv) - len(extra)], extra) == []


# --- what extra_args may not do -----------------------------------------------------------

REJECTED = {
    # spellings QEMU also reads, or that must never slip through
    "--netdev": (["--netdev", "tap,id=evil,vhost=on"], {(0, OWNED), (1, lint.VHOST)}),
    "--incoming": (["--incoming", "tcp:0:4444"], {(0, OWNED), (1, WILDCARD)}),
    "-machine=q35": (["-machine=q35"], {(0, SPELLING), (0, OWNED)}),
    "-snapshot=on": (["-snapshot=on"], {(0, SPELLING), (0, lint.LOST_WRITES)}),
    "value missing": (["-chardev"], {(0, SPELLING)}),
    "value like an option": (["-name", "-s"], {(0, OWNED)}),  # -s is -name's value here
    # listeners on every address
    "monitor tcp": (["-monitor", "tcp::4444,server=on"], {(0, OWNED), (1, WILDCARD)}),
    "chardev no host": (["-chardev", "socket,id=c9,port=4444,server=on"], {(1, WILDCARD)}),
    "chardev host=": (["-chardev", "socket,id=c9,host=,port=1,server=on"], {(1, WILDCARD)}),
    "chardev 0.0.0.0": (["-chardev", "socket,id=c9,host=0.0.0.0,port=1,server"], {(1, WILDCARD)}),
    "chardev 0": (["-chardev", "socket,id=c9,host=0,port=1,server=on"], {(1, WILDCARD)}),
    "chardev ::": (["-chardev", "socket,id=c9,host=::,port=1,server=yes"], {(1, WILDCARD)}),
    "chardev [::]": (["-chardev", "socket,id=c9,host=[::],port=1,server=on"], {(1, WILDCARD)}),
    "chardev udp": (
        ["-chardev", "udp,id=u9,host=10.22.1.9,port=1"],  # bound to every address locally
        {(1, WILDCARD)},
    ),
    "gdb": (["-gdb", "tcp::1234"], {(1, WILDCARD)}),
    "gdb -s": (["-s"], {(0, WILDCARD)}),
    "spice": (["-spice", "port=5930"], {(1, WILDCARD)}),
    "spice tls": (["-spice", "tls-port=5931,addr=0.0"], {(1, WILDCARD)}),
    "parallel tcp": (["-parallel", "tcp::4444,server=on"], {(1, WILDCARD)}),
    "debugcon telnet": (["-debugcon", "telnet:0x0:4444,server,wait=off"], {(1, WILDCARD)}),
    "parallel udp": (["-parallel", "udp::4444"], {(1, WILDCARD)}),
    "serial mon:tcp": (["-serial", "mon:tcp::4444,server=on"], {(0, OWNED), (1, WILDCARD)}),
    "hostfwd": (
        ["-netdev", "user,id=u0,hostfwd=tcp:127.0.0.1:2-:22,hostfwd=tcp::2222-:22"],
        {(0, OWNED), (1, WILDCARD)},
    ),
    "vnc": (["-display", "vnc=:3"], {(0, OWNED), (1, WILDCARD)}),
    # what colospec owns
    "readconfig": (["-readconfig", "/etc/qemu/more.cfg"], {(0, lint.OPAQUE)}),
    "set colospec's netdev": (["-set", "netdev.hn0.vhost=on"], {(1, OWNED)}),
    "set unknown id": (["-set", "device.nic9.mac=52:54:00:00:00:09"], {(1, OWNED)}),
    "set reaches colospec": (
        ["-device", "e1000,id=d9", "-set", "device.d9.netdev=hn0"],
        {(3, OWNED)},
    ),
    "set opens a listener": (
        ["-chardev", "socket,id=c9,host=127.0.0.1,port=1,server=on", "-set", "chardev.c9.host=0"],
        {(3, WILDCARD)},
    ),
    "global NIC": (["-global", "e1000.romfile="], {(1, OWNED)}),
    "global disk": (["-global", "virtio-blk-pci.scsi=off"], {(1, OWNED)}),
    "global filter": (
        ["-global", "driver=filter-mirror,property=vnet_hdr_support,value=off"],
        {(1, OWNED)},
    ),
    "global colo-compare": (["-global", "colo-compare.compare_timeout=1"], {(1, OWNED)}),
    "second colo-compare": (
        ["-object", "colo-compare,id=c9,primary_in=a,secondary_in=b,outdev=o,iothread=i"],
        {(1, OWNED)},
    ),
    "filter on colospec's netdev": (
        ["-object", "filter-mirror,id=f9,netdev=hn0,queue=tx,outdev=o"],
        {(1, OWNED)},
    ),
    "json filter": (
        [
            "-object",
            '{"qom-type": "filter-redirector", "id": "f9", "netdev": "hn0", "queue": "rx"}',
        ],
        {(1, OWNED)},
    ),
    "second NIC": (["-device", "e1000,netdev=hn0"], {(1, OWNED)}),
    "colospec's drive": (["-device", "virtio-blk-pci,drive=colo-disk0"], {(1, OWNED)}),
    "colospec's chardev": (["-parallel", "chardev:console"], {(1, OWNED)}),
    "id collision": (["-chardev", "socket,id=qmp,path=/tmp/q.sock"], {(1, lint.ID_COLLISION)}),
    "node-name collision": (
        ["-blockdev", "driver=file,node-name=colo-disk0,filename=/tmp/x"],
        {(1, lint.ID_COLLISION)},
    ),
    # writes that would be lost
    "snapshot": (["-snapshot"], {(0, lint.LOST_WRITES)}),
    "hdb": (["-hdb", "/var/lib/extra.img"], {(0, lint.LOST_WRITES)}),
    "bare image": (["/var/lib/extra.img"], {(0, lint.LOST_WRITES)}),
}


@pytest.mark.parametrize(("extra", "expected"), REJECTED.values(), ids=REJECTED.keys())
def test_rejected(tmp_path, extra, expected):
    assert errors(tmp_path, extra) == expected


ACCEPTED = {
    "unix chardev": ["-chardev", "socket,id=c9,path=/run/c9.sock,server=on,wait=off"],
    "chardev on an address": ["-chardev", "socket,id=c9,host=10.22.1.2,port=4444,server=on"],
    "chardev on loopback": ["-chardev", "socket,id=c9,host=127.0.0.1,port=4444,server=on"],
    "chardev client": ["-chardev", "socket,id=c9,host=0.0.0.0,port=4444"],
    "udp bound locally": ["-chardev", "udp,id=u9,host=10.22.1.9,port=1,localaddr=10.22.1.2"],
    "gdb on loopback": ["-gdb", "tcp:127.0.0.1:1234"],
    "gdb on a unix socket": ["-gdb", "unix:/run/gdb.sock,server=on,wait=off"],
    "parallel client": ["-parallel", "tcp::4444"],
    "spice on loopback": ["-spice", "port=5930,addr=127.0.0.1"],
    "spice on a unix socket": ["-spice", "unix=on,addr=/run/spice.sock"],
    "set what extra_args define": [
        *["-device", "virtio-rng-pci,id=rng9"],
        *["-set", "device.rng9.max-bytes=1024"],
    ],
    "global on a machine device": ["-global", "kvm-pit.lost_tick_policy=discard"],
    "passive filter on colospec's netdev": [
        *["-object", "filter-dump,id=d9,netdev=hn0,file=/tmp/d.pcap"],
    ],
    "plain options": ["-rtc", "base=utc", "-device", "virtio-rng-pci", "--no-reboot"],
}


@pytest.mark.parametrize("extra", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_accepted(tmp_path, extra):
    assert errors(tmp_path, extra) == set()


@pytest.mark.parametrize("base", [COLO, VMFT], ids=["colo", "vm-ft"])
def test_both_flavours_judge_the_same_way(tmp_path, base):
    extra = ["-s", "-set", "netdev.hn0.vhost=on", "-device", "e1000,netdev=hn0"]
    assert errors(tmp_path, extra, base) == {(0, WILDCARD), (2, OWNED), (4, OWNED)}


def test_joined_spelling_says_how_to_write_it():
    fixes = {p.rule: p.fix for p in lint_extra_args(["qemu"], ["-machine=q35"])}
    assert '"-machine", "q35"' in fixes[SPELLING]


def test_every_rule_is_documented():
    rules = {rule for _, expected in REJECTED.values() for _, rule in expected}
    rules |= {lint.VNET_HDR, lint.TOP_ID}
    assert all(rule in lint.__doc__ for rule in rules)


# --- the checks colospec's renderer obeys, applied to extra_args ---------------------------

OWN_TAP = ["qemu", "-netdev", "tap,id=hn0,ifname=t0,vhost=off,vnet_hdr=on"]
COMPARE = "colo-compare,id=c9,primary_in=a,secondary_in=b,outdev=o,iothread=i"


def rules(own, extra):
    return [(p.index, p.rule) for p in lint_extra_args(own, extra)]


@pytest.mark.parametrize("vnet_hdr", ["vnet_hdr=on", "script=no"])  # absent means "if available"
def test_offload_headers_need_support_on_every_filter(vnet_hdr):
    own = [OWN_TAP[0], OWN_TAP[1], OWN_TAP[2].replace("vnet_hdr=on", vnet_hdr)]
    assert rules(own, ["-object", COMPARE]) == [(1, lint.VNET_HDR)]
    assert rules(own, ["-object", COMPARE + ",vnet_hdr_support=on"]) == []
    no_headers = [OWN_TAP[0], OWN_TAP[1], OWN_TAP[2].replace("vnet_hdr=on", "vnet_hdr=no")]
    assert rules(no_headers, ["-object", COMPARE]) == []


@pytest.mark.parametrize("vhost", ["vhost=on", "vhost=true", "vhostforce=on", "vhostfd=3"])
def test_vhost_is_caught_in_any_spelling(vhost):
    assert (1, lint.VHOST) in rules(["qemu"], ["-netdev", f"tap,id=t9,{vhost}"])
    assert (1, lint.VHOST) not in rules(["qemu"], ["-netdev", "tap,id=t9,vhost=off"])


def test_top_id_must_name_the_guests_drive():
    own = ["qemu", "-drive", "if=virtio,id=colo-disk0,driver=quorum,children.0=childs0"]
    replication = "if=none,id=r9,driver=replication,mode=secondary,top-id={}"
    assert (1, lint.TOP_ID) in rules(own, ["-drive", replication.format("disk9")])
    assert (1, lint.TOP_ID) not in rules(own, ["-drive", replication.format("colo-disk0")])


def test_a_replication_drive_the_guest_uses_is_its_own_top():
    """The vm-ft layout: no quorum on the secondary; the replication drive is the guest's."""
    drive = "if=virtio,id=active9,driver=replication,mode=secondary,top-id=active9"
    assert (1, lint.TOP_ID) not in rules(["qemu"], ["-drive", drive])
    hidden = drive.replace("if=virtio", "if=none")
    assert (1, lint.TOP_ID) in rules(["qemu"], ["-drive", hidden])


# --- "every address", as QEMU's getaddrinfo reads it ---------------------------------------

WILDCARDS = ["", "0.0.0.0", "0", "0.0", "0.0.0", "00", "0x0", "0X00.0", "::", "[::]", "0:0::0",
             "::ffff:0.0.0.0", " 0.0.0.0 ", "::%eth0"]  # fmt: skip
SPECIFIC = ["127.0.0.1", "10.0.0.0", "0.0.0.1", "1", "0x", "0.0.0.0.0", "::1", "[::1]", "localhost",
            "10.22.1.2", "fe80::1%eth0"]  # fmt: skip


@pytest.mark.parametrize("host", WILDCARDS)
def test_wildcard_addresses(host):
    assert is_wildcard(host)


@pytest.mark.parametrize("host", SPECIFIC)
def test_specific_addresses(host):
    assert not is_wildcard(host)
