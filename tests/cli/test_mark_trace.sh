#!/bin/sh
# End-to-end tests of keygen, mark, attack and trace: the JSON contract, exit
# codes, naming, atomicity, the registry's key binding, and bad input.
. "$(dirname "$0")/lib.sh"
C="$TM_SRCDIR/corpus"
K="$T/k.key"
R="$T/reg.db"
IMG="$C/skimage_coffee.png"

expect "keygen" 0 "$TRACEMARK" keygen "$K"
expect "mark three recipients" 0 "$TRACEMARK" mark -k "$K" -r "$R" --recipient alice@example.com \
    --recipient "Bob Smith" --recipient carol@example.com --out-dir "$T/out" "$IMG"
ok "alice's copy named after her" -f "$T/out/skimage_coffee.alice@example.com.png"
ok "bob's name made file-safe" -f "$T/out/skimage_coffee.bob-smith.png"
has "mark reports the copies" "$OUT" "^marked 3 copies of"
ok "no temporaries left" -z "$(ls "$T/out" | grep tmp-)"

# leaks and traces
expect "attack jpeg q50" 0 "$TRACEMARK" attack "jpeg:q=50" "$T/out/skimage_coffee.bob-smith.png" "$T/leak.jpg"
expect "trace accuses (exit 0)" 0 "$TRACEMARK" trace -k "$K" -r "$R" "$T/leak.jpg"
has "trace names bob" "$OUT" "ACCUSED Bob Smith"
hasnt "one copy: no collusion line" "$OUT" "collusion"
expect "trace --json" 0 "$TRACEMARK" trace -k "$K" -r "$R" --json "$T/leak.jpg"
lines "one JSON object per suspect" "$OUT" 1
has "json verdict accused" "$OUT" '"verdict": "accused"'
has "json accused recipient" "$OUT" '"accused": \[\{"recipient": "Bob Smith", "image": "[0-9a-f]{32}"'
has "json log10_p" "$OUT" '"log10_p": -[0-9]+\.[0-9]+'
has "json bound" "$OUT" '"bound": 1e-06'
# the registry names the original, which is at hand: informed trace
has "json transform (registered: to a hundredth of a degree, a thousandth in aspect)" "$OUT" '"transform": \{"scale": 1, "rotation_deg": -?(0|0\.00[0-9]*|[0-9.]+e-[0-9]+), "aspect": (1|0\.999[0-9]*|1\.000[0-9]*), "flip": false, "offset": \[[0-9]+, [0-9]+\]\}'
has "json informed: registered to the recorded original" "$OUT" '"informed": \{"original": "[^"]*skimage_coffee.png", "registered": true, "read": "difference", "ncc": 0\.9[0-9]+'
has "json: one copy's mark" "$OUT" '"colluders": 1,'
has "json: accused in round 1" "$OUT" '"log10_p": -[0-9.]+, "round": 1\}\]'
expect "trace --blind" 0 "$TRACEMARK" trace -k "$K" -r "$R" --blind --json "$T/leak.jpg"
has "blind: accused" "$OUT" '"accused": \[\{"recipient": "Bob Smith"'
has "blind: transform read from the mark" "$OUT" '"transform": \{"scale": 1, "rotation_deg": 0, "aspect": 1, "flip": false, "offset": \[[0-9]+, [0-9]+\]\}'
has "blind: informed null" "$OUT" '"informed": null'
expect "trace --original with a text line" 0 "$TRACEMARK" trace -k "$K" -r "$R" --original "$IMG" "$T/leak.jpg"
has "text: informed line" "$OUT" "^  informed: the suspect is .*skimage_coffee.png \(600x400\) at scale 1 .*the original was taken out before reading"
expect "--blind with --original refused" 2 "$TRACEMARK" trace -k "$K" -r "$R" --blind --original "$IMG" "$T/leak.jpg"
expect "--original missing" 2 "$TRACEMARK" trace -k "$K" -r "$R" --original "$T/nonexistent.png" "$T/leak.jpg"
has "--original missing: named" "$ERR" "nonexistent.png"
# two recipients average their copies: both accused, and the count says so
expect "average alice's and carol's copies" 0 "$TRACEMARK" attack "average,jpeg:q=90" \
    "$T/out/skimage_coffee.alice@example.com.png" "$T/out/skimage_coffee.carol@example.com.png" "$T/avg.jpg"
expect "trace the averaged copy" 0 "$TRACEMARK" trace -k "$K" -r "$R" "$T/avg.jpg"
has "averaged: alice accused" "$OUT" "ACCUSED alice@example.com"
has "averaged: carol accused" "$OUT" "ACCUSED carol@example.com"
hasnt "averaged: bob not accused" "$OUT" "ACCUSED Bob Smith"
has "averaged: collusion of 2 said" "$OUT" "^  collusion: the suspect carries the marks of 2 registered copies, so at least 2 recipients"
expect "trace the averaged copy, JSON" 0 "$TRACEMARK" trace -k "$K" -r "$R" --json "$T/avg.jpg"
has "json: 2 colluders" "$OUT" '"colluders": 2,'
has "json: candidates not accused (round 0)" "$OUT" '"candidates": \[\{[^]]*"round": 0\}'
expect "rescaled, rotated leak" 0 "$TRACEMARK" attack "scale:0.8,rotate:4,jpeg:q=80" "$T/out/skimage_coffee.bob-smith.png" "$T/geo.jpg"
expect "trace rescaled, rotated leak" 0 "$TRACEMARK" trace -k "$K" -r "$R" --json "$T/geo.jpg"
has "geometry reported" "$OUT" '"transform": \{"scale": 0\.[78][0-9]*, "rotation_deg": [34](\.[0-9]+)?, "aspect": [0-9.]+, "flip": false'
has "json elapsed_ms" "$OUT" '"elapsed_ms": [0-9]+'
if command -v python3 >/dev/null 2>&1; then
    cp "$OUT" "$T/trace.json"
    expect "json parses" 0 python3 -c "import json; d=json.load(open('$T/trace.json')); assert d['accused'][0]['recipient']=='Bob Smith' and d['verdict']=='accused' and d['bound']==1e-06"
fi
# FFTW wisdom, when asked for: measured plans, saved for the next process
expect "trace with a wisdom file" 0 env TRACEMARK_FFTW_WISDOM="$T/fftw.wisdom" "$TRACEMARK" trace -k "$K" -r "$R" "$T/geo.jpg"
has "trace with wisdom names bob" "$OUT" "ACCUSED Bob Smith"
ok "wisdom file written" -s "$T/fftw.wisdom"
has "wisdom is FFTW's" "$T/fftw.wisdom" "fftwf_wisdom"
expect "trace reading the wisdom" 0 env TRACEMARK_FFTW_WISDOM="$T/fftw.wisdom" "$TRACEMARK" trace -k "$K" -r "$R" "$T/leak.jpg"
has "trace reading wisdom names bob" "$OUT" "ACCUSED Bob Smith"

# a JPEG original is read as stored: the same image id in every run
J="$C/skimage_rocket.jpg"
expect "mark a JPEG" 0 "$TRACEMARK" mark -k "$K" -r "$R" --recipient dave --json -o "$T/dave.jpg" "$J"
ID1=$(sed -n 's/.*"image": "\([0-9a-f]*\)".*/\1/p' "$OUT")
expect "mark it again" 0 "$TRACEMARK" mark -k "$K" -r "$R" --recipient erin --json -o "$T/erin.jpg" "$J"
ID2=$(sed -n 's/.*"image": "\([0-9a-f]*\)".*/\1/p' "$OUT")
ok "same image id in both runs" -n "$ID1" -a "$ID1" = "$ID2"
expect "erin's JPEG copy, recompressed" 0 "$TRACEMARK" attack "jpeg:q=60" "$T/erin.jpg" "$T/erin60.jpg"
expect "trace erin's copy" 0 "$TRACEMARK" trace -k "$K" -r "$R" "$T/erin60.jpg"
has "trace names erin" "$OUT" "ACCUSED erin"

expect "crop then recompress" 0 "$TRACEMARK" attack "crop:0.75,jpeg:q=70" "$T/out/skimage_coffee.alice@example.com.png" "$T/leak2.png"
expect "trace cropped leak" 0 "$TRACEMARK" trace -k "$K" -r "$R" --json "$T/leak2.png"
has "cropped leak names alice" "$OUT" '"recipient": "alice@example.com"'

# nothing to accuse
expect "unmarked original: exit 1" 1 "$TRACEMARK" trace -k "$K" -r "$R" --json "$IMG"
has "unmarked verdict none" "$OUT" '"verdict": "none", "accused": \[\]'
"$TRACEMARK" attack crop:60x60+0+0 "$T/out/skimage_coffee.alice@example.com.png" "$T/tiny.png"
expect "tiny crop: exit 1" 1 "$TRACEMARK" trace -k "$K" -r "$R" --json "$T/tiny.png"
has "tiny crop inconclusive" "$OUT" '"verdict": "inconclusive"'
expect "several suspects, a directory" 0 "$TRACEMARK" trace -k "$K" -r "$R" --json "$T/out" "$IMG"
lines "one line per suspect" "$OUT" 4
has "each copy its own recipient" "$OUT" 'carol@example.com'

# wrong key: refused with a clear error, not a silent "none"
expect "second key" 0 "$TRACEMARK" keygen "$T/other.key"
expect "trace with another key: exit 2" 2 "$TRACEMARK" trace -k "$T/other.key" -r "$R" "$T/leak.jpg"
has "another key explained" "$ERR" "another key"
expect "mark with another key: exit 2" 2 "$TRACEMARK" mark -k "$T/other.key" -r "$R" --recipient x -o "$T/x.png" "$IMG"
ok "no copy from a refused mark" ! -e "$T/x.png"

# bad input
expect "trace missing registry" 2 "$TRACEMARK" trace -k "$K" -r "$T/none.db" "$T/leak.jpg"
ok "trace does not create a registry" ! -e "$T/none.db"
printf 'garbage' >"$T/junk.db"
expect "trace corrupt registry" 2 "$TRACEMARK" trace -k "$K" -r "$T/junk.db" "$T/leak.jpg"
expect "trace unreadable suspect: exit 2" 2 "$TRACEMARK" trace -k "$K" -r "$R" "$T/leak.jpg" "$T/missing.jpg"
has "unreadable suspect one line" "$ERR" "^tracemark: $T/missing.jpg: "
has "other suspects still traced" "$OUT" "ACCUSED Bob Smith"
expect "trace bad --fpr" 2 "$TRACEMARK" trace -k "$K" -r "$R" --fpr 2 "$T/leak.jpg"
expect "trace no suspect" 2 "$TRACEMARK" trace -k "$K" -r "$R"
expect "mark without recipients" 2 "$TRACEMARK" mark -k "$K" -r "$R" --out-dir "$T/o2" "$IMG"
expect "mark -o with two recipients" 2 "$TRACEMARK" mark -k "$K" -r "$R" --recipient a --recipient b -o "$T/o.png" "$IMG"
cp "$T/out/skimage_coffee.alice@example.com.png" "$T/alice.png"
expect "mark again: the recorded copy in place is made again" 0 "$TRACEMARK" mark -k "$K" -r "$R" \
    --recipient alice@example.com --out-dir "$T/out" "$IMG"
ok "the same bytes" "$(cmp "$T/out/skimage_coffee.alice@example.com.png" "$T/alice.png" && echo same)" = same
printf 'not this copy' >"$T/out/skimage_coffee.alice@example.com.png"
expect "mark refuses to overwrite another file" 2 "$TRACEMARK" mark -k "$K" -r "$R" --recipient alice@example.com \
    --out-dir "$T/out" "$IMG"
has "overwrite explained" "$ERR" "file exists"
ok "the file left alone" "$(cat "$T/out/skimage_coffee.alice@example.com.png")" = "not this copy"
cp "$T/alice.png" "$T/out/skimage_coffee.alice@example.com.png"
expect "mark corrupt input" 2 "$TRACEMARK" mark -k "$K" -r "$R" --recipient z -o "$T/z.jpg" "$T/junk.db"
ok "no output for corrupt input" ! -e "$T/z.jpg"
chmod 644 "$K"
expect "world-readable key refused" 2 "$TRACEMARK" trace -k "$K" -r "$R" "$T/leak.jpg"
has "key permission explained" "$ERR" "chmod 600"
chmod 600 "$K"

# recipients file, -o, formats, quality
printf '# team\n\ndave@example.com\n  erin@example.com  \ndave@example.com\n' >"$T/list.txt"
expect "recipients file" 0 "$TRACEMARK" mark -k "$K" -r "$R" --recipients "$T/list.txt" --format webp --out-dir "$T/w" "$IMG"
ok "two copies from the file (dupes once)" "$(ls "$T/w" | wc -l)" -eq 2
expect "webp leak traces" 0 "$TRACEMARK" trace -k "$K" -r "$R" "$T/w/skimage_coffee.erin@example.com.webp"
has "webp leak names erin" "$OUT" "ACCUSED erin@example.com"
expect "mark -o jpeg" 0 "$TRACEMARK" mark -k "$K" -r "$R" --recipient frank -q 85 -o "$T/frank.jpg" "$IMG"
expect "inspect the copy" 0 "$TRACEMARK" inspect --json "$T/frank.jpg"
has "copy carries no metadata" "$OUT" '"exif": false, "gps": false, "xmp": false, "iptc": false, "comment": false'
expect "GPS photo marked" 0 "$TRACEMARK" mark -k "$K" -r "$R" --recipient gina -o "$T/gina.jpg" "$C/plasma_ColorfulCups.jpg"
expect "inspect GPS photo copy" 0 "$TRACEMARK" inspect --json "$T/gina.jpg"
has "GPS never reaches a copy" "$OUT" '"gps": false'
expect "registry lists the copies" 0 "$TRACEMARK" registry verify -k "$K" -r "$R"

# recipients whose file-safe names collide still get one file each
expect "colliding slugs" 0 "$TRACEMARK" mark -k "$K" -r "$R" --recipient "Ann Lee" --recipient "ann-lee" \
    --out-dir "$T/slug" "$IMG"
ok "two files for colliding slugs" "$(ls "$T/slug" | wc -l)" -eq 2
ok "names disambiguated by a hash" "$(ls "$T/slug" | grep -c '^skimage_coffee\.ann-lee-[0-9a-f]\{8\}\.png$')" -eq 2

# --name: the copies' names from a template
expect "--name template" 0 "$TRACEMARK" mark -k "$K" -r "$R" --recipient "Ann Lee" --recipient zed \
    --name '{n}_{stem}-{recipient}.{ext}' --out-dir "$T/named" "$IMG"
ok "first copy named by the template" -f "$T/named/1_skimage_coffee-ann-lee.png"
ok "second copy named by the template" -f "$T/named/2_skimage_coffee-zed.png"
ok "and nothing else" "$(ls "$T/named" | wc -l)" -eq 2
expect "--name braces" 0 "$TRACEMARK" mark -k "$K" -r "$R" --recipient zed --name '{{{recipient}}}.{ext}' \
    --out-dir "$T/braced" "$IMG"
ok "literal braces" -f "$T/braced/{zed}.png"
for bad in '{stem}.{ext}' '{bogus}-{n}' 'sub/{n}.png' '{n' 'x}{n}'; do
    expect "--name '$bad' refused" 2 "$TRACEMARK" mark -k "$K" -r "$R" --recipient zed --name "$bad" \
        --out-dir "$T/badname" "$IMG"
    has "--name '$bad' explained" "$ERR" "^tracemark: mark: --name '"
done
ok "nothing made for a bad --name" ! -e "$T/badname"
expect "--name with -o refused" 2 "$TRACEMARK" mark -k "$K" -r "$R" --recipient zed --name '{n}.png' \
    -o "$T/o.png" "$IMG"

# two mark runs on one registry at the same time: both succeed, no row lost
P="$T/par.db"
"$TRACEMARK" mark -k "$K" -r "$P" --recipients "$T/list.txt" --recipient p1 --recipient p2 --recipient p3 \
    --out-dir "$T/par1" "$IMG" >/dev/null 2>"$T/par1.err" &
pid1=$!
"$TRACEMARK" mark -k "$K" -r "$P" --recipient q1 --recipient q2 --recipient q3 --recipient q4 \
    --out-dir "$T/par2" "$C/skimage_rocket.jpg" >/dev/null 2>"$T/par2.err" &
pid2=$!
wait $pid1; r1=$?
wait $pid2; r2=$?
ok "parallel mark 1 succeeded" "$r1" -eq 0
ok "parallel mark 2 succeeded" "$r2" -eq 0
expect "parallel registry verifies" 0 "$TRACEMARK" registry verify -k "$K" -r "$P"
expect "parallel registry lists" 0 "$TRACEMARK" registry list --copies -r "$P"
lines "all 9 copies recorded (and a header)" "$OUT" 10

# the journal: verify prints its head; rows deleted or put back are named;
# trace warns when the journal's last entries are gone
expect "verify prints the journal head" 0 "$TRACEMARK" registry verify -k "$K" -r "$P"
has "journal of 11 entries (2 images, 9 copies)" "$OUT" "9 copies verified, all good; journal of 11 entries, head [0-9a-f]{16}$"
expect "verify --json: journal" 0 "$TRACEMARK" registry verify -k "$K" -r "$P" --json
has "json journal" "$OUT" '"journal": \{"entries": 11, "head": "[0-9a-f]{16}"\}'
if command -v sqlite3 >/dev/null 2>&1; then
    cp "$P" "$T/del.db"
    sqlite3 "$T/del.db" 'DELETE FROM copies WHERE copy_id = 3' >/dev/null
    expect "a deleted copy fails verify (exit 1)" 1 "$TRACEMARK" registry verify -k "$K" -r "$T/del.db"
    has "the deleted copy is named" "$ERR" "del.db: copy 3: deleted: the journal records it"
    expect "verify --json names it" 1 "$TRACEMARK" registry verify -k "$K" -r "$T/del.db" --json
    has "json bad row" "$OUT" '"bad": \[\{"copy": 3, "reason": "deleted'
    cp "$P" "$T/cut.db"
    last=$(sqlite3 "$T/cut.db" "SELECT ref FROM journal ORDER BY seq DESC LIMIT 1")
    sqlite3 "$T/cut.db" "DELETE FROM copies WHERE copy_id = $last; DELETE FROM journal WHERE seq = 11" >/dev/null
    expect "the last copy cut: verify fails" 1 "$TRACEMARK" registry verify -k "$K" -r "$T/cut.db"
    has "the head names it" "$ERR" "journal's head does not match its last entry"
    leaked=$(ls "$T/par1"/*.p1.png)
    expect "trace on the cut registry still runs" 0 "$TRACEMARK" trace -k "$K" -r "$T/cut.db" "$leaked"
    has "trace warns" "$ERR" "^tracemark: .*cut.db: warning: the journal's head does not match its last entry; run 'tracemark registry verify'$"
    has "and names p1" "$OUT" "ACCUSED p1"
    cp "$P" "$T/back.db"
    sqlite3 "$T/back.db" "CREATE TEMP TABLE c AS SELECT * FROM copies WHERE recipient = 'p1';
        DELETE FROM copies WHERE recipient = 'p1'; UPDATE c SET copy_id = 100; INSERT INTO copies SELECT * FROM c" >/dev/null
    expect "a copy put back under a new id fails verify" 1 "$TRACEMARK" registry verify -k "$K" -r "$T/back.db"
    has "it is named" "$ERR" "copy 100: not in the journal"
    expect "trace refuses to accuse from it" 2 "$TRACEMARK" trace -k "$K" -r "$T/back.db" "$leaked"
    has "the row named" "$ERR" "copy 100 \(accused by .*\) fails its integrity check: registry tampered \(copy 100: not in the journal"
fi

# export and stats, for a case file: every copy, quoted safely
X="$T/exp.db"
cp "$P" "$X"
expect "a recipient a spreadsheet would run" 0 "$TRACEMARK" mark -k "$K" -r "$X" \
    --recipient '=HYPERLINK("x"),y' -o "$T/formula.png" "$IMG"
expect "export --csv" 0 "$TRACEMARK" registry export -r "$X" --csv
lines "a header and 10 rows" "$OUT" 11
has "csv header" "$OUT" '^"copy","recipient","image","output","output_sha256","created","code_bits","codeword","tag"$'
has "the formula defused and its quotes doubled" "$OUT" '^"10","'"'"'=HYPERLINK\(""x""\),y",'
ok "csv parses to 10 rows of 9 fields, the name intact" "$(python3 -c 'import csv,sys; r=list(csv.reader(open(sys.argv[1])))
print(len(r) == 11 and all(len(x) == 9 for x in r) and r[10][1] == "'"'"'=HYPERLINK(\"x\"),y")' "$OUT")" = True
expect "export --json -k" 0 "$TRACEMARK" registry export -r "$X" --json -k "$K"
ok "json: 2 images, 10 copies with codewords, verified, head" "$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))
print(len(d["images"]) == 2 and len(d["copies"]) == 10 and all(len(c["codeword"]) == 64 for c in d["copies"])
      and d["key"]["verified"] and d["key"]["entries"] == 12 and len(d["key"]["head"]) == 16)' "$OUT")" = True
expect "export wants a format" 2 "$TRACEMARK" registry export -r "$X"
expect "stats" 0 "$TRACEMARK" registry stats -r "$X" -k "$K"
has "stats: copies and recipients" "$OUT" "^copies      10, to 10 recipients$"
has "stats: journal" "$OUT" "^journal     12 entries, head [0-9a-f]{16}$"
expect "stats --json" 0 "$TRACEMARK" registry stats -r "$X" --json
has "stats json" "$OUT" '"images": 2, "copies": 10, "recipients": 10, "first": "[0-9T:Z-]+", "last": "[0-9T:Z-]+", "key": null\}$'
if command -v sqlite3 >/dev/null 2>&1; then
    sqlite3 "$X" "DELETE FROM copies WHERE copy_id = 2" >/dev/null
    expect "stats of a tampered registry still runs" 0 "$TRACEMARK" registry stats -r "$X" -k "$K"
    has "and says it does not verify" "$OUT" "^verified    NO"
fi

# threads: -j gives the same copies, rows and verdicts, in the same order
J1="$T/j1.db"; J3="$T/j3.db"
expect "mark -j 1" 0 "$TRACEMARK" mark -k "$K" -r "$J1" -j 1 --recipient a --recipient b --recipient c \
    --recipient d --recipient e --out-dir "$T/j1" "$C/skimage_rocket.jpg"
expect "mark -j 3" 0 "$TRACEMARK" mark -k "$K" -r "$J3" --jobs 3 --recipient a --recipient b --recipient c \
    --recipient d --recipient e --out-dir "$T/j3" "$C/skimage_rocket.jpg"
same=0
for r in a b c d e; do
    cmp -s "$T/j1/skimage_rocket.$r.jpg" "$T/j3/skimage_rocket.$r.jpg" && same=$((same + 1))
done
ok "-j 3 copies byte for byte those of -j 1" "$same" -eq 5
expect "rows of -j 1" 0 "$TRACEMARK" registry list --copies -r "$J1"
awk '{print $1, $2, $3}' "$OUT" >"$T/rows1"
expect "rows of -j 3" 0 "$TRACEMARK" registry list --copies -r "$J3"
awk '{print $1, $2, $3}' "$OUT" >"$T/rows3"
ok "-j 3 rows in recipient order, as -j 1" -z "$(diff "$T/rows1" "$T/rows3")"
expect "TRACEMARK_THREADS=2 mark" 0 env TRACEMARK_THREADS=2 "$TRACEMARK" mark -k "$K" -r "$J1" --recipient f \
    --recipient g --out-dir "$T/jenv" "$C/skimage_rocket.jpg"
ok "TRACEMARK_THREADS copies made" -f "$T/jenv/skimage_rocket.g.jpg"
for r in b d; do
    "$TRACEMARK" attack "scale:0.9,jpeg:q=80" "$T/j1/skimage_rocket.$r.jpg" "$T/jleak.$r.jpg" >/dev/null
done
printf 'not an image' >"$T/jbad.jpg"
expect "trace -j 1 of four suspects" 2 "$TRACEMARK" trace -k "$K" -r "$J1" --json -j 1 "$T/jleak.b.jpg" \
    "$T/jbad.jpg" "$T/jleak.d.jpg" "$IMG"
sed 's/"elapsed_ms": [0-9]*//' "$OUT" >"$T/t1"
cp "$ERR" "$T/e1"
expect "trace -j 3 of the same" 2 "$TRACEMARK" trace -k "$K" -r "$J1" --json -j 3 "$T/jleak.b.jpg" \
    "$T/jbad.jpg" "$T/jleak.d.jpg" "$IMG"
sed 's/"elapsed_ms": [0-9]*//' "$OUT" >"$T/t3"
ok "-j 3 verdicts in the order given, as -j 1" -z "$(diff "$T/t1" "$T/t3")"
ok "-j 3 errors as -j 1" -z "$(diff "$T/e1" "$ERR")"
lines "three verdicts" "$T/t3" 3
has "first suspect: b" "$T/t3" '^\{"file": "[^"]*jleak\.b\.jpg", "verdict": "accused", "accused": \[\{"recipient": "b"'
expect "bad --jobs" 2 "$TRACEMARK" trace -k "$K" -r "$J1" -j 0 "$T/jleak.b.jpg"
has "bad --jobs named" "$ERR" "jobs wants a whole number"
expect "bad TRACEMARK_THREADS" 2 env TRACEMARK_THREADS=many "$TRACEMARK" mark -k "$K" -r "$J1" --recipient h \
    --out-dir "$T/jbadenv" "$C/skimage_rocket.jpg"
ok "nothing written for a bad TRACEMARK_THREADS" ! -e "$T/jbadenv/skimage_rocket.h.jpg"
expect "--jobs overrides a bad TRACEMARK_THREADS" 0 env TRACEMARK_THREADS=many "$TRACEMARK" trace -k "$K" \
    -r "$J1" -j 2 "$T/jleak.b.jpg"
expect "--help despite a bad TRACEMARK_THREADS" 0 env TRACEMARK_THREADS=0 "$TRACEMARK" mark --help
has "mark --help teaches --jobs" "$OUT" "--jobs N"
# a copy that cannot be written, among others made on threads: nothing kept
mkdir -p "$T/jfail/skimage_rocket.c.jpg"
expect "mark -j 3 with one copy unwritable" 2 "$TRACEMARK" mark -k "$K" -r "$J3" -j 3 --force --recipient a2 \
    --recipient b2 --recipient c --recipient d2 --recipient e2 --out-dir "$T/jfail" "$C/skimage_rocket.jpg"
has "the name that is not a file is named" "$ERR" "skimage_rocket.c.jpg: exists and is not a file"
ok "no copy kept when one failed" "$(ls "$T/jfail" | wc -l)" -eq 1
expect "registry after the failed run" 0 "$TRACEMARK" registry list --copies -r "$J3"
lines "no row added by the failed run (5 and a header)" "$OUT" 6

# attack errors
expect "attack unknown spec" 2 "$TRACEMARK" attack "frobnicate:3" "$IMG" "$T/a.png"
has "attack lists valid attacks" "$ERR" "jpeg:q="
ok "no output for a bad spec" ! -e "$T/a.png"
expect "attack bad parameter" 2 "$TRACEMARK" attack "jpeg:q=0" "$IMG" "$T/a.png"
expect "attack --list" 0 "$TRACEMARK" attack --list
has "attack list has crop" "$OUT" "^  crop:"

finish
