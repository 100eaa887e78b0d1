#!/bin/sh
# test_install.sh -- `make install DESTDIR=...` puts the program, the
# library, tracemark.h and tracemark.pc where configure said, and
# tracemark.pc is all a program needs to build against them:
#   - docs/api-example.c is compiled and linked with nothing but
#     `pkg-config --cflags --libs tracemark`, run on the installed shared
#     library (LD_LIBRARY_PATH into the DESTDIR) and must accuse its recipient;
#   - every object of the installed libtracemark.a is linked into it again
#     with `pkg-config --static --libs tracemark`, so that Requires.private and
#     Libs.private are complete for all of the library, not only the part the
#     example calls, and that binary must accuse too.
# pkg-config is configure's (TM_PKG_CONFIG), pointed into the DESTDIR the
# standard way: PKG_CONFIG_PATH=$DESTDIR$libdir/pkgconfig finds the .pc, and
# PKG_CONFIG_SYSROOT_DIR=$DESTDIR prefixes its -I and -L paths (the .pc keeps
# the configured prefix, absolute libdir and includedir included).
# The example is built with the build's CC, CPPFLAGS, CFLAGS and LDFLAGS, as
# a program linking this build would be: under --enable-sanitizers, LDFLAGS
# brings the sanitizer runtime the installed library was built to need.
# Everything is written under $T (the install runs make in the build tree
# only to copy files), so it runs beside the other tests.
. "$(dirname "$0")/lib.sh"
: "${TM_BUILDDIR:?TM_BUILDDIR must name the build tree (set by make check)}"
: "${TM_LIBDIR:?TM_LIBDIR must be the configured libdir (set by make check)}"
: "${TM_INCLUDEDIR:?TM_INCLUDEDIR must be the configured includedir (set by make check)}"
: "${TM_BINDIR:?TM_BINDIR must be the configured bindir (set by make check)}"
PC=${TM_PKG_CONFIG:-pkg-config}
CC=${TM_CC:-${CC:-cc}}
CFLAGS=${TM_CFLAGS-}
LDFLAGS=${TM_LDFLAGS-}
IMG="$TM_SRCDIR/corpus/mate_Dune.jpg"
ROOT="$T/root"
LIB="$ROOT$TM_LIBDIR"

if ! command -v "${PC%% *}" >/dev/null 2>&1; then
    echo "skip: no pkg-config ('$PC')"
    exit 77
fi

# contains NAME WORDS WORD: WORD is one of the blank-separated WORDS.
contains() {
    case " $2 " in
    *" $3 "*) npass=$((npass + 1)); echo "ok   $1" ;;
    *) nfail=$((nfail + 1)); echo "FAIL $1: no '$3' in: $2" ;;
    esac
}

# The install: a make of its own (not the parallel make check's jobserver).
expect "make install DESTDIR" 0 env MAKEFLAGS= MAKELEVEL= "${MAKE:-make}" -C "$TM_BUILDDIR" install DESTDIR="$ROOT"
ok "program installed" -x "$ROOT$TM_BINDIR/tracemark"
ok "header installed" -f "$ROOT$TM_INCLUDEDIR/tracemark.h"
ok "tracemark.pc installed" -f "$LIB/pkgconfig/tracemark.pc"
ok "a library installed" -f "$LIB/libtracemark.so" -o -f "$LIB/libtracemark.a"
ok "nothing installed outside the DESTDIR's prefix" -z "$(cd "$ROOT" && find . -type f | grep -v -e "^\.$TM_BINDIR/" \
    -e "^\.$TM_LIBDIR/" -e "^\.$TM_INCLUDEDIR/" -e '/share/')"
expect "the installed program runs" 0 env LD_LIBRARY_PATH="$LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    "$ROOT$TM_BINDIR/tracemark" --version
has "and says its version" "$OUT" '^tracemark [0-9]+\.[0-9]+\.[0-9]+$'
version=$(sed -n 's/^tracemark //p' "$OUT")

PKG_CONFIG_PATH="$LIB/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
PKG_CONFIG_SYSROOT_DIR="$ROOT"
export PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR
expect "pkg-config finds tracemark" 0 $PC --modversion tracemark
ok "tracemark.pc's version is the program's" "$(cat "$OUT")" = "$version"
cflags=$($PC --cflags tracemark)
libs=$($PC --libs tracemark)
contains "Cflags point at the installed include dir" "$cflags" "-I$ROOT$TM_INCLUDEDIR"
contains "Libs point at the installed library" "$libs" "-L$LIB"
contains "Libs name the library" "$libs" "-ltracemark"
echo "     $CC $CFLAGS $cflags ... $LDFLAGS $libs"

if [ -f "$LIB/libtracemark.so" ]; then
    # shellcheck disable=SC2086 # flags are words
    expect "the example builds with pkg-config --cflags --libs" 0 \
        $CC $CFLAGS $cflags -o "$T/example" "$TM_SRCDIR/docs/api-example.c" $LDFLAGS $libs
    expect "and runs on the installed shared library" 0 env LD_LIBRARY_PATH="$LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        "$T/example" "$IMG" "$T/work"
    has "accusing its recipient" "$OUT" '^accused: alice@example\.com \(copy 1\), log10_p -[0-9]+'
    if command -v ldd >/dev/null 2>&1; then
        LD_LIBRARY_PATH="$LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ldd "$T/example" >"$T/ldd" 2>&1
        ok "the library it ran on is the DESTDIR's" -n "$(grep -F "=> $LIB/libtracemark.so" "$T/ldd")"
    fi
else
    echo "note: no shared library installed (--disable-shared): the shared link is not tested"
fi

if [ -f "$LIB/libtracemark.a" ]; then
    slibs=$($PC --static --libs tracemark)
    contains "--static Libs name the library" "$slibs" "-ltracemark"
    # every object of the archive in place of -ltracemark, so each must link
    whole=""
    for w in $slibs; do
        if [ "$w" = -ltracemark ]; then whole="$whole -Wl,--whole-archive $LIB/libtracemark.a -Wl,--no-whole-archive"
        else whole="$whole $w"; fi
    done
    # shellcheck disable=SC2086
    expect "all of libtracemark.a links with pkg-config --static --libs" 0 \
        $CC $CFLAGS $cflags -o "$T/example-static" "$TM_SRCDIR/docs/api-example.c" $LDFLAGS $whole
    expect "and that example accuses too" 0 "$T/example-static" "$IMG" "$T/work-static"
    has "its recipient" "$OUT" '^accused: alice@example\.com \(copy 1\), log10_p -[0-9]+'
else
    echo "note: no static library installed (--disable-static): the static link is not tested"
fi

finish
