#!/bin/bash
# Runs as PID 1 of a fresh PID+mount+UTS+IPC namespace (tests/systemd_host.py starts it
# with `unshare`) and turns into systemd on a throw-away root. Never run it by hand.
#
# The root is an overlay of the host's / with a tmpfs on top: systemd's early units
# (tmpfiles, sysusers, utmp, ...) act on whatever root they see, so they must not see the
# host's. /run, /tmp and /dev are private; /proc/sys and /sys are read-only; the cgroup
# tree is a delegated subtree of the host's cgroup2. Only the directories named as SHARE
# arguments are the host's own, at the same paths.
#
# usage: systemd-root.sh cgroup CGROUP_DIR STATE_DIR TTY [SHARE...]
#        (re-executes itself as `systemd-root.sh root STATE_DIR TTY [SHARE...]`)
set -euo pipefail

if [ "$1" = cgroup ]; then
    # Join the subtree first, then make it this namespace's cgroup root.
    echo 0 >"$2/cgroup.procs"
    shift 2
    exec unshare --cgroup "$0" root "$@"
fi
[ "$1" = root ] || { echo "usage: see the header of $0" >&2; exit 2; }
state=$2 tty=$3
shift 3

root=$state/root
mkdir -p "$state/layer" "$root"
mount -t tmpfs -o mode=0755 colospec-test-layer "$state/layer"
mkdir "$state/layer/upper" "$state/layer/work"
mount -t overlay colospec-test-root \
    -o "lowerdir=/,upperdir=$state/layer/upper,workdir=$state/layer/work" "$root"
# Fail closed: without the overlay, systemd would run on the host's own files.
[ "$(stat -f -c %T "$root")" = overlayfs ] || { echo "no overlay on $root" >&2; exit 1; }

mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
mount --bind "$root/proc/sys" "$root/proc/sys"
mount -o remount,bind,ro "$root/proc/sys"
mount --bind /sys "$root/sys"
mount -o remount,bind,ro "$root/sys"
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$root/sys/fs/cgroup"

mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$root/run"
mkdir -p "$root/run/lock" "$root/run/systemd/journald.conf.d"
chmod 1777 "$root/run/lock"
cp "$state/journald.conf" "$root/run/systemd/journald.conf.d/colospec-test.conf"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/tmp"

dev=$root/dev
mount -t tmpfs -o mode=0755,nosuid tmpfs "$dev"
mkdir -p "$dev/pts" "$dev/shm" "$dev/mqueue" "$dev/net"
for node in null zero full random urandom tty net/tun kvm; do
    if [ -e "/dev/$node" ]; then
        touch "$dev/$node"
        mount --bind "/dev/$node" "$dev/$node"
    fi
done
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$dev/pts"
ln -s pts/ptmx "$dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$dev/shm"
ln -s /proc/self/fd "$dev/fd"
# systemd insists on a terminal for its console: the test's pty, never the host's.
touch "$dev/console"
mount --bind "$tty" "$dev/console"

mount --bind "$state/units" "$root/etc/systemd/system"
for share in "$@"; do
    mkdir -p "$root$share"
    mount --bind "$share" "$root$share"
done

mkdir "$root/.host"
cd "$root"
pivot_root . .host
umount -l /.host
rmdir /.host
cd /
hostname colospec-test

# No clock, module or raw-I/O changes from inside, whatever a unit tries.
exec setpriv --bounding-set=-sys_time,-sys_module,-sys_rawio,-syslog,-wake_alarm \
    env -i container=colospec-test PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    /lib/systemd/systemd --system --unit=colospec-test-boot.target \
    --log-target=console --show-status=no </dev/null >/dev/console 2>&1
