#!/bin/bash
# Fetch Debian's qemu-system-x86 of another suite, unpack it with its own C library and
# libraries into a cache directory outside the repository, and create a wrapper that runs it
# on this Debian 12 machine. Reuses the cache when present.
#
#   tests/qemu-versions/fetch-qemu.sh SUITE   # trixie | sid | bookworm-backports
#                                             # prints the wrapper's path as the last line
#
# COLOSPEC_QEMU_VERSIONS_CACHE  parent directory (default /var/cache/colospec-test); the
#                      suite's files go to PARENT/qemu-SUITE: root/ (the unpacked packages),
#                      bin/qemu-system-x86_64 (the wrapper), stamp (SHA-256 of this script,
#                      the suite, then what was fetched). A matching stamp means no fetch.
# COLOSPEC_DEBIAN_MIRROR        default http://deb.debian.org/debian
# COLOSPEC_DEBIAN_SECURITY      default http://deb.debian.org/debian-security
#
# apt runs with a private configuration under PARENT/qemu-SUITE/apt (its own sources.list,
# lists, cache and an empty dpkg status): /etc/apt and the system's packages are not
# touched. The packages are qemu-system-x86 and qemu-system-common (which holds the
# modules), the firmware (qemu-system-data, seabios, ipxe-qemu) and the closure of their
# library dependencies (libc6 included), all of the suite's candidate versions. Needs root
# (for apt's downloads and the cache directory) and network to the Debian mirror; about
# 40 MB are downloaded. See README.md beside this script for how the wrapper works.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
script=$here/$(basename "${BASH_SOURCE[0]}")
repo=$(cd "$here/../.." && pwd)

log() { printf 'fetch-qemu: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}
usage() {
    printf 'usage: %s SUITE    (SUITE: trixie | sid | bookworm-backports)\n' "$0" >&2
    exit 2
}

(($# == 1)) || usage
suite=$1
mirror=${COLOSPEC_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${COLOSPEC_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
case $suite in
trixie)
    sources=("$mirror trixie" "$mirror trixie-updates" "$security trixie-security")
    ;;
sid)
    sources=("$mirror sid")
    ;;
bookworm-backports)
    sources=("$mirror bookworm" "$mirror bookworm-updates" "$security bookworm-security"
        "$mirror bookworm-backports")
    ;;
*) usage ;;
esac

parent=$(realpath -m -- "${COLOSPEC_QEMU_VERSIONS_CACHE:-/var/cache/colospec-test}")
cache=$parent/qemu-$suite
wrapper=$cache/bin/qemu-system-x86_64
stamp=$cache/stamp
multiarch=x86_64-linux-gnu

# The packages asked for by name; their library dependencies are added recursively.
top_packages=(qemu-system-x86 qemu-system-common qemu-system-data seabios ipxe-qemu)

wanted_stamp() {
    local s
    s=$(sha256sum <"$script") || return 1
    printf 'script-sha256 %s\nsuite %s\n' "${s%% *}" "$suite"
}

cached() {
    [[ -x $wrapper && -f $stamp ]] || return 1
    [[ "$(head -n 2 "$stamp")" == "$(wanted_stamp)" ]]
}

# Fast path: nothing to do.
if cached; then
    printf '%s\n' "$wrapper"
    exit 0
fi

case $cache/ in
"$repo"/*) die "cache $cache is inside the repository $repo; set COLOSPEC_QEMU_VERSIONS_CACHE elsewhere" ;;
esac
[[ $parent != / ]] || die "COLOSPEC_QEMU_VERSIONS_CACHE must not be /"
[[ $(id -u) -eq 0 ]] || die "fetching needs root (apt's download sandbox, $cache); run as root"
for tool in apt-get apt-cache dpkg-deb flock sha256sum timeout; do
    command -v "$tool" >/dev/null || die "$tool not found: this script needs Debian 12 (bookworm)"
done
[[ -r $keyring ]] || die "$keyring is missing (package debian-archive-keyring)"

# Everything below reports on stderr; fd 3 is the real stdout for the final path.
exec 3>&1 1>&2

mkdir -p "$parent"
exec 9>"$parent/.qemu-$suite.lock"
if ! flock -n 9; then
    log "another fetch holds $parent/.qemu-$suite.lock; waiting for it"
    flock 9
fi
if cached; then # fetched by the run we waited for
    printf '%s\n' "$wrapper" >&3
    exit 0
fi

step=starting
work=
finish() {
    local rc=$?
    [[ -n $work ]] && rm -rf -- "$work"
    ((rc == 0)) || log "FAILED while: $step (exit $rc); nothing in $cache was marked as fetched"
}
trap finish EXIT

started=$SECONDS
step="checking free disk space under $parent"
free_mib=$(df --output=avail -BM -- "$parent" | tail -n 1 | tr -dc 0-9)
((free_mib >= 512)) || die "only ${free_mib} MiB free under $parent; a suite needs about 400 MiB while fetching"

mkdir -p "$cache"
rm -f -- "$stamp"
rm -rf -- "$cache"/.fetch.* # work directories of runs that were killed
work=$(mktemp -d "$cache/.fetch.XXXXXX")
chmod 0755 "$work"

# --- a private apt ----------------------------------------------------------------------
apt=$work/apt
mkdir -p "$apt/etc/parts" "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/debs"
: >"$apt/status"
: >"$apt/etc/preferences"
for entry in "${sources[@]}"; do
    printf 'deb [signed-by=%s] %s main\n' "$keyring" "$entry"
done >"$apt/etc/sources.list"
if id _apt >/dev/null 2>&1; then # apt downloads as _apt; without this it warns "unsandboxed"
    chown _apt "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/debs"
fi
apt_opts=(
    -o "Dir::Etc::sourcelist=$apt/etc/sources.list"
    -o "Dir::Etc::sourceparts=$apt/etc/parts"
    -o "Dir::Etc::preferences=$apt/etc/preferences"
    -o "Dir::Etc::preferencesparts=$apt/etc/parts"
    -o "Dir::State::Lists=$apt/lists"
    -o "Dir::State::status=$apt/status"
    -o "Dir::Cache=$apt/cache"
    -o APT::Architecture=amd64
    -o APT::Architectures=amd64
    -o "APT::Default-Release=$suite"
    -o Acquire::Languages=none
    -o Debug::NoLocking=true
)

step="apt-get update (private lists for $suite)"
log "$step"
apt-get "${apt_opts[@]}" -q update

# The candidate version of each package named, as "PACKAGE VERSION" lines ("(none)" if
# the suite has none).
candidates() {
    apt-cache "${apt_opts[@]}" policy "$@" | awk '
        /^[^ ]/ { pkg = $1; sub(/:$/, "", pkg) }
        $1 == "Candidate:" { print pkg, $2 }'
}

# The dependency graph below the given packages, as "PACKAGE DEPENDENCY" lines: Depends
# and Pre-Depends, the first alternative of each, a virtual package replaced by its first
# provider. One apt-cache call (each takes seconds: this private apt keeps no binary cache).
dependency_edges() {
    apt-cache "${apt_opts[@]}" depends --recurse --no-recommends --no-suggests \
        --no-conflicts --no-breaks --no-replaces --no-enhances "$@" | awk '
        /^[^ ]/ { pkg = $1; group = 0; want_provider = 0; next }
        /^    / { if (want_provider) { print pkg, $1; want_provider = 0 } next }
        /^ [ |](Pre)?Depends: / {
            want_provider = 0
            alt = substr($0, 2, 1) == "|"
            dep = $2
            if (!group) {
                if (dep ~ /^</) want_provider = 1
                else print pkg, dep
            }
            group = alt
            next
        }
        { want_provider = 0 }'
}

step="resolving the library dependencies"
declare -A version=()
while read -r p v; do
    version[$p]=$v
done < <(candidates "${top_packages[@]}")
for p in "${top_packages[@]}"; do
    [[ ${version[$p]:-"(none)"} != "(none)" ]] || die "$suite has no $p"
done
qemu_version=${version[qemu-system-x86]}
declare -A deps=()
while read -r p dep; do
    deps[$p]+=" $dep"
done < <(dependency_edges "${top_packages[@]}")
# Walk the graph from the top packages through libraries only: adduser, debconf and the
# like are what dpkg needs to configure a package, not what the binary loads.
declare -A seen=()
packages=()
todo=("${top_packages[@]}")
for p in "${top_packages[@]}"; do
    seen[$p]=1
done
while ((${#todo[@]})); do
    p=${todo[-1]}
    unset 'todo[-1]'
    packages+=("$p")
    for dep in ${deps[$p]:-}; do
        [[ ($dep == lib* || $dep == zlib1g) && -z ${seen[$dep]:-} ]] || continue
        seen[$dep]=1
        todo+=("$dep")
    done
done
mapfile -t packages < <(printf '%s\n' "${packages[@]}" | sort)
log "qemu-system-x86 $qemu_version and ${#packages[@]} packages in all"

step="apt-get download (${#packages[@]} packages)"
log "$step"
(cd "$apt/debs" && apt-get "${apt_opts[@]}" -q download "${packages[@]}")
download_mib=$(du -sm "$apt/debs" | cut -f 1)

step="unpacking"
root=$work/root
mkdir "$root"
for deb in "$apt/debs"/*.deb; do
    dpkg-deb -x "$deb" "$root"
done
mapfile -t manifest < <(
    for deb in "$apt/debs"/*.deb; do
        dpkg-deb -f "$deb" Package Version | paste -sd ' '
    done | sed 's/^Package: \([^ ]*\) Version: /\1 /'
)

# Only qemu-system-x86_64 of usr/bin: the rest (qemu-system-i386, helpers) would need the
# loader as well, and nothing here starts them. No documentation either.
find "$root/usr/bin" -mindepth 1 -maxdepth 1 ! -name qemu-system-x86_64 -exec rm -rf -- {} +
rm -rf -- "$root/usr/share/doc" "$root/usr/share/man"

# The loader: the real file, wherever this libc6 puts it (trixie and sid: /usr/lib,
# bookworm: /lib; the /lib64 names are absolute symlinks into the system's /usr).
loader=
for candidate_loader in "$root/usr/lib/$multiarch/ld-linux-x86-64.so.2" \
    "$root/lib/$multiarch/ld-linux-x86-64.so.2"; do
    if [[ -f $candidate_loader && ! -L $candidate_loader ]]; then
        loader=$candidate_loader
        break
    fi
done
[[ -n $loader ]] || die "libc6 of $suite has no ld-linux-x86-64.so.2 where expected"
[[ -x $root/usr/bin/qemu-system-x86_64 ]] || die "qemu-system-x86 of $suite has no usr/bin/qemu-system-x86_64"

# QEMU finds its modules and firmware through get_relocated_path(): when the directory of
# its executable holds "qemu-bundle", every built-in path P (/usr/lib/x86_64-linux-gnu/qemu,
# /usr/share/qemu, /usr/share/seabios, ...) becomes EXECDIR/qemu-bundle/P. Started through
# the loader, QEMU's executable (/proc/self/exe) is the loader; so qemu-bundle/usr next to
# the loader points at root/usr, and the system's own (7.2) modules are never loaded.
bundle=$(dirname "$loader")/qemu-bundle
mkdir "$bundle"
ln -s "$(realpath -s --relative-to="$bundle" "$root/usr")" "$bundle/usr"

# Final place: replace a previous root/ only now that the new one is complete.
step="installing into $cache"
final_root=$cache/root
final_loader=$final_root/${loader#"$root"/}
library_path=$final_root/usr/lib/$multiarch:$final_root/lib/$multiarch
rm -rf -- "$cache/root.old"
if [[ -e $final_root ]]; then
    mv -- "$final_root" "$cache/root.old"
fi
mv -- "$root" "$final_root"
rm -rf -- "$cache/root.old"
mkdir -p "$cache/bin"
{
    printf '#!/bin/bash\n'
    printf '# qemu-system-x86_64 %s of Debian %s, started through that suite'\''s loader\n' \
        "$qemu_version" "$suite"
    printf '# with its libraries, from %s.\n' "$final_root"
    printf '# Written by tests/qemu-versions/fetch-qemu.sh; its README.md says how this works.\n'
    printf '# exec keeps the PID; "exec -a" makes /proc/PID/cmdline[0] this path as called;\n'
    printf '# --argv0 gives QEMU the same argv[0].\n'
    # shellcheck disable=SC2016 # "$0" and "$@" are the wrapper's, written literally
    printf 'exec -a "$0" %q --argv0 "$0" \\\n    --library-path %q \\\n    %q "$@"\n' \
        "$final_loader" "$library_path" "$final_root/usr/bin/qemu-system-x86_64"
} >"$wrapper.new"
chmod 0755 "$wrapper.new"
mv -f -- "$wrapper.new" "$wrapper"

# --- checks -----------------------------------------------------------------------------
step="checking that every library resolves inside $final_root"
outside=$(
    for elf in "$final_root/usr/bin/qemu-system-x86_64" "$final_root/usr/lib/$multiarch/qemu/"*.so; do
        [[ -e $elf ]] || continue
        "$final_loader" --library-path "$library_path" --list "$elf" |
            awk -v root="$final_root/" -v elf="${elf##*/}" '
                /=>/ && $3 !~ /^\(/ && index($3, root) != 1 { print elf ": " $1 " => " $3 }
                /not found/ { print elf ": " $0 }'
    done
)
[[ -z $outside ]] || die "libraries resolve outside $final_root:"$'\n'"$outside"

step="checking that the wrapper starts QEMU and answers QMP"
said=$(timeout 60 "$wrapper" --version) || die "'$wrapper --version' failed: $said"
log "${said%%$'\n'*}"
qmp=$(printf '%s\n' '{"execute":"qmp_capabilities"}' '{"execute":"query-version"}' \
    '{"execute":"qom-list-types"}' '{"execute":"quit"}' |
    timeout 60 "$wrapper" -machine none -nodefaults -no-user-config -display none -S \
        -qmp stdio 2>&1) || die "QEMU under '$wrapper' failed a QMP session: $(tail -n 3 <<<"$qmp")"
[[ $qmp == *'"qemu": {'* && $qmp == *'"name": "colo-compare"'* ]] ||
    die "QEMU under '$wrapper' gave unexpected QMP answers: $(tail -c 400 <<<"$qmp")"

{
    wanted_stamp
    printf 'qemu-system-x86 %s\nfetched %s in %ss (%s MiB downloaded)\nloader %s\n' \
        "$qemu_version" "$(date -u +%FT%TZ)" "$((SECONDS - started))" "$download_mib" \
        "$final_loader"
    printf 'package %s\n' "${manifest[@]}"
} >"$stamp.new"
mv -f -- "$stamp.new" "$stamp"

step="removing the private apt state"
rm -rf -- "$work"
work=
log "qemu-system-x86 $qemu_version of $suite ready in $((SECONDS - started))s" \
    "(${download_mib} MiB downloaded, $(du -sm "$cache" | cut -f 1) MiB in $cache)"
printf '%s\n' "$wrapper" >&3
