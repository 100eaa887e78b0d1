#!/bin/sh
# Renders a `tracemark robustness --report` page in headless Chromium and
# saves a screenshot, to check by eye that the page (tables, inline SVG plots,
# data: URI thumbnails) displays in a real browser.
#
#   scripts/report-shot.sh REPORT.html [OUT.png] [WIDTHxHEIGHT]
#
# OUT defaults to REPORT.png beside the report; the window to 1280x6000 (the
# page's background fills what the report does not). The browser is
# $CHROMIUM, else chromium or chromium-browser from PATH (Debian: apt-get
# install chromium). Exit status: 0 saved, 2 error, 77 no browser found.
set -eu
usage() { echo "usage: $0 REPORT.html [OUT.png] [WIDTHxHEIGHT]" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 3 ] || usage
report=$1
[ -r "$report" ] || { echo "$0: $report: cannot read" >&2; exit 2; }
out=${2:-${report%.html}.png}
size=${3:-1280x6000}
case $size in
    *[!0-9x]* | x* | *x | *x*x*) echo "$0: window '$size' wants WIDTHxHEIGHT" >&2; exit 2 ;;
    *x*) ;;
    *) echo "$0: window '$size' wants WIDTHxHEIGHT" >&2; exit 2 ;;
esac
browser=${CHROMIUM:-}
if [ -z "$browser" ]; then
    for b in chromium chromium-browser google-chrome; do
        if command -v "$b" >/dev/null 2>&1; then browser=$(command -v "$b"); break; fi
    done
fi
[ -n "$browser" ] || { echo "$0: no chromium found (apt-get install chromium)" >&2; exit 77; }

abs=$(cd "$(dirname "$report")" && pwd)/$(basename "$report")
case $out in /*) ;; *) out=$(pwd)/$out ;; esac
tmp=$(mktemp -d "${TMPDIR:-/tmp}/report-shot-XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
sandbox=""
[ "$(id -u)" -ne 0 ] || sandbox="--no-sandbox"  # Chromium refuses root without it
rm -f "$out"
# shellcheck disable=SC2086
if ! "$browser" --headless $sandbox --disable-gpu --hide-scrollbars --no-first-run --disable-extensions \
        --user-data-dir="$tmp/profile" --window-size="$(echo "$size" | tr x ,)" \
        --screenshot="$out" "file://$abs" >"$tmp/log" 2>&1 || [ ! -s "$out" ]; then
    echo "$0: $browser could not render $report:" >&2
    tail -5 "$tmp/log" >&2
    exit 2
fi
echo "$out"
