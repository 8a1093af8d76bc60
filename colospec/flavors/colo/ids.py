"""QEMU ids of the colo layout that its command line, QMP scripts and plan share."""

PARENT_ID = "parent0"  # secondary: the base image drive, exported over NBD
PARENT_NODE = "parent0-base"  # its node name: block-export-add needs a node, not a drive id
NBD_EXPORT = PARENT_ID
SECONDARY_CHILD_ID = "childs0"  # secondary: the replication driver over active/hidden disks
REPLICATION_NODE = "replication0"  # primary: the replication child, added over NBD
# The primary's chardevs the secondary's redirectors connect to: filter-mirror's copy of
# the client packets leaves on MIRROR; the secondary's output arrives on SECONDARY_OUTPUT.
MIRROR = "mirror0"
SECONDARY_OUTPUT = "compare1"
REWRITER = "rew0"  # secondary layout: filter-rewriter on the guest's netdev (only there)
