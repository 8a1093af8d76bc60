"""The vm-ft layout on the installed (stock) QEMU: both hosts' command lines and the guide's
QMP sequences bring a firmware-only pair into COLO mode under KVM, and each failover
script, run by the survivor once its peer's QEMU is killed, leaves a running VM.

Both "hosts" share one network namespace (their addresses on one bridge), each with its own
tap and its own copy of the base image (one image file would fail nbd-server-add on its
lock). Two listening sockets stand in for RDMA-Paxos, which the vm-ft QEMU runs inside.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from qemu.qmp import ConnectError, QMPClient

from colospec.compile import check_spec, render_pair

from conftest import ROOT, qemu_args
from netns import ip, namespace
from test_real_qemu import prepare_files, rdma_paxos_stand_in, relocated_spec


async def connect(socket: str) -> QMPClient:
    client = QMPClient("colospec-test")
    for _ in range(200):
        with contextlib.suppress(OSError, ConnectError):
            await client.connect(socket)
            return client
        await asyncio.sleep(0.05)
    raise AssertionError(f"no QMP on {socket}")


async def run_script(client: QMPClient, commands: list[dict]) -> None:
    for command in commands:
        reply = await asyncio.wait_for(
            client.execute(command["execute"], command.get("arguments")), 20
        )
        if command["execute"] == "human-monitor-command":
            assert reply == "", (command, reply)  # HMP reports its errors as text


@contextlib.contextmanager
def vmft_pair():
    """(pair, files, {host: run dir}, {host: QEMU process}) of the example, started."""
    base = Path(tempfile.mkdtemp(prefix="cs-, q "))
    runs, procs = {}, {}
    try:
        data = yaml.safe_load((ROOT / "examples/vm-ft-seed.yaml").read_text())
        data["hosts"]["secondary"].update(tap="tap1", image="/srv/b/disk.raw")
        del data["vm"]["vnc"]  # two VNC servers on one loopback would collide
        source = base / "source.yaml"
        source.write_text(yaml.safe_dump(data))
        pair = check_spec(relocated_spec(source, base)).pair
        prepare_files(pair)
        files = render_pair(pair)
        with rdma_paxos_stand_in(pair), namespace() as ns:
            ip("link", "add", "br0", "type", "bridge", netns=ns)
            for host in pair.hosts:
                ip("addr", "add", f"{host.address}/24", "dev", "br0", netns=ns)
                ip("tuntap", "add", "dev", host.tap, "mode", "tap", netns=ns)
                ip("link", "set", host.tap, "master", "br0", "up", netns=ns)
            ip("link", "set", "br0", "up", netns=ns)
            for host in (pair.secondary, pair.primary):
                runs[host.name] = tempfile.mkdtemp(prefix="cs-run-")
                argv = [a.replace(pair.layout(host).run_dir, runs[host.name])
                        for a in qemu_args(files[f"{host.name}/qemu.args"].text)]  # fmt: skip
                procs[host.name] = subprocess.Popen(
                    ["ip", "netns", "exec", ns, *argv],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
            yield pair, files, runs, procs
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
        for run in runs.values():
            shutil.rmtree(run, ignore_errors=True)
        shutil.rmtree(base)


@pytest.mark.parametrize("lost", ["primary", "secondary"])
def test_guide_sequences_reach_colo_and_the_survivor_fails_over(lost):
    with vmft_pair() as (pair, files, runs, procs):

        def script(host, name):
            return json.loads(files[f"{host.name}/qmp/{name}"].text)

        async def scenario():
            qmp = {h.name: await connect(f"{runs[h.name]}/qmp.sock") for h in pair.hosts}
            a, b = pair.primary, pair.secondary
            try:
                await run_script(qmp[b.name], script(b, "10-nbd-export.json"))
                for name in ("05-liveness-beacon", "10-replication-child", "20-start-colo"):
                    await run_script(qmp[a.name], script(a, f"{name}.json"))
                for _ in range(300):
                    modes = [(await qmp[h.name].execute("query-colo-status"))["mode"]
                             for h in (a, b)]  # fmt: skip
                    if modes == ["primary", "secondary"]:
                        break
                    await asyncio.sleep(0.05)
                assert modes == ["primary", "secondary"]
                dead = getattr(pair, lost)
                survivor = pair.peer_of(dead)
                procs[dead.name].kill()
                failover = {
                    "primary": "91-failover-as-secondary",
                    "secondary": "90-failover-as-primary",
                }
                await run_script(qmp[survivor.name], script(survivor, f"{failover[lost]}.json"))
                for _ in range(100):
                    status = (await qmp[survivor.name].execute("query-status"))["status"]
                    if status == "running":
                        break
                    await asyncio.sleep(0.05)
                assert status == "running"
                colo = await qmp[survivor.name].execute("query-colo-status")
                assert colo["mode"] == "none"
            finally:
                for client in qmp.values():
                    with contextlib.suppress(Exception):
                        await client.disconnect()

        asyncio.run(asyncio.wait_for(scenario(), 120))
