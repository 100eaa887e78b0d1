#!/bin/sh
# test_errors.sh -- every error path of the program, end to end: damaged,
# missing and odd image files for each command that reads images (mark,
# trace, inspect, strip, attack), bad key files, damaged and foreign
# registries, bad options, and outputs that cannot be written.
#
# The contract (docs: DESIGN.md, "Command-line contract"): exit status 2; on
# stderr exactly one line "tracemark: <file>: <what is wrong>" (a usage error
# adds a second line, the "Try 'tracemark CMD --help'." hint); nothing on
# stdout; no output file, no temporary, no output directory left behind; the
# registry unchanged. Images are made here or patched byte by byte with
# printf and dd; the registry cases need the sqlite3 shell and are skipped
# without it.
. "$(dirname "$0")/lib.sh"
C="$TM_SRCDIR/corpus"
B="$T/in"       # the bad inputs
W="$T/w"        # where failing commands are told to write: must stay empty
K="$T/k.key"
R="$T/reg.db"
mkdir "$B" "$W"
have_sqlite=0
command -v sqlite3 >/dev/null 2>&1 && have_sqlite=1
root=0
[ "$(id -u)" -eq 0 ] && root=1
# one thread per command: the address-space limits below count each thread's
# malloc arena
unset TRACEMARK_THREADS

# The state a failing command must leave alone: the registry's content (its
# SQL dump, or its bytes without sqlite3) and the output directory.
snap() {
    if [ "$have_sqlite" -eq 1 ]; then sqlite3 "$R" .dump >"$T/.reg"; else cksum <"$R" >"$T/.reg"; fi
}
reg_same() {
    if [ "$have_sqlite" -eq 1 ]; then sqlite3 "$R" .dump | cmp -s - "$T/.reg"
    else cksum <"$R" | cmp -s - "$T/.reg"; fi
}

# judge NAME STATUS LINES REGEX: the last command exited STATUS; it must have
# exited 2 with nothing on stdout and LINES lines on stderr, the first
# "tracemark: " and matching REGEX (if not empty), the second (LINES 2) the
# help hint; $W empty and the registry as snap saw it.
judge() {
    why=
    n=$(wc -l <"$ERR")
    if [ "$2" -ne 2 ]; then why="exit $2, wanted 2"
    elif [ -s "$OUT" ]; then why="printed on stdout: $(head -c 100 "$OUT")"
    elif [ "$n" -ne "$3" ]; then why="$n lines on stderr, wanted $3"
    elif ! head -n 1 "$ERR" | grep -q '^tracemark: '; then why="stderr does not start with 'tracemark: '"
    elif [ -n "$4" ] && ! head -n 1 "$ERR" | grep -Eq -- "$4"; then why="no /$4/ in the message"
    elif [ "$3" -eq 2 ] && ! tail -n 1 "$ERR" | grep -q "^Try 'tracemark .*--help'\.$"; then why="no help hint"
    elif [ -n "$(ls -A "$W")" ]; then why="left behind: $(ls -A "$W" | tr '\n' ' ')"
    elif ! reg_same; then why="the registry changed"
    fi
    if [ -z "$why" ]; then
        npass=$((npass + 1)); echo "ok   $1"
    else
        nfail=$((nfail + 1)); echo "FAIL $1: $why"; sed 's/^/     stderr: /' "$ERR" | head -3
        rm -rf "$W"; mkdir "$W"; snap
    fi
}

# fails NAME REGEX CMD...: CMD fails as the contract says, with one line.
fails() {
    name=$1; re=$2; shift 2
    "$@" >"$OUT" 2>"$ERR" </dev/null
    judge "$name" $? 1 "$re"
}

# usage NAME REGEX CMD...: CMD is refused as a usage error (line and hint).
usage() {
    name=$1; re=$2; shift 2
    "$@" >"$OUT" 2>"$ERR" </dev/null
    judge "$name" $? 2 "$re"
}

# offset FILE HEX1 HEX2: the byte offset of the first HEX1 HEX2 pair in FILE.
offset() {
    od -An -v -tx1 "$1" | awk -v a="$2" -v b="$3" \
        '{ for (i = 1; i <= NF; i++) { if (p == a && $i == b) { print n - 1; exit } p = $i; n++ } }'
}
# poke FILE OFFSET BYTES: overwrites the bytes at OFFSET (BYTES as printf's
# octal escapes).
poke() {
    printf "$3" | dd of="$1" bs=1 seek="$2" conv=notrunc 2>/dev/null
}
# limited KIND VALUE CMD...: CMD under ulimit -KIND VALUE.
limited() {
    kind=$1; value=$2; shift 2
    sh -c 'ulimit -'"$kind"' '"$value"' && exec "$@"' sh "$@"
}

# ---- the good inputs, the registry and a leaked copy
"$TRACEMARK" keygen "$K" >/dev/null
"$TRACEMARK" keygen "$T/other.key" >/dev/null
GOOD="$T/good.png"
GOODJ="$T/good.jpg"
"$TRACEMARK" attack scale:0.5 "$C/skimage_coffee.png" "$GOOD" >/dev/null
"$TRACEMARK" attack -q 90 png "$GOOD" "$GOODJ" >/dev/null
expect "mark the registry's copies" 0 "$TRACEMARK" mark -k "$K" -r "$R" --recipient alice --recipient bob \
    --out-dir "$T/copies" "$GOOD"
LEAK="$T/copies/good.alice.png"
ok "a copy to trace" -s "$LEAK"
cp "$R" "$T/reg.before"
snap

# ---- bad image files
: >"$B/empty.jpg"
head -c 4096 /dev/urandom >"$B/random.jpg"
size=$(wc -c <"$GOODJ")
head -c $((size / 2)) "$GOODJ" >"$B/truncated.jpg"
size=$(wc -c <"$GOOD")
head -c $((size / 2)) "$GOOD" >"$B/truncated.png"
"$TRACEMARK" attack webp:q=60 "$GOOD" "$T/good.webp" >/dev/null
size=$(wc -c <"$T/good.webp")
head -c $((size / 2)) "$T/good.webp" >"$B/truncated.webp"
head -c 30 "$GOOD" >"$B/header-only.png"
# JPEG damage that a decoder can see: a marker or a run of 0xff in the middle
# of the entropy-coded data, a 12-bit precision, a bad quantisation table id,
# Huffman counts that overflow, no start-of-image marker
sof=$(offset "$GOODJ" ff c0)
dqt=$(offset "$GOODJ" ff db)
dht=$(offset "$GOODJ" ff c4)
sos=$(offset "$GOODJ" ff da)
size=$(wc -c <"$GOODJ")
mid=$(((sos + size) / 2))
ok "JPEG markers found" -n "$sof" -a -n "$dqt" -a -n "$dht" -a -n "$sos"
cp "$GOODJ" "$B/flip-entropy-marker.jpg"; poke "$B/flip-entropy-marker.jpg" "$mid" '\377\331'
cp "$GOODJ" "$B/flip-entropy-ff.jpg"; poke "$B/flip-entropy-ff.jpg" "$mid" \
    '\377\377\377\377\377\377\377\377\377\377\377\377\377\377\377\377\377\377\377\377\377\377\377\377'
cp "$GOODJ" "$B/flip-sof-precision.jpg"; poke "$B/flip-sof-precision.jpg" $((sof + 4)) '\014'
cp "$GOODJ" "$B/flip-sof-components.jpg"; poke "$B/flip-sof-components.jpg" $((sof + 9)) '\000'
cp "$GOODJ" "$B/flip-dqt-id.jpg"; poke "$B/flip-dqt-id.jpg" $((dqt + 4)) '\007'
cp "$GOODJ" "$B/flip-dht-counts.jpg"; poke "$B/flip-dht-counts.jpg" $((dht + 5)) \
    '\377\377\377\377\377\377\377\377\377\377\377\377\377\377\377\377'
cp "$GOODJ" "$B/flip-soi.jpg"; poke "$B/flip-soi.jpg" 0 '\377\331'
# other formats, and a PNG's name on another format
printf 'GIF89a\001\000\001\000\200\000\000\000\000\000\377\377\377!\371\004\001\000\000\000\000,\000\000\000\000\001\000\001\000\000\002\002D\001\000;' >"$B/gif.png"
printf 'BM:\000\000\000\000\000\000\0006\000\000\000(\000\000\000\001\000\000\000\001\000\000\000\001\000\030\000' >"$B/bmp.jpg"
printf '%%PDF-1.4\n%% not an image\n' >"$B/pdf.webp"
# headers claiming huge images: PNG 100000x100000 (over the largest side)
# and 60000x60000, JPEG 60000x60000 (its fields stop at 65535), WebP
# 16383x16383; none may allocate the pixels before refusing
printf '\211PNG\r\n\032\n\000\000\000\rIHDR\000\001\206\240\000\001\206\240\010\002\000\000\000\047\060\234\237\000\000\000\014IDATx\332c`\240\014\000\000\000@\000\001\211\311\257C\000\000\000\000IEND\256B`\202' >"$B/huge-100000.png"
printf '\211PNG\r\n\032\n\000\000\000\rIHDR\000\000\352\140\000\000\352\140\010\002\000\000\000\017\260\342\025\000\000\000\014IDATx\332c`\240\014\000\000\000@\000\001\211\311\257C\000\000\000\000IEND\256B`\202' >"$B/huge-60000.png"
cp "$GOODJ" "$B/huge-60000.jpg"; poke "$B/huge-60000.jpg" $((sof + 5)) '\352\140\352\140'
cp "$T/good.webp" "$B/huge-16383.webp"; poke "$B/huge-16383.webp" 26 '\377\077\377\077'
ok "the WebP copy is simple VP8 (the size is at offset 26)" "$(od -An -c -j 12 -N 4 "$T/good.webp" | tr -d ' ')" = VP8
mkdir "$B/directory.jpg"
ln -s "$B/nowhere.jpg" "$B/dangling.jpg"
cp "$GOOD" "$B/png-named.jpg"
expect "inspect a PNG named .jpg: read" 0 "$TRACEMARK" inspect --json "$B/png-named.jpg"
has "inspect a PNG named .jpg: read as PNG" "$OUT" '"format": "png"'

# FILE|what the message must say
while IFS='|' read -r f want; do
    in="$B/$f"
    fails "inspect $f" "^tracemark: $in: ($want)$" "$TRACEMARK" inspect "$in"
    fails "strip $f" "$want" "$TRACEMARK" strip "$in" "$W/out.png"
    fails "attack $f" "$want" "$TRACEMARK" attack png "$in" "$W/out.png"
    fails "attack average with $f" "$want" "$TRACEMARK" attack average "$GOOD" "$in" "$W/out.png"
    fails "mark -o from $f" "$want" "$TRACEMARK" mark -k "$K" -r "$R" --recipient carol -o "$W/copy.png" "$in"
    fails "mark --out-dir from $f" "$want" "$TRACEMARK" mark -k "$K" -r "$R" --recipient carol \
        --recipient dave --out-dir "$W/copies" "$in"
    fails "mark into a new registry from $f" "$want" "$TRACEMARK" mark -k "$K" -r "$W/new.db" \
        --recipient carol -o "$W/copy.png" "$in"
    fails "trace $f" "$want" "$TRACEMARK" trace -k "$K" -r "$R" "$in"
    fails "trace --json $f" "$want" "$TRACEMARK" trace -k "$K" -r "$R" --json "$in"
    fails "trace --original $f" "$want" "$TRACEMARK" trace -k "$K" -r "$R" --original "$in" "$LEAK"
done <<EOF
empty.jpg|not a JPEG, PNG or WebP image
random.jpg|not a JPEG, PNG or WebP image
truncated.jpg|image data is truncated
truncated.png|image data is truncated
truncated.webp|image data is truncated
header-only.png|image data is truncated
flip-entropy-marker.jpg|image data is corrupt
flip-entropy-ff.jpg|image data is corrupt
flip-sof-precision.jpg|unsupported image feature
flip-sof-components.jpg|image has zero or absurd dimensions|image data is corrupt
flip-dqt-id.jpg|image data is corrupt
flip-dht-counts.jpg|image data is corrupt
flip-soi.jpg|not a JPEG, PNG or WebP image
gif.png|not a JPEG, PNG or WebP image
bmp.jpg|not a JPEG, PNG or WebP image
pdf.webp|not a JPEG, PNG or WebP image
huge-100000.png|image has zero or absurd dimensions
huge-60000.png|image exceeds the pixel budget \(see --max-pixels\)
huge-60000.jpg|image exceeds the pixel budget \(see --max-pixels\)
huge-16383.webp|image exceeds the pixel budget \(see --max-pixels\)
dangling.jpg|dangling symbolic link \(its target does not exist\)
nowhere.jpg|no such file
EOF
# a directory: read as a file by all but trace, which reads the images in it
fails "inspect a directory" "is a directory" "$TRACEMARK" inspect "$B/directory.jpg"
fails "strip a directory" "is a directory" "$TRACEMARK" strip "$B/directory.jpg" "$W/out.png"
fails "attack a directory" "is a directory" "$TRACEMARK" attack png "$B/directory.jpg" "$W/out.png"
fails "mark a directory" "is a directory" "$TRACEMARK" mark -k "$K" -r "$R" --recipient carol -o "$W/copy.png" \
    "$B/directory.jpg"
fails "trace --original a directory" "is a directory" "$TRACEMARK" trace -k "$K" -r "$R" --original \
    "$B/directory.jpg" "$LEAK"
fails "trace a directory with no image in it" "a directory with no JPEG, PNG or WebP image in it" "$TRACEMARK" trace \
    -k "$K" -r "$R" "$B/directory.jpg"
fails "trace a file name with a newline: one line" "^tracemark: $B/two\?lines\.jpg: no such file$" \
    "$TRACEMARK" trace -k "$K" -r "$R" "$B/two
lines.jpg"

# Damage a JPEG cannot show: entropy-coded data carries no checksum, so a
# flipped bit mostly decodes to wrong pixels. Decoded or refused cleanly,
# never a crash.
cp "$GOODJ" "$B/bitflip.jpg"
poke "$B/bitflip.jpg" $((mid + 7)) '\125'
"$TRACEMARK" inspect "$B/bitflip.jpg" >"$OUT" 2>"$ERR"
got=$?
ok "a flipped entropy bit: decoded (0) or refused (2)" "$got" -eq 0 -o "$got" -eq 2
ok "a flipped entropy bit: at most one line on stderr" "$(wc -l <"$ERR")" -le 1

# The pixel budget refuses a huge header before any pixel is allocated: under
# a 200 MB address-space limit the refusal is the same, while a marked copy
# of a small image still works there and the same header with the budget
# lifted runs out of memory (so the limit is real).
# (A sanitizer build reserves terabytes of address space for its shadow
# memory and cannot start under such a limit at all: skipped there.)
if ! (ulimit -v 400000) 2>/dev/null; then
    echo "skip ulimit -v cases: the shell has no ulimit -v"
elif ! limited v 200000 "$TRACEMARK" --version >/dev/null 2>&1; then
    echo "skip ulimit -v cases: this build cannot start under a 200 MB address-space limit (sanitizers)"
else
    for f in huge-100000.png huge-60000.png huge-60000.jpg huge-16383.webp; do
        fails "$f under ulimit -v 200 MB" "pixel budget|absurd dimensions" limited v 200000 "$TRACEMARK" inspect "$B/$f"
        fails "mark $f under ulimit -v 200 MB" "pixel budget|absurd dimensions" limited v 200000 "$TRACEMARK" \
            mark -k "$K" -r "$R" --recipient carol -o "$W/copy.png" "$B/$f"
        fails "trace $f under ulimit -v 200 MB" "pixel budget|absurd dimensions" limited v 200000 "$TRACEMARK" \
            trace -k "$K" -r "$R" "$B/$f"
    done
    expect "a small image under ulimit -v 200 MB" 0 limited v 200000 "$TRACEMARK" attack scale:0.5 "$GOOD" "$T/half.png"
    expect "trace under ulimit -v 200 MB" 0 limited v 200000 "$TRACEMARK" trace -k "$K" -r "$R" "$LEAK"
    for f in huge-60000.png huge-60000.jpg huge-16383.webp; do
        fails "$f with the budget lifted: out of memory" "out of memory" limited v 200000 "$TRACEMARK" inspect \
            --max-pixels 4000000000 "$B/$f"
    done
fi

# ---- key files
: >"$T/empty.key"
head -c 30 "$K" >"$T/short.key"
head -c 82 /dev/urandom >"$T/garbage.key"
head -n 1 "$K" >"$T/header.key"
{ head -n 1 "$K"; echo 00112233; } >"$T/shorthex.key"
cp "$K" "$T/open.key"
cp "$K" "$T/group.key"
chmod 600 "$T/empty.key" "$T/short.key" "$T/garbage.key" "$T/header.key" "$T/shorthex.key"
chmod 644 "$T/open.key"
chmod 640 "$T/group.key"
mkdir "$T/dir.key"
ln -s "$T/none.key" "$T/dangling.key"
while IFS='|' read -r k want; do
    key="$T/$k"
    fails "mark with $k" "^tracemark: $key: ($want)" "$TRACEMARK" mark -k "$key" -r "$R" --recipient carol \
        -o "$W/copy.png" "$GOOD"
    fails "mark with $k, new registry" "$want" "$TRACEMARK" mark -k "$key" -r "$W/new.db" --recipient carol \
        --out-dir "$W/copies" "$GOOD"
    fails "trace with $k" "^tracemark: $key: ($want)" "$TRACEMARK" trace -k "$key" -r "$R" "$LEAK"
    fails "registry verify with $k" "^tracemark: $key: ($want)" "$TRACEMARK" registry verify -k "$key" -r "$R"
done <<EOF
missing.key|cannot read the key file: no such file
empty.key|key file is missing, malformed or of the wrong size
short.key|key file is missing, malformed or of the wrong size
garbage.key|key file is missing, malformed or of the wrong size
header.key|key file is missing, malformed or of the wrong size
shorthex.key|key file is missing, malformed or of the wrong size
open.key|key file is readable by group or others \(chmod 600 it\)
group.key|key file is readable by group or others \(chmod 600 it\)
dir.key|cannot read the key file: is a directory
dangling.key|cannot read the key file: dangling symbolic link
EOF
fails "mark with another key" "registry was made with another key" "$TRACEMARK" mark -k "$T/other.key" -r "$R" \
    --recipient carol -o "$W/copy.png" "$GOOD"
fails "trace with another key" "^tracemark: $R: registry was made with another key \(fingerprint [0-9a-f]{16}\)$" \
    "$TRACEMARK" trace -k "$T/other.key" -r "$R" "$LEAK"
fails "registry verify with another key" "registry was made with another key" "$TRACEMARK" registry verify \
    -k "$T/other.key" -r "$R"

# ---- registries: not a registry, damaged, foreign, newer, a directory
# regcase NAME FILE REGEX: every command that opens FILE as the registry
# refuses it, leaves it as it was and writes nothing.
regcase() {
    rname=$1; rfile=$2; rwant=$3   # fails sets name and re: sh has no locals
    cp "$rfile" "$T/regcase.bak" 2>/dev/null
    fails "mark into $rname" "$rwant" "$TRACEMARK" mark -k "$K" -r "$rfile" --recipient carol -o "$W/copy.png" "$GOOD"
    fails "mark --out-dir into $rname" "$rwant" "$TRACEMARK" mark -k "$K" -r "$rfile" --recipient carol \
        --recipient dave --out-dir "$W/copies" "$GOOD"
    fails "trace with $rname" "$rwant" "$TRACEMARK" trace -k "$K" -r "$rfile" "$LEAK"
    fails "registry list of $rname" "$rwant" "$TRACEMARK" registry list -r "$rfile" --copies
    fails "registry verify of $rname" "$rwant" "$TRACEMARK" registry verify -k "$K" -r "$rfile"
    if [ -f "$rfile" ]; then
        ok "$rname unchanged" -z "$(cmp "$rfile" "$T/regcase.bak" 2>&1)"
    fi
}
head -c 8192 /dev/urandom >"$T/random.db"
regcase "random bytes" "$T/random.db" "^tracemark: $T/random\.db: not a tracemark registry \(not a SQLite database\)$"
printf 'SQLite format 3\000' >"$T/header.db"
head -c 200 /dev/urandom >>"$T/header.db"
regcase "a SQLite header and garbage" "$T/header.db" "not a tracemark registry|malformed|not a database"
mkdir "$T/dir.db"
regcase "a directory" "$T/dir.db" "^tracemark: $T/dir\.db: is a directory, not a registry$"
NOREG="^tracemark: $W/none\.db: no such registry$"
fails "trace with a missing registry" "$NOREG" "$TRACEMARK" trace -k "$K" -r "$W/none.db" "$LEAK"
fails "registry list of a missing registry" "$NOREG" "$TRACEMARK" registry list -r "$W/none.db"
fails "registry verify of a missing registry" "$NOREG" "$TRACEMARK" registry verify -k "$K" -r "$W/none.db"
fails "registry show of a missing registry" "$NOREG" "$TRACEMARK" registry show -r "$W/none.db" alice
if [ "$have_sqlite" -eq 1 ]; then
    sqlite3 "$T/foreign.db" "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users VALUES(1, 'x');"
    regcase "another program's database" "$T/foreign.db" "not a tracemark registry \(a SQLite database of another program\)"
    cp "$R" "$T/newer.db"
    sqlite3 "$T/newer.db" "PRAGMA user_version = 9999"
    regcase "a newer schema" "$T/newer.db" "registry has a newer schema \(version 9999; .*upgrade tracemark"
    size=$(wc -c <"$R")
    head -c $((size / 2)) "$R" >"$T/half.db"
    regcase "a registry cut in half" "$T/half.db" "malformed"
    # bytes overwritten in the middle of a real registry: the page header of
    # the copies table, then bytes inside its rows
    page=$(sqlite3 "$R" "PRAGMA page_size")
    croot=$(sqlite3 "$R" "SELECT rootpage FROM sqlite_master WHERE name = 'copies'")
    cp "$R" "$T/pagehead.db"
    poke "$T/pagehead.db" $(((croot - 1) * page)) '\245\245\245\245\245\245\245\245\245\245\245\245'
    regcase "a registry with a page header overwritten" "$T/pagehead.db" "malformed|damaged"
    cp "$R" "$T/cells.db"   # the rows sit at the end of the page
    tr '\000' '\245' </dev/zero | head -c 1500 | dd of="$T/cells.db" bs=1 seek=$((croot * page - 1500)) \
        conv=notrunc 2>/dev/null
    cp "$T/cells.db" "$T/cells.bak"
    fails "trace with rows overwritten" "malformed" "$TRACEMARK" trace -k "$K" -r "$T/cells.db" "$LEAK"
    fails "registry list with rows overwritten" "malformed" "$TRACEMARK" registry list -r "$T/cells.db" --copies
    fails "registry verify with rows overwritten: one line" "registry file is damaged" "$TRACEMARK" registry verify \
        -k "$K" -r "$T/cells.db"
    # mark must not add its row to the damaged page: SQLite checks a page's
    # cells as it reads them only with PRAGMA cell_size_check, which the
    # registry turns on.
    R_SAVE=$R; R="$T/cells.db"; snap
    fails "mark into a registry with rows overwritten" "malformed" "$TRACEMARK" mark -k "$K" -r "$T/cells.db" \
        --recipient carol -o "$W/copy.png" "$GOOD"
    R=$R_SAVE; snap
else
    echo "skip registry cases that need the sqlite3 shell"
fi

# ---- bad options: every command; the line names the option or the value
usage "mark: unknown option" "^tracemark: mark: unknown option '--frobnicate'$" "$TRACEMARK" mark --frobnicate \
    -k "$K" -r "$R" --recipient x -o "$W/x.png" "$GOOD"
usage "mark: -k without its argument" "^tracemark: mark: option '-k' needs an argument$" "$TRACEMARK" mark -k
usage "mark: --out-dir without its argument" "option '--out-dir' needs an argument" "$TRACEMARK" mark -k "$K" \
    -r "$R" --recipient x --out-dir
usage "mark: --recipient without its argument" "option '--recipient' needs an argument" "$TRACEMARK" mark --recipient
for bad in "-q 0" "-q 101" "-q abc" "-q -5" "--quality 1.5" "--strength 0" "--strength abc" "--strength 21" \
        "--strength nan" "--strength 1e999" "-j 0" "-j 257" "-j x" "--max-pixels 0" "--max-pixels -1" \
        "--max-pixels 1e3" "--max-pixels 99999999999999999999999" "--format gif"; do
    # shellcheck disable=SC2086
    usage "mark $bad" "^tracemark: mark: --[a-z-]+ wants" "$TRACEMARK" mark $bad -k "$K" -r "$R" --recipient x \
        -o "$W/x.png" "$GOOD"
done
usage "mark: -o with an unknown extension" "cannot tell the output format" "$TRACEMARK" mark -k "$K" -r "$R" \
    --recipient x -o "$W/x.gif" "$GOOD"
usage "mark: an empty recipient" "empty recipient" "$TRACEMARK" mark -k "$K" -r "$R" --recipient "" -o "$W/x.png" "$GOOD"
usage "mark: a recipient with a tab" "control character" "$TRACEMARK" mark -k "$K" -r "$R" \
    --recipient "$(printf 'a\tb')" -o "$W/x.png" "$GOOD"
fails "mark: a missing recipients file" "^tracemark: $T/none\.txt: " "$TRACEMARK" mark -k "$K" -r "$R" \
    --recipients "$T/none.txt" --out-dir "$W/copies" "$GOOD"
usage "mark: no input" "want the input image" "$TRACEMARK" mark -k "$K" -r "$R" --recipient x -o "$W/x.png"
usage "mark: two inputs" "exactly one input" "$TRACEMARK" mark -k "$K" -r "$R" --recipient x -o "$W/x.png" "$GOOD" "$GOOD"
usage "trace: unknown option" "^tracemark: trace: unknown option '--frobnicate'$" "$TRACEMARK" trace --frobnicate \
    -k "$K" -r "$R" "$LEAK"
usage "trace: -r without its argument" "^tracemark: trace: option '-r' needs an argument$" "$TRACEMARK" trace -k "$K" -r
usage "trace: --original without its argument" "option '--original' needs an argument" "$TRACEMARK" trace \
    -k "$K" -r "$R" --original
for bad in "--fpr 0" "--fpr 1" "--fpr 1.5" "--fpr -0.1" "--fpr abc" "--fpr nan" "--fpr 1e-400" "-j 0" "-j many" \
        "--max-pixels 0" "--max-pixels 12x"; do
    # shellcheck disable=SC2086
    usage "trace $bad" "^tracemark: trace: --[a-z-]+ wants" "$TRACEMARK" trace $bad -k "$K" -r "$R" "$LEAK"
done
usage "inspect: unknown option" "^tracemark: inspect: unknown option '-z'$" "$TRACEMARK" inspect -z "$GOOD"
usage "inspect: --max-pixels without its argument" "option '--max-pixels' needs an argument" "$TRACEMARK" inspect \
    --max-pixels
usage "inspect --max-pixels 12x" "max-pixels wants" "$TRACEMARK" inspect --max-pixels 12x "$GOOD"
usage "strip: unknown option" "unknown option '--frobnicate'" "$TRACEMARK" strip --frobnicate "$GOOD" "$W/x.png"
usage "strip: -q without its argument" "option '-q' needs an argument" "$TRACEMARK" strip -q
usage "strip -q 0" "quality wants" "$TRACEMARK" strip -q 0 "$GOOD" "$W/x.png"
usage "strip --max-pixels -3" "max-pixels wants" "$TRACEMARK" strip --max-pixels -3 "$GOOD" "$W/x.png"
usage "strip: unknown output extension" "cannot tell the output format" "$TRACEMARK" strip "$GOOD" "$W/x.tiff"
usage "attack: unknown option" "unknown option '--frobnicate'" "$TRACEMARK" attack --frobnicate png "$GOOD" "$W/x.png"
usage "attack: -q without its argument" "option '-q' needs an argument" "$TRACEMARK" attack -q
usage "attack -q 101" "quality wants" "$TRACEMARK" attack -q 101 png "$GOOD" "$W/x.jpg"
for spec in "jpeg:q=0" "jpeg:q=abc" "scale:0" "scale:-1" "crop:2" "rotate:nan" "median:r=9" "scale:0.5,jpeg:q=500"; do
    usage "attack $spec" "^tracemark: attack: bad attack spec" "$TRACEMARK" attack "$spec" "$GOOD" "$W/x.png"
done
usage "keygen: unknown option" "unknown option '--frobnicate'" "$TRACEMARK" keygen --frobnicate "$W/x.key"
usage "registry list: -r without its argument" "needs an argument" "$TRACEMARK" registry list -r
usage "registry: unknown option" "unknown option '--frobnicate'" "$TRACEMARK" registry list -r "$R" --frobnicate

# ---- outputs that cannot be written
fails "mark -o into a missing directory" "^tracemark: $W/nodir/copy\.png: cannot write the file: no such file or directory$" \
    "$TRACEMARK" mark -k "$K" -r "$R" --recipient carol -o "$W/nodir/copy.png" "$GOOD"
fails "mark --out-dir under a missing directory" "cannot create the output directory: no such file or directory" \
    "$TRACEMARK" mark -k "$K" -r "$R" --recipient carol --out-dir "$W/a/b" "$GOOD"
: >"$T/afile"
fails "mark --out-dir that is a file" "^tracemark: $T/afile: exists and is not a directory$" "$TRACEMARK" mark \
    -k "$K" -r "$R" --recipient carol --out-dir "$T/afile" "$GOOD"
fails "strip into a missing directory" "no such file or directory" "$TRACEMARK" strip "$GOOD" "$W/nodir/x.png"
fails "attack into a missing directory" "no such file or directory" "$TRACEMARK" attack png "$GOOD" "$W/nodir/x.png"
# a file size limit the copies cannot fit under (a full disk fails the same
# way): one line, no copy, no temporary, no directory and no row
unit=512
sh -c 'trap "" XFSZ; ulimit -f 1 && head -c 4096 /dev/zero >"$1"' sh "$T/probe" 2>/dev/null
[ "$(wc -c <"$T/probe")" -ge 1024 ] && unit=1024
blocks=$((131072 / unit))
BIG="$C/skimage_coffee.png"   # its copies are about 400 kB
fails "mark --out-dir under ulimit -f 128 kB" "^tracemark: $W/copies/skimage_coffee\.carol\.png: cannot write the file: file too large$" \
    limited f "$blocks" "$TRACEMARK" mark -k "$K" -r "$R" --recipient carol --recipient dave --out-dir "$W/copies" "$BIG"
fails "mark -o under ulimit -f 128 kB" "cannot write the file: file too large" limited f "$blocks" "$TRACEMARK" \
    mark -k "$K" -r "$R" --recipient carol -o "$W/copy.png" "$BIG"
fails "mark -j 2 under ulimit -f 128 kB" "cannot write the file: file too large" limited f "$blocks" "$TRACEMARK" \
    mark -k "$K" -r "$R" -j 2 --recipient carol --recipient dave --recipient erin --out-dir "$W/copies" "$BIG"
if [ "$have_sqlite" -eq 1 ]; then
    ok "no row for the copies that could not be written" \
        "$(sqlite3 "$R" "SELECT count(*) FROM copies WHERE recipient IN ('carol', 'dave', 'erin')")" -eq 0
fi
# the copies fit but the registry does not (its write-ahead log needs
# several 4 kB pages, its shared-memory index 32 kB): opening it or
# committing the rows fails, the staged copies go again, the registry is as
# it was
"$TRACEMARK" attack "scale:0.1" "$GOOD" "$T/tiny.png" >/dev/null 2>&1
blocks=$((8192 / unit))
fails "mark under ulimit -f 8 kB: the registry cannot take the rows" "^tracemark: .*: cannot (read|record|commit|start).*(full|disk I/O)" \
    limited f "$blocks" "$TRACEMARK" mark -k "$K" -r "$R" --recipient carol --recipient dave -q 50 \
    --out-dir "$W/copies" "$T/tiny.png"
expect "the registry verifies after the failed commit" 0 "$TRACEMARK" registry verify -k "$K" -r "$R"
fails "strip under ulimit -f 128 kB" "cannot write the file: file too large" limited f "$blocks" "$TRACEMARK" \
    strip "$BIG" "$W/x.png"
fails "attack under ulimit -f 128 kB" "cannot write the file: file too large" limited f "$blocks" "$TRACEMARK" \
    attack png "$BIG" "$W/x.png"

# ---- permissions: only meaningful when not root (root reads everything)
if [ "$root" -eq 0 ]; then
    cp "$GOOD" "$B/unreadable.png"
    chmod 000 "$B/unreadable.png"
    fails "inspect an unreadable file" "permission denied" "$TRACEMARK" inspect "$B/unreadable.png"
    fails "mark an unreadable file" "permission denied" "$TRACEMARK" mark -k "$K" -r "$R" --recipient carol \
        -o "$W/copy.png" "$B/unreadable.png"
    fails "trace an unreadable file" "permission denied" "$TRACEMARK" trace -k "$K" -r "$R" "$B/unreadable.png"
    mkdir "$B/locked-dir"
    chmod 000 "$B/locked-dir"
    fails "trace an unreadable directory" "cannot read the directory: permission denied" "$TRACEMARK" trace \
        -k "$K" -r "$R" "$B/locked-dir"
    chmod 755 "$B/locked-dir"
    cp "$K" "$T/locked.key"
    chmod 000 "$T/locked.key"
    fails "mark with an unreadable key" "^tracemark: [^:]*locked\.key: (cannot read the key file: )?permission denied$" "$TRACEMARK" mark \
        -k "$T/locked.key" -r "$R" --recipient carol -o "$W/copy.png" "$GOOD"
    cp "$R" "$T/locked.db"
    chmod 000 "$T/locked.db"
    fails "trace with an unreadable registry" "" "$TRACEMARK" trace -k "$K" -r "$T/locked.db" "$LEAK"
    fails "registry list of an unreadable registry" "" "$TRACEMARK" registry list -r "$T/locked.db"
    mkdir "$W/ro"
    chmod 555 "$W/ro"
    EMPTY_RO=1
    "$TRACEMARK" mark -k "$K" -r "$R" --recipient carol --out-dir "$W/ro" "$GOOD" >"$OUT" 2>"$ERR" </dev/null
    st=$?
    chmod 755 "$W/ro"
    [ -z "$(ls -A "$W/ro")" ] || EMPTY_RO=0
    rmdir "$W/ro" 2>/dev/null
    judge "mark into a read-only directory" "$st" 1 "cannot write in the output directory: permission denied"
    ok "nothing written in the read-only directory" "$EMPTY_RO" -eq 1
    mkdir "$W/ro"
    chmod 555 "$W/ro"
    "$TRACEMARK" mark -k "$K" -r "$R" --recipient carol -o "$W/ro/copy.png" "$GOOD" >"$OUT" 2>"$ERR" </dev/null
    st=$?
    chmod 755 "$W/ro"
    rmdir "$W/ro" 2>/dev/null
    judge "mark -o into a read-only directory" "$st" 1 "cannot write the file: permission denied"
    chmod 600 "$B/unreadable.png" "$T/locked.key" "$T/locked.db"
else
    echo "skip permission cases: running as root"
fi

ok "no temporary file anywhere" -z "$(find "$T" -name '*.tmp-*')"
finish
