#!/bin/sh
# test_kill.sh -- crash safety of `tracemark mark`: a batch of 20 copies is
# killed with SIGKILL at a random moment, KILL_ITERATIONS times (default 10;
# `KILL_ITERATIONS=100 make check TESTS=tests/cli/test_kill.sh` for a long
# run; KILL_SEED=N repeats a run). Odd iterations kill anywhere in the
# batch, even ones near its end, where the rows are written. After each kill:
#   - `tracemark registry verify` succeeds: the registry opens, its rows,
#     journal and the earlier copies in it are intact;
#   - the run's rows are all there or none is (one transaction);
#   - every file under a copy's final name is that copy, whole, byte for byte,
#     and registered (copies are written to NAME.tmp-XXXXXX and fsync'd, the
#     rows committed, and only then are the copies renamed into place, so a
#     kill can leave temporaries, or rows whose copies are not yet in place,
#     but never a half-written NAME nor a NAME without its row); nothing else
#     is in the directory;
#   - the same mark run again completes without --force (the copies already
#     in place are the ones the registry records, made again identically),
#     and then all 20 rows verify and match their files.
# Then three marks run at once on one registry, and again with one of them
# killed: the others' rows are all there and verify.
. "$(dirname "$0")/lib.sh"
C="$TM_SRCDIR/corpus"
K="$T/k.key"
N=${KILL_ITERATIONS:-10}

if ! sleep 0.001 2>/dev/null; then
    echo "skip: sleep takes no fractions of a second here"
    exit 77
fi
if command -v sha256sum >/dev/null 2>&1; then
    sha256() { sha256sum "$1" | cut -d ' ' -f 1; }
elif command -v shasum >/dev/null 2>&1; then
    sha256() { shasum -a 256 "$1" | cut -d ' ' -f 1; }
elif command -v openssl >/dev/null 2>&1; then
    sha256() { openssl dgst -sha256 -r "$1" | cut -d ' ' -f 1; }
else
    echo "skip: no sha256sum, shasum or openssl to check the copies"
    exit 77
fi
# now_ms: a clock in milliseconds (only to size the kill window)
now_ms() {
    t=$(date +%s%N 2>/dev/null)
    case $t in
    *[!0-9]* | "") echo $(($(date +%s) * 1000)) ;;
    *) echo $((t / 1000000)) ;;
    esac
}
SEED=${KILL_SEED:-$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')}
echo "# KILL_SEED=$SEED KILL_ITERATIONS=$N"

# rows REG DIR: "PATH SHA" for each copy REG lists whose output is in DIR.
rows() {
    "$TRACEMARK" registry list -r "$1" --copies --json | tr '{' '\n' |
        sed -n 's/.*"output": "\([^"]*\)", "output_sha256": "\([0-9a-f]*\)".*/\1 \2/p' |
        while read -r p h; do case $p in "$2"/*) echo "$p $h" ;; esac; done
}

# copies_ok REG: every copy REG lists exists with its recorded SHA-256;
# prints what is wrong, nothing when all is well.
copies_ok() {
    "$TRACEMARK" registry list -r "$1" --copies --json | tr '{' '\n' |
        sed -n 's/.*"output": "\([^"]*\)", "output_sha256": "\([0-9a-f]*\)".*/\1 \2/p' |
        while read -r p h; do
            if [ ! -f "$p" ]; then echo "listed copy $p is missing"
            elif [ "$(sha256 "$p")" != "$h" ]; then echo "listed copy $p does not have its SHA-256"; fi
        done
}

# ---- the image, a registry with two earlier copies, the reference batch
"$TRACEMARK" keygen "$K" >/dev/null
IMG="$T/photo.jpg"
"$TRACEMARK" attack -q 90 "scale:0.5,jpeg:q=90" "$C/skimage_coffee.png" "$IMG" >/dev/null
ok "a small JPEG to mark" -s "$IMG"
BASE="$T/base.db"
expect "earlier copies in the registry" 0 "$TRACEMARK" mark -k "$K" -r "$BASE" --recipient early1 \
    --recipient early2 --out-dir "$T/early" "$C/skimage_rocket.jpg"
RCP=
i=1
while [ $i -le 20 ]; do RCP="$RCP --recipient r$i@example.com"; i=$((i + 1)); done
REF="$T/ref"
cp "$BASE" "$T/ref.db"
t0=$(now_ms)
# shellcheck disable=SC2086
"$TRACEMARK" mark -k "$K" -r "$T/ref.db" $RCP --out-dir "$REF" "$IMG" >"$OUT" 2>"$ERR"
st=$?
t1=$(now_ms)
ok "the batch, uninterrupted" "$st" -eq 0
ok "the batch made 20 copies" "$(ls "$REF" | wc -l)" -eq 20
WINDOW=$((t1 - t0))
[ "$WINDOW" -gt 0 ] || WINDOW=300
echo "# the batch takes $WINDOW ms; kills land in 0..$WINDOW ms"

# ---- kill a batch at a random moment, N times
i=1
while [ $i -le "$N" ]; do
    D="$T/it$i"
    mkdir "$D"
    REG="$D/reg.db"
    OD="$D/out"
    cp "$BASE" "$REG"
    # odd iterations anywhere in the batch, even ones near its end (the
    # rows' transaction, and some after the batch is done)
    delay=$(awk -v s="$SEED" -v i="$i" -v w="$WINDOW" 'BEGIN { srand(s * 1000 + i); r = rand();
        printf "%.3f", (i % 2 ? r : 0.7 + 0.4 * r) * w / 1000 }')
    # shellcheck disable=SC2086
    "$TRACEMARK" mark -k "$K" -r "$REG" $RCP --out-dir "$OD" "$IMG" >"$D/out.txt" 2>"$D/err.txt" &
    pid=$!
    sleep "$delay"
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    st=$?
    why=
    # the registry opens and verifies, the earlier copies with it
    "$TRACEMARK" registry verify -k "$K" -r "$REG" >"$OUT" 2>"$ERR" ||
        why="$why; registry verify failed: $(head -n 2 "$ERR" | tr '\n' ' ')"
    nrows=$(rows "$REG" "$OD" | wc -l)
    [ "$nrows" -eq 0 ] || [ "$nrows" -eq 20 ] || why="$why; $nrows of the run's 20 rows (all or none)"
    # what is on disk: whole copies under final names, or temporaries
    nfinal=0
    ntmp=0
    if [ -d "$OD" ]; then
        for p in "$OD"/* "$OD"/.[!.]*; do
            [ -e "$p" ] || continue
            f=${p##*/}
            case $f in
            *.tmp-*)
                if [ -f "$REF/${f%.tmp-*}" ]; then ntmp=$((ntmp + 1))
                else why="$why; unexpected file $f"; fi ;;
            *)
                if [ ! -f "$REF/$f" ]; then why="$why; unexpected file $f"
                elif cmp -s "$OD/$f" "$REF/$f"; then nfinal=$((nfinal + 1))
                else why="$why; $f is not the whole copy"; fi ;;
            esac
        done
    fi
    # a copy in place is registered, with the SHA-256 of what is there
    [ "$nfinal" -eq 0 ] || [ "$nrows" -eq 20 ] || why="$why; $nfinal copies in place but $nrows rows"
    rows "$REG" "$OD" | while read -r p h; do
        [ ! -f "$p" ] || [ "$(sha256 "$p")" = "$h" ] || echo "$p is not the copy its row records"
    done >"$D/mismatch.txt"
    [ ! -s "$D/mismatch.txt" ] || why="$why; $(head -n 1 "$D/mismatch.txt")"
    [ "$st" -ne 0 ] || [ "$nfinal" -eq 20 ] || why="$why; exit 0 but $nfinal copies in place"
    # the same mark again completes, without --force
    # shellcheck disable=SC2086
    "$TRACEMARK" mark -k "$K" -r "$REG" $RCP --out-dir "$OD" "$IMG" >"$OUT" 2>"$ERR"
    again=$?
    rerun="completed"
    [ "$again" -eq 0 ] || why="$why; the re-run failed ($again): $(head -n 1 "$ERR")"
    "$TRACEMARK" registry verify -k "$K" -r "$REG" >"$OUT" 2>"$ERR" ||
        why="$why; registry verify after the re-run failed: $(head -n 2 "$ERR" | tr '\n' ' ')"
    has20=$(rows "$REG" "$OD" | wc -l)
    [ "$has20" -eq 20 ] || why="$why; $has20 rows after the re-run"
    bad=$(copies_ok "$REG")
    [ -z "$bad" ] || why="$why; after the re-run: $(echo "$bad" | head -n 2 | tr '\n' ' ')"
    same=0
    for p in "$REF"/*; do cmp -s "$OD/${p##*/}" "$p" && same=$((same + 1)); done
    [ "$same" -eq 20 ] || why="$why; $same of 20 copies as the uninterrupted batch"
    what="killed after ${delay} s (exit $st): $nfinal copies, $nrows rows, $ntmp temporaries; re-run $rerun"
    if [ -z "$why" ]; then
        npass=$((npass + 1)); echo "ok   kill $i/$N $what"
    else
        nfail=$((nfail + 1)); echo "FAIL kill $i/$N $what (KILL_SEED=$SEED)${why}"
        sed 's/^/     stderr of the killed run: /' "$D/err.txt" | head -3
    fi
    rm -rf "$D"
    i=$((i + 1))
done

# ---- three marks at once on one new registry, different recipients
P="$T/par.db"
PD="$T/par"
j=1
pids=
while [ $j -le 3 ]; do
    "$TRACEMARK" mark -k "$K" -r "$P" --recipient "p$j-a" --recipient "p$j-b" --recipient "p$j-c" \
        --recipient "p$j-d" --recipient "p$j-e" --recipient "p$j-f" --out-dir "$PD" "$IMG" \
        >"$T/par$j.out" 2>"$T/par$j.err" &
    pids="$pids $!"
    j=$((j + 1))
done
nok=0
for p in $pids; do wait "$p" && nok=$((nok + 1)); done
ok "three marks at once: all succeeded" "$nok" -eq 3
expect "three marks at once: the registry verifies" 0 "$TRACEMARK" registry verify -k "$K" -r "$P"
ok "three marks at once: all 18 rows" "$(rows "$P" "$PD" | wc -l)" -eq 18
ok "three marks at once: every copy as recorded" -z "$(copies_ok "$P")"
ok "three marks at once: 18 files, no temporary" "$(ls -A "$PD" | wc -l)" -eq 18

# ---- three at once, the second killed half way: the others are whole
Q="$T/parkill.db"
QD="$T/parkill"
cp "$BASE" "$Q"
# markq J: a batch of 20 recipients qJ-1..qJ-20 into Q, in the background
markq() {
    # shellcheck disable=SC2046
    "$TRACEMARK" mark -k "$K" -r "$Q" $(echo "$RCP" | sed "s/r\([0-9]*\)@/q$1-\1@/g") --out-dir "$QD" "$IMG" \
        >"$T/pk$1.out" 2>"$T/pk$1.err" &
}
markq 1
pid1=$!
markq 2
pid2=$!
markq 3
pid3=$!
sleep "$(awk -v w="$WINDOW" 'BEGIN { printf "%.3f", w / 2000 }')"
kill -9 "$pid2" 2>/dev/null
wait "$pid1"; s1=$?
wait "$pid2" 2>/dev/null
wait "$pid3"; s3=$?
ok "one of three killed: the first completed" "$s1" -eq 0
ok "one of three killed: the third completed" "$s3" -eq 0
expect "one of three killed: the registry verifies" 0 "$TRACEMARK" registry verify -k "$K" -r "$Q"
rows "$Q" "$QD" >"$T/pk.rows"
ok "one of three killed: the others' 40 rows" "$(grep -c '/photo\.q[13]-' "$T/pk.rows")" -eq 40
n2=$(grep -c '/photo\.q2-' "$T/pk.rows")
ok "one of three killed: its rows all or none" "$n2" -eq 0 -o "$n2" -eq 20
ok "one of three killed: every copy as recorded" -z "$(copies_ok "$Q")"

finish
