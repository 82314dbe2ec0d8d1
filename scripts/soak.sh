#!/usr/bin/env bash
# The crash soak: tests/integration/test_crash.c with 20 trials of about
# 100 000 records each (SK_CRASH_STUDENTS=2400: 99 000-100 000 records,
# depending on the seed), then the three-node failover test
# tests/integration/test_ha_cluster.c at 100 000 records (SK_HA_RECORDS;
# `make test` runs it too, once), inside scripts/with-testenv.sh (Kafka +
# PostgreSQL started here and stopped afterwards, also on failure or Ctrl-C).
#
#   scripts/soak.sh [BUILD_DIR]            default: build (or $SK_BUILD_DIR)
#   SK_CRASH_TRIALS=5 scripts/soak.sh      fewer trials
#   SK_CRASH_SEED=123456 scripts/soak.sh   replay: trial i uses seed 123456+i
#   SK_EMBEDDED_TRIALS=50 (default)        kill -9 trials on the embedded broker first
#                                          (test_embedded_restart; SK_EMBEDDED_SEED replays)
#   SK_HA_RECORDS=100000 (default)         the dataset of test_ha_cluster, run last
#
# Each trial: the SS 12000 test server with a generated dataset, the daemon
# (ss12000-source, page_size 100 -> ~1 000 Kafka transactions per full sync;
# postgres-sink, batch_size 200) killed with -9 five times (at a random time
# after the start, at a random 5-45 % and 50-95 % of the dataset, after each
# of two waves of mutations at the server), restarted each time; then every
# table must equal the server's data. A failure names the trial's seed.
#
# Expected run time (measured on the 2-core CI machine): about 130 s a trial
# at 100 000 records (server start and data generation ~10 s, five kills and
# restarts, convergence, a full comparison), so 20 trials take about
# 45 minutes, plus ~30 s for the test environment. test_ha_cluster then
# (three daemons; kill -9 of the source's owner mid-sync, kill -9 of a sink
# partition holder during a wave of changes, a rolling restart during another;
# PostgreSQL and the topics checked after each) takes under two minutes at
# 100 000 records (81-83 s measured). Each trial has a 30 minute
# Criterion timeout; the whole run is bounded by SK_SOAK_TIMEOUT (default
# 3 hours).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BUILD=${1:-${SK_BUILD_DIR:-build}}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac

if [[ ! -x $BUILD/tests/test_crash || ! -x $BUILD/tests/test_embedded_restart ||
      ! -x $BUILD/tests/test_ha_cluster || ! -x $BUILD/skolsync ]]; then
    cmake --build "$BUILD" --target test_crash test_embedded_restart test_ha_cluster skolsync
fi

cd "$ROOT"
# First the embedded broker's kill -9 trials (tests/integration/test_embedded_restart.c:
# killed during a sync, changes incl. deletions at the SS 12000 server while it is
# down, SQLite equal to the server after each restart). No Kafka needed.
export SK_EMBEDDED_TRIALS=${SK_EMBEDDED_TRIALS:-50}
echo "soak: $SK_EMBEDDED_TRIALS kill -9 trials on the embedded broker;" \
     "expect about $((SK_EMBEDDED_TRIALS * 10 / 60 + 1)) minutes" >&2
timeout --foreground -k 60 "${SK_SOAK_TIMEOUT:-3h}" "$BUILD/tests/test_embedded_restart" \
    --jobs 1 --verbose --filter 'embedded_restart/kill*' || exit 1

# the test environment's state next to the build (scripts/with-testenv.sh stops it at the end)
export SK_TESTENV_DIR=${SK_TESTENV_DIR:-$BUILD/testenv}
export SK_CRASH_TRIALS=${SK_CRASH_TRIALS:-20}
export SK_CRASH_STUDENTS=${SK_CRASH_STUDENTS:-2400}
echo "soak: $SK_CRASH_TRIALS trials x $SK_CRASH_STUDENTS students (~100 000 records each);" \
     "expect about $((SK_CRASH_TRIALS * 130 / 60 + 1)) minutes" >&2

export SK_HA_RECORDS=${SK_HA_RECORDS:-100000}
# test_ha_cluster after test_crash, in the same test environment
exec timeout --foreground -k 60 "${SK_SOAK_TIMEOUT:-3h}" \
    "$HERE/with-testenv.sh" bash -c '"$1" --jobs 1 --verbose &&
        echo "soak: test_ha_cluster, SK_HA_RECORDS=$SK_HA_RECORDS" >&2 &&
        "$2" --jobs 1 --verbose' soak "$BUILD/tests/test_crash" "$BUILD/tests/test_ha_cluster"
