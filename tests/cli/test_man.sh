#!/bin/sh
# The man pages (docs/man) and the bash completion (tools/completion) against
# the program's own --help, both ways: every option --help shows is in the
# page and has an entry in its OPTIONS section, every OPTIONS entry is in
# --help, every command and registry subcommand has its page and its
# completion, the exit statuses and the environment variables --help names
# are documented, 'tracemark help CMD' is 'tracemark CMD --help', every page
# renders without a groff warning (when groff is installed), and the
# completion offers what --help lists (when bash is installed).
. "$(dirname "$0")/lib.sh"
MAN="$TM_SRCDIR/docs/man"
COMP="$TM_SRCDIR/tools/completion/tracemark"

# fail NAME WHY: one failed check, with the reason.
fail() {
    nfail=$((nfail + 1)); echo "FAIL $1: $2"
}
pass() {
    npass=$((npass + 1)); echo "ok   $1"
}

# help_text CMD [SUB]: CMD's --help into $T/help.CMD (the program's for "").
help_text() {
    if [ -z "$1" ]; then "$TRACEMARK" --help; else "$TRACEMARK" "$@" --help; fi
}

# all_opts FILE: every option word in FILE (--long, or -x alone), one a line.
# A word counts only after a blank or ( [ , | ' " ` / so that "e-mail" and
# "imjpg:-quality" do not; single-dash words of several letters are not options.
all_opts() {
    grep -oE -- "(^|[][[:space:](,|'\"\`/])--?[A-Za-z][A-Za-z0-9-]*" "$1" |
        sed -E 's/^[^-]+//; s/-+$//' | grep -E -- '^(--[A-Za-z0-9][A-Za-z0-9-]*|-[A-Za-z])$' | sort -u
}

# section_opts FILE: the options of the entries of --help's option blocks
# ("Options:" and the like, up to a blank line): the leading "-x, --long"
# of each entry line (indented at most 8 columns; continuation lines are
# indented further), not options its description mentions.
section_opts() {
    awk '
    /^([A-Za-z][A-Za-z ]* )?[Oo]ptions:$/ { inblk = 1; next }
    /^[[:space:]]*$/ { inblk = 0 }
    inblk && match($0, /^ +/) && RLENGTH <= 8 && substr($0, RLENGTH + 1, 1) == "-" {
        line = substr($0, RLENGTH + 1)
        while (match(line, /^--?[A-Za-z0-9][A-Za-z0-9-]*/)) {
            print substr(line, 1, RLENGTH)
            line = substr(line, RLENGTH + 1)
            if (substr(line, 1, 2) == ", ") line = substr(line, 3); else break
        }
    }' "$1" | sort -u
}

# block_words FILE HEADING: the first word of each entry of the --help block
# that starts at the line HEADING (e.g. "Commands:"), up to a blank line.
block_words() {
    awk -v h="$2" '
    $0 == h { inblk = 1; next }
    /^[[:space:]]*$/ { inblk = 0 }
    inblk && match($0, /^ +/) && RLENGTH <= 4 { print $1 }' "$1" | sort -u
}

# exit_codes FILE: the statuses named in --help's "Exit status:" paragraph.
exit_codes() {
    awk '/^Exit status:/ { on = 1 } on && /^[[:space:]]*$/ { on = 0 } on' "$1" |
        sed 's/^Exit status://' | grep -oE '(^|[ :;,(])[0-9]( |$)' | tr -dc '0-9\n' | sort -u
}

# plain PAGE: the page's source with the roff escapes that spell options and
# quotes undone (\- \% \& \fB \(aq ...), comment lines dropped.
plain() {
    sed -e '/^\.\\"/d' -e 's/\\-/-/g' -e 's/\\[%&]//g' -e 's/\\f[BIRP]//g' -e 's/\\f(..//g' \
        -e "s/\\\\(aq/'/g" -e 's/\\(dq/"/g' -e 's/\\(lq/"/g' -e 's/\\(rq/"/g' -e 's/\\e/\\/g' "$1"
}

# man_section FILE NAME: the lines of section .SH NAME of a plain page.
man_section() {
    awk -v s="$2" '
    /^\.SH/ { sub(/^\.SH +/, ""); gsub(/"/, ""); on = ($0 == s); next }
    on' "$1"
}

# tags LINES-FILE: the tag line of each .TP entry, macros and quotes removed.
tags() {
    awk '/^\.TP/ { want = 1; next } want { print; want = 0 }' "$1" |
        sed -E 's/^\.[A-Z]+ +//; s/"//g'
}

# has_word FILE WORD: FILE holds WORD as a whole word (options: not part of
# a longer option).
has_word() {
    grep -Eq -- "(^|[^A-Za-z0-9_-])$2([^A-Za-z0-9_-]|\$)" "$1"
}

# check_options LABEL HELPFILE PAGE: both directions, for one --help and its page.
check_options() {
    label=$1 help=$2 page=$3
    plain "$page" >"$T/plain"
    man_section "$T/plain" OPTIONS >"$T/opts.sec"
    tags "$T/opts.sec" >"$T/opts.tags"
    all_opts "$T/opts.tags" >"$T/man.opts"
    section_opts "$help" >"$T/help.opts"
    missing=""
    for o in $(all_opts "$help"); do
        has_word "$T/plain" "$o" || missing="$missing $o"
    done
    if [ -z "$missing" ]; then pass "$label: every option --help mentions is in the page"
    else fail "$label: in --help but not in $(basename "$page")" "$missing"; fi
    missing=""
    for o in $(cat "$T/help.opts"); do
        grep -qxF -- "$o" "$T/man.opts" || missing="$missing $o"
    done
    if [ -z "$missing" ]; then pass "$label: every --help option has an OPTIONS entry in the page"
    else fail "$label: no OPTIONS entry in $(basename "$page") for" "$missing"; fi
    extra=""
    for o in $(cat "$T/man.opts"); do
        grep -qxF -- "$o" "$T/help.opts" || extra="$extra $o"
    done
    if [ -z "$extra" ]; then pass "$label: every OPTIONS entry of the page is in --help"
    else fail "$label: in the OPTIONS of $(basename "$page") but not in --help's options" "$extra"; fi
}

# check_exit LABEL HELPFILE PAGE BOTHWAYS: --help's exit statuses are in the
# page's EXIT STATUS entries (and, with BOTHWAYS=1, the other way round).
check_exit() {
    plain "$3" >"$T/plain"
    man_section "$T/plain" "EXIT STATUS" >"$T/exit.sec"
    tags "$T/exit.sec" | grep -E '^[0-9]+$' | sort -u >"$T/man.exit"
    exit_codes "$2" >"$T/help.exit"
    if [ ! -s "$T/help.exit" ]; then fail "$1: exit statuses" "--help names none"; return; fi
    missing=$(comm -23 "$T/help.exit" "$T/man.exit" | tr '\n' ' ')
    extra=""
    [ "$4" = 1 ] && extra=$(comm -13 "$T/help.exit" "$T/man.exit" | tr '\n' ' ')
    if [ -z "$missing$extra" ]; then pass "$1: exit statuses agree"
    else fail "$1: exit statuses" "only in --help: ${missing:-none}; only in the page: ${extra:-none}"; fi
}

# ---- the program's own help: commands, options, environment
help_text "" >"$T/help.top" 2>"$ERR" || fail "tracemark --help" "exit status $?"
block_words "$T/help.top" "Commands:" >"$T/commands"
ok "--help lists commands" -s "$T/commands"
COMMANDS=$(grep -vx help "$T/commands")
ok "overview page exists" -f "$MAN/tracemark.1"
check_options "tracemark" "$T/help.top" "$MAN/tracemark.1"
check_exit "tracemark" "$T/help.top" "$MAN/tracemark.1" 0

plain "$MAN/tracemark.1" >"$T/top.plain"
man_section "$T/top.plain" "SEE ALSO" >"$T/seealso"
man_section "$T/top.plain" COMMANDS >"$T/cmds.sec"
tags "$T/cmds.sec" | awk '{ print $1 }' | sort -u >"$T/man.commands"
if cmp -s "$T/commands" "$T/man.commands"; then pass "overview COMMANDS = --help's commands"
else fail "overview COMMANDS" "differs from --help: $(diff "$T/commands" "$T/man.commands" | grep '^[<>]' | tr '\n' ' ')"; fi
block_words "$T/help.top" "Environment:" >"$T/help.env"
man_section "$T/top.plain" ENVIRONMENT >"$T/env.sec"
tags "$T/env.sec" | awk '{ print $1 }' | sort -u >"$T/man.env"
ok "--help lists the environment" -s "$T/help.env"
if cmp -s "$T/help.env" "$T/man.env"; then pass "overview ENVIRONMENT = --help's"
else fail "overview ENVIRONMENT" "differs from --help: $(diff "$T/help.env" "$T/man.env" | grep '^[<>]' | tr '\n' ' ')"; fi

# ---- one page per command, named in the overview and installed
for cmd in $COMMANDS; do
    page="$MAN/tracemark-$cmd.1"
    "$TRACEMARK" "$cmd" --help >"$T/help.$cmd" 2>"$ERR"
    st=$?
    ok "$cmd --help exits 0 (got $st)" "$st" -eq 0
    if [ ! -f "$page" ]; then fail "$cmd has a page" "no $page"; continue; fi
    pass "$cmd has a page"
    if grep -q -- "tracemark-$cmd (1)" "$T/seealso" || grep -q -- "tracemark-$cmd(1)" "$T/seealso"; then
        pass "overview SEE ALSO names tracemark-$cmd(1)"
    else
        fail "overview SEE ALSO" "does not name tracemark-$cmd(1)"
    fi
    if grep -q -- "docs/man/tracemark-$cmd\.1" "$TM_SRCDIR/Makefile.am"; then pass "$cmd page is in Makefile.am"
    else fail "$cmd page is in Makefile.am" "not listed in dist_man_MANS"; fi
    "$TRACEMARK" help "$cmd" >"$T/helpcmd.$cmd" 2>"$ERR"
    if [ $? -eq 0 ] && cmp -s "$T/help.$cmd" "$T/helpcmd.$cmd"; then pass "help $cmd = $cmd --help"
    else fail "help $cmd = $cmd --help" "they differ"; fi
    check_options "$cmd" "$T/help.$cmd" "$page"
    check_exit "$cmd" "$T/help.$cmd" "$page" 1
done
grep -q -- "docs/man/tracemark\.1" "$TM_SRCDIR/Makefile.am" && pass "overview page is in Makefile.am" ||
    fail "overview page is in Makefile.am" "not listed in dist_man_MANS"
for page in "$MAN"/tracemark-*.1; do
    c=${page##*/tracemark-}; c=${c%.1}
    if echo "$COMMANDS" | grep -qx -- "$c"; then pass "page $c is a command"
    else fail "page $c is a command" "$page documents no command of --help"; fi
done

# every page: the sections a man page needs, and its name in .TH and NAME
for page in "$MAN"/*.1; do
    name=${page##*/}; name=${name%.1}
    plain "$page" >"$T/plain"
    missing=""
    for sec in NAME SYNOPSIS DESCRIPTION OPTIONS "EXIT STATUS" EXAMPLES "SEE ALSO"; do
        grep -Eq "^\.SH \"?$sec\"?\$" "$T/plain" || missing="$missing '$sec'"
    done
    if [ -z "$missing" ]; then pass "$name has every section"; else fail "$name sections" "missing$missing"; fi
    upper=$(echo "$name" | tr a-z A-Z)
    grep -q "^\.TH $upper 1 " "$T/plain" && pass "$name .TH" || fail "$name .TH" "not '.TH $upper 1 ...'"
    man_section "$T/plain" NAME | grep -q "^$name - " && pass "$name NAME line" ||
        fail "$name NAME line" "does not start '$name \\- '"
done

# ---- registry: subcommands both ways, and their help if they have one
rpage="$MAN/tracemark-registry.1"
block_words "$T/help.registry" "Subcommands:" >"$T/subs"
ok "registry --help lists subcommands" -s "$T/subs"
plain "$rpage" >"$T/plain"
man_section "$T/plain" SUBCOMMANDS >"$T/subs.sec"
tags "$T/subs.sec" | awk '{ print $1 }' | sort -u >"$T/man.subs"
if cmp -s "$T/subs" "$T/man.subs"; then pass "registry page SUBCOMMANDS = --help's"
else fail "registry page SUBCOMMANDS" "differs from --help: $(diff "$T/subs" "$T/man.subs" | grep '^[<>]' | tr '\n' ' ')"; fi
for sub in $(cat "$T/subs"); do
    "$TRACEMARK" registry "$sub" --help >"$T/help.reg.$sub" 2>"$ERR"
    ok "registry $sub --help exits 0" $? -eq 0
    grep -Eq "^(Usage: |       )tracemark registry $sub( |\$)" "$T/help.reg.$sub" &&
        pass "registry $sub --help shows its usage" || fail "registry $sub --help" "no usage line for $sub"
    if ! cmp -s "$T/help.reg.$sub" "$T/help.registry"; then # a help of its own
        check_options "registry $sub" "$T/help.reg.$sub" "$rpage"
    fi
done

# ---- attack: the attacks and combine modes both ways
apage="$MAN/tracemark-attack.1"
"$TRACEMARK" attack --list | awk '{ print $1 }' | sed -E 's/[:[].*//' | sort -u >"$T/attacks"
ok "attack --list lists attacks" -s "$T/attacks"
plain "$apage" >"$T/plain"
{ man_section "$T/plain" ATTACKS; } >"$T/att.sec"
tags "$T/att.sec" | awk '{ print $1 }' | sed -E 's/[:[|].*//' | sort -u >"$T/man.attacks"
if cmp -s "$T/attacks" "$T/man.attacks"; then pass "attack page ATTACKS = attack --list"
else fail "attack page ATTACKS" "differs from attack --list: $(diff "$T/attacks" "$T/man.attacks" | grep '^[<>]' | tr '\n' ' ')"; fi

# ---- every page renders without a warning
if command -v groff >/dev/null 2>&1; then
    for page in "$MAN"/*.1; do
        groff -man -Tutf8 -ww -z "$page" >"$T/groff" 2>&1
        if [ $? -eq 0 ] && [ ! -s "$T/groff" ]; then pass "groff renders ${page##*/} cleanly"
        else fail "groff ${page##*/}" "$(head -3 "$T/groff" | tr '\n' ' ')"; fi
    done
else
    echo "skip groff checks: groff is not installed"
fi

# ---- bash completion
ok "completion file exists" -f "$COMP"
grep -q "tools/completion/tracemark" "$TM_SRCDIR/Makefile.am" && pass "completion is in Makefile.am" ||
    fail "completion is in Makefile.am" "not installed"
# the options of CMD: the lines of its case in _tracemark_opts (from "    CMD)"
# to the next command's), or the global list
comp_block() {
    if [ -z "$1" ]; then grep '^_tracemark_global_opts=' "$COMP"; return; fi
    awk -v c="    $1)" '
    /^_tracemark_opts\(\)/ { inf = 1 }
    inf && /^}/ { inf = 0 }
    inf && /^    [a-z]+\)/ { on = (substr($0, 1, length(c)) == c) }
    inf && on' "$COMP"
}
for cmd in "" $COMMANDS; do
    f="$T/help.${cmd:-top}"
    comp_block "$cmd" >"$T/block"
    missing=""
    for o in $(section_opts "$f" | grep -- '^--'); do
        grep -q -- "[\" ]$o[= \"]" "$T/block" || missing="$missing $o"
    done
    if [ -z "$missing" ]; then pass "completion file holds the long options of ${cmd:-tracemark}"
    else fail "completion file, ${cmd:-tracemark}" "lacks$missing"; fi
done
missing=""
for w in $(cat "$T/commands" "$T/subs" "$T/attacks"); do
    grep -q -- "[\" ]$w[\" ]" "$COMP" || missing="$missing $w"
done
if [ -z "$missing" ]; then pass "completion file names every command, subcommand and attack"
else fail "completion file" "lacks$missing"; fi

if command -v bash >/dev/null 2>&1; then
    bash -n "$COMP" 2>"$ERR" && pass "bash -n accepts the completion" || fail "bash -n" "$(head -2 "$ERR")"
    # complete WORD...: what _tracemark offers for the words (the last is
    # the one being completed), one a line, sorted.
    completions() {
        (cd "$T" && bash --norc --noprofile -c '
            . "$0" || exit 1
            COMP_WORDS=("$@")
            COMP_CWORD=$(($# - 1))
            COMP_LINE="$*"
            COMP_POINT=${#COMP_LINE}
            _tracemark tracemark "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
            printf "%s\n" "${COMPREPLY[@]}"' "$COMP" "$@") | grep -v '^$' | sort -u
    }
    completions tracemark mar >"$T/c"
    [ "$(cat "$T/c")" = mark ] && pass "complete 'tracemark mar' = mark" || fail "complete 'tracemark mar'" "$(cat "$T/c" | tr '\n' ' ')"
    completions tracemark trace --j >"$T/c"
    [ "$(cat "$T/c" | tr '\n' ' ')" = "--jobs --json " ] && pass "complete 'tracemark trace --j' = --jobs --json" ||
        fail "complete 'tracemark trace --j'" "$(cat "$T/c" | tr '\n' ' ')"
    completions tracemark "" >"$T/c"
    cmp -s "$T/c" "$T/commands" && pass "complete 'tracemark ' = the commands" || fail "complete 'tracemark '" "$(diff "$T/commands" "$T/c" | grep '^[<>]' | tr '\n' ' ')"
    completions tracemark - >"$T/c"
    section_opts "$T/help.top" >"$T/help.opts.top"
    cmp -s "$T/c" "$T/help.opts.top" && pass "complete 'tracemark -' = the global options" ||
        fail "complete 'tracemark -'" "$(diff "$T/help.opts.top" "$T/c" | grep '^[<>]' | tr '\n' ' ')"
    completions tracemark registry "" >"$T/c"
    cmp -s "$T/c" "$T/subs" && pass "complete 'tracemark registry ' = the subcommands" ||
        fail "complete 'tracemark registry '" "$(diff "$T/subs" "$T/c" | grep '^[<>]' | tr '\n' ' ')"
    # each command's options, both ways (registry: the union over its subcommands)
    for cmd in $COMMANDS; do
        section_opts "$T/help.$cmd" >"$T/want"
        if [ "$cmd" = registry ]; then
            for sub in $(cat "$T/subs"); do completions tracemark registry "$sub" -; done | sort -u >"$T/c"
        else
            completions tracemark "$cmd" - >"$T/c"
        fi
        if cmp -s "$T/want" "$T/c"; then pass "complete 'tracemark $cmd -' = its --help options"
        else fail "complete 'tracemark $cmd -'" "only in --help: $(comm -23 "$T/want" "$T/c" | tr '\n' ' ')only offered: $(comm -13 "$T/want" "$T/c" | tr '\n' ' ')"; fi
    done
    completions tracemark attack jp >"$T/c"
    [ "$(cat "$T/c")" = jpeg ] && pass "complete 'tracemark attack jp' = jpeg" || fail "complete 'tracemark attack jp'" "$(cat "$T/c" | tr '\n' ' ')"
    completions tracemark attack "" >"$T/c"
    "$TRACEMARK" attack --list | awk '{ print $1 }' | sed -E 's/[:[].*//' | sort -u >"$T/want"
    cmp -s "$T/want" "$T/c" && pass "complete 'tracemark attack ' = attack --list" ||
        fail "complete 'tracemark attack '" "$(diff "$T/want" "$T/c" | grep '^[<>]' | tr '\n' ' ')"
    completions tracemark mark --format "" >"$T/c"
    [ "$(cat "$T/c" | tr '\n' ' ')" = "jpeg jpg png webp " ] && pass "complete mark --format" || fail "complete mark --format" "$(cat "$T/c" | tr '\n' ' ')"
    mkdir "$T/outdir" && : >"$T/photo.jpg" && : >"$T/notes.txt"
    completions tracemark mark --out-dir "" >"$T/c"
    grep -qx outdir "$T/c" && ! grep -qx photo.jpg "$T/c" && pass "complete --out-dir offers directories only" ||
        fail "complete --out-dir" "$(cat "$T/c" | tr '\n' ' ')"
    completions tracemark mark -k k.key "" >"$T/c"
    grep -qx photo.jpg "$T/c" && ! grep -qx notes.txt "$T/c" && pass "complete mark IN offers images" ||
        fail "complete mark IN" "$(cat "$T/c" | tr '\n' ' ')"
    completions tracemark trace -k "" >"$T/c"
    grep -qx notes.txt "$T/c" && pass "complete trace -k offers files" || fail "complete trace -k" "$(cat "$T/c" | tr '\n' ' ')"
else
    echo "skip completion checks: bash is not installed"
fi

finish
