"""What the runner's steps raise, and the exit codes systemd and scripts can act on."""

EXIT_OK, EXIT_FAILURE, EXIT_QEMU_GONE, EXIT_FENCED = 0, 1, 3, 4


class RunError(Exception):
    """A step failed; the message says what and what to do."""
