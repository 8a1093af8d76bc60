"""Only the pair's own runners can speak in its heartbeats.

Every datagram is HMAC-SHA-256(key, payload) || payload, under a per-pair secret key made
once by `colospec keygen` and kept on both hosts, readable only by root. A source address
proves nothing (anyone on the replication network or the LAN, the protected guest
included, can forge one); the tag does. Replays are refused too: each runner instance
has a random boot id and a strictly increasing sequence, every datagram carries its
sender's wall-clock time, and a receiver accepts a sequence number once per path, a
new boot only if it is newer than the one it knows, and nothing outside a time window
(the hosts' clocks must agree within it: NTP).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

TAG_BYTES = hashlib.sha256().digest_size
KEY_BYTES = 32
KEY_MODE = 0o600
REPLAY_WINDOW_S = 30.0  # how far a datagram's time may be from the receiver's clock


class KeyFileError(Exception):
    """The key file is missing or unsafe; str() says how to fix it."""


def new_key_text() -> str:
    return secrets.token_hex(KEY_BYTES) + "\n"


def write_key_file(path: Path, force: bool = False) -> None:
    """Create the key file atomically with mode 0600; never overwrite unless force."""
    path = Path(path)
    if path.exists() and not force:
        raise KeyFileError(f"{path} already exists — keep it (both hosts need the same key), "
                           "or pass --force to make a new one for both hosts")  # fmt: skip
    tmp = path.with_name(f".{path.name}.new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, KEY_MODE)
    try:
        os.fchmod(fd, KEY_MODE)
        os.write(fd, new_key_text().encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def owner_only_problem(st: os.stat_result, path: Path, what: str) -> str | None:
    """Why a secret file (the heartbeat key, a TLS private key) is unsafe, and the fix:
    owned by root or this runner's user, and readable by its owner alone."""
    if st.st_uid not in (0, os.geteuid()):
        return f"{what} {path} belongs to uid {st.st_uid} — chown root {path}"
    if stat.S_IMODE(st.st_mode) & 0o077:
        return (f"{what} {path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}) "
                f"— chmod 600 {path}")  # fmt: skip
    return None


def load_key(path: str | Path) -> bytes:
    """The key, after checking that only its owner (root, or this runner's user) reads it."""
    path = Path(path)
    make = f"create it once with `colospec keygen {path}` and copy it to both hosts (mode 0600)"
    try:
        st = os.stat(path)
        text = path.read_text().strip()
    except FileNotFoundError:
        raise KeyFileError(f"heartbeat key {path} is missing — {make}") from None
    except OSError as exc:
        raise KeyFileError(f"heartbeat key {path}: {exc.strerror}") from None
    if problem := owner_only_problem(st, path, "heartbeat key"):
        raise KeyFileError(problem)
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < KEY_BYTES:
        raise KeyFileError(f"heartbeat key {path} is not a colospec key — {make}")
    return key


def seal(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest() + payload


def unseal(key: bytes, datagram: bytes) -> bytes | None:
    """The payload if the tag is right, else None."""
    tag, payload = datagram[:TAG_BYTES], datagram[TAG_BYTES:]
    if len(tag) < TAG_BYTES:
        return None
    good = hmac.new(key, payload, hashlib.sha256).digest()
    return payload if hmac.compare_digest(tag, good) else None


@dataclass
class ReplayGuard:
    """Which authentic datagrams are also new."""

    boot: str | None = None
    boot_time: float = float("-inf")  # the newest sender time seen from that boot
    last_seq: dict[str, int] = field(default_factory=dict)  # path -> last seq (this boot)

    def fresh(self, path: str, boot: str, seq: int, sent_at: float) -> str | None:
        """None if new; else why the datagram is refused."""
        if abs(time.time() - sent_at) > REPLAY_WINDOW_S:
            return "sent outside the time window (replayed, or the hosts' clocks disagree)"
        if boot != self.boot:
            if sent_at <= self.boot_time:
                return "from an older runner instance"
            self.boot, self.boot_time, self.last_seq = boot, sent_at, {}
        if seq <= self.last_seq.get(path, 0):
            return "a sequence number already seen on this path"
        self.last_seq[path] = seq
        self.boot_time = max(self.boot_time, sent_at)
        return None
