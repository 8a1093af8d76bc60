"""TLS on the replication channels (README, "Security"): the credentials objects every
host's QEMU gets, and the option that puts one channel under them.

Each QEMU has both ends, whichever layout it starts in: a host is the server of the
channels its peer dials (its NBD export, migration's incoming side, colo-compare's
listeners) and the client of those it dials, and after a failover the roles turn. Both
verify the other end against the pair's CA (verify-peer=on): a client checks the server's
certificate names the address it dialled; a server accepts only a client certificate
from the same CA, which issued certificates for these two hosts alone.
"""

from __future__ import annotations

from typing import Any, Literal

from colospec.model import TLS_CREDS, TLS_FILES, TLS_KEYS, Host, Pair
from colospec.render.qemu_argv import opt

Endpoint = Literal["server", "client"]


def creds(pair: Pair, endpoint: Endpoint) -> dict[str, str]:
    """{"tls-creds": id} for a channel this host is the endpoint of; {} without TLS."""
    return {"tls-creds": TLS_CREDS[endpoint]} if pair.security.tls else {}


def objects(pair: Pair, host: Host) -> list[str]:
    """The host's two tls-creds-x509 objects, over its own certificate directory."""
    if pair.security.tls is None:
        return []
    where = pair.security.tls.host_dir(host)
    out: list[str] = []
    for endpoint, id_ in TLS_CREDS.items():
        props = {"id": id_, "endpoint": endpoint, "dir": where, "verify-peer": True}
        out += opt("-object", "tls-creds-x509", props)
    return out


def migration_parameters(pair: Pair, endpoint: Endpoint, peer: Host | None) -> dict[str, str]:
    """migrate-set-parameters' TLS part: the source names the address it dials, which
    the destination's certificate must carry."""
    if pair.security.tls is None:
        return {}
    return {**creds(pair, endpoint), **({"tls-hostname": peer.address} if peer else {})}


def qom_types(pair: Pair) -> tuple[str, ...]:
    """What the runner checks the binary for, beyond the flavour's own types."""
    return ("tls-creds-x509",) if pair.security.tls else ()


def plan_section(pair: Pair, host: Host) -> dict[str, Any]:
    """plan.json's tls: where this host's certificates are, for the runner to check
    before QEMU starts (never their contents); nothing without TLS."""
    if pair.security.tls is None:
        return {}
    files = sorted({name for names in TLS_FILES.values() for name in names})
    return {"tls": {"dir": pair.security.tls.host_dir(host), "files": files,
                    "private_keys": list(TLS_KEYS)}}  # fmt: skip
