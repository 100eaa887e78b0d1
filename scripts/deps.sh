#!/bin/sh
# Installs everything tracemark needs to build and test on Debian 12.
# Run as root, or as a user with sudo.
set -eu
PKGS="build-essential autoconf automake libtool pkg-config
  libfftw3-dev libjpeg62-turbo-dev libturbojpeg0-dev libpng-dev libwebp-dev
  libssl-dev libgsl-dev libcunit1-dev libsqlite3-dev sqlite3 python3 imagemagick
  libfreetype-dev libfontconfig-dev fonts-dejavu-core"
# Skip apt when everything is there already (fast re-runs, no root needed).
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing
