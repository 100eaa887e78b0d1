#!/bin/sh
# End-to-end tests of the tracemark program: help, version, errors, strip, inspect.
. "$(dirname "$0")/lib.sh"
C="$TM_SRCDIR/corpus"

# --- program-level contract
expect "--help exits 0" 0 "$TRACEMARK" --help
has "--help lists commands" "$OUT" "^  strip "
expect "--version exits 0" 0 "$TRACEMARK" --version
has "--version prints version" "$OUT" "^tracemark [0-9]+\.[0-9]+\.[0-9]+$"
expect "no command exits 2" 2 "$TRACEMARK"
expect "unknown command exits 2" 2 "$TRACEMARK" frobnicate
has "unknown command one-line error" "$ERR" "^tracemark: 'frobnicate' is not a tracemark command$"
has "unknown command hint" "$ERR" "Try 'tracemark --help'"
expect "unknown global option exits 2" 2 "$TRACEMARK" --frob
for cmd in strip inspect keygen registry; do
    expect "$cmd --help exits 0" 0 "$TRACEMARK" "$cmd" --help
    has "$cmd --help has usage" "$OUT" "^Usage: tracemark $cmd"
    expect "help $cmd exits 0" 0 "$TRACEMARK" help "$cmd"
    has "help $cmd = $cmd --help" "$OUT" "^Usage: tracemark $cmd"
done
expect "help of unknown command" 2 "$TRACEMARK" help nope

# --- inspect
expect "inspect corpus jpeg" 0 "$TRACEMARK" inspect "$C/plasma_ColorfulCups.jpg"
has "inspect shows GPS" "$OUT" "WITH GPS POSITION"
has "inspect shows size" "$OUT" "size: +2560x1600"
expect "inspect --json" 0 "$TRACEMARK" inspect --json "$C/plasma_ColorfulCups.jpg" "$C/skimage_coffee.png"
lines "inspect --json one line per file" "$OUT" 2
has "inspect --json gps true" "$OUT" '"gps": true'
has "inspect --json png" "$OUT" '"format": "png", "width": 600, "height": 400'
expect "inspect unknown option" 2 "$TRACEMARK" inspect --bogus x.jpg
expect "inspect missing file" 2 "$TRACEMARK" inspect "$T/nope.jpg"
has "inspect missing file one line" "$ERR" "^tracemark: $T/nope.jpg: "
printf 'not an image at all' >"$T/text.jpg"
expect "inspect non-image" 2 "$TRACEMARK" inspect "$T/text.jpg"
has "inspect non-image says so" "$ERR" "not a JPEG, PNG or WebP image"
head -c 20000 "$C/mate_Storm.jpg" >"$T/cut.jpg"
expect "inspect truncated jpeg" 2 "$TRACEMARK" inspect "$T/cut.jpg"
has "inspect truncated says so" "$ERR" "truncated"
expect "inspect pixel budget" 2 "$TRACEMARK" inspect --max-pixels 1000000 "$C/mate_Storm.jpg"
has "inspect pixel budget says so" "$ERR" "pixel budget"
expect "inspect bad --max-pixels" 2 "$TRACEMARK" inspect --max-pixels abc "$C/mate_Storm.jpg"

# --- strip
expect "strip jpeg" 0 "$TRACEMARK" strip "$C/plasma_ColorfulCups.jpg" "$T/clean.jpg"
expect "inspect stripped" 0 "$TRACEMARK" inspect --json "$T/clean.jpg"
has "stripped has no exif" "$OUT" '"exif": false, "gps": false, "xmp": false, "iptc": false, "comment": false'
has "stripped keeps size" "$OUT" '"width": 2560, "height": 1600'
expect "strip keeps icc" 0 "$TRACEMARK" strip "$C/skimage_rocket.jpg" "$T/rocket.png"
expect "inspect icc kept" 0 "$TRACEMARK" inspect --json "$T/rocket.png"
has "icc kept across formats" "$OUT" '"icc_bytes": [1-9]'
expect "strip refuses to overwrite" 2 "$TRACEMARK" strip "$C/skimage_rocket.jpg" "$T/rocket.png"
has "strip overwrite message" "$ERR" "file exists"
expect "strip --force overwrites" 0 "$TRACEMARK" strip --force "$C/skimage_rocket.jpg" "$T/rocket.png"
expect "strip to webp" 0 "$TRACEMARK" strip -q 80 "$C/skimage_coffee.png" "$T/coffee.webp"
expect "inspect webp" 0 "$TRACEMARK" inspect "$T/coffee.webp"
has "webp detected" "$OUT" "format: +webp"
expect "strip unknown extension" 2 "$TRACEMARK" strip "$C/skimage_coffee.png" "$T/coffee.gif"
ok "nothing written for unknown extension" ! -e "$T/coffee.gif"
expect "strip bad quality" 2 "$TRACEMARK" strip -q 0 "$C/skimage_coffee.png" "$T/q.jpg"
expect "strip corrupt input" 2 "$TRACEMARK" strip "$T/cut.jpg" "$T/out.jpg"
ok "no output from corrupt input" ! -e "$T/out.jpg"
ok "no temporaries left" -z "$(ls "$T" | grep tmp-)"
expect "strip missing args" 2 "$TRACEMARK" strip "$C/skimage_coffee.png"

# --- attack: the filters, presets and bending, and combining copies
IMG="$C/skimage_coffee.png"
expect "attack --help exits 0" 0 "$TRACEMARK" attack --help
has "attack --help teaches the single form" "$OUT" "^Usage: tracemark attack \[OPTIONS\] SPEC IN OUT$"
has "attack --help teaches the combine form" "$OUT" "^       tracemark attack \[OPTIONS\] MODE\[,SPEC\] IN1 IN2 \[IN3\.\.\.\] OUT$"
has "attack --help lists combine modes" "$OUT" "^  interleave\[:block=B\] "
has "attack --help lists new attacks" "$OUT" "^  screenshot\[:side=PX\]\[:q=Q\] "
for spec in sharpen:amount=1.5 median:r=2 saturation:1.5 quantize:colors=16:dither=1 bend:strength=2:seed=4; do
    base=${spec%%:*}
    expect "attack $spec" 0 "$TRACEMARK" attack "$spec" "$IMG" "$T/$base.png"
    ok "attack $spec wrote" -s "$T/$base.png"
done
# every single-image attack from the command line, and the size it gives
# the 600x400 coffee photo (WxH after the spec)
for case in "jpeg:q=40:ss=444 600x400" "webp:q=60 600x400" "png 600x400" "blur:sigma=2 600x400" \
        "noise:sigma=5:seed=3 600x400" "gamma:1.4 600x400" "brightness:-30 600x400" "contrast:0.7 600x400" \
        "gray 600x400" "crop:0.5 300x200" "crop:100x50+10+20 100x50" "scale:0.5:filter=box 300x200" \
        "aspect:1.5 900x400" "rotate:90:crop=0 600x400" "flip:v 600x400" "turn:90 400x600" "turn:180 600x400" \
        "sharpen:amount=2:sigma=0.5 600x400" "median:r=1 600x400" "saturation:0 600x400" "quantize:colors=8 600x400" \
        "screenshot:side=300:q=60 292x192" "bend:strength=3:seed=2 600x400"; do
    spec=${case% *}
    size=${case#* }
    expect "attack $spec" 0 "$TRACEMARK" attack -f "$spec" "$IMG" "$T/each.png"
    expect "inspect after $spec" 0 "$TRACEMARK" inspect --json "$T/each.png"
    has "attack $spec gives $size" "$OUT" "\"width\": ${size%x*}, \"height\": ${size#*x},"
done
expect "attack screenshot" 0 "$TRACEMARK" attack screenshot:side=300 "$IMG" "$T/shot.png"
expect "inspect screenshot" 0 "$TRACEMARK" inspect --json "$T/shot.png"
has "screenshot fits 300 less the border" "$OUT" '"width": 292, "height": 192'
expect "attack bend again" 0 "$TRACEMARK" attack bend:strength=2:seed=4 "$IMG" "$T/bend2.png"
ok "bend is deterministic" -z "$(cmp "$T/bend.png" "$T/bend2.png" 2>&1)"
expect "attack median alone is the filter" 0 "$TRACEMARK" attack median "$IMG" "$T/median1.png"
expect "combine average" 0 "$TRACEMARK" attack average "$IMG" "$IMG" "$T/avg.png"
expect "attack png" 0 "$TRACEMARK" attack png "$IMG" "$T/ref.png"
ok "average of a copy with itself is the copy" -z "$(cmp "$T/avg.png" "$T/ref.png" 2>&1)"
expect "combine median of three" 0 "$TRACEMARK" attack median "$IMG" "$T/sharpen.png" "$T/saturation.png" "$T/med3.png"
expect "combine interleave then a chain" 0 "$TRACEMARK" attack "interleave:block=32,jpeg:q=80" "$IMG" "$T/saturation.png" "$T/inter.jpg"
expect "inspect interleave" 0 "$TRACEMARK" inspect --json "$T/inter.jpg"
has "interleave keeps the size" "$OUT" '"width": 600, "height": 400'
expect "combine one input" 2 "$TRACEMARK" attack average "$IMG" "$T/one.png"
has "combine one input says so" "$ERR" "^tracemark: average: wants 2\.\.16 images, got 1$"
expect "combine different sizes" 2 "$TRACEMARK" attack max "$IMG" "$C/skimage_astronaut.png" "$T/mix.png"
has "combine different sizes names the file" "$ERR" "skimage_astronaut\.png: 512x512 with 3 channels, but .*skimage_coffee\.png is 600x400"
expect "several inputs need a combine mode" 2 "$TRACEMARK" attack jpeg:q=50 "$IMG" "$IMG" "$T/two.png"
has "several inputs message" "$ERR" "only a combine mode"
expect "combine bad block" 2 "$TRACEMARK" attack interleave:block=0 "$IMG" "$IMG" "$T/blk.png"
has "combine bad block names the range" "$ERR" "block wants a whole number of pixels 1\.\.65500"
expect "bad median radius" 2 "$TRACEMARK" attack median:r=9 "$IMG" "$T/m9.png"
has "bad median radius names the range" "$ERR" "r wants a whole number 1\.\.5"
ok "nothing written on errors" -z "$(ls "$T" | grep -E '^(one|mix|two|blk|m9)\.png$')"

finish
