#!/bin/sh
# `tracemark robustness` end to end: a small sweep of two corpus photos
# through three attacks writes JSON with every trial, an HTML report with its
# plots and a markdown summary; bad specs and bad options fail at once with a
# one-line error and write nothing; an interrupted sweep cleans up.
. "$(dirname "$0")/lib.sh"
C="$TM_SRCDIR/corpus"
mkdir -p "$T/corpus" "$T/tmp"
ln -s "$C/skimage_rocket.jpg" "$C/skimage_coffee.png" "$T/corpus/"
TMPDIR="$T/tmp"
export TMPDIR

expect "help" 0 "$TRACEMARK" robustness --help
has "help: usage" "$OUT" "^Usage: tracemark robustness \[OPTIONS\] \[CORPUS_DIR\]"
has "help: exit status 3" "$OUT" "^3 the sweep ran but accused an innocent|, 3 the sweep ran"
expect "help via tracemark help" 0 "$TRACEMARK" help robustness
has "help via help" "$OUT" "im:ARGS"
expect "list the default grid" 0 "$TRACEMARK" robustness --list-grid
has "default grid has JPEG" "$OUT" "^jpeg:q=50$"
has "default grid has comments" "$OUT" "^# "

# a sweep: 2 images x 3 attacks x (1 leak + 1 null: unmarked or wrong key)
expect "sweep" 0 "$TRACEMARK" robustness -j 2 -n 100 -a "none;jpeg:q=50;scale:0.5" \
    --json "$T/r.json" --report "$T/r.html" "$T/corpus"
has "markdown table" "$OUT" '^\| `jpeg:q=50` \| [0-9]+/2 '
has "markdown total" "$OUT" '^\| \*\*all\*\* \| '
has "markdown per image" "$OUT" '^\| `skimage_coffee.png` \| 600x400 \| '
has "no false accusation" "$OUT" '^False accusations: 0 in 6 null traces'
ok "nothing on stderr when not a terminal" ! -s "$ERR"
ok "JSON written" -s "$T/r.json"
ok "report written" -s "$T/r.html"
if command -v python3 >/dev/null 2>&1; then
    expect "JSON has every trial" 0 python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
t = d["trials"]
assert len(t) == 12, len(t)
assert sorted({x["kind"] for x in t}) == ["leak", "null-unmarked", "null-wrong-key"]
assert sum(x["kind"] == "leak" for x in t) == 6
for x in t:
    for k in ("image", "attack", "outcome", "score", "log10_p", "pilot_z", "transform", "trace_ms"):
        assert k in x, k
assert d["summary"]["false_accusations"] == 0
assert [a["attack"] for a in d["summary"]["attacks"]] == ["none", "jpeg:q=50", "scale:0.5"]
assert d["params"]["copies"] == 100 and d["params"]["jobs"] == 2 and d["params"]["null_traces"] == 1
assert len(d["images"]) == 2
' "$T/r.json"
fi
has "report has SVG" "$T/r.html" "<svg"
has "report has thumbnails" "$T/r.html" 'src="data:image/jpeg;base64,'
hasnt "report is self-contained" "$T/r.html" '(src|href)="(https?:|//)'
ok "scratch removed" -z "$(ls "$T/tmp")"
# the report in a real browser, when one is installed (scripts/report-shot.sh)
if command -v chromium >/dev/null 2>&1; then
    expect "report renders in chromium" 0 sh "$TM_SRCDIR/scripts/report-shot.sh" "$T/r.html" "$T/r.png" 1280x1600
    ok "screenshot saved" -s "$T/r.png"
    w=$(od -An -tu1 -j16 -N4 "$T/r.png" | awk '{print $1 * 16777216 + $2 * 65536 + $3 * 256 + $4}')
    ok "screenshot 1280 wide (got $w)" "${w:-0}" -eq 1280
else
    echo "skip report rendering: chromium not installed"
fi

# outputs are not replaced without --force
cp "$T/r.json" "$T/r.json.before"
expect "existing output refused" 2 "$TRACEMARK" robustness -q -a "none" --json "$T/r.json" "$T/corpus"
lines "one line: exists" "$ERR" 1
has "says it exists" "$ERR" "^tracemark: .*/r.json: file exists \(use --force"
ok "existing output untouched" -z "$(cmp "$T/r.json" "$T/r.json.before" 2>&1)"

# bad specs fail before any work, with one line, writing nothing
expect "unknown attack" 2 "$TRACEMARK" robustness -a "jpeg:q=50;foo:3" --json "$T/bad.json" --report "$T/bad.html" "$T/corpus"
lines "one line: unknown attack" "$ERR" 1
has "names the attack" "$ERR" "^tracemark: robustness: attack 'foo:3': unknown attack 'foo'$"
ok "no JSON on error" ! -e "$T/bad.json"
ok "no report on error" ! -e "$T/bad.html"
expect "bad argument" 2 "$TRACEMARK" robustness -a "scale:9" --json "$T/bad.json" "$T/corpus"
lines "one line: bad argument" "$ERR" 1
has "says what is wrong" "$ERR" "attack 'scale:9': scale"
expect "empty stage" 2 "$TRACEMARK" robustness -a "scale:0.5||jpeg:q=50" "$T/corpus"
has "empty stage named" "$ERR" "empty stage"
printf '# my grid\njpeg:q=50\nsharpen:amount=99\n' >"$T/bad.grid"
expect "bad grid file" 2 "$TRACEMARK" robustness --grid "$T/bad.grid" "$T/corpus"
lines "one line: grid file" "$ERR" 1
has "grid file attack named" "$ERR" "attack 'sharpen:amount=99'"
expect "bad grid file, listed" 2 "$TRACEMARK" robustness --grid "$T/bad.grid" --list-grid
has "listing names the bad attack" "$ERR" "attack 'sharpen:amount=99'"
expect "the bundled geometric grid" 0 "$TRACEMARK" robustness --grid "$TM_SRCDIR/bench/grids/geometric.grid" --list-grid
has "geometric grid has rotations" "$OUT" "^rotate:-3:crop=1$"
expect "missing grid file" 2 "$TRACEMARK" robustness --grid "$T/none.grid" "$T/corpus"
expect "both -a and --grid" 2 "$TRACEMARK" robustness -a none --grid "$T/bad.grid" "$T/corpus"
expect "bad copies" 2 "$TRACEMARK" robustness -n 1 "$T/corpus"
expect "bad jobs" 2 "$TRACEMARK" robustness -j 0 "$T/corpus"
expect "bad fpr" 2 "$TRACEMARK" robustness --fpr 2 "$T/corpus"
expect "bad nulls" 2 "$TRACEMARK" robustness --nulls 3 "$T/corpus"
expect "missing corpus" 2 "$TRACEMARK" robustness -a none "$T/no-such-dir"
mkdir -p "$T/empty"
expect "empty corpus" 2 "$TRACEMARK" robustness -a none "$T/empty"
has "empty corpus said" "$ERR" "no JPEG, PNG or WebP images"
expect "unwritable output dir" 2 "$TRACEMARK" robustness -a none --json "$T/no-such-dir/r.json" "$T/corpus"
# a broken image stops the sweep: its worker's error, the other worker ended
mkdir -p "$T/broken"
ln -s "$C/skimage_coffee.png" "$T/broken/"
printf '\377\330\377\340 no JPEG' >"$T/broken/broken.jpg"
expect "broken image" 2 "$TRACEMARK" robustness -j 2 -n 50 -a "none;jpeg:q=50" --json "$T/bad.json" "$T/broken"
lines "one line: broken image" "$ERR" 1
has "names the broken image" "$ERR" "^tracemark: robustness: .*broken.jpg: "
ok "no bad outputs" -z "$(ls "$T" | grep '^bad\.\(json\|html\)$')"
ok "scratch removed after errors" -z "$(ls "$T/tmp")"

# SIGTERM mid-sweep: workers stopped, scratch removed, nothing written
# (a sweep long enough to be mid-way however fast the trace: the signal goes
# as soon as its scratch directory holds work)
long="none;jpeg:q=50;scale:0.5;rotate:3:crop=1;blur:sigma=1;scale:0.7;rotate:7:crop=1;aspect:0.9"
long="$long;scale:1.5;jpeg:q=30;crop:0.6;scale:0.8,jpeg:q=60;rotate:-4:crop=1;scale:0.6;noise:sigma=4"
"$TRACEMARK" robustness -j 2 -n 100 -l 2 -a "$long" \
    --json "$T/int.json" --report "$T/int.html" "$T/corpus" >"$OUT" 2>"$ERR" &
pid=$!
i=0
while [ -z "$(ls "$T/tmp" 2>/dev/null)" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
sleep 0.5
kill -TERM $pid
wait $pid
st=$?
ok "ends by the signal (status $st)" "$st" -eq 143
has "says it was interrupted" "$ERR" "interrupted"
ok "no JSON when interrupted" ! -e "$T/int.json"
ok "no report when interrupted" ! -e "$T/int.html"
sleep 0.3
ok "scratch removed when interrupted" -z "$(ls "$T/tmp")"
finish
