#!/bin/sh
# The main job, end to end, on a bundled photo: make a key, mark copies for
# three recipients, leak one copy the way a screenshot would (shrunk, turned a
# little, cropped, recompressed), and trace the leak back to its recipient.
set -eu
cd "$(dirname "$0")/.."
sh scripts/deps.sh
sh scripts/build.sh >/dev/null
TM="$(pwd)/build/tracemark"
W=$(mktemp -d "${TMPDIR:-/tmp}/tracemark-demo-XXXXXX")
trap 'rm -rf "$W"' EXIT
PHOTO=corpus/plasma_EveningGlow.jpg

echo "== 1. a secret key (keep it safe; the registry holds no secret)"
"$TM" keygen "$W/team.key"
echo
echo "== 2. one marked copy per recipient, recorded in the registry"
"$TM" mark -k "$W/team.key" -r "$W/registry.db" \
    --recipient alice@example.com --recipient bob@example.com --recipient carol@example.com \
    --out-dir "$W/copies" "$PHOTO"
echo
echo "== 3. bob's copy leaks: shrunk to 60%, turned 2 degrees, cropped to 80%, JPEG quality 60"
"$TM" attack "scale:0.6,rotate:2,crop:0.8,jpeg:q=60" "$W/copies/plasma_EveningGlow.bob@example.com.jpg" "$W/leak.jpg"
"$TM" inspect "$W/leak.jpg" | sed -n '2,3p'
echo
echo "== 4. trace the leak (the registry knows where the original is: informed trace)"
"$TM" trace -k "$W/team.key" -r "$W/registry.db" "$W/leak.jpg" || true
echo
echo "== 5. the same from the leak alone (blind trace)"
"$TM" trace -k "$W/team.key" -r "$W/registry.db" --blind "$W/leak.jpg" || true
echo
echo "== 6. and the original, which carries no mark"
"$TM" trace -k "$W/team.key" -r "$W/registry.db" "$PHOTO" || true
