#!/bin/sh
# Builds the libFuzzer targets with clang and runs each for SECONDS (default
# 60), seeded from tests/data. Crashers land in build-fuzz/crashes/ and make the
# script fail; keep them as regression inputs under tests/data/regress/.
set -eu
cd "$(dirname "$0")/.."
secs=${1:-60}
if ! command -v clang >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends clang libclang-rt-14-dev \
        || { echo "fuzz: clang unavailable, skipped"; exit 0; }
fi
[ -x configure ] || autoreconf -fi
mkdir -p build-fuzz && cd build-fuzz
[ -f Makefile ] || ../configure CC=clang --enable-fuzzing --disable-shared >/dev/null
make -j"$(nproc)" tests/fuzz/fuzz_jpeg tests/fuzz/fuzz_png tests/fuzz/fuzz_webp tests/fuzz/fuzz_exif >/dev/null
mkdir -p crashes
status=0
for t in jpeg png webp exif; do
    work="corpus-$t"
    mkdir -p "$work"
    seeds="../tests/data/fuzz/$t"
    [ -d "$seeds" ] || seeds=""
    if ./tests/fuzz/fuzz_$t -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
        -artifact_prefix=crashes/$t- -print_final_stats=1 "$work" $seeds >fuzz-$t.log 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' fuzz-$t.log)
        echo "fuzz $t: ${secs}s, ${runs:-?} runs, no crash"
    else
        echo "fuzz $t: FAILED"; tail -30 fuzz-$t.log; status=1
    fi
done
exit $status
