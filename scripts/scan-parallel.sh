#!/bin/sh
# scan-parallel.sh -- trace many suspects on one machine with N worker
# processes (xargs -P; POSIX sh, no GNU parallel needed).
#
# The registry is copied once into a private directory with `tracemark
# registry snapshot` (a consistent copy even while markers write to it, the
# same copy ids and journal), made read-only and verified in full before any
# suspect is read: a tampered registry stops the scan before it starts. Each
# worker runs `tracemark trace --json` on a batch of suspects against that
# copy; the JSON lines (one per suspect, in no fixed order) are gathered into
# OUT and a summary is printed: files, verdicts, accusations by recipient,
# errors. docs/scaling.md shows the same over ssh hosts and Slurm.
#
# File names may hold spaces, newlines or anything else: they travel
# NUL-separated (find -print0, xargs -0). Exit 0 when every suspect was
# traced (accused or not), 2 on any error (trace's own lines are passed on
# to stderr).
set -u

me=scan-parallel.sh
usage() {
    cat <<'EOF'
Usage: scan-parallel.sh -k KEYFILE -r REGISTRY [-j N] [-o OUT.jsonl] [-n BATCH]
                        [-B] [-p FPR] [-0] [DIR|FILE...]

Traces every .jpg, .jpeg, .png and .webp file under each DIR (and each FILE)
with N `tracemark trace --json` processes at once, against a read-only,
verified snapshot of REGISTRY. With no DIR or FILE, reads suspect paths from
stdin, one per line (with -0: NUL-separated, as from find -print0).

  -k KEYFILE   the key the copies were marked with
  -r REGISTRY  the registry (only read: a snapshot of it is traced against)
  -j N         worker processes (default: the number of CPUs)
  -o OUT       write the JSON lines here (default: stdout, and the summary
               goes to stderr)
  -n BATCH     suspects per trace process (default: about 4 batches per
               worker, at most 256): each process loads the registry once,
               so larger batches cost less on big registries
  -B           blind traces only (trace --blind)
  -p FPR       false-accusation budget per suspect (trace --fpr)
  -0           stdin holds NUL-separated paths
  -h           this help

The tracemark program is $TRACEMARK, else `tracemark` on PATH.
Exit status: 0 every suspect traced; 2 an error (some suspect or the registry).
EOF
}

die() {
    printf '%s: %s\n' "$me" "$*" | tr -d '\r' >&2
    exit 2
}

key='' reg='' jobs='' out=- batch='' blind='' fpr='' nul=''
bad_usage() {
    printf '%s: %s\n' "$me" "$*" >&2
    printf "Try '%s -h'.\n" "$me" >&2
    exit 2
}
while getopts :k:r:j:o:n:Bp:0h opt; do
    case $opt in
    k) key=$OPTARG ;;
    r) reg=$OPTARG ;;
    j) jobs=$OPTARG ;;
    o) out=$OPTARG ;;
    n) batch=$OPTARG ;;
    B) blind=1 ;;
    p) fpr=$OPTARG ;;
    0) nul=1 ;;
    h) usage; exit 0 ;;
    :) bad_usage "option '-$OPTARG' needs an argument" ;;
    *) bad_usage "unknown option '-$OPTARG'" ;;
    esac
done
shift $((OPTIND - 1))

[ -n "$key" ] || die "missing -k KEYFILE"
[ -n "$reg" ] || die "missing -r REGISTRY"
if [ -z "$jobs" ]; then
    jobs=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc 2>/dev/null || echo 1)
fi
case $jobs in '' | *[!0-9]* | 0) die "-j wants a whole number of workers, not '$jobs'" ;; esac
[ -z "$batch" ] || case $batch in *[!0-9]* | 0) die "-n wants a whole number of suspects, not '$batch'" ;; esac
tm=${TRACEMARK:-tracemark}
command -v "$tm" >/dev/null 2>&1 || die "$tm: no such program (set TRACEMARK)"
[ -n "$nul" ] && [ $# -gt 0 ] && die "-0 reads stdin: give no DIR or FILE with it"
for a in "$@"; do
    [ -e "$a" ] || die "$a: no such file or directory"
done
if [ "$out" != - ]; then
    outdir=$(dirname -- "$out")
    if [ ! -d "$outdir" ] || [ ! -w "$outdir" ]; then die "$out: cannot write there"; fi
fi

W=$(mktemp -d "${TMPDIR:-/tmp}/tmscan-XXXXXX") || die "cannot make a temporary directory"
trap 'rm -rf "$W"' EXIT
trap 'exit 2' INT TERM HUP

now() { # milliseconds, or seconds * 1000 where date has no %N
    t=$(date +%s%N 2>/dev/null)
    case $t in *N | '') echo $(($(date +%s) * 1000)) ;; *) echo $((t / 1000000)) ;; esac
}
t0=$(now)

# ---- the registry: a snapshot, read-only, verified --------------------------
snap="$W/registry.db"
"$tm" registry snapshot -r "$reg" "$snap" >/dev/null 2>"$W/reg.err" || {
    sed 's/\r//' "$W/reg.err" | head -n 1 >&2
    exit 2
}
chmod a-w "$snap"
"$tm" registry verify -k "$key" -r "$snap" >"$W/verify.out" 2>"$W/reg.err"
vrc=$?
if [ "$vrc" -eq 1 ]; then
    n=$(grep -c '' "$W/reg.err")
    [ "$n" -eq 1 ] && n="1 finding" || n="$n findings"
    die "$reg: fails verification ($n): see tracemark registry verify -r $reg"
elif [ "$vrc" -ne 0 ]; then
    # verify names the snapshot; the user knows the registry by its own name
    why=$(awk -v p="tracemark: $snap: " 'NR == 1 { print index($0, p) == 1 ? substr($0, length(p) + 1) : $0 }' \
        "$W/reg.err")
    die "$reg: ${why:-cannot verify the registry}"
fi
regline=$(sed -n 's/^[^:]*: \(.*\)$/\1/p' "$W/verify.out")

# ---- the suspects, NUL-separated --------------------------------------------
list="$W/suspects"
if [ $# -gt 0 ]; then
    find "$@" -type f \( -name '*.[jJ][pP][gG]' -o -name '*.[jJ][pP][eE][gG]' -o -name '*.[pP][nN][gG]' \
        -o -name '*.[wW][eE][bB][pP]' \) -print0 >"$list" || die "cannot list the suspects"
elif [ -n "$nul" ]; then
    cat >"$list"
else
    tr '\n' '\000' >"$list"
fi
nfiles=$(tr -dc '\000' <"$list" | wc -c | tr -d ' ')
[ "$nfiles" -gt 0 ] || die "no .jpg, .jpeg, .png or .webp suspect found"
if [ -z "$batch" ]; then # about 4 batches per worker, so they end together; 256 at most
    batch=$(((nfiles + 4 * jobs - 1) / (4 * jobs)))
    [ "$batch" -le 256 ] || batch=256
fi

# ---- the workers ------------------------------------------------------------
# Each batch: trace's JSON lines appended to the worker's own file (no two
# processes write one file), its stderr kept, and the number of suspects
# that gave no line (errors) noted.
SCAN_TM=$tm SCAN_KEY=$key SCAN_REG=$snap SCAN_W=$W SCAN_BLIND=$blind SCAN_FPR=$fpr
export SCAN_TM SCAN_KEY SCAN_REG SCAN_W SCAN_BLIND SCAN_FPR
# shellcheck disable=SC2016
worker='
b="$SCAN_W/batch.$$"
n=$#
set -- -- "$@"
[ -n "$SCAN_FPR" ] && set -- --fpr "$SCAN_FPR" "$@"
[ -n "$SCAN_BLIND" ] && set -- --blind "$@"
"$SCAN_TM" trace -k "$SCAN_KEY" -r "$SCAN_REG" --json "$@" >"$b.json" 2>"$b.err"
got=$(grep -c "" "$b.json")
cat "$b.json" >>"$SCAN_W/out.$$"
cat "$b.err" >>"$SCAN_W/err.$$"
echo $((n - got)) >>"$SCAN_W/nerr.$$"
rm -f "$b.json" "$b.err"
exit 0
'
xargs -0 -P "$jobs" -n "$batch" sh -c "$worker" sh <"$list"
t1=$(now)

# ---- the results ------------------------------------------------------------
cat "$W"/out.* 2>/dev/null >"$W/all.jsonl"
cat "$W"/err.* 2>/dev/null >"$W/all.err"
errors=$(cat "$W"/nerr.* 2>/dev/null | awk '{ n += $1 } END { print n + 0 }')
lines=$(grep -c '' "$W/all.jsonl")
missing=$((nfiles - lines - errors)) # batches that never ran (xargs could not start a worker)
[ "$missing" -gt 0 ] && errors=$((errors + missing))

# trace's error lines, not its notes or per-batch summaries
grep -v -e '^summary: ' -e '^  .*: accused in [0-9][0-9]* suspects*$' -e '^tracemark: note: ' "$W/all.err" >&2

if [ "$out" = - ]; then
    cat "$W/all.jsonl"
    exec 3>&2
else
    tmp="$out.tmp-$$"
    if ! cp "$W/all.jsonl" "$tmp" || ! mv -f "$tmp" "$out"; then
        rm -f "$tmp"
        die "$out: cannot write the results"
    fi
    exec 3>&1
fi

# The verdicts and accused recipients, read from trace's JSON lines: the
# file name (a JSON string, escapes and all) is skipped first, so nothing in
# it is mistaken for a field. Recipients are shown as JSON escapes them.
ms=$((t1 - t0))
awk -v files="$nfiles" -v errors="$errors" -v jobs="$jobs" -v ms="$ms" -v reg="$regline" -v regname="$reg" -v whofile="$W/who" '
function str(s) { return match(s, /^"([^"\\]|\\.)*"/) ? RLENGTH : 0 }
{
    s = $0
    if (substr(s, 1, 9) != "{\"file\": ") { odd++; next }
    s = substr(s, 10); n = str(s); if (!n) { odd++; next }
    s = substr(s, n + 1)
    if (!match(s, /^, "verdict": "[a-z]+"/)) { odd++; next }
    v = substr(s, 15, RLENGTH - 15); s = substr(s, RLENGTH + 1)
    verdict[v]++
    if (v != "accused") next
    if (substr(s, 1, 14) != ", \"accused\": [") { odd++; next }
    s = substr(s, 15)
    while (substr(s, 1, 14) == "{\"recipient\": ") {
        s = substr(s, 15); n = str(s)
        if (!n) { odd++; break }
        who[substr(s, 2, n - 2)]++
        s = substr(s, n + 1)
        e = index(s, "}"); if (!e) { odd++; break }
        s = substr(s, e + 1)
        if (substr(s, 1, 2) == ", ") s = substr(s, 3)
    }
}
END {
    rate = ms > 0 ? sprintf("%.1f", files * 1000 / ms) : "-"
    printf "registry %s: %s\n", regname, reg
    printf "scanned %d file%s with %d worker%s in %.1f s (%s suspects/s): %d accused, %d inconclusive, %d none, %d error%s\n",
        files, files == 1 ? "" : "s", jobs, jobs == 1 ? "" : "s", ms / 1000, rate,
        verdict["accused"], verdict["inconclusive"], verdict["none"], errors, errors == 1 ? "" : "s"
    if (odd) printf "%d JSON line%s not understood (a newer tracemark?)\n", odd, odd == 1 ? "" : "s"
    for (w in who) printf "%d\t%s\n", who[w], w >whofile
}' "$W/all.jsonl" >&3
if [ -s "$W/who" ]; then # most accused first
    tab=$(printf '\t')
    sort -t "$tab" -k1,1nr -k2 "$W/who" |
        awk -F "$tab" '{ printf "  %s: accused in %d suspect%s\n", $2, $1, $1 == 1 ? "" : "s" }' >&3
fi

[ "$errors" -eq 0 ] || exit 2
exit 0
