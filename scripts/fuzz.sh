#!/usr/bin/env bash
# scripts/fuzz.sh [SECONDS]: builds the libFuzzer targets (clang) in
# build-fuzz/ and runs each for SECONDS (default 60) on its seed corpus in
# tests/fuzz/corpus/<target>/. Exits non-zero if any target crashed, leaked,
# hit undefined behaviour or timed out, printing the input that did it.
#
# The committed corpus is only read: new inputs go to build-fuzz/corpus/
# (scratch, outside git) and findings to build-fuzz/artifacts/<target>/.
# A fixed crash's input is added to tests/fuzz/corpus/<target>/ by hand,
# named after the bug (docs/fuzzing.md).
#
#   make fuzz                      # 60 s per target
#   scripts/fuzz.sh 10             # the CI pass
#   FUZZ_TARGETS="fuzz_config" scripts/fuzz.sh 300
#   FUZZ_JOBS=2 scripts/fuzz.sh    # two targets at a time (default: 1)
set -u
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-60}
BUILD=${FUZZ_BUILD:-build-fuzz}
JOBS=${FUZZ_JOBS:-1}
TARGETS=${FUZZ_TARGETS:-"fuzz_config fuzz_daemon_config fuzz_codec_json fuzz_codec_proto fuzz_sink_decode fuzz_jsonl fuzz_uuid_time fuzz_ss12000_hook fuzz_ss12000_page fuzz_http_api fuzz_snapshot fuzz_hub"}

if [ ! -f "$BUILD/build.ninja" ]; then
    CC=clang cmake -S . -B "$BUILD" -G Ninja -DSK_FUZZ=ON -DSK_WERROR=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        || exit 2
fi
cmake --build "$BUILD" --target $TARGETS || exit 2

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:symbolize=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

run_one() {
    local t=$1
    local scratch="$BUILD/corpus/$t" artifacts="$BUILD/artifacts/$t"
    mkdir -p "$scratch" "$artifacts"
    # The scratch corpus first: new inputs are written there, never into git.
    "$BUILD/fuzz/$t" "$scratch" "tests/fuzz/corpus/$t" \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -timeout=25 \
        -max_len=65536 -print_final_stats=1 \
        -artifact_prefix="$artifacts/" </dev/null >"$BUILD/artifacts/$t.log" 2>&1
    local rc=$?
    local execs
    execs=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$BUILD/artifacts/$t.log" | grep -o '[0-9]*$')
    if [ $rc -ne 0 ]; then
        echo "FAIL $t (exit $rc), log: $BUILD/artifacts/$t.log"
        # The finding (a harness says what broke on the line before libFuzzer's).
        grep -h -m1 -B1 -E 'ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)|runtime error' \
            "$BUILD/artifacts/$t.log" | sed 's/^/    /'
        grep -h -o "Test unit written to .*" "$BUILD/artifacts/$t.log" | sed 's/^/    /'
        return 1
    fi
    echo "ok   $t (${SECONDS_PER_TARGET}s, ${execs:-?} exec/s)"
}

failed=0
set -- $TARGETS
while [ $# -gt 0 ]; do
    pids=()
    names=()
    for _ in $(seq 1 "$JOBS"); do
        [ $# -gt 0 ] || break
        run_one "$1" &
        pids+=($!)
        names+=("$1")
        shift
    done
    for p in "${pids[@]}"; do
        wait "$p" || failed=1
    done
done
if [ $failed -ne 0 ]; then
    echo "fuzzing found a problem: reproduce with $BUILD/fuzz/<target> <input>"
    exit 1
fi
echo "fuzzing: no crash in $(echo $TARGETS | wc -w) targets"
