"""The QEMU argv checks catch each broken invariant (and pass on every rendered case)."""

from __future__ import annotations

import pytest

from colospec.compile import check_spec, qemu_argv
from colospec.lint import lint_qemu_argv

from conftest import ALL_VALID

GOOD_SECONDARY = [
    "qemu",
    "-netdev", "tap,id=hn0,ifname=t0,vhost=off,vnet_hdr=off",
    "-object", "filter-rewriter,id=rew0,netdev=hn0,queue=all",
    "-drive", "if=none,id=childs0,driver=replication,mode=secondary,top-id=colo-disk0",
    "-drive", "if=virtio,id=colo-disk0,driver=quorum,children.0=childs0",
]  # fmt: skip


def problems(argv, first_extra=None):
    return [
        p.problem for p in lint_qemu_argv(argv, len(argv) if first_extra is None else first_extra)
    ]


def test_good_argv_passes():
    assert problems(GOOD_SECONDARY) == []


def test_top_id_must_name_the_quorum():
    argv = [a.replace("top-id=colo-disk0", "top-id=disk9") for a in GOOD_SECONDARY]
    assert problems(argv) == ["replication top-id 'disk9' is not the quorum's id"]


def test_a_replication_drive_the_guest_uses_is_its_own_top():
    """The vm-ft layout: no quorum on the secondary; the replication drive is the guest's."""
    argv = [
        "qemu",
        "-drive",
        "if=virtio,id=active0,driver=replication,mode=secondary,top-id=active0",
    ]
    assert problems(argv) == []
    hidden = [a.replace("if=virtio", "if=none") for a in argv]
    assert problems(hidden) == ["replication top-id 'active0' is not the quorum's id"]


def test_vhost_on_is_caught():
    argv = [a.replace("vhost=off", "vhost=on") for a in GOOD_SECONDARY]
    assert problems(argv) == ["vhost is on for a tap netdev"]


@pytest.mark.parametrize("tap_hdr", ["vnet_hdr=on", "script=no"])  # absent means "if available"
def test_offload_headers_need_support_on_every_filter(tap_hdr):
    argv = [a.replace("vnet_hdr=off", tap_hdr) for a in GOOD_SECONDARY]
    assert problems(argv) == [
        "filter-rewriter lacks vnet_hdr_support while the tap passes offload headers"
    ]
    fixed = [a.replace("queue=all", "queue=all,vnet_hdr_support=on") for a in argv]
    assert problems(fixed) == []


def test_listening_on_every_address_is_caught():
    argv = [*GOOD_SECONDARY, "-chardev", "socket,id=x,host=0.0.0.0,port=1,server=on"]
    assert problems(argv) == [
        "'socket,id=x,host=0.0.0.0,port=1,server=on' listens on every address"
    ]


def test_owned_options_only_matter_in_extra_args():
    argv = [*GOOD_SECONDARY, "-incoming", "defer"]
    assert problems(argv) == []
    assert problems(argv, first_extra=len(GOOD_SECONDARY)) == [
        "-incoming is set by colospec itself"
    ]


@pytest.mark.parametrize("spec", ALL_VALID, ids=[p.stem for p in ALL_VALID])
def test_every_rendered_argv_is_clean(spec):
    pair = check_spec(spec).pair
    for host in pair.hosts:
        argv = qemu_argv(pair, host)
        assert lint_qemu_argv(argv, len(argv) - len(pair.qemu.extra_args)) == []
