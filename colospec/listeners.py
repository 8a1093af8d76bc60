"""Which addresses a QEMU option listens on, and whether an address means "every address".

QEMU binds its listeners with getaddrinfo(AI_PASSIVE): an empty host binds every address,
and glibc reads a numeric IPv4 host the inet_aton way, so '0', '0.0' and '0x0' all mean
0.0.0.0. Unix sockets, passed-in fds and client connections are not listeners.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

from colospec.qemu_cli import IMPLIED_KEY, is_on, option_pairs

EVERY_ADDRESS = ""  # the host QEMU binds when none is given
GDB_SHORTHAND = "tcp::1234"  # what -s stands for
INET_SOCKET_PREFIXES = ("tcp:", "telnet:", "websocket:")  # legacy chardev: HOST:PORT[,opts]
INET_MIGRATION_PREFIXES = ("tcp:", "rdma:")  # -incoming SCHEME:HOST:PORT
# One inet_aton part that is zero: decimal, octal (leading 0) or hex (0x).
_ZERO_PART = re.compile(r"0+|0[xX]0+")


def is_wildcard(host: str) -> bool:
    """True if QEMU, binding to host, would listen on every address."""
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    host = host.partition("%")[0]  # an IPv6 zone does not narrow the address
    if host == EVERY_ADDRESS:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        parts = host.split(".")  # inet_aton: 1 to 4 numbers, the last fills the rest
        return len(parts) <= 4 and all(_ZERO_PART.fullmatch(p) for p in parts)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_unspecified


def listen_hosts(flag: str, value: str | None) -> list[str]:
    """The hosts an option binds listening sockets to (EVERY_ADDRESS when it names none)."""
    read = LISTENERS.get(flag)
    return read(value or "") if read else []


def inet_host(address: str) -> str:
    """HOST of 'HOST:PORT' or '[HOST]:PORT', as QEMU's inet_parse splits it."""
    if address.startswith("["):
        return address[1:].partition("]")[0]
    return address.partition(":")[0]


def _opts(value: str, flag: str = "") -> dict[str, str]:
    return dict(option_pairs(flag, value))


def _chardev(value: str) -> list[str]:
    opts = _opts(value, "-chardev")
    backend = opts.get(IMPLIED_KEY["-chardev"])
    if backend == "udp":  # always bound: to localaddr, else to every address
        return [opts.get("localaddr", EVERY_ADDRESS)]
    if backend == "socket" and is_on(opts.get("server")) and not {"path", "fd"} & opts.keys():
        return [opts.get("host", EVERY_ADDRESS)]
    return []


def _legacy_chardev(spec: str, *, always_server: bool = False) -> list[str]:
    """-serial/-monitor/... 'tcp:HOST:PORT,server=on', 'udp:RHOST:RPORT@LHOST:LPORT'."""
    spec = spec.removeprefix("mon:")  # the monitor multiplexed onto the device
    if spec.startswith("udp:"):
        _, at, local = spec.partition(",")[0].partition("@")
        return [inet_host(local) if at else EVERY_ADDRESS]
    for prefix in INET_SOCKET_PREFIXES:
        if spec.startswith(prefix):
            address, _, rest = spec.removeprefix(prefix).partition(",")
            if always_server or is_on(_opts(rest).get("server")):
                return [inet_host(address)]
    return []


def _gdb(spec: str) -> list[str]:
    # gdbstub makes any tcp: device a server (gdbserver_start adds server=on).
    return _legacy_chardev(spec, always_server=spec.startswith("tcp:"))


def _migration(uri: str) -> list[str]:
    for prefix in INET_MIGRATION_PREFIXES:
        if uri.startswith(prefix):
            return [inet_host(uri.removeprefix(prefix))]
    return []


def _vnc(value: str) -> list[str]:
    display, _, rest = value.partition(",")
    opts = _opts(rest)
    if display in ("none", "") or display.startswith("unix:") or is_on(opts.get("reverse")):
        return []  # no display, a unix socket, or QEMU connecting out to a viewer
    host = display.rpartition(":")[0]
    hosts = [host[1:-1] if host.startswith("[") else host]
    websocket = opts.get("websocket")
    if websocket is not None:  # 'PORT' or 'on' share the display's host
        hosts.append(inet_host(websocket) if ":" in websocket else hosts[0])
    return hosts


def _display(value: str) -> list[str]:
    return _vnc(value.removeprefix("vnc=")) if value.startswith("vnc=") else []


def _spice(value: str) -> list[str]:
    opts = _opts(value)
    if is_on(opts.get("unix")) or not {"port", "tls-port"} & opts.keys():
        return []
    return [opts.get("addr", EVERY_ADDRESS)]


def _hostfwd_host(rule: str) -> str:
    """HOSTADDR of '[tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT'."""
    return inet_host(rule.partition(":")[2].partition("-")[0])


def _netdev(flag: str) -> Callable[[str], list[str]]:
    def hosts(value: str) -> list[str]:
        pairs = option_pairs(flag, value)
        opts = dict(pairs)
        kind = opts.get(IMPLIED_KEY[flag])
        found = [_hostfwd_host(v) for k, v in pairs if k.split(".")[0] == "hostfwd"]
        if kind == "socket" and "listen" in opts:
            found.append(inet_host(opts["listen"]))
        if kind == "socket" and "udp" in opts:
            found.append(inet_host(opts.get("localaddr", EVERY_ADDRESS)))
        if kind == "stream" and is_on(opts.get("server")) and opts.get("addr.type") == "inet":
            found.append(opts.get("addr.host", EVERY_ADDRESS))
        if kind == "dgram" and opts.get("local.type") == "inet":
            found.append(opts.get("local.host", EVERY_ADDRESS))
        return found if kind in ("user", "socket", "stream", "dgram") else []

    return hosts


LISTENERS: dict[str, Callable[[str], list[str]]] = {
    "-chardev": _chardev,
    **dict.fromkeys(
        ("-serial", "-parallel", "-monitor", "-qmp", "-qmp-pretty", "-debugcon"), _legacy_chardev
    ),
    "-gdb": _gdb,
    "-s": lambda _: _gdb(GDB_SHORTHAND),
    "-incoming": _migration,
    "-vnc": _vnc,
    "-display": _display,
    "-spice": _spice,
    **{flag: _netdev(flag) for flag in ("-netdev", "-nic", "-net")},
}
