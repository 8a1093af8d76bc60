"""TLS on the replication channels, on real pairs (firmware-only guests under KVM).

A TLS pair reaches COLO, checkpoints and fails over; a capture of the replication link
holds none of a marker that crosses it in the guest's memory (the boot sector SeaBIOS
loads, carried by the checkpoints) and in a disk write (carried by NBD), while the same
capture without TLS holds both, so the test can fail; a peer whose certificate comes from
another CA never joins. The capture is taken inside the lab's own namespace.
"""

from __future__ import annotations

import secrets
import signal
import subprocess

import pytest

from faults import image_has
from pairlab import COLOSPEC, ROOT, PairLab
from tlslab import TlsLab

pytestmark = pytest.mark.integration


def status(lab: PairLab, h: str) -> dict:
    return lab.ask(h, {"cmd": "status"})


def qmp(lab: PairLab, h: str, execute: str, **arguments) -> object:
    reply = lab.ask(h, {"cmd": "qmp", "execute": execute, "arguments": arguments or None})
    assert reply["ok"], reply
    return reply["return"]


def hmp(lab: PairLab, h: str, command_line: str) -> str:
    return qmp(lab, h, "human-monitor-command", **{"command-line": command_line})


def checkpoints_after(lab: PairLab, h: str, n: int) -> None:
    lab.wait_for(f"{n} checkpoints on {h}", lambda: status(lab, h)["checkpoints"] >= n)


def boot_sector(marker: bytes) -> bytes:
    """A boot sector that SeaBIOS loads at 0x7c00 and runs: `jmp $`, then the marker
    repeated, so the guest's memory holds it for as long as it runs."""
    body = b"\xeb\xfe" + (marker * 512)[: 510 - 2]
    return body + b"\x55\xaa"


def guest_memory_holds(lab: PairLab, h: str, marker: bytes) -> bool:
    """Whether the boot sector's marker is at 0x7c02 in host h's guest memory."""
    dump = hmp(lab, h, f"xp /{len(marker)}xb 0x7c02")
    return bytes(int(word, 16) for word in dump.split() if word.startswith("0x")) == marker


def test_tls_pair_checkpoints_and_fails_over():
    with TlsLab(checkpoint_delay_ms=300) as lab:
        lab.start("b")
        lab.start("a")
        lab.wait_colo()
        assert qmp(lab, "a", "query-migrate")["status"] == "colo"
        params = qmp(lab, "a", "query-migrate-parameters")
        assert (params["tls-creds"], params["tls-hostname"]) == ("tls-client0", "10.77.0.3")
        assert qmp(lab, "b", "query-migrate-parameters")["tls-creds"] == "tls-server0"
        checkpoints_after(lab, "a", status(lab, "a")["checkpoints"] + 2)
        checkpoints_after(lab, "b", 2)

        hmp(lab, "a", 'qemu-io colo-disk0 "write -P 0x5a 0 64k"')
        checkpoints_after(lab, "a", status(lab, "a")["checkpoints"] + 1)
        assert "wrote 65536/65536 bytes" in lab.log_text("a")
        lab.kill_qemu("a")
        lab.wait_for("b promoted", lambda: status(lab, "b")["role"] == "primary"
                     and status(lab, "b")["colo_mode"] == "none", timeout=30)  # fmt: skip
        s = lab.status("b")
        assert (s["vm_status"], s["last_failover"]["failed_commands"]) == ("running", [])
        hmp(lab, "b", 'qemu-io colo-disk0 "read -P 0x5a 0 64k"')
        lab.wait_for("the read-back", lambda: "read 65536/65536 bytes" in lab.log_text("b"))
        assert "Pattern verification failed" not in lab.log_text("b")


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
def test_capture_of_the_replication_link(tls):
    tag = secrets.token_hex(6).encode()
    in_memory, on_disk = b"COLOSPEC-RAM-" + tag, b"COLOSPEC-DISK-" + tag
    with TlsLab(tls=tls, checkpoint_delay_ms=300, boot_sector=boot_sector(in_memory)) as lab:
        pattern = lab.tmp / "pattern"
        pattern.write_bytes((on_disk * 4096)[:4096])
        frames = lab.tmp / "rep0.frames"
        sniffer = lab.capture("a", frames)
        try:
            lab.start("b")
            lab.start("a")
            lab.wait_colo()
            # SeaBIOS loads the boot sector a few seconds after the guest starts; the
            # checkpoints after that carry its page to the secondary.
            for h in ("a", "b"):
                lab.wait_for(f"the marker in {h}'s guest memory",
                             lambda h=h: guest_memory_holds(lab, h, in_memory))  # fmt: skip
            hmp(lab, "a", f'qemu-io colo-disk0 "write -s {pattern} 1M 4k"')
            lab.wait_for("the write", lambda: "wrote 4096/4096 bytes" in lab.log_text("a"))
            checkpoints_after(lab, "a", status(lab, "a")["checkpoints"] + 2)
        finally:
            sniffer.send_signal(signal.SIGTERM)
            sniffer.wait(timeout=10)
        captured = frames.read_bytes()
        assert len(captured) > 1 << 20, "the capture saw the replication traffic"
        found = {what: marker in captured for what, marker in
                 (("memory", in_memory), ("disk", on_disk))}  # fmt: skip
        assert found == ({"memory": False, "disk": False} if tls else
                         {"memory": True, "disk": True})  # fmt: skip


def test_a_peer_certified_by_another_ca_never_joins(tmp_path):
    with TlsLab(checkpoint_delay_ms=300) as lab:
        # Host b's directory from another pair CA: each end refuses the other's certificate.
        other = tmp_path / "other"
        done = subprocess.run([*COLOSPEC, "certs", str(lab.spec), "--dir", str(other)],
                              capture_output=True, text=True, cwd=ROOT)  # fmt: skip
        assert done.returncode == 0, done.stderr
        b_dir = lab.tls_dir / lab.hosts["b"]
        for f in other.joinpath(lab.hosts["b"]).iterdir():
            f.replace(b_dir / f.name)
        lab.start("b")
        lab.start("a")
        lab.expect_running.clear()  # the primary's runner gives up: that is the point
        lab.wait_for("the primary's runner fails", lambda: lab.procs["a"].poll() is not None,
                     timeout=120)  # fmt: skip
        assert lab.procs["a"].returncode == 1
        log = lab.log_text("a")
        assert "certificate hasn't got a known issuer" in log, log[-3000:]
        assert status(lab, "b")["colo_mode"] != "secondary"


def test_the_survivor_re_protects_over_tls():
    """Re-protection's channels (the disk copy over NBD, the new replication child, the
    migration from the survivor, the listeners for the joiner's redirectors) are TLS too."""
    with TlsLab(checkpoint_delay_ms=300, failover={"rejoin": "automatic"}) as lab:
        lab.start("b")
        lab.start("a")
        lab.wait_colo()
        lab.kill_qemu("a")
        lab.wait_for("b serves alone", lambda: status(lab, "b")["phase"] == "alone", timeout=30)
        hmp(lab, "b", 'qemu-io colo-disk0 "write -P 0x11 1M 64k"')  # only b has it
        lab.wait_for("runner a exits", lambda: lab.procs["a"].poll() is not None)
        lab.start("a")

        def protected() -> bool:
            b, a = status(lab, "b"), status(lab, "a")
            return (b["colo_mode"], a["colo_mode"], b["protected"], a["protected"]) == (
                "primary", "secondary", True, True)  # fmt: skip

        lab.wait_for("b protected by a", protected, timeout=120)
        assert set(status(lab, "b")["last_resync"]["stages_ms"]) >= {"mirror", "attach", "colo"}
        params = qmp(lab, "b", "query-migrate-parameters")
        assert (params["tls-creds"], params["tls-hostname"]) == ("tls-client0", "10.77.0.2")
        assert qmp(lab, "a", "query-migrate-parameters")["tls-creds"] == "tls-server0"
        assert image_has(lab, "a", 0x11, 1 << 20)  # the copy reached a's own disk
