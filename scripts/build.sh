#!/bin/sh
# Configures and builds tracemark out of tree in build/ (re-used when present).
# Extra arguments go to configure.
set -eu
cd "$(dirname "$0")/.."
[ -x configure ] || autoreconf -fi
mkdir -p build
cd build
[ -f Makefile ] || ../configure --enable-werror "$@"
make -j"$(nproc)"
