"""A minimal hand-written COLO bring-up, for comparison with `colospec run` (bench/bringup.py).

Does what an operator's script would: scratch disks, taps, both QEMUs from the same
qemu.args, then the same qmp/*.json scripts in order over qemu.qmp, until both QEMUs
report COLO mode. No checks, no heartbeats, no watching. Prints time.monotonic() (the
system-wide CLOCK_MONOTONIC) at the moment both QEMUs are in COLO mode, so the caller
times it from its own spawn of this process, Python start-up and imports included, as
it times the runners.
usage: hand_driver.py PRIMARY_DIR PRIMARY_NETNS SECONDARY_DIR SECONDARY_NETNS
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

from qemu.qmp import ConnectError, QMPClient


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def args_of(host_dir: Path) -> list[str]:
    return [a for a in (host_dir / "qemu.args").read_text().splitlines() if not a.startswith("#")]


async def start(host_dir: Path, netns: str) -> QMPClient:
    plan = json.loads((host_dir / "plan.json").read_text())
    Path(plan["qemu"]["run_dir"]).mkdir(parents=True, exist_ok=True)
    scratch = plan["disks"]["scratch"]
    if scratch:
        info = subprocess.run(["qemu-img", "info", "--output=json", plan["disks"]["base"]["path"]],
                              check=True, capture_output=True, text=True).stdout  # fmt: skip
        size = str(json.loads(info)["virtual-size"])
        for disk in (scratch["active"], scratch["hidden"]):
            sh("qemu-img", "create", "-q", "-f", "qcow2", disk, size)
    tap, bridge = plan["network"]["tap"], plan["network"]["bridge"]
    sh("ip", "-n", netns, "tuntap", "add", "dev", tap, "mode", "tap")
    sh("ip", "-n", netns, "link", "set", tap, "master", bridge, "up")
    subprocess.Popen(["ip", "netns", "exec", netns, *args_of(host_dir)],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    client = QMPClient("hand")
    while True:
        try:
            await client.connect(plan["qemu"]["qmp_socket"])
            return client
        except ConnectError:
            await asyncio.sleep(0.005)


async def run_script(client: QMPClient, host_dir: Path, name: str) -> None:
    for command in json.loads((host_dir / "qmp" / name).read_text()):
        await client.execute(command["execute"], command.get("arguments"))


async def wait_mode(client: QMPClient, mode: str) -> None:
    while (await client.execute("query-colo-status"))["mode"] != mode:
        await asyncio.sleep(0.01)


async def main(primary: Path, pns: str, secondary: Path, sns: str) -> float:
    # The secondary's redirectors dial the primary's QEMU: start that one first.
    p = await start(primary, pns)
    s = await start(secondary, sns)
    await asyncio.gather(run_script(s, secondary, "10-nbd-export.json"),
                         run_script(p, primary, "05-liveness-beacon.json"))  # fmt: skip
    await run_script(p, primary, "10-replication-child.json")
    while True:  # the secondary's redirectors must be connected first
        devs = {c["label"]: c["filename"] for c in await p.execute("query-chardev")}
        if "<->" in devs["mirror0"] and "<->" in devs["compare1"]:
            break
        await asyncio.sleep(0.01)
    await run_script(p, primary, "20-start-colo.json")
    await asyncio.gather(wait_mode(p, "primary"), wait_mode(s, "secondary"))
    done = time.monotonic()
    for client in (p, s):
        with contextlib.suppress(Exception):  # QEMU hangs up as it quits
            await client.execute("quit")
        with contextlib.suppress(Exception):
            await client.disconnect()
    return done


if __name__ == "__main__":
    a, an, b, bn = sys.argv[1:5]
    print(f"{asyncio.run(main(Path(a), an, Path(b), bn)):.4f}")
