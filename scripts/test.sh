#!/bin/sh
# Sets up and runs the whole test suite: dependencies, an optimised -Werror
# build with `make check`, the same suite under AddressSanitizer and
# UndefinedBehaviorSanitizer, and `make distcheck` (the release tarball builds
# and passes its tests from a clean tree). Ends with one summary line.
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
sh scripts/deps.sh
autoreconf -fi >/dev/null 2>&1 || autoreconf -fi
jobs=$(nproc)

summary() {  # summary DIR LABEL: add the automake totals of DIR
    log="$1/test-suite.log"
    p=$(sed -n 's/^# PASS: *//p' "$log" | head -1)
    f=$(sed -n 's/^# FAIL: *//p' "$log" | head -1)
    e=$(sed -n 's/^# ERROR: *//p' "$log" | head -1)
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-0} + ${e:-0}))
    echo "$2: ${p:-0} passed, $(( ${f:-0} + ${e:-0} )) failed"
}
passed=0
failed=0
status=0

echo "== release build (-Werror) + make check"
mkdir -p build && cd build
[ -f Makefile ] || ../configure --enable-werror
make -j"$jobs"
make -j"$jobs" check || status=1
[ $status -eq 0 ] || cat test-suite.log
summary "$top/build" "release"

echo "== sanitizer build (ASan + UBSan) + make check"
cd "$top" && mkdir -p build-asan && cd build-asan
[ -f Makefile ] || ../configure --enable-werror --enable-sanitizers
make -j"$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    make -j"$jobs" check || { status=1; cat test-suite.log; }
summary "$top/build-asan" "sanitizers"

echo "== make distcheck"
cd "$top/build"
if make -j"$jobs" distcheck >distcheck.log 2>&1; then
    echo "distcheck: passed"
else
    tail -40 distcheck.log
    echo "distcheck: FAILED"
    status=1
fi

echo
echo "$passed passed, $failed failed"
exit $status
