"""The vm-ft guide's QEMU ids: its QMP sequences and RDMA-Paxos refer to them."""

BASE_NODE = "node0"  # secondary: the base image's node, exported over NBD as colo-disk0
ACTIVE_ID = "active-disk0"  # secondary: the replication drive the guest uses
NIC_ID = "e0"  # the primary's NIC (the guide gives the secondary's none)
REPLICATION_NODE = "node0"  # primary: the guide's drive_add -n buddy … node-name
