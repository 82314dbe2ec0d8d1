#!/usr/bin/env bash
# Builds the Debian package (make deb; cmake/deb.cmake says how and why).
#
#   scripts/deb.sh [BUILD_DIR [RELEASE]]    (default: build-deb, 1)
#
# BUILD_DIR is configured for packaging: prefix /usr, the unit in
# /lib/systemd/system, no tests, Debian's build flags with every hardening
# feature (dpkg-buildflags), warnings not fatal (a newer compiler must not
# break a package build). RELEASE is the Debian revision (0.1.0-RELEASE).
# Prints the path of the .deb on stdout; everything else goes to stderr.
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=$(realpath -m "${1:-$SRC/build-deb}")
release=${2:-1}
[[ $release =~ ^[0-9]+$ ]] || { echo "deb.sh: RELEASE must be a number" >&2; exit 64; }

export DEB_BUILD_MAINT_OPTIONS=hardening=+all
cflags="$(dpkg-buildflags --get CFLAGS) $(dpkg-buildflags --get CPPFLAGS)"
ldflags=$(dpkg-buildflags --get LDFLAGS)

cmake -S "$SRC" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_INSTALL_PREFIX=/usr -DSK_SYSTEMD_UNITDIR=/lib/systemd/system \
    -DSK_BUILD_TESTS=OFF -DSK_WERROR=OFF -DSK_DEB_RELEASE="$release" \
    "-DCMAKE_C_FLAGS=$cflags" "-DCMAKE_EXE_LINKER_FLAGS=$ldflags" >&2
cmake --build "$dir" >&2
(cd "$dir" && cpack -G DEB >&2)
deb=$(ls "$dir"/skolsync_*-"$release"_*.deb)
echo "$deb"
