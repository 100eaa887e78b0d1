#!/bin/sh
# test_registry_cli.sh -- end-to-end checks of `tracemark keygen` and
# `tracemark registry`: exit codes, stdout/stderr contracts, file modes.
# Needs $TRACEMARK (the built binary). Most registry commands run here on
# empty, missing and invalid files; `registry merge` and `snapshot` on
# shards marked with `mark` (needs $TM_SRCDIR for a corpus image).
set -u

T=${TRACEMARK:?set TRACEMARK to the tracemark binary}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tmcli-reg.XXXXXX") || exit 2
trap 'rm -rf "$WORK"' EXIT INT TERM
cd "$WORK" || exit 2

pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }

# run EXPECTED_EXIT CMD...: runs CMD, stdout in out, stderr in err.
run() {
    want=$1
    shift
    "$@" >out 2>err
    got=$?
    if [ "$got" -eq "$want" ]; then ok; else bad "exit $got (wanted $want): $*"; cat err >&2; fi
}
# grep_in FILE PATTERN: the file contains the fixed string.
grep_in() {
    if grep -qF -- "$2" "$1"; then ok; else bad "$1 lacks '$2'"; sed 's/^/  | /' "$1" >&2; fi
}
empty() {
    if [ ! -s "$1" ]; then ok; else bad "$1 is not empty"; sed 's/^/  | /' "$1" >&2; fi
}
one_line() {
    if [ "$(wc -l <"$1")" -eq 1 ]; then ok; else bad "$1 is not one line"; sed 's/^/  | /' "$1" >&2; fi
}

# ---- keygen ---------------------------------------------------------------
run 0 "$T" keygen team.key
if grep -Eq '^[0-9a-f]{16}$' out; then ok; else bad "keygen did not print a fingerprint"; fi
empty err
fp=$(cat out)
mode=$(stat -c %a team.key 2>/dev/null || stat -f %Lp team.key)
if [ "$mode" = 600 ]; then ok; else bad "key mode is $mode"; fi
if [ "$(head -n 1 team.key)" = tracemark-key-v1 ]; then ok; else bad "key file header"; fi
cp team.key before.key

run 2 "$T" keygen team.key
if [ "$(cat err)" = "tracemark: team.key: file exists, refusing to overwrite" ]; then ok; else bad "exists message: $(cat err)"; fi
empty out
if cmp -s team.key before.key; then ok; else bad "existing key was changed"; fi

run 0 "$T" keygen other.key
if [ "$(cat out)" != "$fp" ]; then ok; else bad "two keys share a fingerprint"; fi

run 2 "$T" keygen
grep_in err "missing KEYFILE"
run 2 "$T" keygen a.key b.key
grep_in err "too many arguments"
run 2 "$T" keygen --bogus x.key
grep_in err "unknown option"
run 2 "$T" keygen no-such-dir/x.key
grep_in err "tracemark: no-such-dir/x.key:"
one_line err
if [ ! -e no-such-dir ]; then ok; else bad "keygen created a directory"; fi
ls -a | grep -q '\.tmp-' && bad "temporary file left behind" || ok

run 0 "$T" keygen --help
grep_in out "Usage: tracemark keygen KEYFILE"
grep_in out "Exit status"
empty err
run 0 "$T" help keygen
grep_in out "Usage: tracemark keygen"

# ---- registry: help and usage errors --------------------------------------
run 0 "$T" registry --help
grep_in out "Usage: tracemark registry"
grep_in out "verify"
grep_in out "Example"
run 0 "$T" help registry
grep_in out "Usage: tracemark registry"
run 0 "$T" registry list --help
grep_in out "Usage: tracemark registry"

run 2 "$T" registry
grep_in err "missing subcommand"
run 2 "$T" registry frobnicate -r x.reg
grep_in err "unknown subcommand 'frobnicate'"
run 2 "$T" registry list
grep_in err "missing -r REGISTRY"
run 2 "$T" registry list -r
grep_in err "needs an argument"
run 2 "$T" registry list -r x.reg --bogus
grep_in err "unknown option '--bogus'"
run 2 "$T" registry show -r x.reg
grep_in err "missing ID"
run 2 "$T" registry list -r x.reg extra
grep_in err "unexpected argument"
run 2 "$T" registry verify -r x.reg
grep_in err "missing -k KEYFILE"

# ---- registry: missing and invalid files ----------------------------------
for sub in list verify; do
    run 2 "$T" registry $sub -r missing.reg -k team.key
    if [ "$(cat err)" = "tracemark: missing.reg: no such registry" ]; then ok; else bad "missing: $(cat err)"; fi
    empty out
done
if [ ! -e missing.reg ]; then ok; else bad "a read command created the registry"; fi
run 2 "$T" registry show -r missing.reg alice
one_line err

head -c 4096 /dev/urandom >random.reg
run 2 "$T" registry list -r random.reg
grep_in err "tracemark: random.reg: not a tracemark registry"
one_line err
: >empty.reg
run 2 "$T" registry list -r empty.reg
grep_in err "tracemark: empty.reg: not a tracemark registry"
run 2 "$T" registry verify -r random.reg -k team.key
grep_in err "random.reg"

# ---- registry: an empty registry -----------------------------------------
run 0 "$T" registry init -r new.reg -k team.key
grep_in out "$fp"
run 2 "$T" registry init -r new.reg
grep_in err "file exists"

run 0 "$T" registry list -r new.reg
empty out
run 0 "$T" registry list -r new.reg --copies
empty out
run 0 "$T" registry list -r new.reg --json
if [ "$(cat out)" = '{"registry": "new.reg", "images": []}' ]; then ok; else bad "list --json: $(cat out)"; fi
run 0 "$T" registry list -r new.reg --copies --json
grep_in out '"copies": []'

run 1 "$T" registry show -r new.reg alice@example.com
grep_in err "tracemark: new.reg: no image, copy or recipient 'alice@example.com'"
run 1 "$T" registry show -r new.reg 17
run 1 "$T" registry show -r new.reg 00112233445566778899aabbccddeeff

run 0 "$T" registry verify -r new.reg -k team.key
grep_in out "0 copies verified"
empty err
run 0 "$T" registry verify -r new.reg -k team.key --json
grep_in out '"ok": true'

# Another key: refused as an error, naming the registry's fingerprint.
run 2 "$T" registry verify -r new.reg -k other.key
grep_in err "tracemark: new.reg: registry was made with another key (fingerprint $fp)"
one_line err

# A key readable by others is refused before anything is read.
cp team.key open.key
chmod 644 open.key
run 2 "$T" registry verify -r new.reg -k open.key
grep_in err "tracemark: open.key:"
grep_in err "chmod 600"
run 2 "$T" registry verify -r new.reg -k missing.key
grep_in err "tracemark: missing.key:"

# A registry from a newer tracemark (needs the sqlite3 shell).
if command -v sqlite3 >/dev/null 2>&1; then
    cp new.reg future.reg
    sqlite3 future.reg 'PRAGMA user_version = 99' >/dev/null
    run 2 "$T" registry list -r future.reg
    grep_in err "newer schema"
    sqlite3 other.db 'CREATE TABLE t(x)' >/dev/null
    run 2 "$T" registry list -r other.db
    grep_in err "not a tracemark registry"
fi

# ---- registry merge: shards marked on two hosts -----------------------------
# The same image marked for different recipients into two registries (as two
# marking hosts would), merged, and a leaked copy from each traced against
# the merged registry.
IMG=${TM_SRCDIR:+$TM_SRCDIR/corpus/skimage_rocket.jpg}
if [ -n "$IMG" ] && [ -f "$IMG" ]; then
    run 0 "$T" registry --help
    grep_in out "tracemark registry merge    -r DEST -k KEYFILE [--json] SRC..."
    grep_in out "tracemark registry snapshot -r REGISTRY [--json] FILE"
    run 0 "$T" mark -k team.key -r host1.reg --recipient alice --recipient bob --out-dir host1 "$IMG"
    run 0 "$T" mark -k team.key -r host2.reg --recipient carol --recipient dave --out-dir host2 "$IMG"
    sha256sum host1.reg host2.reg >shards.sum
    run 0 "$T" registry merge -k team.key -r merged.reg host1.reg host2.reg
    grep_in out "host1.reg: 1 image (1 new), 2 copies: 2 added, 0 already present"
    grep_in out "host2.reg: 1 image (0 new), 2 copies: 2 added, 0 already present"
    grep_in out "merged.reg: 4 copies added from 2 registries, 4 in all; journal of 5 entries, head "
    empty err
    if sha256sum -c shards.sum >/dev/null 2>&1; then ok; else bad "merge changed a shard"; fi
    run 0 "$T" registry verify -k team.key -r merged.reg
    grep_in out "4 copies verified, all good"
    for who in bob:host1 carol:host2; do
        name=${who%%:*}
        run 0 "$T" attack jpeg:q=70 "${who#*:}/skimage_rocket.$name.jpg" "leak-$name.jpg"
        run 0 "$T" trace -k team.key -r merged.reg --json "leak-$name.jpg"
        grep_in out "\"accused\": [{\"recipient\": \"$name\""
        one_line out
    done

    # again: nothing to add, and said so; the file as it was
    sha256sum merged.reg >merged.sum
    run 0 "$T" registry merge -k team.key -r merged.reg host2.reg
    grep_in out "host2.reg: 1 image (0 new), 2 copies: 0 added, 2 already present (merged before: nothing to add)"
    if sha256sum -c merged.sum >/dev/null 2>&1; then ok; else bad "a repeated merge changed DEST"; fi
    run 0 "$T" registry merge -k team.key -r merged.reg --json host1.reg
    grep_in out '"sources": [{"file": "host1.reg", "images": 1, "images_added": 0, "copies": 2, "copies_added": 0, "copies_present": 2}], "added": 0, "copies": 4, "journal": {"entries": 5, "head": "'
    if command -v python3 >/dev/null 2>&1; then
        if python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["copies"]==4' <out; then ok; else bad "merge --json does not parse"; fi
    fi

    # bob marked again on a third host: the same recipient twice, refused
    run 0 "$T" mark -k team.key -r host3.reg --recipient erin --recipient bob --out-dir host3 "$IMG"
    run 2 "$T" registry merge -k team.key -r merged.reg host3.reg
    grep_in err "tracemark: host3.reg: conflict: recipient 'bob' was given two copies of image"
    grep_in err "host3/skimage_rocket.bob.jpg"
    grep_in err "host1/skimage_rocket.bob.jpg"
    one_line err
    empty out
    if sha256sum -c merged.sum >/dev/null 2>&1; then ok; else bad "a refused merge changed DEST"; fi
    # all or nothing over several shards: erin's copy is not taken either
    run 2 "$T" registry merge -k team.key -r merged.reg host1.reg host3.reg
    if sha256sum -c merged.sum >/dev/null 2>&1; then ok; else bad "a refused merge of two changed DEST"; fi

    # a shard edited behind tracemark's back, and one of another key
    if command -v sqlite3 >/dev/null 2>&1; then
        cp host2.reg edited.reg
        sqlite3 edited.reg "UPDATE copies SET recipient = 'mallory' WHERE recipient = 'dave'" >/dev/null
        run 2 "$T" registry merge -k team.key -r merged.reg edited.reg
        grep_in err "tracemark: edited.reg: fails verification (1 finding, the first: copy 2: tag does not match"
        one_line err
        if sha256sum -c merged.sum >/dev/null 2>&1; then ok; else bad "a tampered shard changed DEST"; fi
    fi
    run 0 "$T" mark -k other.key -r foreign.reg --recipient zed --out-dir foreign "$IMG"
    run 2 "$T" registry merge -k team.key -r merged.reg foreign.reg
    grep_in err "tracemark: foreign.reg: registry was made with another key"
    if sha256sum -c merged.sum >/dev/null 2>&1; then ok; else bad "another key's shard changed DEST"; fi
    run 2 "$T" registry merge -k other.key -r merged.reg host1.reg
    grep_in err "tracemark: merged.reg: registry was made with another key (fingerprint $fp)"
    run 2 "$T" registry merge -k team.key -r fresh.reg missing.reg
    grep_in err "tracemark: missing.reg: no such registry"
    if [ ! -e fresh.reg ]; then ok; else bad "a merge of a missing shard created DEST"; fi
    run 2 "$T" registry merge -r merged.reg host1.reg
    grep_in err "missing -k KEYFILE"
    run 2 "$T" registry merge -k team.key -r merged.reg
    grep_in err "missing SRC registry"

    # snapshot: the same rows and head, in rollback-journal mode
    run 0 "$T" registry snapshot -r merged.reg snap.reg
    grep_in out "snap.reg: snapshot of merged.reg, 4 copies"
    run 0 "$T" registry verify -k team.key -r snap.reg
    grep_in out "4 copies verified, all good; journal of 5 entries"
    "$T" registry list -r merged.reg --copies >a.list 2>&1
    "$T" registry list -r snap.reg --copies >b.list 2>&1
    if cmp -s a.list b.list; then ok; else bad "snapshot lists other copies"; fi
    run 2 "$T" registry snapshot -r merged.reg snap.reg
    if [ "$(cat err)" = "tracemark: snap.reg: file exists, refusing to overwrite" ]; then ok; else bad "snapshot exists: $(cat err)"; fi
    run 2 "$T" registry snapshot -r merged.reg
    grep_in err "missing FILE"
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
