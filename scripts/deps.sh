#!/usr/bin/env bash
# Install the Debian packages skolsync needs (list: scripts/debian-packages.txt).
#
#   scripts/deps.sh [build|test|all]     (default: all)
#
# Installs only what is missing: a dpkg-query check first, 'apt-get update'
# only when something has to be installed. Needs root (or sudo) only then.
# Set SK_DEPS_DRY_RUN=1 to only print what is missing.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LIST=$HERE/debian-packages.txt
what=${1:-all}
case $what in build|test|all) ;; *) echo "usage: $0 [build|test|all]" >&2; exit 2 ;; esac

# packages of the wanted sections, comments stripped
mapfile -t wanted < <(awk -v want="$what" '
    { sub(/#.*/, ""); gsub(/^[ \t]+|[ \t]+$/, "") }
    /^\[.*\]$/ { sec = substr($0, 2, length($0) - 2); next }
    $0 == "" { next }
    want == "all" || want == sec { print $1 }
' "$LIST")
[[ ${#wanted[@]} -gt 0 ]] || { echo "deps.sh: no packages for '$what' in $LIST" >&2; exit 1; }

installed=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${wanted[@]}" 2>/dev/null \
            | awk '$2 == "installed" { print $1 }' || true)
missing=()
for p in "${wanted[@]}"; do
    grep -qxF "$p" <<<"$installed" || missing+=("$p")
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "deps.sh: all ${#wanted[@]} $what packages installed" >&2
    exit 0
fi
echo "deps.sh: missing: ${missing[*]}" >&2
[[ -n ${SK_DEPS_DRY_RUN:-} ]] && exit 0

sudo=
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "deps.sh: need root to install" >&2; exit 1; }
    sudo=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "deps.sh: installed ${#missing[@]} package(s)" >&2
