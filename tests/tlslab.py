"""PairLab with TLS on the replication channels (tests/test_tls_pair.py, bench/overhead.py).

PairLab builds a spec without security.tls; this lab adds it, makes the pair's
certificates with `colospec certs` and builds again. A capture of a host's replication
link, inside the lab's namespace, shows what crosses it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from pairlab import COLOSPEC, ROOT, PairLab

# Every frame on one interface, both directions, appended to a file until SIGTERM.
_SNIFFER = """
import signal, socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))  # ETH_P_ALL
s.bind((sys.argv[1], 0))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
with open(sys.argv[2], "wb", buffering=0) as out:
    print("capturing", flush=True)
    while True:
        out.write(s.recv(1 << 18))
"""


class TlsLab(PairLab):
    """PairLab with security.tls (certificates by `colospec certs`) and, optionally, a
    boot sector in both hosts' images."""

    def __init__(self, *, tls: bool = True, boot_sector: bytes | None = None, **kw):
        self.tls, self.boot_sector = tls, boot_sector
        super().__init__(**kw)

    def _build(self) -> None:
        super()._build()
        spec = yaml.safe_load(self.spec.read_text())
        if self.boot_sector is not None:
            for role in ("primary", "secondary"):
                with open(spec["hosts"][role]["image"], "r+b") as image:
                    image.write(self.boot_sector)
        if not self.tls:
            return
        self.tls_dir = self.tmp / "tls"
        spec["security"]["tls"] = {"dir": str(self.tls_dir)}
        self.spec.write_text(yaml.safe_dump(spec))
        for command in (["certs", str(self.spec)], ["build", str(self.spec), "-o", str(self.out)]):
            done = subprocess.run([*COLOSPEC, *command], capture_output=True, text=True, cwd=ROOT)
            if done.returncode != 0:
                raise RuntimeError(f"colospec {command[0]} failed: {done.stderr}")

    def capture(self, h: str, into: Path) -> subprocess.Popen:
        """Frames on host h's replication link (inside its namespace) into a file."""
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns[h], sys.executable, "-c", _SNIFFER, "rep0", str(into)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout.readline().strip() == "capturing"
        return proc
