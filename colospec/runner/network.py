"""The guest's network plumbing (plan.json "network"), done through netlink: what tc.sh does.

`network_up` puts the guest's tap on its bridge and, for flavours that need it, redirects a
device's ingress to an ifb; `network_down` undoes it. Both are idempotent.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Iterable, Iterator
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

INGRESS = 0xFFFF0000  # tc "ffff:": the ingress qdisc's handle and its filters' parent
TC_H_INGRESS = 0xFFFFFFF1  # where an ingress (or clsact) qdisc hangs
PREF = 10  # the seed's `pref 10`
ETH_P_IP = 0x0800
TCA_EGRESS_REDIR = 1  # mirred "egress redirect"
TC_ACT_STOLEN = 4  # what tc sets for a redirect
IFNAMSIZ = 15
TUN_TYPE_TAP = 2


class NetworkError(Exception):
    """The guest's network could not be set up or torn down; the message is for the operator."""


def network_up(net: dict[str, Any], netns: str | None = None) -> list[str]:
    """Create/attach what `net` describes; return the names of the interfaces this call created."""
    tap, bridge = net["tap"], net["bridge"]
    redirects = net.get("ingress_redirect") or []
    for name in (tap, bridge, *(r["from"] for r in redirects), *(r["to"] for r in redirects)):
        if not 0 < len(name) <= IFNAMSIZ:
            # pyroute2 hands a 16-character tap name to the kernel, which truncates it silently
            raise NetworkError(f"interface name {name!r} must be 1–{IFNAMSIZ} characters")
    created: list[str] = []
    with _ipr(netns) as ipr:
        try:
            br = _link(ipr, bridge)
            if br is None or _kind(br) != "bridge":
                what = "does not exist" if br is None else f"is {_kind(br) or 'a plain device'}"
                raise NetworkError(
                    f"bridge {bridge} {what} on this host — create it first "
                    f"(the guest's tap {tap} joins it)"
                )
            tap_link = _ensure_link(ipr, tap, "tap", created)
            if net.get("tap_mac"):
                # A bridge takes the lowest MAC among its ports unless told otherwise; a
                # random tap MAC could change the host's own address on the bridge and
                # strand its neighbours' ARP entries. fe:… is never the lowest.
                with _doing(f"set the MAC address of {tap}"):
                    ipr.link("set", index=tap_link["index"], address=net["tap_mac"])
            with _doing(f"attach {tap} to bridge {bridge} and set it up"):
                ipr.link("set", index=tap_link["index"], master=br["index"], state="up")
            for r in redirects:
                _ensure_redirect(ipr, r["from"], r["to"], created)
        except BaseException:
            # The caller never sees `created` when we fail, so nothing we made may outlive us.
            with contextlib.suppress(NetworkError):
                _delete(ipr, created, ())
            raise
    return created


def network_down(
    net: dict[str, Any], created: list[str] | None = None, netns: str | None = None
) -> None:
    """Remove the ingress qdiscs and the interfaces `net` names (only `created` ones, if given)."""
    redirects = net.get("ingress_redirect") or []
    names = [net["tap"], *(r["to"] for r in redirects)]
    with _ipr(netns) as ipr:
        _delete(
            ipr,
            [n for n in names if created is None or n in created],
            [r["from"] for r in redirects],
        )


def _ensure_redirect(ipr: IPRoute, src: str, dst: str, created: list[str]) -> None:
    ifb = _ensure_link(ipr, dst, "ifb", created)
    with _doing(f"set {dst} up"):
        ipr.link("set", index=ifb["index"], state="up")
    link = _link(ipr, src)
    if link is None:
        raise NetworkError(f"{src} does not exist: cannot redirect its ingress to {dst}")
    index = link["index"]
    qdisc = next(iter(_ingress_qdiscs(ipr, src, index)), None)
    if qdisc is None:
        with _doing(f"add an ingress qdisc on {src}"):
            ipr.tc("add", "ingress", index=index)
    elif qdisc.get_attr("TCA_KIND") != "ingress":
        raise NetworkError(f"{src} has a {qdisc.get_attr('TCA_KIND')} qdisc where ingress goes")
    # Every u32 pref also dumps a head and a hash-table entry; only entries with a selector
    # are rules.
    with _doing(f"list the ingress filters of {src}"):
        filters = ipr.get_filters(index=index, parent=INGRESS)
    rules = [
        f
        for f in filters
        if f["info"] >> 16 == PREF
        and (f.get_attr("TCA_KIND") != "u32" or _u32_opt(f, "TCA_U32_SEL") is not None)
    ]
    if any(_redirect_target(f) == ifb["index"] for f in rules):
        return
    if rules:
        raise NetworkError(
            f"{src} already has another ingress filter at pref {PREF} — remove it "
            f"(tc filter del dev {src} parent ffff: pref {PREF})"
        )
    with _doing(f"add the ingress filter redirecting {src} to {dst}"):
        # pyroute2 insists on `target` (TCA_U32_CLASSID); 0 is what tc sends: no flowid
        ipr.tc(
            "add-filter",
            "u32",
            index=index,
            parent=INGRESS,
            prio=PREF,
            protocol=ETH_P_IP,
            keys=["0x0/0x0+0"],
            target=0,
            action=[
                {
                    "kind": "mirred",
                    "direction": "egress",
                    "action": "redirect",
                    "ifindex": ifb["index"],
                }
            ],
        )


def _u32_opt(f: Any, name: str) -> Any:
    opts = f.get_attr("TCA_OPTIONS")
    return opts.get_attr(name) if opts is not None else None


def _redirect_target(f: Any) -> int | None:
    """The ifindex a rule equal to the seed's (`u32 match u32 0 0 action mirred egress
    redirect`, protocol ip) sends packets to; None for any other rule."""
    sel, acts = _u32_opt(f, "TCA_U32_SEL"), _u32_opt(f, "TCA_U32_ACT")
    if (
        f.get_attr("TCA_KIND") != "u32"
        or f["info"] & 0xFFFF != socket.htons(ETH_P_IP)
        or sel is None
        or [(k["key_val"], k["key_mask"], k["key_off"]) for k in sel["keys"]] != [(0, 0, 0)]
        or _u32_opt(f, "TCA_U32_CLASSID")
        or acts is None
        or len(acts["attrs"]) != 1
    ):
        return None
    act = acts["attrs"][0][1]
    if act.get_attr("TCA_ACT_KIND") != "mirred":
        return None
    parms = act.get_attr("TCA_ACT_OPTIONS").get_attr("TCA_MIRRED_PARMS")
    if parms["eaction"] != TCA_EGRESS_REDIR or parms["action"] != TC_ACT_STOLEN:
        return None
    return parms["ifindex"]


def _ensure_link(ipr: IPRoute, name: str, kind: str, created: list[str]) -> Any:
    link = _link(ipr, name)
    if link is None:
        hint = "the kernel lacks ifb (modprobe ifb)" if kind == "ifb" else None
        with _doing(f"create {kind} {name}", hint):
            if kind == "tap":
                # no_pi: what `ip tuntap add` does; pyroute2 otherwise asks for packet info
                ipr.link("add", ifname=name, kind="tuntap", mode="tap", ifr={"no_pi": 1})
            else:
                ipr.link("add", ifname=name, kind=kind)
        link = _link(ipr, name)
        if link is None:  # tuntap goes through an ioctl whose failures pyroute2 can swallow
            raise NetworkError(f"cannot create {kind} {name}: it does not exist afterwards")
        created.append(name)
    elif _kind(link) != kind:
        raise NetworkError(
            f"{name} exists but is not a {kind} (it is {_kind(link) or 'a plain device'}); "
            "remove it or choose another name"
        )
    return link


def _delete(ipr: IPRoute, names: Iterable[str], ingress_on: Iterable[str]) -> None:
    # Ingress first: the tap may be one of them, and a tap we did not create keeps its qdisc.
    for name in ingress_on:
        link = _link(ipr, name)
        if link is None:
            continue
        for q in _ingress_qdiscs(ipr, name, link["index"]):
            if q.get_attr("TCA_KIND") == "ingress":
                with _doing(f"delete the ingress qdisc on {name}", gone=True):
                    ipr.tc("del", "ingress", index=link["index"])
    for name in names:
        link = _link(ipr, name)
        # Leave a same-named device of another kind alone: network_up would have refused it.
        if link is not None and _kind(link) in ("tap", "ifb"):
            with _doing(f"delete {name}", gone=True):
                ipr.link("del", index=link["index"])


def _ingress_qdiscs(ipr: IPRoute, name: str, index: int) -> list[Any]:
    with _doing(f"list the qdiscs of {name}"):
        qdiscs = ipr.get_qdiscs(index=index)
    return [q for q in qdiscs if q["index"] == index and q["parent"] == TC_H_INGRESS]


def _link(ipr: IPRoute, name: str) -> Any | None:
    try:
        return ipr.link("get", ifname=name)[0]
    except NetlinkError as e:
        if e.code == errno.ENODEV:
            return None
        raise NetworkError(f"cannot look up {name}: {_reason(e)}") from e


def _kind(link: Any) -> str | None:
    info = link.get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
    if kind == "tun":  # tun and tap share a kind; the type tells them apart
        data = info.get_attr("IFLA_INFO_DATA")
        return "tap" if data and data.get_attr("IFLA_TUN_TYPE") == TUN_TYPE_TAP else "tun"
    return kind


@contextlib.contextmanager
def _ipr(netns: str | None) -> Iterator[IPRoute]:
    where = f" in network namespace {netns}" if netns else ""
    try:
        # flags=0: pyroute2 would otherwise create a missing namespace (os.O_CREAT)
        ipr = IPRoute(netns=netns, flags=0) if netns else IPRoute()
    except FileNotFoundError as e:
        raise NetworkError(f"network namespace {netns} does not exist") from e
    except (OSError, NetlinkError) as e:
        raise NetworkError(f"cannot open a netlink socket{where}: {_reason(e)}") from e
    with ipr:
        try:
            yield ipr
        except (NetlinkError, OSError) as e:  # a backstop: the calls above name their device
            raise NetworkError(f"netlink request failed{where}: {_reason(e)}") from e


@contextlib.contextmanager
def _doing(what: str, hint: str | None = None, gone: bool = False) -> Iterator[None]:
    """Turn a netlink failure into a NetworkError naming the device and operation."""
    try:
        yield
    except (NetlinkError, OSError, ValueError) as e:
        code = e.code if isinstance(e, NetlinkError) else getattr(e, "errno", None)
        if gone and code in (errno.ENODEV, errno.ENOENT, errno.EINVAL):
            return  # someone else removed it between our look-up and the delete
        if code == errno.EOPNOTSUPP and hint:
            raise NetworkError(f"cannot {what}: {_reason(e)} — {hint}") from e
        raise NetworkError(f"cannot {what}: {_reason(e)}") from e


def _reason(e: Exception) -> str:
    code = e.code if isinstance(e, NetlinkError) else getattr(e, "errno", None)
    if code == errno.EPERM:
        return "operation not permitted (needs root or CAP_NET_ADMIN)"
    return os.strerror(code) if code else str(e)
