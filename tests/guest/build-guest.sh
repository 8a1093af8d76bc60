#!/bin/bash
# Builds the colospec test guest (README.md here) from Debian packages only:
# a kernel (linux-image-cloud-amd64) and busybox-static, fetched with apt-get download.
# Output: vmlinuz and initrd.img in $COLOSPEC_GUEST_CACHE (default
# /var/cache/colospec-test/guest). The last line on stdout is that directory; progress
# goes to stderr. A cache whose stamp matches this script and the guest's files is reused.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${COLOSPEC_GUEST_CACHE:-/var/cache/colospec-test/guest}
kernel_meta=linux-image-cloud-amd64
# The drivers the guest needs; their dependencies come from each .ko's depends= field.
wanted_modules=(virtio_pci virtio_net virtio_blk)
# busybox applets the guest's scripts call (PATH=/bin holds only these symlinks).
applets=(sh awk blockdev cat cttyhack dd grep head insmod ip mount nc poweroff
	seq setsid tr usleep)
guest_files=(build-guest.sh init records.sh)

log() { echo "build-guest: $*" >&2; }

stamp_now() {
	(cd "$here" && sha256sum "${guest_files[@]}")
}

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

if [[ -s $cache/vmlinuz && -s $cache/initrd.img && -f $cache/stamp ]] &&
	[[ "$(cat "$cache/stamp")" == "$(stamp_now)" ]]; then
	echo "$cache"
	exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/deb" "$tmp/x" "$tmp/root"
# apt drops privileges to _apt for downloads when it can read the target directory.
chmod 755 "$tmp"
if id _apt >/dev/null 2>&1 && [[ $EUID -eq 0 ]]; then chown _apt "$tmp/deb"; fi

kernel_pkg=$(apt-cache depends "$kernel_meta" 2>/dev/null |
	awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')
if [[ -z $kernel_pkg ]]; then
	log "apt knows no $kernel_meta: run apt-get update (Debian's mirrors) first"
	exit 1
fi
log "downloading $kernel_pkg and busybox-static"
(cd "$tmp/deb" && apt-get download -q "$kernel_pkg" busybox-static >&2)
for deb in "$tmp"/deb/*.deb; do
	dpkg-deb -x "$deb" "$tmp/x"
done

kver=${kernel_pkg#linux-image-}
moddir=$tmp/x/lib/modules/$kver
root=$tmp/root
bb=$tmp/x/bin/busybox
[[ -f $tmp/x/boot/vmlinuz-$kver && -d $moddir && -x $bb ]] || {
	log "unexpected package contents (kernel $kver)"
	exit 1
}

# Modules in dependency order (dependencies first), skipping built-in ones.
declare -A done_mods=()
load_order=()
add_module() {
	local name=$1 file dep deps
	[[ -n ${done_mods[$name]:-} ]] && return 0
	done_mods[$name]=1
	if grep -Eq "/${name//_/[_-]}\.ko$" "$moddir/modules.builtin"; then return 0; fi
	file=$(find "$moddir/kernel" -regex ".*/${name//_/[_-]}\\.ko" | head -n 1)
	[[ -n $file ]] || {
		log "module $name not found in $kver"
		exit 1
	}
	deps=$(grep -a -o 'depends=[^[:cntrl:]]*' "$file" | head -n 1)
	deps=${deps#depends=}
	for dep in ${deps//,/ }; do add_module "$dep"; done
	cp "$file" "$root/lib/modules/$name.ko"
	load_order+=("$name")
}

log "assembling the initramfs (kernel $kver)"
mkdir -p "$root"/{bin,dev,proc,sys,lib/modules}
for m in "${wanted_modules[@]}"; do add_module "$m"; done
printf '%s\n' "${load_order[@]}" >"$root/lib/modules/load-order"
cp "$bb" "$root/bin/busybox"
for a in "${applets[@]}"; do ln -s busybox "$root/bin/$a"; done
install -m 755 "$here/init" "$root/init"
install -m 755 "$here/records.sh" "$root/bin/records.sh"

# newc entry without data (mknod needs root, this does not): /dev/console, which the
# kernel opens for /init's stdio before /init mounts devtmpfs; then a trailer.
cpio_entry() { # name mode(octal, with type) major minor
	local name=$1
	printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%s\0' \
		0 $((8#$2)) 0 0 1 0 0 0 0 "$3" "$4" $((${#name} + 1)) 0 "$name"
	# header (110 bytes) + name + NUL, padded to a multiple of 4
	head -c $(((4 - (110 + ${#name} + 1) % 4) % 4)) /dev/zero
}

# Reproducible: sorted names, fixed mtimes, renumbered inodes. The kernel unpacks
# concatenated archives in order, so dev/ exists before dev/console.
find "$root" -exec touch -h -d @0 {} +
{
	(cd "$root" && find . -mindepth 1 | LC_ALL=C sort |
		"$bb" cpio -o -H newc -R 0:0 --renumber-inodes --ignore-devno 2>/dev/null)
	cpio_entry dev/console 20600 5 1
	cpio_entry 'TRAILER!!!' 0 0 0
} | gzip -9 -n >"$tmp/initrd.img"

cp "$tmp/x/boot/vmlinuz-$kver" "$tmp/vmlinuz"
rm -f "$cache/stamp"
mv -f "$tmp/vmlinuz" "$cache/vmlinuz.new"
mv -f "$tmp/initrd.img" "$cache/initrd.img.new"
mv -f "$cache/vmlinuz.new" "$cache/vmlinuz"
mv -f "$cache/initrd.img.new" "$cache/initrd.img"
{
	dpkg-deb -f "$tmp"/deb/linux-image-*.deb Package Version
	dpkg-deb -f "$tmp"/deb/busybox-static*.deb Package Version
	echo "Modules: ${load_order[*]}"
} >"$cache/versions"
stamp_now >"$cache/stamp"
log "kernel $kver, initrd.img $(stat -c %s "$cache/initrd.img") bytes, modules: ${load_order[*]}"
echo "$cache"
