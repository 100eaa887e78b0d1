#!/bin/sh
# test_api_example.sh -- docs/api-example.c, which make check builds against
# the library in the tree, marks a corpus image for its recipient and traces
# the copy back to her; run again in the same WORKDIR it keeps the key and
# the registry (the copy's row replaced, not added); and its error paths
# report one line and exit 2.
. "$(dirname "$0")/lib.sh"
: "${TM_BUILDDIR:=$(dirname "$TRACEMARK")}"
EX="$TM_BUILDDIR/docs/api-example"
C="$TM_SRCDIR/corpus"
IMG="$C/mate_Dune.jpg" # the corpus's smallest image of at least 0.3 MP (1680x1050)

expect "marks and traces (exit 0)" 0 "$EX" "$IMG" "$T/w"
has "names the original" "$OUT" '^original .*mate_Dune\.jpg: 1680x1050 jpeg, image id [0-9a-f]{32}$'
has "marks the recipient's copy" "$OUT" '^marked alice@example\.com -> .*/w/copy\.jpeg \(copy 1, [0-9]+ bytes\)$'
has "verdict accused" "$OUT" '^trace: accused \(.*\); 1 copy scored, budget 1e-06$'
has "accuses the recipient with log10_p" "$OUT" '^accused: alice@example\.com \(copy 1\), log10_p -[0-9]+\.[0-9]{2}$'
ok "copy written" -s "$T/w/copy.jpeg"
ok "key file private (0600)" "$(ls -l "$T/w/example.key" | cut -c1-10)" = "-rw-------"
ok "no temporary left" -z "$(ls -A "$T/w" | grep -v '^example\.\(key\|db\)' | grep -v '^copy\.jpeg$' | grep -v '^example\.db-')"
fp1=$(sed -n 's/.*(fingerprint \([0-9a-f]*\)).*/\1/p' "$OUT")

expect "second run in the same WORKDIR" 0 "$EX" "$IMG" "$T/w"
fp2=$(sed -n 's/.*(fingerprint \([0-9a-f]*\)).*/\1/p' "$OUT")
ok "the key is kept" -n "$fp1" -a "$fp1" = "$fp2"
has "the copy's row is replaced, not added" "$OUT" '1 copy scored'

expect "a PNG original" 0 "$EX" "$C/skimage_astronaut.png" "$T/p"
has "PNG copy accused" "$OUT" '^accused: alice@example\.com '
ok "copy kept as PNG" -s "$T/p/copy.png"

# errors: usage, an unreadable image, a registry made with another key
expect "no arguments: exit 2" 2 "$EX"
has "usage on stderr" "$ERR" '^usage: api-example IMAGE WORKDIR$'
expect "missing image: exit 2" 2 "$EX" "$T/nonexistent.jpg" "$T/m"
has "missing image named" "$ERR" '^api-example: .*/nonexistent\.jpg: '
lines "one error line" "$ERR" 1
mkdir "$T/k" && cp "$T/w/example.db" "$T/k/"
expect "another key's registry: exit 2" 2 "$EX" "$IMG" "$T/k"
has "registry named, with its detail" "$ERR" '^api-example: .*/k/example\.db: .*: registry was made with another key' 
ok "nothing written beside it" ! -e "$T/k/copy.jpeg"

finish
