# lib.sh -- a tiny harness for the end-to-end CLI tests: run a command, check
# its exit status and what it printed, count, and print one summary line.
# Sourced by tests/cli/*.sh; $TRACEMARK is the binary under test.
set -u
: "${TRACEMARK:?TRACEMARK must point at the tracemark binary}"
: "${TM_SRCDIR:=$(cd "$(dirname "$0")/../.." && pwd)}"
T=$(mktemp -d "${TMPDIR:-/tmp}/tmcli-XXXXXX")
trap 'rm -rf "$T"' EXIT
npass=0
nfail=0
OUT="$T/.stdout"
ERR="$T/.stderr"

# expect NAME STATUS CMD...: runs CMD, checks the exit status.
expect() {
    name=$1; want=$2; shift 2
    "$@" >"$OUT" 2>"$ERR"
    got=$?
    if [ "$got" -eq "$want" ]; then
        npass=$((npass + 1)); echo "ok   $name"
    else
        nfail=$((nfail + 1)); echo "FAIL $name: exit $got, wanted $want"
        sed 's/^/     stderr: /' "$ERR" | head -5
    fi
}

# has NAME FILE REGEX: FILE (stdout/stderr of the last expect) matches REGEX.
has() {
    if grep -Eq -- "$3" "$2"; then
        npass=$((npass + 1)); echo "ok   $1"
    else
        nfail=$((nfail + 1)); echo "FAIL $1: no /$3/ in output:"; head -5 "$2" | sed 's/^/     /'
    fi
}

# hasnt NAME FILE REGEX: FILE does not match REGEX.
hasnt() {
    if grep -Eq -- "$3" "$2"; then
        nfail=$((nfail + 1)); echo "FAIL $1: unexpected /$3/ in output"
    else
        npass=$((npass + 1)); echo "ok   $1"
    fi
}

# lines NAME FILE N: FILE has exactly N lines.
lines() {
    n=$(wc -l <"$2")
    if [ "$n" -eq "$3" ]; then npass=$((npass + 1)); echo "ok   $1"
    else nfail=$((nfail + 1)); echo "FAIL $1: $n lines, wanted $3"; fi
}

# ok NAME CONDITION...: a test(1) condition holds.
ok() {
    name=$1; shift
    if [ "$@" ]; then npass=$((npass + 1)); echo "ok   $name"
    else nfail=$((nfail + 1)); echo "FAIL $name"; fi
}

finish() {
    echo "$npass passed, $nfail failed"
    [ "$nfail" -eq 0 ]
}
