"""colospec: declare, review and run a QEMU COLO fault-tolerant VM pair."""

__version__ = "0.1.0"
