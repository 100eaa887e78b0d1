#!/bin/sh
# End-to-end tests of trace over many suspects: directories and -R, images
# found by content, the summary, the global -q and -v, colour only on a
# terminal and never with NO_COLOR.
. "$(dirname "$0")/lib.sh"
C="$TM_SRCDIR/corpus"
K="$T/k.key"
R="$T/reg.db"
IMG="$C/skimage_coffee.png"

expect "keygen" 0 "$TRACEMARK" keygen "$K"
expect "mark" 0 "$TRACEMARK" mark -k "$K" -r "$R" --recipient alice --recipient bob --recipient carol \
    --out-dir "$T/out" "$IMG"

# a tree of suspects as gathered from the web
S="$T/scan"
mkdir -p "$S/a" "$S/b/c" "$S/empty"
expect "leak 1" 0 "$TRACEMARK" attack "jpeg:q=60" "$T/out/skimage_coffee.alice.png" "$S/top.jpg"
expect "leak 2" 0 "$TRACEMARK" attack "scale:0.9,jpeg:q=70" "$T/out/skimage_coffee.alice.png" "$S/a/leak two.jpg"
expect "leak 3" 0 "$TRACEMARK" attack "crop:0.8" "$T/out/skimage_coffee.bob.png" "$S/b/c/leak3.png"
expect "leak 4, saved without an extension" 0 "$TRACEMARK" attack "jpeg:q=80" "$T/out/skimage_coffee.carol.png" "$T/l4.jpg"
mv "$T/l4.jpg" "$S/b/download"
cp "$C/skimage_astronaut.png" "$S/a/unmarked.png"
echo "not an image" >"$S/a/notes.txt"
ln -s .. "$S/b/c/loop" # a link back up must not be followed

expect "a directory: the images directly in it" 0 "$TRACEMARK" trace -k "$K" -r "$R" "$S"
has "only the top level" "$OUT" "^$S/top.jpg: ACCUSED alice"
hasnt "one suspect: no summary" "$OUT" "summary"
expect "-R: every image below, by extension or content" 0 "$TRACEMARK" trace -k "$K" -r "$R" -R "$S"
has "found by content" "$OUT" "^$S/b/download: ACCUSED carol"
has "found below, name with a space" "$OUT" "^$S/a/leak two.jpg: ACCUSED alice"
has "deep" "$OUT" "^$S/b/c/leak3.png: ACCUSED bob"
has "unmarked: none" "$OUT" "^$S/a/unmarked.png: NONE"
hasnt "text file skipped" "$OUT" "notes.txt"
hasnt "link not followed" "$OUT" "/loop/"
has "summary counts" "$OUT" "^summary: 5 suspects: 4 accused, 0 inconclusive, 1 none, 0 errors$"
has "summary: alice first, twice" "$OUT" "^  alice: accused in 2 suspects$"
has "summary: bob once" "$OUT" "^  bob: accused in 1 suspect$"
ok "alice listed before bob" "$(grep -n '^  alice' "$OUT" | cut -d: -f1)" -lt "$(grep -n '^  bob' "$OUT" | cut -d: -f1)"
hasnt "no colour off a terminal" "$OUT" "$(printf '\033')"
hasnt "no progress bar off a terminal" "$ERR" "/5 suspects"

expect "-R --json -j 2" 0 "$TRACEMARK" trace -k "$K" -r "$R" -R --json -j 2 "$S"
lines "stdout: one JSON line per suspect, nothing else" "$OUT" 5
has "summary on stderr with --json" "$ERR" "^summary: 5 suspects: 4 accused"
hasnt "stdout has no summary" "$OUT" "summary"

expect "tracemark -q: no summary" 0 "$TRACEMARK" -q trace -k "$K" -r "$R" -R "$S"
hasnt "quiet" "$OUT" "summary"
has "quiet: still the verdicts" "$OUT" "download: ACCUSED carol"
expect "tracemark -v: the best copies not accused" 0 "$TRACEMARK" -v trace -k "$K" -r "$R" "$S/top.jpg"
has "verbose candidates" "$OUT" "^  scored 3 copies; the best not accused:"
has "verbose lists an innocent with its bound" "$OUT" "^    (bob|carol) \(copy [0-9]+\): score .*, bound "

# a tree with no image at all, and one that cannot be read
mkdir -p "$T/noimg/sub"
echo x >"$T/noimg/sub/readme"
expect "-R over a tree with no image: error" 2 "$TRACEMARK" trace -k "$K" -r "$R" -R "$T/noimg"
has "said in one line" "$ERR" "^tracemark: $T/noimg: a directory with no JPEG, PNG or WebP image in it$"
expect "no -R: hint" 2 "$TRACEMARK" trace -k "$K" -r "$R" "$T/noimg"
has "hint -R" "$ERR" "\(-R searches below it\)"
expect "a bad file among good ones: error, others still traced" 2 "$TRACEMARK" trace -k "$K" -r "$R" \
    "$S/top.jpg" "$S/a/notes.txt"
has "the good one traced" "$OUT" "top.jpg: ACCUSED alice"
has "the error counted" "$OUT" "^summary: 1 suspect: 1 accused, 0 inconclusive, 0 none, 1 error$"

# colour only on a terminal, and never with NO_COLOR (script(1) gives a terminal)
if command -v script >/dev/null 2>&1 && script -qec true /dev/null >/dev/null 2>&1; then
    script -qec "'$TRACEMARK' trace -k '$K' -r '$R' '$S/top.jpg'" /dev/null >"$T/tty.txt" 2>&1 </dev/null
    has "colour on a terminal" "$T/tty.txt" "$(printf '\033')\[1;31mACCUSED"
    NO_COLOR=1 script -qec "'$TRACEMARK' trace -k '$K' -r '$R' '$S/top.jpg'" /dev/null >"$T/tty.txt" 2>&1 </dev/null
    has "NO_COLOR: still the verdict" "$T/tty.txt" "ACCUSED alice"
    hasnt "NO_COLOR: no colour" "$T/tty.txt" "$(printf '\033')\["
    # the progress bar: on a terminal only, never with -q
    script -qec "'$TRACEMARK' trace -k '$K' -r '$R' -R '$S'" /dev/null >"$T/tty.txt" 2>&1 </dev/null
    has "progress bar on a terminal" "$T/tty.txt" "\] 0/5 suspects"
    script -qec "'$TRACEMARK' -q trace -k '$K' -r '$R' -R '$S'" /dev/null >"$T/tty.txt" 2>&1 </dev/null
    hasnt "no progress bar with -q" "$T/tty.txt" "/5 suspects"
else
    echo "skip colour checks: no script(1)"
fi

finish
