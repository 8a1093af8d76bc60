"""Only the pair's own runners move the pair: forged and replayed heartbeats on a real pair.

The attacker sits on the LAN (the lab's LAN namespace, where the protected guest's own
traffic also flows): it forges datagrams with the primary's source address, and replays
a real heartbeat it sniffed there.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from pairlab import LAN, PairLab

pytestmark = pytest.mark.integration

HEARTBEAT_PORT = 8890
SETTLE_S = 1.0
# A UDP datagram with any source address (IP_HDRINCL; the kernel fills in the checksum).
FORGE = """
import socket, struct, sys
src, dst, port, payload = sys.argv[1], sys.argv[2], int(sys.argv[3]), bytes.fromhex(sys.argv[4])
udp = struct.pack("!HHHH", port, port, 8 + len(payload), 0) + payload
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                 socket.inet_aton(src), socket.inet_aton(dst))
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for _ in range(int(sys.argv[5])):
    s.sendto(ip + udp, (dst, 0))
"""
# One heartbeat from src to dst, as seen on the LAN bridge: its UDP payload, in hex.
# (ETH_P_ALL: a socket bound to ETH_P_IP does not see the frames the bridge forwards.)
SNIFF = """
import socket, struct, sys
src, dst, port = socket.inet_aton(sys.argv[1]), socket.inet_aton(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))  # every frame
s.settimeout(10)
while True:
    frame = s.recv(65535)
    if frame[12:14] != bytes([8, 0]):  # IPv4 only
        continue
    ip = frame[14:]
    ihl = (ip[0] & 15) * 4
    if ip[9] == 17 and ip[12:16] == src and ip[16:20] == dst:
        if struct.unpack("!H", ip[ihl + 2:ihl + 4])[0] == port:
            print(ip[ihl + 8:].hex())
            break
"""


def lan_python(lab: PairLab, script: str, *args: str) -> str:
    done = subprocess.run(["ip", "netns", "exec", lab.ns["l"], sys.executable, "-c", script,
                           *args], capture_output=True, text=True, check=True, timeout=30)  # fmt: skip
    return done.stdout.strip()


def status(lab: PairLab, h: str) -> dict:
    return lab.ask(h, {"cmd": "status"})


def unchanged(lab: PairLab) -> None:
    for h, role in (("a", "primary"), ("b", "secondary")):
        s = status(lab, h)
        assert (s["phase"], s["colo_mode"], s["protected"]) == ("colo", role, True), (h, s)
        assert s["last_failover"] is None


@pytest.fixture
def pair():
    with PairLab(checkpoint_delay_ms=300) as lab:
        lab.start("b")
        lab.start("a")
        lab.wait_colo()
        yield lab


def test_a_forged_report_of_a_dead_primary_changes_nothing(pair):
    forged = {
        "v": 2, "pair": pair.name, "from": pair.hosts["a"], "boot": "attacker", "seq": 10**9,
        "ts": time.time(), "qemu": "dead", "role": "primary", "alone": True, "epoch": 99,
        "hears": [],
    }  # fmt: skip
    payload = json.dumps(forged).encode()
    for tag in (b"", bytes(32)):  # unsigned, and with a made-up tag
        lan_python(pair, FORGE, LAN["a"], LAN["b"], str(HEARTBEAT_PORT), (tag + payload).hex(),
                   "20")  # fmt: skip
    time.sleep(SETTLE_S)
    unchanged(pair)
    assert status(pair, "b")["heartbeats_rejected"] >= 40
    assert "not signed with this pair's key" in pair.log_text("b")


def test_a_replayed_real_heartbeat_changes_nothing(pair):
    real = lan_python(pair, SNIFF, LAN["a"], LAN["b"], str(HEARTBEAT_PORT))
    assert real, "no heartbeat seen on the LAN"
    before = status(pair, "b")["heartbeats_rejected"]
    lan_python(pair, FORGE, LAN["a"], LAN["b"], str(HEARTBEAT_PORT), real, "5")
    time.sleep(SETTLE_S)
    unchanged(pair)
    assert status(pair, "b")["heartbeats_rejected"] >= before + 5
