"""QMP command scripts of the vm-ft layout: the guide's steps 3 and 4, plus failover.

Setup is the guide's, command for command (without qmp_capabilities, which the client
negotiates): the secondary exports its base drive with nbd-server-add; the primary adds the
replication child with HMP drive_add, as the guide does, and starts COLO. colospec adds what
its runner needs: the liveness beacon (as in the colo flavour) and failover scripts. The
spellings come from the guide's QEMU's row in colospec/versions.py (a 2.7-era fork).
"""

from __future__ import annotations

from colospec import model as m
from colospec.flavors.vmft import ids
from colospec.model import Host, Pair
from colospec.render.qmp import (
    Command,
    add_replication_child,
    command,
    drop_replication_child,
    liveness_beacon,
    migrate,
    nbd_server_start,
    script_files,
    set_capabilities,
    takeover_as_secondary,
)
from colospec.versions import known_syntax


def qmp_scripts(pair: Pair, host: Host) -> dict[str, list[Command]]:
    syntax = known_syntax(pair.qemu.version, pair.flavor)
    if host.role == "secondary":
        # The guide's step 3.
        assert syntax.nbd_export == "nbd-server-add", "the guide's export"
        export = command("nbd-server-add", {"device": m.QUORUM_ID, "writable": True})
        setup = {"nbd-export": [nbd_server_start(pair, host), export]}
    else:
        # The guide's step 4: the secondary's disk as the quorum's second child, then COLO.
        child = syntax.replication_child, m.QUORUM_ID, ids.REPLICATION_NODE
        setup = {
            "liveness-beacon": liveness_beacon(pair, host),
            "replication-child": add_replication_child(pair, *child),
            "start-colo": [set_capabilities(syntax.colo_capabilities), migrate(pair)],
        }
    # No colo-compare or filters on the primary to remove: in this layout RDMA-Paxos, not
    # QEMU, handles the packets.
    as_primary = [
        *drop_replication_child(syntax.replication_child, ids.REPLICATION_NODE),
        command("x-colo-lost-heartbeat"),
    ]
    return script_files(setup, as_primary, takeover_as_secondary())
