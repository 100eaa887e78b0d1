#!/bin/sh
# Blind geometric synchronisation against another library's resampler: copies
# resized, cropped off-centre, rotated, mirrored, stretched and recompressed
# by ImageMagick's convert are traced; the unmarked original put through the
# same commands accuses nobody. Skipped (77) when convert is not installed.
. "$(dirname "$0")/lib.sh"
command -v convert >/dev/null 2>&1 || { echo "convert not found: skipped"; exit 77; }
C="$TM_SRCDIR/corpus"
K="$T/k.key"
R="$T/reg.db"
IMG="$C/mate_Dune.jpg"
expect "keygen" 0 "$TRACEMARK" keygen "$K"
expect "mark" 0 "$TRACEMARK" mark -k "$K" -r "$R" --recipient alice --recipient bob --recipient carol \
    --out-dir "$T/out" "$IMG"

n=0
leak() { # leak NAME CONVERT-ARGS...: bob's copy and the original through convert
    name=$1; shift
    n=$((n + 1))
    expect "convert: $name" 0 convert "$T/out/mate_Dune.bob.jpg" "$@" "$T/leak$n.jpg"
    expect "trace: $name" 0 "$TRACEMARK" trace -k "$K" -r "$R" "$T/leak$n.jpg"
    has "bob accused: $name" "$OUT" "ACCUSED bob"
    expect "convert original: $name" 0 convert "$IMG" "$@" "$T/null$n.jpg"
    expect "original not accused: $name" 1 "$TRACEMARK" trace -k "$K" -r "$R" "$T/null$n.jpg"
}
leak "resize 50%" -resize 50% -quality 85
leak "resize 150%" -resize 150% -quality 90
leak "off-centre crop to 36% of the area" -gravity SouthEast -crop 60%x60%+0+0 +repage -quality 90
leak "rotate 3 degrees" -rotate 3 -quality 85
leak "mirror" -flop -quality 90
leak "1.0 x 0.9 stretch" -resize '100%x90%!' -quality 90
leak "screenshot chain" -resize '1280x1280>' -shave 3x3 -quality 75
expect "trace --json of a rotated leak" 0 "$TRACEMARK" trace -k "$K" -r "$R" --json "$T/leak4.jpg"
has "rotation recovered" "$OUT" '"rotation_deg": -?(2\.9|3|3\.0)[0-9]*,'
expect "trace --json of a stretched leak" 0 "$TRACEMARK" trace -k "$K" -r "$R" --json "$T/leak6.jpg"
has "stretch recovered" "$OUT" '"aspect": 1\.1[01]'
finish
