#!/bin/sh
# End-to-end tests of scripts/scan-parallel.sh: a tree of suspects (attacked
# copies, an unmarked photo, names with a space and a newline) traced by two
# worker processes against a snapshot of the registry; the JSON lines, the
# accusations and the summary; a damaged suspect and bad registries give
# exit 2; the registry itself is left as it was.
. "$(dirname "$0")/lib.sh"
C="$TM_SRCDIR/corpus"
SCAN="$TM_SRCDIR/scripts/scan-parallel.sh"
K="$T/k.key"
R="$T/reg.db"
IMG="$C/skimage_rocket.jpg"
export TRACEMARK

expect "keygen" 0 "$TRACEMARK" keygen "$K"
expect "mark three recipients" 0 "$TRACEMARK" mark -k "$K" -r "$R" --recipient alice --recipient bob \
    --recipient carol --out-dir "$T/out" "$IMG"
S="$T/suspects"
NL="$S/sub/new
line.jpg"
mkdir -p "$S/sub" "$S/with space"
expect "alice's copy at q50" 0 "$TRACEMARK" attack jpeg:q=50 "$T/out/skimage_rocket.alice.jpg" "$S/alice-q50.jpg"
expect "bob's copy rescaled" 0 "$TRACEMARK" attack "scale:0.8,jpeg:q=75" "$T/out/skimage_rocket.bob.jpg" \
    "$S/with space/bob scaled.jpg"
cp "$T/out/skimage_rocket.carol.jpg" "$NL"
cp "$C/plasma_Grey.jpg" "$S/sub/unmarked.jpg"
echo "not an image" >"$S/sub/notes.txt" # not a suspect: skipped
sha256sum "$R" >"$T/reg.sum"

expect "scan with 2 workers" 0 sh "$SCAN" -k "$K" -r "$R" -j 2 -n 1 -o "$T/scan.jsonl" "$S"
lines "one JSON line per suspect" "$T/scan.jsonl" 4
has "alice accused" "$T/scan.jsonl" '^\{"file": "[^"]*/alice-q50.jpg", "verdict": "accused", "accused": \[\{"recipient": "alice"'
has "bob accused (a space in the name)" "$T/scan.jsonl" '^\{"file": "[^"]*/with space/bob scaled.jpg", "verdict": "accused", "accused": \[\{"recipient": "bob"'
has "carol accused (a newline in the name)" "$T/scan.jsonl" '^\{"file": "[^"]*/sub/new\\nline.jpg", "verdict": "accused", "accused": \[\{"recipient": "carol"'
has "the unmarked photo: none" "$T/scan.jsonl" '^\{"file": "[^"]*/unmarked.jpg", "verdict": "none", "accused": \[\]'
hasnt "the text file is not traced" "$T/scan.jsonl" 'notes.txt'
has "summary: the registry verified" "$OUT" "^registry $R: 3 copies verified, all good; journal of 4 entries, head [0-9a-f]{16}$"
has "summary: counts" "$OUT" '^scanned 4 files with 2 workers in [0-9.]+ s \([0-9.]+ suspects/s\): 3 accused, 0 inconclusive, 1 none, 0 errors$'
has "summary: alice" "$OUT" '^  alice: accused in 1 suspect$'
has "summary: bob" "$OUT" '^  bob: accused in 1 suspect$'
has "summary: carol" "$OUT" '^  carol: accused in 1 suspect$'
ok "nothing on stderr" ! -s "$ERR"
ok "the registry is unchanged" -n "$(sha256sum -c "$T/reg.sum" 2>/dev/null | grep ': OK$')"
ok "no temporaries beside the output" -z "$(ls "$T" | grep tmp-)"
if command -v python3 >/dev/null 2>&1; then
    expect "every line is JSON" 0 python3 -c "
import json, sys
files = sorted(json.loads(l)['file'].rsplit('/', 1)[1] for l in open(sys.argv[1]))
assert files == ['alice-q50.jpg', 'bob scaled.jpg', 'new\nline.jpg', 'unmarked.jpg'], files
" "$T/scan.jsonl"
fi

# one worker, JSON on stdout and the summary on stderr, the list from stdin
expect "scan a list from stdin, NUL-separated" 0 sh -c 'find "$1" -name "*.jpg" -print0 | sh "$2" -0 -k "$3" -r "$4" -j 1' \
    sh "$S" "$SCAN" "$K" "$R"
lines "stdout: the 4 JSON lines" "$OUT" 4
has "stderr: the summary" "$ERR" '^scanned 4 files with 1 worker in .*: 3 accused, 0 inconclusive, 1 none, 0 errors$'
expect "a file list, one per line" 0 sh -c 'printf "%s\n" "$1/alice-q50.jpg" | sh "$2" -k "$3" -r "$4" -B -o "$5"' \
    sh "$S" "$SCAN" "$K" "$R" "$T/one.jsonl"
lines "blind: one line" "$T/one.jsonl" 1
has "blind: alice, no original used" "$T/one.jsonl" '"accused": \[\{"recipient": "alice".*"informed": null'

# a damaged suspect: the others are traced, exit 2, trace's line passed on
head -c 3000 "$S/alice-q50.jpg" >"$S/sub/truncated.jpg"
expect "a damaged suspect: exit 2" 2 sh "$SCAN" -k "$K" -r "$R" -j 2 -o "$T/scan2.jsonl" "$S"
lines "the other suspects still traced" "$T/scan2.jsonl" 4
has "trace's error on stderr" "$ERR" "^tracemark: .*/sub/truncated.jpg: "
has "summary: 1 error" "$OUT" '^scanned 5 files .*: 3 accused, 0 inconclusive, 1 none, 1 error$'
rm -f "$S/sub/truncated.jpg"

# bad registries stop the scan before any suspect is read
head -c 4096 /dev/urandom >"$T/junk.db"
expect "not a registry: exit 2" 2 sh "$SCAN" -k "$K" -r "$T/junk.db" -o "$T/bad.jsonl" "$S"
lines "not a registry: one line" "$ERR" 1
has "not a registry: named" "$ERR" "junk.db: not a tracemark registry"
ok "not a registry: no output written" ! -e "$T/bad.jsonl"
expect "a missing registry: exit 2" 2 sh "$SCAN" -k "$K" -r "$T/missing.db" "$S"
has "a missing registry: named" "$ERR" "missing.db: no such registry"
expect "another key" 0 "$TRACEMARK" keygen "$T/other.key"
expect "another key's registry: exit 2" 2 sh "$SCAN" -k "$T/other.key" -r "$R" "$S"
has "another key: said" "$ERR" "^scan-parallel.sh: $R: registry was made with another key"
lines "another key: one line" "$ERR" 1
if command -v sqlite3 >/dev/null 2>&1; then
    cp "$R" "$T/edited.db"
    sqlite3 "$T/edited.db" "UPDATE copies SET recipient = 'mallory' WHERE recipient = 'bob'" >/dev/null
    expect "a tampered registry: exit 2" 2 sh "$SCAN" -k "$K" -r "$T/edited.db" "$S"
    has "a tampered registry: said" "$ERR" "edited.db: fails verification \(1 finding\)"
    hasnt "a tampered registry: nothing traced" "$OUT" "verdict"
fi

# usage errors
expect "no key" 2 sh "$SCAN" -r "$R" "$S"
has "no key: said" "$ERR" "missing -k KEYFILE"
expect "bad -j" 2 sh "$SCAN" -k "$K" -r "$R" -j many "$S"
expect "unknown option" 2 sh "$SCAN" -x
has "unknown option: hint" "$ERR" "Try 'scan-parallel.sh -h'"
expect "a missing suspect directory" 2 sh "$SCAN" -k "$K" -r "$R" "$T/nowhere"
mkdir -p "$T/empty"
expect "no suspects" 2 sh "$SCAN" -k "$K" -r "$R" "$T/empty"
has "no suspects: said" "$ERR" "no .jpg, .jpeg, .png or .webp suspect found"
expect "help" 0 sh "$SCAN" -h
has "help: usage" "$OUT" "^Usage: scan-parallel.sh -k KEYFILE -r REGISTRY"
finish
