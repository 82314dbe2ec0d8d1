#!/usr/bin/env bash
# A connector is one folder (docs/architecture.md §2): deleting connectors/NAME/
# with its tests must leave a tree that configures, builds and registers the
# other connectors. For each NAME given (default: every connector folder),
# copies the working tree to a temporary directory, deletes the folder and the
# test files that include its headers (its tests), builds everything there and checks that
# `skolsync connectors` no longer lists the removed types but still lists the
# others. Exit 1 on the first folder whose removal breaks the build.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for d in connectors/*/; do
    n="$(basename "$d")"
    [ "$n" = common ] || names+=("$n")
  done
fi
work="$(mktemp -d /tmp/sk-removal.XXXXXX)"
trap 'rm -rf "$work"' EXIT
for n in "${names[@]}"; do
  [ -d "connectors/$n" ] || { echo "no connectors/$n" >&2; exit 64; }
  tree="$work/$n"
  mkdir -p "$tree"
  git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C "$tree"
  types="$(sed -n 's/.*\.type *= *"\([a-z0-9-]*\)".*/\1/p' "connectors/$n"/*.c | sort -u)"
  rm -rf "$tree/connectors/$n"
  # its tests: those that include one of its headers (by folder or by name,
  # generated protobuf headers too)
  heads="$n/"
  for h in "connectors/$n"/*.h "connectors/$n"/*.proto; do
    [ -e "$h" ] || continue
    b="$(basename "$h")"
    case "$b" in
      *.proto) heads="$heads|${b%.proto}.pb-c.h" ;;
      *) heads="$heads|$b" ;;
    esac
  done
  heads="${heads//./\\.}"
  { grep -rlE "#include \"($heads)" "$tree/tests" --include="*.c" || true; } | xargs -r rm -f
  echo "== without connectors/$n (types: ${types:-none found})"
  if ! cmake -S "$tree" -B "$tree/build" -G Ninja >"$tree.log" 2>&1 ||
     ! nice cmake --build "$tree/build" >>"$tree.log" 2>&1; then
    tail -30 "$tree.log"
    echo "FAIL: removing connectors/$n breaks the build (log above)" >&2
    exit 1
  fi
  listed="$("$tree/build/skolsync" connectors)"
  for t in $types; do
    if grep -qw -- "$t" <<<"$listed"; then
      echo "FAIL: $t still listed without connectors/$n" >&2
      exit 1
    fi
  done
  echo "ok: builds; $(grep -c . <<<"$listed") line(s) from skolsync connectors"
  rm -rf "$tree" "$tree.log"
done
