#!/bin/sh
# End-to-end tests of the delivery options of mark: --max-size (a lower
# resolution, marked at the size delivered, traced blind and informed),
# --quality, and --visible (a visible text watermark under the invisible one).
. "$(dirname "$0")/lib.sh"
C="$TM_SRCDIR/corpus"
K="$T/k.key"
R="$T/reg.db"
IMG="$C/mate_Dune.jpg" # 1680x1050

expect "keygen" 0 "$TRACEMARK" keygen "$K"
expect "mark --max-size 800 --quality 80" 0 "$TRACEMARK" -v mark -k "$K" -r "$R" --recipient alice \
    --recipient bob --max-size 800 --quality 80 --out-dir "$T/out" "$IMG"
has "verbose mark says it shrank the original" "$ERR" "1680x1050 jpeg, shrunk to 800x500"
expect "inspect the copy" 0 "$TRACEMARK" inspect --json "$T/out/mate_Dune.bob.jpg"
has "delivered at 800x500" "$OUT" '"width": 800, "height": 500'
has "at the quality asked" "$OUT" '"jpeg_quality": 8[0-9]'
expect "registry records the delivered size" 0 "$TRACEMARK" registry list -r "$R" --json
has "800x500 in the registry" "$OUT" '"width": 800, "height": 500'

# a leak of the delivered copy, shrunk again and recompressed
expect "attack" 0 "$TRACEMARK" attack "scale:0.6,jpeg:q=70" "$T/out/mate_Dune.bob.jpg" "$T/leak.jpg"
expect "blind trace accuses bob" 0 "$TRACEMARK" trace -k "$K" -r "$R" --blind "$T/leak.jpg"
has "blind: bob" "$OUT" "ACCUSED bob"
expect "informed trace accuses bob" 0 "$TRACEMARK" trace -k "$K" -r "$R" "$T/leak.jpg"
has "informed: bob" "$OUT" "ACCUSED bob"
has "the recorded original, shrunk as mark shrank it, was taken out" "$OUT" \
    "informed: the suspect is .*mate_Dune.jpg \(800x500\) at scale 0.6 .*taken out before reading"
# the original given by hand from elsewhere: the registry tells its delivered size
cp "$IMG" "$T/evidence-original.jpg"
expect "--original at another path" 0 "$TRACEMARK" trace -k "$K" -r "$R" --original "$T/evidence-original.jpg" "$T/leak.jpg"
has "given original shrunk too" "$OUT" "informed: the suspect is .*evidence-original.jpg \(800x500\) at scale 0.6 .*taken out"

# a --max-size the image already fits changes nothing: same image, same bytes
expect "mark without --max-size" 0 "$TRACEMARK" mark -k "$K" -r "$T/r2.db" --recipient carol -o "$T/full.jpg" "$IMG"
expect "mark with a --max-size it fits" 0 "$TRACEMARK" mark -k "$K" -r "$T/r3.db" --recipient carol \
    --max-size 4000 -o "$T/fits.jpg" "$IMG"
ok "identical copies" "$(sha256sum <"$T/full.jpg")" = "$(sha256sum <"$T/fits.jpg")"

# bad values: refused before any work
for v in 0 255 65501 abc 800x; do
    expect "--max-size $v refused" 2 "$TRACEMARK" mark -k "$K" -r "$T/bad.db" --recipient x --max-size "$v" \
        -o "$T/bad.jpg" "$IMG"
    has "--max-size $v: one line" "$ERR" "^tracemark: mark: --max-size wants"
done
ok "nothing written" ! -e "$T/bad.jpg" -a ! -e "$T/bad.db"

# --visible: the text shows (pixel statistics against the copy without it),
# over the whole picture, and the invisible mark still traces under it
V="$T/vis"
mkdir -p "$V"
expect "mark plain" 0 "$TRACEMARK" mark -k "$K" -r "$T/plain.db" --recipient alice --max-size 640 \
    --format png --out-dir "$V/plain" "$IMG"
expect "mark --visible" 0 "$TRACEMARK" mark -k "$K" -r "$T/vis.db" --recipient alice --recipient bob \
    --max-size 640 --format png --visible "For review only - %r" --visible-opacity 0.3 --out-dir "$V/text" "$IMG"
if command -v convert >/dev/null 2>&1; then
    # share of pixels changed by more than 8% of full scale, whole and per quadrant
    changed() {
        convert "$1" "$2" -compose difference -composite -colorspace gray -threshold 8% \
            ${3:+-crop 2x2@ +repage} -format '%[fx:mean] ' info:
    }
    all=$(changed "$V/plain/mate_Dune.alice.png" "$V/text/mate_Dune.alice.png")
    ok "visible text covers 2%..40% of the picture ($all)" "$(echo "$all" | awk '{print ($1 > 0.02 && $1 < 0.4)}')" = 1
    quads=$(changed "$V/plain/mate_Dune.alice.png" "$V/text/mate_Dune.alice.png" q)
    ok "text in every quadrant ($quads)" "$(echo "$quads" | awk '{n = 0; for (i = 1; i <= NF; i++) n += ($i > 0.01); print n}')" = 4
    ab=$(changed "$V/text/mate_Dune.alice.png" "$V/text/mate_Dune.bob.png")
    ok "each recipient's own text ($ab)" "$(echo "$ab" | awk '{print ($1 > 0.01)}')" = 1
else
    echo "skip visible pixel statistics: no ImageMagick convert"
fi
expect "leak the visible copy" 0 "$TRACEMARK" attack "scale:0.8,jpeg:q=70" "$V/text/mate_Dune.bob.png" "$T/vleak.jpg"
expect "blind trace under the visible text" 0 "$TRACEMARK" trace -k "$K" -r "$T/vis.db" --blind "$T/vleak.jpg"
has "blind: bob" "$OUT" "ACCUSED bob"
expect "informed trace under the visible text" 0 "$TRACEMARK" trace -k "$K" -r "$T/vis.db" "$T/vleak.jpg"
has "informed: bob" "$OUT" "ACCUSED bob"
for bad in "--visible-opacity 0" "--visible-opacity 1.5" "--visible-angle 200" "--visible-size 0" \
    "--visible-font $T/none.ttf" "--visible 50%-off" "--visible-angle 10"; do
    # shellcheck disable=SC2086
    expect "refused: $bad" 2 "$TRACEMARK" mark -k "$K" -r "$T/bad.db" --recipient x $bad -o "$T/bad.jpg" "$IMG"
    lines "refused in one line (+ hint): $bad" "$ERR" "$(grep -c '^Try' "$ERR" | awk '{print $1 + 1}')"
done
expect "text too long with the recipient" 2 "$TRACEMARK" mark -k "$K" -r "$T/bad.db" \
    --recipient "$(printf '%0251d' 0)" --visible "Draft %r" -o "$T/bad.jpg" "$IMG"
has "named" "$ERR" "longer than 256 bytes"
ok "nothing written by the refusals" ! -e "$T/bad.jpg" -a ! -e "$T/bad.db"

finish
