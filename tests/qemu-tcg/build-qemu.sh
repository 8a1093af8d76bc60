#!/bin/bash
# Build Debian's QEMU (qemu-system-x86_64 only) with the COLO-under-TCG patch of that QEMU
# line into a cache directory outside the repository, and reuse it when present.
#
#   tests/qemu-tcg/build-qemu.sh [VERSION]  # VERSION: 7.2 (default) or 10.0; prints the
#                                           # binary's path as the last line of stdout
#
# 7.2   Debian 12's qemu 1:7.2+dfsg-* with colo-tcg.patch.
# 10.0  Debian 13's (trixie's) qemu 1:10.0.*+ds-*, the newest, at least 10.0.7 (10.0.0-10.0.6
#       never enter COLO), with colo-tcg-10.0.patch.
#
# COLOSPEC_QEMU_CACHE       7.2's cache directory (default
#                           /var/cache/colospec-test/qemu-7.2-colo-tcg)
# COLOSPEC_QEMU_CACHE_10_0  10.0's (default /var/cache/colospec-test/qemu-10.0-colo-tcg)
#                      Each holds bin/qemu-system-x86_64 and a stamp with the SHA-256 of its
#                      patch and of this script. A matching stamp means no rebuild.
# COLOSPEC_DEBIAN_MIRROR    10.0's source mirror, default http://deb.debian.org/debian
# COLOSPEC_DEBIAN_SECURITY  default http://deb.debian.org/debian-security
#
# A build (several minutes; root, network to the Debian mirror) installs the build
# dependencies, runs `apt-get source qemu` (which applies Debian's patch series), applies the
# patch, configures and builds. For 7.2 it adds a deb-src entry for bookworm to the system's
# apt if none is configured; for 10.0 apt runs with a private configuration (its own
# sources.list with trixie's deb-src, lists and cache in the build tree): /etc/apt is not
# touched. Debian's 10.0 source lacks the meson wheel that QEMU >= 9 ships in python/wheels
# (and bookworm's meson is too old), so pip downloads that one wheel, pinned by its hash.
# Progress goes to stderr; the build tree is removed afterwards.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
script=$here/$(basename "${BASH_SOURCE[0]}")
repo=$(cd "$here/../.." && pwd)

usage() {
    printf 'usage: %s [VERSION]    (VERSION: 7.2 (default) | 10.0)\n' "$0" >&2
    exit 2
}
(($# <= 1)) || usage
line=${1:-7.2}
# Per QEMU line: the patch, the cache, the Debian source versions to take (an extended regex
# on the source version, and the lowest acceptable one), and what configure needs besides.
case $line in
7.2)
    patch_file=$here/colo-tcg.patch
    cache_dir=${COLOSPEC_QEMU_CACHE:-/var/cache/colospec-test/qemu-7.2-colo-tcg}
    source_versions='^1:7\.2\+dfsg-'
    lowest_version=1:7.2
    line_packages=()
    line_configure=(--with-git-submodules=ignore)
    need_mib=1536 # scratch space next to the cache
    ;;
10.0)
    patch_file=$here/colo-tcg-10.0.patch
    cache_dir=${COLOSPEC_QEMU_CACHE_10_0:-/var/cache/colospec-test/qemu-10.0-colo-tcg}
    source_versions='^1:10\.0\.[0-9]+\+ds-'
    lowest_version=1:10.0.7
    line_packages=(python3-venv debian-archive-keyring)
    # --disable-download: no meson wraps from the network (the subprojects it needs are in
    # Debian's source). --disable-install-blobs: Debian's source has no firmware blobs
    # (the binary uses Debian's packages'). Debian's python3: configure makes its venv.
    line_configure=(--disable-download --disable-install-blobs --python=/usr/bin/python3)
    need_mib=2560 # the source alone unpacks to 0.4 GiB (Debian keeps the firmware sources)
    ;;
*) usage ;;
esac
cache=$(realpath -m -- "$cache_dir")
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
[[ $line == 7.2 || $cache != "$(realpath -m -- "${COLOSPEC_QEMU_CACHE:-/var/cache/colospec-test/qemu-7.2-colo-tcg}")" ]] ||
    die "$line's cache $cache is 7.2's; set COLOSPEC_QEMU_CACHE_10_0 elsewhere"
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
((free_mib >= need_mib)) || die "only ${free_mib} MiB free under $parent; the build needs about $need_mib MiB"

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

# --- trixie's deb-src, privately (10.0) ---------------------------------------------------
private_apt() { # DIR: a private apt configuration with deb-src for trixie, its lists updated
    local dir=$1 keyring=/usr/share/keyrings/debian-archive-keyring.gpg entry
    local mirror=${COLOSPEC_DEBIAN_MIRROR:-http://deb.debian.org/debian}
    local security=${COLOSPEC_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
    [[ -r $keyring ]] || die "$keyring is missing (package debian-archive-keyring)"
    mkdir -p "$dir/etc/parts" "$dir/lists/partial" "$dir/cache/archives/partial"
    : >"$dir/status"
    : >"$dir/etc/preferences"
    for entry in "$mirror trixie" "$mirror trixie-updates" "$security trixie-security"; do
        printf 'deb-src [signed-by=%s] %s main\n' "$keyring" "$entry"
    done >"$dir/etc/sources.list"
    if id _apt >/dev/null 2>&1; then # apt downloads as _apt; without this it warns "unsandboxed"
        chown _apt "$dir/lists/partial" "$dir/cache/archives/partial"
    fi
    apt_opts=(
        -o "Dir::Etc::sourcelist=$dir/etc/sources.list"
        -o "Dir::Etc::sourceparts=$dir/etc/parts"
        -o "Dir::Etc::preferences=$dir/etc/preferences"
        -o "Dir::Etc::preferencesparts=$dir/etc/parts"
        -o "Dir::State::Lists=$dir/lists"
        -o "Dir::State::status=$dir/status"
        -o "Dir::Cache=$dir/cache"
        -o Acquire::Languages=none
        -o Debug::NoLocking=true
    )
    apt-get "${apt_opts[@]}" -q update
}

apt_opts=() # the private configuration's options (10.0); none for 7.2: the system's apt
qemu_versions() {
    apt-cache "${apt_opts[@]}" showsrc qemu 2>/dev/null | sed -n 's/^Version: //p' |
        grep -E "$source_versions" || true
}

need_update=no
if [[ $line == 7.2 ]]; then
    step="checking apt's deb-src entries"
    if has_bookworm_src; then
        log "a deb-src entry for bookworm main is already configured"
    else
        add_deb_src
        need_update=yes
    fi
    [[ -n $(qemu_versions) ]] || need_update=yes
fi

step="checking the needed packages"
missing=()
for pkg in "${packages[@]}" "${line_packages[@]}"; do
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

work=$(mktemp -d "$parent/.$(basename "$cache").build.XXXXXX")
chmod 0755 "$work"
if [[ $line == 10.0 ]]; then
    step="apt-get update (a private configuration with deb-src for trixie)"
    log "$step"
    private_apt "$work/apt"
fi

step="choosing the qemu $line source version"
version=
for v in $(qemu_versions); do
    dpkg --compare-versions "$v" ge "$lowest_version" || continue
    if [[ -z $version ]] || dpkg --compare-versions "$v" gt "$version"; then
        version=$v
    fi
done
if [[ -z $version ]]; then
    [[ $line == 7.2 ]] && die "apt knows no qemu 1:7.2+dfsg-* source package; is the deb-src entry for bookworm right?"
    die "trixie has no qemu source package from $lowest_version on matching $source_versions"
fi
log "using Debian source package qemu $version"

# --- fetch, patch, build ----------------------------------------------------------------
mkdir "$work/src"
if id _apt >/dev/null 2>&1; then
    chown _apt "$work/src" # lets apt download without its "unsandboxed as root" warning
fi

step="apt-get source qemu=$version"
log "$step (downloads 24-40 MB, unpacks and applies Debian's patch series)"
(cd "$work/src" && apt-get "${apt_opts[@]}" source -q "qemu=$version")
srcdirs=("$work"/src/qemu-*/)
[[ ${#srcdirs[@]} -eq 1 && -f ${srcdirs[0]}configure ]] || die "apt-get source left no QEMU source tree in $work/src"
src=${srcdirs[0]%/}
[[ -s $src/.pc/applied-patches ]] || die "Debian's patch series was not applied in $src"

if [[ $line == 10.0 ]] && ! compgen -G "$src/python/wheels/meson-*.whl" >/dev/null; then
    # The wheel QEMU 10.0's own tarball ships (pythondeps.toml: installed = "1.5.0").
    step="downloading meson 1.5.0 into python/wheels"
    log "$step (pip, pinned by hash)"
    /usr/bin/python3 -m venv "$work/pip"
    printf '%s\n' 'meson==1.5.0 --hash=sha256:52b34f4903b882df52ad0d533146d4b992c018ea77399f825579737672ae7b20' >"$work/meson.txt"
    mkdir -p "$src/python/wheels"
    "$work/pip/bin/pip" download -q --no-deps --only-binary=:all: --require-hashes \
        -r "$work/meson.txt" -d "$src/python/wheels"
fi

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
    "${line_configure[@]}" \
    --enable-kvm --enable-tcg --enable-replication --enable-slirp \
    --disable-docs --disable-tools --disable-user --disable-xen \
    --disable-gtk --disable-sdl --disable-sdl-image --disable-opengl --disable-virglrenderer \
    --disable-spice --disable-spice-protocol --disable-curses --disable-vte \
    --disable-dbus-display --disable-brlapi --disable-cocoa \
    --disable-png --disable-vnc-jpeg --disable-vnc-sasl)

step="building qemu-system-x86_64"
log "$step (on 2 idle cores about 3 minutes for 7.2, 4 for 10.0)"
ninja_started=$SECONDS
ninja -C "$src/build" qemu-system-x86_64
ninja_seconds=$((SECONDS - ninja_started))
log "ninja took ${ninja_seconds}s"

step="checking the built binary"
built=$src/build/qemu-system-x86_64
built_version=$("$built" --version)
[[ $built_version == "QEMU emulator version $line"* ]] || die "$built reports: $built_version"

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
