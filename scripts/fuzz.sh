#!/bin/sh
# Builds the libFuzzer targets with clang and runs each for SECONDS (default
# 60), seeded from tests/data/fuzz/: `scripts/fuzz.sh [SECONDS [TARGET...]]`,
# every target when none is named. Crashers land in build-fuzz/crashes/ and
# make the script fail; keep each as a regression input beside the target's
# seeds, in tests/data/fuzz/TARGET/, which `make check` replays.
set -eu
cd "$(dirname "$0")/.."
secs=${1:-60}
[ $# -gt 0 ] && shift
all="jpeg png webp exif attack recipients registry trace"
targets=${*:-$all}
for t in $targets; do
    case " $all " in *" $t "*) ;; *) echo "fuzz: no target '$t' (want: $all)"; exit 2 ;; esac
done
if ! command -v clang >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends clang libclang-rt-14-dev \
        || { echo "fuzz: clang unavailable, skipped"; exit 0; }
fi
[ -x configure ] || autoreconf -fi
mkdir -p build-fuzz && cd build-fuzz
[ -f Makefile ] || ../configure CC=clang --enable-fuzzing --disable-shared >/dev/null
make -j"$(nproc)" $(for t in $targets; do printf ' tests/fuzz/fuzz_%s' "$t"; done) >/dev/null

# The seed directories of a target: its own, and the decoders' images for
# the trace, which reads any of them as a suspect.
seeds_of() {
    case $1 in
    trace) echo trace jpeg png ;;
    *) echo "$1" ;;
    esac
}

mkdir -p crashes
status=0
# UBSan reports and carries on by default: make undefined behaviour a crash
UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export UBSAN_OPTIONS
for t in $targets; do
    work="corpus-$t"
    mkdir -p "$work"
    seeds=""
    for d in $(seeds_of "$t"); do
        [ -d "../tests/data/fuzz/$d" ] && seeds="$seeds ../tests/data/fuzz/$d"
    done
    dict=""
    [ -f "../tests/fuzz/$t.dict" ] && dict="-dict=../tests/fuzz/$t.dict"
    # shellcheck disable=SC2086 # $dict and $seeds are lists
    if ./tests/fuzz/fuzz_$t -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -timeout=10 $dict \
        -artifact_prefix=crashes/$t- -print_final_stats=1 "$work" $seeds >fuzz-$t.log 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' fuzz-$t.log)
        echo "fuzz $t: ${secs}s, ${runs:-?} runs, no crash"
    else
        echo "fuzz $t: FAILED"; tail -30 fuzz-$t.log; status=1
    fi
done
exit $status
