"""Is the secondary's guest silent on the network? (the primary's view)

In lock-step, every packet the primary's guest sends, the secondary's guest sends too; it
reaches colo-compare over one TCP connection (the primary's compare channel). A
secondary whose NIC went silent (README, Known limits: a checkpoint during the guest's
virtio-net set-up) sends nothing there while the primary's guest keeps sending out of
its tap: such a pair protects nothing. Counted from the kernel: the tap's receive bytes
(what the guest sent) and the compare connection's tcp_info bytes_received.
"""

from __future__ import annotations

import socket
from collections import deque
from dataclasses import dataclass

INET_DIAG_INFO_EXT = 1 << (2 - 1)  # ask sock_diag for tcp_info (INET_DIAG_INFO = 2)
TCP_ESTABLISHED = 1
# Enough guest output to be sure it was more than a stray frame. Low on purpose: a silent
# secondary holds every packet of the primary's guest until the next checkpoint, so its
# clients slow down to a few frames per checkpoint (measured on QEMU 10.0 with a 2 s
# delay: about 480 bytes per checkpoint, 1440 in the window, which 2000 bytes missed).
MIN_GUEST_BYTES = 400


@dataclass(frozen=True)
class Sample:
    at: float  # monotonic seconds
    guest_sent: int  # bytes the primary's guest sent (its tap's receive counter)
    secondary_sent: int | None  # bytes received from the secondary on the compare channel


def read_counters(tap: str, address: str, port: int) -> tuple[int, int | None]:
    """(guest bytes out of the tap, bytes received on the compare connection); the second
    is None while no secondary is connected."""
    from pyroute2 import DiagSocket, IPRoute

    with IPRoute() as ipr:
        links = ipr.link("get", ifname=tap)
        stats = links[0].get_attr("IFLA_STATS64") if links else None
        guest = int(stats["rx_bytes"]) if stats else 0
    received = None
    with DiagSocket() as diag:
        diag.bind()
        for msg in diag.get_sock_stats(family=socket.AF_INET, states=1 << TCP_ESTABLISHED,
                                       extensions=INET_DIAG_INFO_EXT):  # fmt: skip
            if msg.get("idiag_src") == address and msg.get("idiag_sport") == port:
                info = msg.get_attr("INET_DIAG_INFO")
                if info is not None:
                    received = (received or 0) + int(info.get("tcpi_bytes_received") or 0)
    return guest, received


class SilenceWatch:
    """Keeps the counters' recent history; silent() once a whole window shows guest output
    on the primary and nothing from the secondary."""

    def __init__(self, window_s: float):
        self.window_s = window_s
        self.samples: deque[Sample] = deque()

    def add(self, sample: Sample) -> None:
        self.samples.append(sample)
        while len(self.samples) > 2 and sample.at - self.samples[1].at >= self.window_s:
            self.samples.popleft()

    def silent(self) -> bool:
        if len(self.samples) < 2:
            return False
        first, last = self.samples[0], self.samples[-1]
        if last.at - first.at < self.window_s:
            return False
        if first.secondary_sent is None or last.secondary_sent is None:
            return False  # no connection to judge (reconnecting, or not set up)
        return (
            last.guest_sent - first.guest_sent >= MIN_GUEST_BYTES
            and last.secondary_sent == first.secondary_sent
        )
