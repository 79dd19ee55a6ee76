#!/usr/bin/env bash
# The glibc floor of ELF files: the highest GLIBC_x.y symbol version each one needs from
# glibc, which is the oldest glibc the dynamic loader will load it on.
#
#   tools/glibc-floor.sh [--max X.Y] FILE...
#
# Prints one line per file, `FILE: GLIBC_2.28`. With --max, exits 1 when any file needs a
# newer version than X.Y, or needs GLIBC_PRIVATE (private symbols break on any glibc update).
# The versions come from the file's version-needs section (`readelf -V`, what the loader
# checks) and its dynamic symbols (`objdump -T`), from binutils.
#
# vgpu's libvgpu.so must load in CUDA images based on glibc 2.28 (UBI 8) and newer: the
# release build (tools/release.sh) links against glibc 2.28 with cargo-zigbuild, and checks
# every file it ships with `--max 2.28`.
set -euo pipefail

max=""
if [[ "${1:-}" == "--max" ]]; then
    max="${2:?--max needs a version, e.g. 2.28}"
    shift 2
fi
if [[ $# -eq 0 ]]; then
    echo "usage: $0 [--max X.Y] FILE..." >&2
    exit 2
fi
for tool in readelf objdump; do
    command -v "$tool" >/dev/null 2>&1 || { echo "$0: '$tool' is required: apt-get install binutils" >&2; exit 2; }
done

# Numeric comparison of dotted versions: true when $1 > $2.
newer() { [[ "$1" != "$2" && "$(printf '%s\n%s\n' "$1" "$2" | sort -V | tail -1)" == "$1" ]]; }

status=0
for f in "$@"; do
    if [[ ! -f "$f" ]]; then
        echo "$f: no such file" >&2
        status=1
        continue
    fi
    versions=$( { readelf -W -V "$f" 2>/dev/null; objdump -T "$f" 2>/dev/null; } \
        | grep -oE 'GLIBC_([0-9]+(\.[0-9]+)+|PRIVATE)' | sort -u || true)
    numeric=$(grep -E '^GLIBC_[0-9]' <<<"$versions" | sed 's/^GLIBC_//' | sort -V | tail -1 || true)
    floor="${numeric:+GLIBC_$numeric}"
    line="$f: ${floor:-no versioned glibc symbols}"
    if grep -q '^GLIBC_PRIVATE$' <<<"$versions"; then
        line+=" (and GLIBC_PRIVATE)"
        [[ -n "$max" ]] && status=1
    fi
    if [[ -n "$max" && -n "$numeric" ]] && newer "$numeric" "$max"; then
        line+="  ABOVE the floor $max:"
        # Name the symbols that need the newer versions, so the cause is on the screen.
        line+=$(objdump -T "$f" | awk -v max="$max" '
            match($0, /GLIBC_[0-9.]+/) {
                v = substr($0, RSTART + 6, RLENGTH - 6)
                split(v, a, "."); split(max, b, ".")
                if (a[1] + 0 > b[1] + 0 || (a[1] + 0 == b[1] + 0 && a[2] + 0 > b[2] + 0))
                    printf " %s@GLIBC_%s", $NF, v
            }')
        status=1
    elif [[ -n "$max" ]]; then
        line+="  (floor $max: ok)"
    fi
    echo "$line"
done
exit "$status"
