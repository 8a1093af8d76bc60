#!/bin/bash
# Build Debian 12's QEMU 7.2 (qemu-system-x86_64 only) with colo-tcg.patch, which makes
# COLO work under TCG, into a cache directory outside the repository, and reuse it when present.
#
#   tests/qemu-tcg/build-qemu.sh        # prints the binary's path as the last line of stdout
#
# COLOSPEC_QEMU_CACHE  cache directory (default /var/cache/colospec-test/qemu-7.2-colo-tcg);
#                      holds bin/qemu-system-x86_64 and a stamp with the SHA-256 of the patch
#                      and of this script. A matching stamp means no rebuild.
#
# A build (several minutes; root, network to the Debian mirror) adds a deb-src entry for
# bookworm if none is configured, installs the build dependencies, runs `apt-get source qemu`
# (which applies Debian's patch series), applies the patch, configures and builds. Progress
# goes to stderr; the build tree is removed afterwards.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
script=$here/$(basename "${BASH_SOURCE[0]}")
patch_file=$here/colo-tcg.patch
repo=$(cd "$here/../.." && pwd)
cache=$(realpath -m -- "${COLOSPEC_QEMU_CACHE:-/var/cache/colospec-test/qemu-7.2-colo-tcg}")
binary=$cache/bin/qemu-system-x86_64
stamp=$cache/stamp

# Debian's firmware (qemu-system-data, seabios, ipxe-qemu) as the built-in search path; the
# -L flags with the same directories work as well.
firmware_path=/usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu
# Build dependencies, and the firmware packages the binary runs with.
packages=(build-essential dpkg-dev patch python3 ninja-build meson pkg-config flex bison
    libglib2.0-dev libpixman-1-dev libslirp-dev libfdt-dev zlib1g-dev xz-utils
    qemu-system-data seabios ipxe-qemu)
src_list_name=colospec-deb-src  # .sources and/or .list under /etc/apt/sources.list.d/

log() { printf 'build-qemu: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

[[ -r $patch_file ]] || die "$patch_file is missing"

wanted_stamp() {
    local p s
    p=$(sha256sum <"$patch_file") && s=$(sha256sum <"$script") || return 1
    printf 'patch-sha256 %s\nscript-sha256 %s\n' "${p%% *}" "${s%% *}"
}

cached() {
    [[ -x $binary && -f $stamp ]] || return 1
    [[ "$(head -n 2 "$stamp")" == "$(wanted_stamp)" ]]
}

# Fast path: nothing to do.
if cached; then
    printf '%s\n' "$binary"
    exit 0
fi

case $cache/ in
"$repo"/*) die "cache $cache is inside the repository $repo; set COLOSPEC_QEMU_CACHE elsewhere" ;;
/) die "COLOSPEC_QEMU_CACHE must not be /" ;;
esac
[[ $(id -u) -eq 0 ]] || die "building needs root (apt-get, $cache); run as root"
for tool in apt-get apt-cache dpkg-query flock sha256sum; do
    command -v "$tool" >/dev/null || die "$tool not found: this script needs Debian 12 (bookworm)"
done

# Everything below reports on stderr; fd 3 is the real stdout for the final path.
exec 3>&1 1>&2

parent=$(dirname "$cache")
mkdir -p "$parent"
lock=$parent/.$(basename "$cache").lock
exec 9>"$lock"
if ! flock -n 9; then
    log "another build holds $lock; waiting for it"
    flock 9
fi
if cached; then # built by the run we waited for
    printf '%s\n' "$binary" >&3
    exit 0
fi

step=starting
work=
finish() {
    local rc=$?
    [[ -n $work ]] && rm -rf -- "$work"
    ((rc == 0)) || log "FAILED while: $step (exit $rc); nothing in $cache was marked as built"
}
trap finish EXIT

started=$SECONDS
rm -f -- "$stamp"
# Build trees of runs that were killed (only this cache's: other caches may build in $parent).
rm -rf -- "$parent/.$(basename "$cache").build."*

step="checking free disk space under $parent"
free_mib=$(df --output=avail -BM -- "$parent" | tail -n 1 | tr -dc 0-9)
((free_mib >= 1536)) || die "only ${free_mib} MiB free under $parent; the build needs about 1.5 GiB"

# --- deb-src for bookworm ---------------------------------------------------------------
targets() { # configured apt index targets: "RELEASE COMPONENT SOURCESENTRY", filtered
    # shellcheck disable=SC2016 # $(...) here is apt's format syntax, not the shell's
    apt-get indextargets --no-release-info \
        --format '$(RELEASE) $(COMPONENT) $(SOURCESENTRY)' "$@"
}

has_bookworm_src() {
    targets 'Created-By: Sources' | awk '$1 == "bookworm" && $2 == "main" { f = 1 } END { exit !f }'
}

stanza() { # FILE N: the N-th deb822 stanza of FILE (as apt counts them), Types set to deb-src
    awk -v want="$2" '
        function flush() {
            if (real && ++n == want) { printf "%s", buf; ok = types }
            buf = ""; real = 0; types = 0
        }
        /^[ \t]*$/ { flush(); next }
        !/^[ \t]*#/ {
            real = 1
            if (tolower($0) ~ /^types:/) { $0 = "Types: deb-src"; types = 1 }
        }
        { buf = buf $0 "\n" }
        END { flush(); exit !ok }' "$1"
}

add_deb_src() {
    local entries entry file line tmp_sources tmp_list
    entries=$(targets 'Created-By: Packages' 'Component: main' |
        awk '$1 ~ /^bookworm(-updates|-security)?$/ { print $3 }' | sort -u)
    [[ -n $entries ]] || die "no 'deb' entry for bookworm main is configured in apt; add one first"
    tmp_sources=$(mktemp) tmp_list=$(mktemp)
    for entry in $entries; do
        file=${entry%:*} line=${entry##*:}
        if [[ $file == *.sources ]]; then
            stanza "$file" "$line" >>"$tmp_sources" ||
                die "could not read stanza $line of $file"
            printf '\n' >>"$tmp_sources"
        else
            sed -n "${line}{s/^[[:space:]]*deb[[:space:]]/deb-src /p}" "$file" >>"$tmp_list"
        fi
    done
    if [[ -s $tmp_sources ]]; then
        install -m 0644 "$tmp_sources" "/etc/apt/sources.list.d/$src_list_name.sources"
        log "added /etc/apt/sources.list.d/$src_list_name.sources:"
        sed 's/^/    /' "$tmp_sources" >&2
    fi
    if [[ -s $tmp_list ]]; then
        install -m 0644 "$tmp_list" "/etc/apt/sources.list.d/$src_list_name.list"
        log "added /etc/apt/sources.list.d/$src_list_name.list:"
        sed 's/^/    /' "$tmp_list" >&2
    fi
    rm -f -- "$tmp_sources" "$tmp_list"
    if ! has_bookworm_src; then
        rm -f -- "/etc/apt/sources.list.d/$src_list_name".{sources,list}
        die "apt does not accept the deb-src entries derived from your deb entries; add 'deb-src' for bookworm main by hand"
    fi
}

qemu_72_versions() {
    apt-cache showsrc qemu 2>/dev/null | sed -n 's/^Version: //p' | grep '^1:7\.2+dfsg-' || true
}

need_update=no
step="checking apt's deb-src entries"
if has_bookworm_src; then
    log "a deb-src entry for bookworm main is already configured"
else
    add_deb_src
    need_update=yes
fi
[[ -n $(qemu_72_versions) ]] || need_update=yes

step="checking the needed packages"
missing=()
for pkg in "${packages[@]}"; do
    [[ $(dpkg-query -W -f '${db:Status-Status}' "$pkg" 2>/dev/null) == installed ]] ||
        missing+=("$pkg")
done
((${#missing[@]} == 0)) || need_update=yes
if [[ $need_update == yes ]]; then
    step="apt-get update"
    apt-get update -q
fi
if ((${#missing[@]})); then
    step="installing ${missing[*]}"
    log "$step"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

step="choosing the qemu 7.2 source version"
version=
for v in $(qemu_72_versions); do
    if [[ -z $version ]] || dpkg --compare-versions "$v" gt "$version"; then
        version=$v
    fi
done
[[ -n $version ]] || die "apt knows no qemu 1:7.2+dfsg-* source package; is the deb-src entry for bookworm right?"
log "using Debian source package qemu $version"

# --- fetch, patch, build ----------------------------------------------------------------
work=$(mktemp -d "$parent/.$(basename "$cache").build.XXXXXX")
chmod 0755 "$work"
mkdir "$work/src"
if id _apt >/dev/null 2>&1; then
    chown _apt "$work/src" # lets apt download without its "unsandboxed as root" warning
fi

step="apt-get source qemu=$version"
log "$step (downloads ~24 MB, unpacks and applies Debian's patch series)"
(cd "$work/src" && apt-get source -q "qemu=$version")
srcdirs=("$work"/src/qemu-*/)
[[ ${#srcdirs[@]} -eq 1 && -f ${srcdirs[0]}configure ]] || die "apt-get source left no QEMU source tree in $work/src"
src=${srcdirs[0]%/}
[[ -s $src/.pc/applied-patches ]] || die "Debian's patch series was not applied in $src"

step="applying $(basename "$patch_file")"
log "$step"
patch -d "$src" -p1 --batch --forward --fuzz=0 --no-backup-if-mismatch <"$patch_file" ||
    die "$(basename "$patch_file") does not apply to qemu $version; update the patch"

step="configuring"
log "$step"
mkdir "$src/build"
(cd "$src/build" && ../configure \
    --target-list=x86_64-softmmu \
    --prefix="$cache" --sysconfdir=/etc --localstatedir=/var \
    --firmwarepath="$firmware_path" \
    --with-pkgversion="Debian $version + colospec colo-tcg" \
    --with-git-submodules=ignore \
    --enable-kvm --enable-tcg --enable-replication --enable-slirp \
    --disable-docs --disable-tools --disable-user --disable-xen \
    --disable-gtk --disable-sdl --disable-sdl-image --disable-opengl --disable-virglrenderer \
    --disable-spice --disable-spice-protocol --disable-curses --disable-vte \
    --disable-dbus-display --disable-brlapi --disable-cocoa \
    --disable-png --disable-vnc-jpeg --disable-vnc-sasl)

step="building qemu-system-x86_64"
log "$step (about 3 minutes on 2 cores)"
ninja_started=$SECONDS
ninja -C "$src/build" qemu-system-x86_64
ninja_seconds=$((SECONDS - ninja_started))
log "ninja took ${ninja_seconds}s"

step="checking the built binary"
built=$src/build/qemu-system-x86_64
built_version=$("$built" --version)
[[ $built_version == "QEMU emulator version 7.2"* ]] || die "$built reports: $built_version"

step="installing into $cache"
mkdir -p "$cache/bin"
strip --strip-debug -o "$cache/bin/.qemu-system-x86_64.new" "$built"
mv -f -- "$cache/bin/.qemu-system-x86_64.new" "$binary"
{
    wanted_stamp
    printf 'debian-source qemu %s\nbuilt %s in %ss (ninja %ss)\n' "$version" \
        "$(date -u +%FT%TZ)" "$((SECONDS - started))" "$ninja_seconds"
} >"$stamp.new"
mv -f -- "$stamp.new" "$stamp"

step="removing the build tree"
rm -rf -- "$work"
work=
log "built ${built_version%%$'\n'*} in $((SECONDS - started))s"
printf '%s\n' "$binary" >&3
