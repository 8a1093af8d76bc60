"""The peer-QEMU probe against a real QEMU's NBD server on loopback."""

from __future__ import annotations

import asyncio
import subprocess
import tempfile

from colospec.runner.probe import probe_qemu

from test_real_qemu import QEMU, qmp_session

PORT = 18991


def test_probe_tells_alive_from_dead_and_leaves_qemu_quiet():
    with tempfile.TemporaryDirectory(prefix="cs-") as tmp:
        sock = f"{tmp}/qmp.sock"
        proc = subprocess.Popen(
            [QEMU, "-S", "-nodefaults", "-display", "none", "-machine", "none",
             "-qmp", f"unix:{sock},server=on,wait=off"],
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            addr = {"type": "inet", "data": {"host": "127.0.0.1", "port": str(PORT)}}
            asyncio.run(qmp_session(sock, ("nbd-server-start", {"addr": addr})))
            results = {asyncio.run(probe_qemu("127.0.0.1", PORT, 1.0)) for _ in range(10)}
            assert results == {"alive"}
        finally:
            proc.kill()
            stderr = proc.communicate()[1]
        assert "negotiation failed" not in stderr
    assert asyncio.run(probe_qemu("127.0.0.1", PORT, 1.0)) == "dead"
