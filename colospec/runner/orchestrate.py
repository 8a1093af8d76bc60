"""`colospec run`: bring one host of a COLO pair up from its plan, watch, fail over.

The plan's steps run in order; then the watch loop feeds what it knows (own QEMU,
peer heartbeats, probes of the peer's QEMU, QMP events) to decide() and carries out
the answer. Every step and decision is one log line with its timing and reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from qemu.qmp import ConnectError, EventListener, ExecuteError, QMPClient, QMPError

from colospec.runner import control
from colospec.runner.artifacts import HostArtifacts
from colospec.runner.decide import Action, Situation, decide
from colospec.runner.disks import image_size, prepare_disks
from colospec.runner.heartbeat import Heartbeat, HeartbeatPath
from colospec.runner.probe import probe_qemu
from colospec.runner.qemu_check import check_qemu_async
from colospec.runner.qemu_proc import QemuProcess
from colospec.runner.sdnotify import sd_notify
from colospec.versions import defects_for

log = logging.getLogger("colospec.run")

EXIT_OK, EXIT_FAILURE, EXIT_QEMU_GONE, EXIT_FENCED = 0, 1, 3, 4
UNIT_STEPS = {"prepare-disks", "prepare-network", "start-qemu"}
INDEPENDENT = {"check-qemu", "prepare-disks", "prepare-network"}
QMP_TIMEOUT_S = 30
STOP_TIMEOUT_S = 10
# Events after which the watch loop looks again at once instead of at its next tick.
WAKE_EVENTS = {"COLO_EXIT", "SHUTDOWN", "STOP", "RESUME", "MIGRATION"}


class RunError(Exception):
    """A step failed; the message says what and what to do."""


class Runner:
    def __init__(self, arts: HostArtifacts, *, attach: bool = False):
        self.arts, self.plan, self.attach = arts, arts.plan, attach
        self.run_dir = arts.run_dir
        q = self.plan["qemu"]
        self.qemu = QemuProcess(q["binary"], q["pidfile"], q["qmp_socket"])
        self.qmp = QMPClient(f"colospec-{arts.host}")
        self.role: str = arts.role
        self.alone = False  # serving without a partner after a failover
        self.colo_active = False
        self.done: list[str] = []
        self.created_links: list[str] | None = None
        self.owns_qemu = not attach
        self.wake = asyncio.Event()
        self.failover_lock = asyncio.Lock()
        self.probe: tuple[float, str] | None = None  # (time, result) of the latest probe
        self._probe_task: asyncio.Task | None = None
        self.image_size: int | None = None
        hb = self.plan["heartbeat"]
        self.heartbeat = Heartbeat(
            pair=arts.pair,
            me=arts.host,
            paths=[HeartbeatPath(p["name"], p["local"], p["peer"]) for p in hb["paths"]],
            port=hb["port"],
            interval_ms=hb["interval_ms"],
            missed=hb["missed"],
            on_peer_update=self.wake.set,
        )
        self.interval = hb["interval_ms"] / 1000
        self.budget = self.interval * hb["missed"]

    # ----- lifecycle -------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()

        def stop() -> None:
            # Python 3.11's wait_for can swallow a cancel that races with its inner
            # future; the flag makes the loops notice on their next turn regardless.
            self.stop_requested = True
            self.wake.set()
            main.cancel()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.run_dir.chmod(0o700)
        state = control.read_state(self.run_dir)
        server = None
        try:
            self._report(qemu="starting", image_size=None)
            await self.heartbeat.start()
            server = await control.serve_control(self.run_dir, self._control)
            adopted = await self._adopt_or_prepare(state)
            if not adopted:
                await self._run_steps()
            sd_notify(READY="1", STATUS=f"{self.role}, COLO {'on' if self.colo_active else 'off'}")
            return await self._watch()
        except asyncio.CancelledError:
            log.info("stopping: signal received")
            await self._shutdown()
            return EXIT_OK
        except Exception as exc:  # RunError, or a disk/network/QEMU check that failed
            log.error("%s", exc)
            log.debug("details", exc_info=True)
            await self._shutdown()
            return EXIT_FAILURE
        finally:
            if server:
                server.close()
                control.control_socket(self.run_dir).unlink(missing_ok=True)
            await self.heartbeat.stop()
            with contextlib.suppress(Exception):
                await self.qmp.disconnect()

    async def _adopt_or_prepare(self, state: dict[str, Any]) -> bool:
        """Adopt a QEMU already running for this host (a restarted runner); True if it
        is past setup so the steps can be skipped."""
        pid = self.qemu.find_running()
        if pid is None and self.attach:
            pid = await self._wait_for_unit_qemu()
        if pid is None:
            self._remove_stale_files()
            return False
        self.qemu.adopt(pid)
        await self._connect_qmp()
        colo = (await self._execute("query-colo-status"))["mode"]
        status = (await self._execute("query-status"))["status"]
        self.image_size = image_size(self.plan["disks"]["base"]["path"])
        log.info("adopted QEMU pid %d: %s, COLO mode %s", pid, status, colo)
        if colo in ("primary", "secondary"):
            self.role, self.colo_active = colo, True
        elif state.get("alone"):
            self.role, self.alone = state.get("role", self.role), True
        elif status in ("prelaunch", "inmigrate"):
            # Fresh QEMU (e.g. started by its systemd unit): run the QMP steps.
            self.done = ["check-qemu", "disks", "network", "qemu"]
            return False
        else:
            raise RunError(
                f"QEMU pid {pid} is {status} without COLO and this host never failed over: "
                "stop it and start the pair again"
            )
        self.done = [s["id"] for s in self.plan["steps"] if s["kind"] != "watch"]
        self._report(qemu="running", colo=colo, alone=self.alone, done=self.done)
        return True

    async def _wait_for_unit_qemu(self) -> int | None:
        """With --attach, QEMU comes from its systemd unit: wait until its pidfile shows."""
        deadline = time.monotonic() + QMP_TIMEOUT_S
        while time.monotonic() < deadline:
            pid = self.qemu.find_running()
            if pid is not None:
                return pid
            await asyncio.sleep(0.05)
        raise RunError(
            f"no QEMU for {self.arts.host} appeared within {QMP_TIMEOUT_S} s "
            f"(--attach expects {self.plan['units']['qemu']} to start it)"
        )

    def _remove_stale_files(self) -> None:
        for name in ("qmp.sock", "qemu.pid", "console.sock", "compare0.sock", "compare_out.sock"):
            path = self.run_dir / name
            if path.exists() or path.is_symlink():
                log.info("removing stale %s from an earlier run", path)
                path.unlink()

    async def _shutdown(self) -> None:
        if self._probe_task:
            self._probe_task.cancel()
        if self.owns_qemu and self.qemu.alive:
            t0 = time.monotonic()
            with contextlib.suppress(QMPError, OSError, TimeoutError):
                await asyncio.wait_for(self.qmp.execute("quit"), 5)
            if not await self.qemu.wait_exit(STOP_TIMEOUT_S):
                log.warning("QEMU did not quit within %d s: killing it", STOP_TIMEOUT_S)
                self.qemu.kill()
                await self.qemu.wait_exit(5)
            log.info("QEMU stopped (%.0f ms)", _ms(t0))
        if not self.qemu.alive:
            # Tell the peer at once, so a stopped primary is taken over immediately.
            self._report(urgent=True, qemu="dead")
        if self.owns_qemu and self.created_links is not None:
            await asyncio.to_thread(
                _network, "network_down", self.plan["network"], self.created_links
            )
            log.info("network: removed %s", ", ".join(self.created_links) or "nothing")

    # ----- bring-up steps --------------------------------------------------------------

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
        log.info("step %s: %s (%.0f ms)", step["id"], detail or "done", _ms(t0))
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
        self.created_links = await asyncio.to_thread(_network, "network_up", self.plan["network"])
        net = self.plan["network"]
        return f"{net['tap']} on {net['bridge']} (created: {', '.join(self.created_links) or '-'})"

    async def _step_start_qemu(self, step: dict) -> str:
        env = None
        if self.plan["qemu"].get("env_file"):  # e.g. vm-ft's RDMA-Paxos settings
            env = {
                **os.environ,
                **read_env_file(self.arts.directory / self.plan["qemu"]["env_file"]),
            }
        pid = self.qemu.start(self.arts.qemu_argv, env=env)
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

    # ----- QMP -------------------------------------------------------------------------

    async def _connect_qmp(self) -> None:
        sock = self.plan["qemu"]["qmp_socket"]
        deadline = time.monotonic() + QMP_TIMEOUT_S
        while True:
            try:
                await self.qmp.connect(sock)
                break
            except ConnectError as exc:
                if not self.qemu.alive or time.monotonic() > deadline:
                    raise RunError(f"cannot reach QEMU's QMP socket {sock}: {exc}") from None
                await asyncio.sleep(0.005)
        self.events = EventListener()
        self.qmp.register_listener(self.events)
        self._events_task = asyncio.create_task(self._read_events(), name="qmp-events")

    async def _read_events(self) -> None:
        with contextlib.suppress(asyncio.CancelledError, QMPError):
            async for event in self.events:
                # STOP/RESUME come with every checkpoint: only --verbose shows them.
                quiet = event["event"] in ("STOP", "RESUME")
                log.log(logging.DEBUG if quiet else logging.INFO,
                        "QMP event %s %s", event["event"], event.get("data", {}))  # fmt: skip
                if event["event"] == "RESUME" and self.colo_active:
                    self.checkpoints += 1  # each checkpoint stops and resumes the VM
                if event["event"] in WAKE_EVENTS:
                    self.colo_exit_seen = self.colo_exit_seen or event["event"] == "COLO_EXIT"
                    self.wake.set()

    colo_exit_seen = False
    checkpoints = 0
    stop_requested = False

    async def _execute(self, name: str, arguments: dict | None = None, timeout: float = 30):
        t0 = time.monotonic()
        log.debug("QMP -> %s %s", name, arguments or "")
        try:
            result = await asyncio.wait_for(self.qmp.execute(name, arguments), timeout)
        except ExecuteError as exc:
            raise RunError(f"QMP {name} failed: {exc.error_class}: {exc.error.desc}") from None
        except (QMPError, OSError, TimeoutError) as exc:
            raise RunError(f"QMP {name}: no answer from QEMU ({type(exc).__name__})") from None
        log.debug("QMP <- %s %s (%.1f ms)", name, result, _ms(t0))
        return result

    # ----- watch and failover ----------------------------------------------------------

    async def _watch(self) -> int:
        log.info("watching: %s, COLO %s", self.role, "on" if self.colo_active else "off (alone)")
        started = time.monotonic()
        while True:
            if self.stop_requested:
                raise asyncio.CancelledError
            # A late datagram or two is normal; longer silence (or a broken COLO stream)
            # asks the peer's QEMU directly.
            if self.heartbeat.longest_path_silence() > 1.5 * self.interval or self.colo_exit_seen:
                self._start_probe()
            situation = self._situation(time.monotonic() - started)
            action = decide(situation)
            if action.kind != "none":
                code = await self._act(action)
                if code is not None:
                    return code
            elif action.reason and action.reason != getattr(self, "_last_hold", None):
                log.warning("holding: %s", action.reason)
            self._last_hold = action.reason
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.interval / 2)
            if self.qemu.exited.is_set():
                continue

    def _situation(self, watching_for: float) -> Situation:
        report = self.heartbeat.peer.report
        probe = None
        if self.probe and time.monotonic() - self.probe[0] < self.budget:
            probe = self.probe[1]
        return Situation(
            role=self.role,
            colo_active=self.colo_active,
            own_qemu_alive=self.qemu.alive,
            peer_qemu=report.get("qemu"),
            peer_alone=bool(report.get("alone")),
            peer_probe=probe,
            paths=tuple(p.name for p in self.heartbeat.paths),
            alive_paths=tuple(self.heartbeat.alive_paths()),
            watching_for_s=watching_for,
            budget_s=self.budget,
        )

    def _start_probe(self) -> None:
        if self._probe_task and not self._probe_task.done():
            return
        if (
            self.probe
            and time.monotonic() - self.probe[0] < self.interval
            and not self.colo_exit_seen
        ):
            return  # one probe per interval is plenty; each costs QEMU a connection
        target = self.plan["heartbeat"]["peer_qemu_probe"]

        async def run() -> None:
            # A QEMU busy loading a checkpoint can take a moment to greet.
            result = await probe_qemu(target["address"], target["port"], self.budget / 2)
            if not self.probe or self.probe[1] != result:
                log.info("probe of the peer's QEMU at %s:%s: %s", *target.values(), result)
            self.probe = (time.monotonic(), result)
            self.wake.set()

        self._probe_task = asyncio.create_task(run(), name="probe")

    async def _act(self, action: Action) -> int | None:
        if action.kind == "exit":
            self._report(urgent=True, qemu="dead")
            log.error(
                "%s (%s): nothing left to protect here", action.reason, self.qemu.exit_status()
            )
            return EXIT_QEMU_GONE
        if action.kind == "fence":
            log.warning("fencing: %s", action.reason)
            self.colo_active = False
            with contextlib.suppress(QMPError, OSError, TimeoutError, RunError):
                await self._execute("quit", timeout=5)
            await self.qemu.wait_exit(STOP_TIMEOUT_S)
            self.qemu.kill()
            self._save_state(role="fenced", failover=None)
            self._report(urgent=True, qemu="dead", role="fenced")
            return EXIT_FENCED
        await self._failover(action.reason)
        return None

    async def _failover(self, reason: str) -> dict[str, Any]:
        async with self.failover_lock:
            if not self.colo_active:
                return {"ok": False, "error": "not in COLO mode: nothing to fail over"}
            was = self.role
            key = "as_primary" if was == "primary" else "as_secondary"
            script = self.plan["failover"][key]["script"]
            log.warning("FAILOVER as %s: %s — running %s", was, reason, script)
            t0 = time.monotonic()
            failed = []
            for command in self.arts.script(script):
                try:
                    await self._execute(command["execute"], command.get("arguments"), timeout=10)
                except RunError as exc:
                    failed.append(command["execute"])
                    log.warning("failover: %s (continuing)", exc)
            took = _ms(t0)
            status = await self._wait_running()
            mode = (await self._execute("query-colo-status"))["mode"]
            self.role, self.alone, self.colo_active = "primary", True, False
            self._save_state(role="primary", failover={
                "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "reason": reason, "from_role": was, "took_ms": round(took, 1),
                "failed_commands": failed,
            })  # fmt: skip
            self._report(urgent=True, role="primary", colo=mode, alone=True)
            sd_notify(STATUS=f"primary (alone) after failover: {reason}")
            log.warning(
                "failover done in %.0f ms: now primary, VM %s, COLO mode %s", took, status, mode
            )
            return {"ok": True, "took_ms": round(took, 1), "vm_status": status, "colo_mode": mode}

    async def _wait_running(self, timeout: float = 5) -> str:
        """The VM's run state once it leaves "colo" (a checkpoint the COLO thread finishes
        after x-colo-lost-heartbeat), or whatever it is after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            status = (await self._execute("query-status"))["status"]
            if status != "colo" or time.monotonic() > deadline:
                return status
            await asyncio.sleep(0.01)

    # ----- reporting -------------------------------------------------------------------

    def _report(self, urgent: bool = False, **fields: Any) -> None:
        fields.setdefault("role", self.role)
        self.heartbeat.update(urgent=urgent, **fields)

    def _save_state(self, role: str, failover: dict | None) -> None:
        state = control.read_state(self.run_dir)
        state.update(role=role, alone=True, qemu_pid=self.qemu.pid)
        if failover:
            state["last_failover"] = failover
        control.write_state(self.run_dir, state)

    async def _control(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        if cmd == "status":
            return await self._status()
        if cmd == "qmp":
            # For operators and tests: one QMP command through the runner's connection
            # (QEMU's monitor takes one client at a time). Root-only socket, as QMP itself.
            try:
                result = await self._execute(request["execute"], request.get("arguments"))
            except (RunError, KeyError) as exc:
                return {"ok": False, "error": str(exc)}
            return {"ok": True, "return": result}
        if cmd == "failover":
            if self.role == "secondary" and not request.get("force"):
                report = self.heartbeat.peer.report
                if self.heartbeat.alive_paths() and report.get("qemu") == "running":
                    return {"ok": False, "error": (
                        f"the primary {self.plan['peer']['name']} is alive: promoting this "
                        "secondary would make two primaries; stop the primary first, or run "
                        "`colospec failover` there to drop this secondary (--force overrides)"
                    )}  # fmt: skip
            return await self._failover("requested by the operator")
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    async def _status(self) -> dict[str, Any]:
        colo = vm = None
        with contextlib.suppress(RunError):
            colo = (await self._execute("query-colo-status", timeout=2))["mode"]
            vm = (await self._execute("query-status", timeout=2))["status"]
        return {
            "role": self.role,
            "colo_mode": colo,
            "vm_status": vm,
            "qemu_pid": self.qemu.pid if self.qemu.alive else None,
            "peer": {
                "name": self.plan["peer"]["name"],
                "reachable": bool(self.heartbeat.alive_paths()),
                "paths": self.heartbeat.alive_paths(),
            },
            "last_failover": control.read_state(self.run_dir).get("last_failover"),
            "checkpoints": self.checkpoints,
        }


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines, as systemd's EnvironmentFile= reads them (no shell expansion)."""
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";")) and "=" in line:
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip().strip('"')
    return env


def _network(action: str, *args: Any) -> Any:
    # pyroute2 takes a tenth of a second to import; this runs in a worker thread, in
    # parallel with the other preparation steps, and its sync API keeps off our loop.
    from colospec.runner import network

    return getattr(network, action)(*args)


def _ms(t0: float) -> float:
    return (time.monotonic() - t0) * 1000


def run_host(directory: Path, arts: HostArtifacts, *, attach: bool) -> int:
    return asyncio.run(Runner(arts, attach=attach).run())
