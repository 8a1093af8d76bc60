"""Re-protection's artifacts (flavors/colo/rejoin.py): what must hold in every colo build.

test_rejoin.py runs them on a real pair; these say why they fit together.
"""

from __future__ import annotations

import json

import pytest

from colospec.compile import check_spec, render_pair
from colospec.qemu_opts import parse_opts

from conftest import COLO_VALID, qemu_args


def built(spec):
    pair = check_spec(spec).pair
    files = render_pair(pair)

    def script(host, rel):
        return json.loads(files[f"{host.name}/{rel}"].text)

    def argv(host, name):
        return qemu_args(files[f"{host.name}/{name}"].text)

    return pair, files, script, argv


def executes(commands):
    return [c["execute"] for c in commands]


@pytest.mark.parametrize("spec", COLO_VALID, ids=[p.stem for p in COLO_VALID])
def test_each_host_has_both_layouts_and_joins_with_its_secondary_one(spec):
    pair, files, script, argv = built(spec)
    for host in pair.hosts:
        plan = script(host, "plan.json")
        rejoin = plan["rejoin"]
        join_argv = argv(host, rejoin["args_file"])
        assert "-incoming" in join_argv, "a joining QEMU waits for the serving one's migration"
        start = [s for s in rejoin["steps"] if s["kind"] == "start-qemu"]
        assert [s["args_file"] for s in start] == [rejoin["args_file"]]
        other = "qemu-secondary.args" if host.role == "primary" else "qemu-primary.args"
        assert f"{host.name}/{other}" in files
        assert plan["layout"] == host.role
        # Its disk stack is a secondary's: fresh scratch disks over its own base image.
        assert rejoin["disks"]["base"]["path"] == host.image
        assert rejoin["disks"]["scratch"] is not None


@pytest.mark.parametrize("spec", COLO_VALID, ids=[p.stem for p in COLO_VALID])
def test_the_copy_goes_to_the_joining_peers_export(spec):
    pair, _, script, _ = built(spec)
    for host in pair.hosts:
        peer = pair.peer_of(host)
        resync = script(host, "plan.json")["resync"]
        mirror = script(host, resync["mirror"])
        target = mirror[0]["arguments"]
        assert target["server"]["host"] == peer.address
        assert target["server"]["port"] == str(pair.replication.ports.nbd)
        steps = script(peer, "plan.json")["rejoin"]["steps"]
        export = script(peer, next(s["script"] for s in steps if s["id"] == "join-nbd-export"))
        names = [c["arguments"].get("name") for c in export if "name" in c.get("arguments", {})]
        assert target["export"] in names, "the mirror writes to the export the peer opens"
        job = mirror[1]["arguments"]
        assert (job["sync"], job["target"], job["job-id"]) == ("full", target["node-name"],
                                                              resync["job"])  # fmt: skip
        # The replication child dials the same export; migrate goes to the peer.
        attach = script(host, resync["attach"])
        assert executes(attach) == ["blockdev-add", "stop", "block-job-cancel"]
        for layout in ("primary", "secondary"):
            colo = script(host, resync["colo"][layout])
            assert executes(colo)[-1] == "migrate"
            assert colo[-1]["arguments"]["uri"].startswith(f"tcp:{peer.address}:")


@pytest.mark.parametrize("spec", COLO_VALID, ids=[p.stem for p in COLO_VALID])
def test_filters_go_before_the_rewriter_in_the_secondary_layout(spec):
    pair, _, script, argv = built(spec)
    for host in pair.hosts:
        resync = script(host, "plan.json")["resync"]
        secondary_layout = argv(host, script(host, "plan.json")["rejoin"]["args_file"])
        objects = [parse_opts(a, "qom-type") for a in secondary_layout if "filter-rewriter" in a]
        rewriter = [o["id"] for o in objects if o.get("qom-type") == "filter-rewriter"]
        for layout, placed in (("secondary", True), ("primary", False)):
            filters = [c["arguments"] for c in script(host, resync["colo"][layout])
                       if c["execute"] == "object-add"
                       and c["arguments"]["qom-type"].startswith("filter-")]  # fmt: skip
            assert len(filters) == 3
            for f in filters:
                assert ("position" in f) is placed
                if placed:
                    assert f["position"] == f"id={rewriter[0]}"


@pytest.mark.parametrize("spec", COLO_VALID, ids=[p.stem for p in COLO_VALID])
def test_rollback_undoes_everything_and_resumes_the_guest(spec):
    pair, _, script, _ = built(spec)
    for host in pair.hosts:
        resync = script(host, "plan.json")["resync"]
        rollback = script(host, resync["rollback"])
        assert executes(rollback)[-1] == "cont"
        added = {c["arguments"]["id"] for layout in ("primary", "secondary")
                 for c in script(host, resync["colo"][layout])
                 if c["execute"] == "object-add"}  # fmt: skip
        deleted = {c["arguments"]["id"] for c in rollback if c["execute"] == "object-del"}
        assert added == deleted
        # Each yank names one instance: a yank naming a missing one fails whole.
        assert all(len(c["arguments"]["instances"]) == 1 for c in rollback
                   if c["execute"] == "yank")  # fmt: skip


@pytest.mark.parametrize("spec", COLO_VALID, ids=[p.stem for p in COLO_VALID])
def test_takeover_leaves_a_beacon_for_the_joining_peers_probe(spec):
    pair, _, script, _ = built(spec)
    for host in pair.hosts:
        takeover = script(host, "qmp/91-failover-as-secondary.json")
        assert executes(takeover)[0] == "nbd-server-stop"
        beacon = takeover[-1]
        assert beacon["execute"] == "nbd-server-start"
        addr = beacon["arguments"]["addr"]["data"]
        probe = script(pair.peer_of(host), "plan.json")["heartbeat"]["peer_qemu_probe"]
        assert (addr["host"], int(addr["port"])) == (probe["address"], probe["port"])


@pytest.mark.parametrize("spec", COLO_VALID, ids=[p.stem for p in COLO_VALID])
def test_either_host_watches_its_secondarys_output_once_it_is_primary(spec):
    """After re-protection the spec's secondary is the COLO primary: its runner must watch
    for a silent secondary there too (rule secondary-silent), on its own compare listener."""
    pair, _files, script, argv = built(spec)
    for host in pair.hosts:
        output = script(host, "plan.json")["watch"]["secondary_output"]
        listener = [a for a in argv(host, "qemu-primary.args" if host.role == "secondary"
                                    else "qemu.args") if "id=compare1" in a]  # fmt: skip
        assert output == {"address": host.address, "port": pair.replication.ports.compare}
        assert f"host={host.address},port={output['port']}" in listener[0]
