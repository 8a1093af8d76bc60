"""The installed QEMU accepts what colospec generates: QMP scripts and each host's command line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from qemu.qmp import ConnectError, QMPClient

from colospec.certs import make_pair_certs
from colospec.compile import check_spec, render_pair
from colospec.model import Pair

from conftest import ALL_VALID, qemu_args, rendered
from netns import add_bridge, add_tap, namespace
from qmp_schema import QmpSchema

QEMU = "/usr/bin/qemu-system-x86_64"


async def qmp_session(socket: str, *commands: str | tuple[str, dict]) -> list:
    client = QMPClient("colospec-test")
    for _ in range(200):  # a hang guard: QEMU under load can take seconds to listen
        try:
            await client.connect(socket)
            break
        except (OSError, ConnectError):
            await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"no QMP on {socket}")
    try:
        return [
            await (client.execute(*c) if isinstance(c, tuple) else client.execute(c))
            for c in commands
        ]
    finally:
        # After "quit", QEMU may close the socket before the client does (seen with -qmp).
        with contextlib.suppress(EOFError):
            await client.disconnect()


@pytest.fixture(scope="module")
def qemu_schema():
    """query-qmp-schema and QOM types of the installed QEMU."""
    with tempfile.TemporaryDirectory(prefix="cs-") as tmp:
        sock = f"{tmp}/qmp.sock"
        proc = subprocess.Popen(
            [
                QEMU,
                "-S",
                "-nodefaults",
                "-display",
                "none",
                "-machine",
                "none",
                "-qmp",
                f"unix:{sock},server=on,wait=off",
            ]
        )
        try:
            schema, types = asyncio.run(qmp_session(sock, "query-qmp-schema", "qom-list-types"))
        finally:
            proc.kill()
            proc.wait()
    return QmpSchema(schema), {t["name"] for t in types}


@pytest.mark.parametrize("spec", ALL_VALID, ids=[p.stem for p in ALL_VALID])
def test_every_qmp_command_and_argument_exists_in_installed_qemu(spec, qemu_schema):
    schema, _ = qemu_schema
    _, files = rendered(spec)
    scripts = {rel: json.loads(a.text) for rel, a in files.items() if "/qmp/" in rel}
    assert scripts
    for rel, commands in scripts.items():
        for command in commands:
            assert schema.check(command) == [], (rel, command)


def test_schema_checker_catches_mistakes(qemu_schema):
    schema, _ = qemu_schema
    assert schema.check({"execute": "x-colo-lost-heartbeat"}) == []
    assert schema.check({"execute": "no-such-thing"}) == ["no-such-thing: no such command"]
    assert schema.check({"execute": "object-del", "arguments": {"idd": "x"}}) == [
        "object-del: unknown argument 'idd'",
        "object-del: missing argument 'id'",
    ]
    bad_port = {
        "execute": "nbd-server-start",
        "arguments": {"addr": {"type": "inet", "data": {"host": "10.0.0.1", "port": 8889}}},
    }
    assert schema.check(bad_port) == ["nbd-server-start.addr.data.port: 8889 is not string"]


@pytest.mark.parametrize("spec", ALL_VALID, ids=[p.stem for p in ALL_VALID])
def test_plan_requirements_exist_in_installed_qemu(spec, qemu_schema):
    schema, qom_types = qemu_schema
    _, files = rendered(spec)
    plan = json.loads(next(a.text for rel, a in files.items() if rel.endswith("plan.json")))
    for command in plan["qemu"]["requires"]["commands"]:
        assert schema.command(command), command
    assert set(plan["qemu"]["requires"]["qom_types"]) <= qom_types


def fake_bzimage(path: Path) -> None:
    """The smallest file QEMU's x86 loader takes for a Linux kernel (never executed: -S)."""
    image = bytearray(64 * 1024)
    image[0x1F1] = 4
    image[0x1FE:0x200] = b"\x55\xaa"
    image[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", image, 0x206, 0x020F)
    image[0x211] = 0x01
    struct.pack_into("<I", image, 0x22C, 0x37FFFFFF)
    path.write_bytes(bytes(image))


def relocated_spec(spec: Path, base: Path) -> Path:
    """The spec with every host path moved under base (whose name has a comma and a space)."""
    data = yaml.safe_load(spec.read_text())
    vm = data["vm"]

    def move(p: str) -> str:
        return str(base / p.lstrip("/"))

    vm["disk"]["image"] = move(vm["disk"]["image"])
    if "kernel" in vm:
        for key in ("path", "initrd"):
            if key in vm["kernel"]:
                vm["kernel"][key] = move(vm["kernel"][key])
    for host in data["hosts"].values():
        host["scratch_dir"] = move(host["scratch_dir"])
        if "image" in host:
            host["image"] = move(host["image"])
    if "tls" in data.get("security", {}):
        data["security"]["tls"]["dir"] = str(base / "tls")
    if "vmft" in data:
        # The installed QEMU stands in for the vm-ft build; its tap scripts and RDMA-Paxos's
        # sockets (stood in for by prepare_files) move under base like every other path.
        vmft = data["vmft"]
        data["qemu"]["binary"] = QEMU
        scripts = vmft.setdefault("tap_scripts", {})
        sockets = vmft.setdefault("sockets", {})
        scripts["up"] = move(scripts.get("up", "/etc/qemu-ifup"))
        scripts["down"] = move(scripts.get("down", "/etc/qemu-ifdown"))
        sockets["mirror"] = move(sockets.get("mirror", "/dev/shm/mirror.sock"))
        sockets["redirector"] = move(sockets.get("redirector", "/dev/shm/redirector.sock"))
    out = base / "spec.yaml"
    out.write_text(yaml.safe_dump(data))
    return out


def prepare_files(pair: Pair) -> None:
    fmt = pair.vm.disk.format
    for host in pair.hosts:
        Path(host.image).parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", fmt, host.image, "64M"], check=True)
        lay = pair.layout(host)
        Path(host.scratch_dir).mkdir(parents=True, exist_ok=True)
        for disk in (lay.active_disk, lay.hidden_disk):
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, "64M"], check=True)
    if pair.vm.kernel:
        Path(pair.vm.kernel.path).parent.mkdir(parents=True, exist_ok=True)
        fake_bzimage(Path(pair.vm.kernel.path))
        if pair.vm.kernel.initrd:
            Path(pair.vm.kernel.initrd).write_bytes(b"\0" * 4096)
    if pair.security.tls:
        # QEMU loads and checks them when it creates its tls-creds-x509 objects.
        make_pair_certs(pair, Path(pair.security.tls.dir))
    if pair.vmft:
        for script in (pair.vmft.tap_up, pair.vmft.tap_down):
            # colospec puts the tap on the bridge; a script has nothing left to do
            Path(script).parent.mkdir(parents=True, exist_ok=True)
            Path(script).write_text('#!/bin/sh\nip link set "$1" up\n')
            Path(script).chmod(0o755)


@contextlib.contextmanager
def rdma_paxos_stand_in(pair: Pair):
    """Listen where RDMA-Paxos listens inside the vm-ft QEMU (dare_server.c): the
    secondary's redirectors connect there at start-up, and stock QEMU has no RDMA-Paxos."""
    listeners = []
    try:
        if pair.vmft:
            for path in (pair.vmft.mirror_socket, pair.vmft.redirector_socket):
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                listeners.append((listener, path))
                listener.bind(path)
                listener.listen(1)
        yield
    finally:
        for listener, path in listeners:
            listener.close()
            Path(path).unlink(missing_ok=True)


@pytest.mark.parametrize("spec", ALL_VALID, ids=[p.stem for p in ALL_VALID])
def test_each_host_command_line_starts_in_installed_qemu(spec):
    base = Path(tempfile.mkdtemp(prefix="cs-, q "))
    try:
        pair = check_spec(relocated_spec(spec, base)).pair
        prepare_files(pair)
        files = render_pair(pair)
        for host in pair.hosts:
            argv = qemu_args(files[f"{host.name}/qemu.args"].text)
            run_dir = tempfile.mkdtemp(prefix="cs-run-")  # unix socket paths must stay short
            argv = [a.replace(pair.layout(host).run_dir, run_dir) for a in argv]
            with rdma_paxos_stand_in(pair):
                status = start_and_query(argv, host, f"{run_dir}/qmp.sock")
            expected = "prelaunch" if host.role == "primary" else "inmigrate"
            assert status == expected, (host.name, status)
            shutil.rmtree(run_dir)
    finally:
        shutil.rmtree(base)


def start_and_query(argv: list[str], host, qmp_socket: str) -> str:
    with namespace() as ns:
        add_bridge(ns, host.bridge, host.address)
        add_tap(ns, host.tap, host.bridge)
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1.0)
            if proc.returncode is not None:
                raise AssertionError(f"QEMU exited {proc.returncode}: {proc.stderr.read()}")
            status, _ = asyncio.run(qmp_session(qmp_socket, "query-status", "quit"))
            proc.wait(timeout=10)
            return status["status"]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
