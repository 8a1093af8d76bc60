"""The bring-up half of the runner: plan.json's steps, up to COLO mode.

A mixin of Runner (orchestrate.py), which owns the state these methods use.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from colospec.runner import control
from colospec.runner.disks import image_size, prepare_disks
from colospec.runner.errors import RunError
from colospec.runner.qemu_check import check_qemu_async
from colospec.versions import defects_for

log = logging.getLogger("colospec.run")

UNIT_STEPS = {"prepare-disks", "prepare-network", "start-qemu"}
INDEPENDENT = {"check-qemu", "prepare-disks", "prepare-network"}


class BringUp:
    async def _run_steps(self) -> None:
        todo = [
            s for s in self.plan["steps"]
            if s["id"] not in self.done and s["kind"] != "watch"
            and not (self.attach and s["kind"] in UNIT_STEPS)  # the systemd units did those
        ]  # fmt: skip
        while todo:
            # Consecutive preparation steps touch different things: run them together.
            batch = [todo.pop(0)]
            while batch[0]["kind"] in INDEPENDENT and todo and todo[0]["kind"] in INDEPENDENT:
                batch.append(todo.pop(0))
            await asyncio.gather(*(self._run_step(step) for step in batch))

    async def _run_step(self, step: dict) -> None:
        t0 = time.monotonic()
        detail = await getattr(self, "_step_" + step["kind"].replace("-", "_"))(step)
        log.info("step %s: %s (%.0f ms)", step["id"], detail or "done", elapsed_ms(t0))
        self.done.append(step["id"])
        # At once: the peer may be waiting for exactly this step.
        self._report(urgent=True, done=self.done)

    async def _step_check_qemu(self, step: dict) -> str:
        q = self.plan["qemu"]
        cache = self.run_dir / "qemu-check.json"
        st = os.stat(q["binary"]) if os.path.exists(q["binary"]) else None
        # The same binary (inode, size, mtime) against the same requirements passed before.
        key = [q["binary"], st and [st.st_ino, st.st_size, st.st_mtime_ns], q["requires"]]
        cached = control.read_json(cache)
        if cached.get("key") == key:
            version, build, how = cached["version"], cached.get("build", ""), "checked before"
        else:
            facts = await check_qemu_async(q)
            version, build, how = facts.version, facts.build, "has what the plan uses"
            control.write_json(cache, {"key": key, "version": version, "build": build})
        for defect in defects_for(version, q["accel"], build):
            log.warning("known QEMU defect %s: %s — %s", defect.id, defect.summary, defect.fix)
        return f"{q['binary']} {version} {how}"

    async def _step_prepare_disks(self, step: dict) -> str:
        self.image_size = await asyncio.to_thread(prepare_disks, self.plan["disks"])
        scratch = self.plan["disks"]["scratch"]
        made = f", created {scratch['active']} and {scratch['hidden']}" if scratch else ""
        return f"base image {self.image_size} bytes{made}"

    async def _step_prepare_network(self, step: dict) -> str:
        self.created_links = await asyncio.to_thread(
            run_network, "network_up", self.plan["network"]
        )
        net = self.plan["network"]
        return f"{net['tap']} on {net['bridge']} (created: {', '.join(self.created_links) or '-'})"

    async def _step_start_qemu(self, step: dict) -> str:
        # Variables QEMU needs beyond ours, e.g. vm-ft's RDMA-Paxos membership (the qemu
        # unit gets the same from its EnvironmentFile=).
        extra = self.plan["qemu"].get("env")
        pid = self.qemu.start(self.arts.qemu_argv, env={**os.environ, **extra} if extra else None)
        return f"pid {pid}"

    async def _step_connect_qmp(self, step: dict) -> str:
        if self.qmp.runstate.name != "RUNNING":
            await self._connect_qmp()
        if self.image_size is None:
            self.image_size = image_size(self.plan["disks"]["base"]["path"])
        status = (await self._execute("query-status"))["status"]
        self._report(urgent=True, qemu="running", image_size=self.image_size)
        return f"QEMU {status}"

    async def _step_qmp(self, step: dict) -> str:
        commands = self.arts.script(step["script"])
        for command in commands:
            result = await self._execute(command["execute"], command.get("arguments"))
            if command["execute"] == "human-monitor-command" and result.strip() not in ("", "OK"):
                # HMP reports failures as text in a successful QMP reply.
                raise RunError(f"{step['script']}: HMP {command['arguments']['command-line']!r}"
                               f" failed: {result.strip()}")  # fmt: skip
        return f"{step['script']}: {len(commands)} commands"

    async def _step_wait_peer(self, step: dict) -> str:
        want = step["step"]
        waited = time.monotonic()
        while want not in self.heartbeat.peer.report.get("done", []):
            await self._check_own_qemu()
            if time.monotonic() - waited > 10:
                log.info("still waiting for %s to finish %s", self.plan["peer"]["name"], want)
                waited = time.monotonic()
            await self.heartbeat.changed(1.0)
        if self.image_size is None:
            self.image_size = image_size(self.plan["disks"]["base"]["path"])
        peer_size = self.heartbeat.peer.report.get("image_size")
        if peer_size != self.image_size:
            raise RunError(
                f"the disk images differ in size: {self.image_size} bytes here, {peer_size} "
                f"on {self.plan['peer']['name']} — give both hosts identical copies"
            )
        return f"{self.plan['peer']['name']} finished {want}; both images {peer_size} bytes"

    async def _step_wait_chardevs(self, step: dict) -> str:
        wanted = set(step["chardevs"])
        while True:
            await self._check_own_qemu()
            devs = {c["label"]: c["filename"] for c in await self._execute("query-chardev")}
            # A connected socket chardev's filename reads "tcp:A:P,server=on <-> B:Q".
            if all("<->" in devs.get(label, "") for label in wanted):
                return f"{', '.join(sorted(wanted))} connected"
            await asyncio.sleep(0.01)

    async def _step_wait_colo(self, step: dict) -> str:
        while True:
            await self._check_own_qemu()
            mode = (await self._execute("query-colo-status"))["mode"]
            if mode == step["mode"]:
                self.colo_active = True
                self._report(urgent=True, colo=mode)
                return f"COLO mode {mode}"
            await asyncio.sleep(0.01)

    async def _check_own_qemu(self) -> None:
        if self.stop_requested:
            raise asyncio.CancelledError
        if self.qemu.pid is not None and not self.qemu.alive:
            self._report(urgent=True, qemu="dead")
            raise RunError(f"QEMU exited ({self.qemu.exit_status()}) during bring-up")


def run_network(action: str, *args: Any) -> Any:
    # pyroute2 takes a tenth of a second to import; this runs in a worker thread, in
    # parallel with the other preparation steps, and its sync API keeps off our loop.
    from colospec.runner import network

    return getattr(network, action)(*args)


def elapsed_ms(t0: float) -> float:
    return (time.monotonic() - t0) * 1000
