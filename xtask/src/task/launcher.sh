#!/bin/sh
# The launcher of an nxs-survival stick, written by `cargo xtask stick`.
#
#   ./install [--platform TRIPLE] [COMMAND] [ARGS...]
#
# It picks the bundle for this machine from `uname -m` (or the one
# --platform names), says which and why, and runs it with the arguments
# given. With no COMMAND, or with one that begins with `-`, COMMAND is
# `install`, and an install that names no --root gets --root $NXS_ROOT
# (default /opt/nxs). `./install stick verify|repair` checks and repairs
# this stick from its parity. Where no bundle fits this machine, it exits 4
# with a report.
# NXS_RUNNER, when set, runs the bundle through that program (an emulator
# such as qemu-aarch64). POSIX sh only; see README.txt beside it.
set -u

product='@PRODUCT@'
version='@VERSION@'
# Each line: a target triple, then the `uname -m` values it runs on.
table='@TABLE@'

say() { printf '%s\n' "$*" >&2; }

# Runs bundle $1 with the other arguments and returns its exit code. One
# the kernel will not execute where it is (exit 126: a noexec mount, or a
# filesystem without execute bits such as FAT32) runs from a copy in a
# temporary directory, removed afterwards.
tmp=
copy=
trap 'rm -rf "$tmp" "$copy"' EXIT
trap 'exit 130' INT TERM
run_bundle() {
    b=$1
    shift
    if [ -x "$b" ]; then
        ${NXS_RUNNER:-} "$b" "$@"
        rc=$?
        if [ "$rc" -ne 126 ]; then
            return "$rc"
        fi
    fi
    copy=$(mktemp -d "${TMPDIR:-/tmp}/nxs-stick.XXXXXX") || return 5
    say "install: ${b##*/} cannot be executed where it is: running a copy from $copy"
    if cp "$b" "$copy/bundle.run" && chmod 700 "$copy/bundle.run"; then
        ${NXS_RUNNER:-} "$copy/bundle.run" "$@"
        rc=$?
    else
        rc=5
    fi
    rm -rf "$copy"
    copy=
    return "$rc"
}

stick=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd -P) || {
    say "install: cannot find the stick's directory from $0"
    exit 5
}

platform=
why=
if [ "${1:-}" = "--platform" ]; then
    if [ $# -lt 2 ]; then
        say "install: --platform needs a target triple"
        exit 2
    fi
    # Only a triple of the table: the name becomes part of a path.
    case "$2" in
        *[!A-Za-z0-9_.-]*) say "install: --platform $2: not a target triple"; exit 2 ;;
    esac
    platform=$2
    why="--platform $2"
    shift 2
fi
case "${1:-}" in
    -h | --help | -V | --version) ;;
    '' | -*) set -- install "$@" ;;
esac

machine=$(uname -m 2>/dev/null || echo unknown)
if [ -z "$platform" ]; then
    platform=$(printf '%s\n' "$table" | while read -r triple machines; do
        for m in $machines; do
            if [ "$m" = "$machine" ]; then
                echo "$triple"
                exit 0
            fi
        done
    done)
    why="uname -m is $machine"
fi

# A file too large for FAT32 is stored as pieces: join_pieces joins
# bundles/$1 again into $tmp/$1, $tmp a temporary directory removed when
# the launcher ends.
join_pieces() {
    if [ -z "$tmp" ]; then
        tmp=$(mktemp -d "${TMPDIR:-/tmp}/nxs-stick.XXXXXX") || exit 5
    fi
    say "install: joining the pieces of bundles/$1 in $tmp"
    if ! cat "$stick/bundles/$1".part-* >"$tmp/$1" || ! chmod 700 "$tmp/$1"; then
        say "install: cannot join the pieces into $tmp (is it full? TMPDIR chooses another place)"
        exit 5
    fi
}

bundle="$stick/bundles/$product-$version-$platform.run"
if [ -n "$platform" ] && [ ! -f "$bundle" ] && [ -f "$bundle.part-000" ]; then
    join_pieces "${bundle##*/}"
    bundle="$tmp/${bundle##*/}"
fi
if [ -z "$platform" ] || [ ! -f "$bundle" ]; then
    say "install: no bundle on this stick runs on this machine"
    say "  this machine: uname -m = $machine, kernel $(uname -r 2>/dev/null || echo unknown)"
    if [ -n "$platform" ]; then
        say "  asked for: $platform ($why); $bundle is not there"
    fi
    say "  this stick serves:"
    printf '%s\n' "$table" | while read -r triple machines; do
        if [ -f "$stick/bundles/$product-$version-$triple.run" ] || [ -f "$stick/bundles/$product-$version-$triple.run.part-000" ]; then
            say "    $triple (uname -m: $machines)"
        fi
    done
    say "  hint: ./install --platform TRIPLE runs one of them anyway (NXS_RUNNER=qemu-... to emulate)"
    exit 4
fi

# `stick verify|repair` checks this stick unless told another, and must
# work when this machine's own bundle is the damaged file: its stub may not
# run. So every bundle here is tried, those whose bytes match SHA256SUMS
# first (unsigned, this only orders them; the stub checks the signature),
# and one that cannot run here (exit 126, 127 or a signal) makes way for
# the next.
if [ "${1:-}" = stick ]; then
    if [ $# -eq 2 ] || { [ $# -gt 2 ] && [ "${3#-}" != "$3" ]; }; then
        a1=$1
        a2=$2
        shift 2
        set -- "$a1" "$a2" "$stick" "$@"
    fi
    good=
    bad=
    nl='
'
    for b in "$bundle" "$stick"/bundles/*.run; do
        case "$nl$good$bad" in *"$nl$b$nl"*) continue ;; esac
        [ -f "$b" ] || continue
        rel=bundles/${b##*/}
        want=
        while read -r sum path; do
            [ "$path" = "$rel" ] && want=$sum
        done <"$stick/SHA256SUMS" 2>/dev/null
        got=$(sha256sum "$b" 2>/dev/null) && got=${got%% *}
        if [ -n "$want" ] && [ "$got" = "$want" ]; then
            good="$good$b$nl"
        else
            bad="$bad$b$nl"
        fi
    done
    set -f
    old_ifs=$IFS
    IFS=$nl
    for b in $good $bad; do
        IFS=$old_ifs
        say "install: checking the stick with bundles/${b##*/}"
        run_bundle "$b" "$@"
        rc=$?
        case "$rc" in
            126 | 127) say "install: bundles/${b##*/} cannot run here; trying the next" ;;
            12[89] | 1[3-9][0-9] | 2[0-9][0-9]) say "install: bundles/${b##*/} died (exit $rc); trying the next" ;;
            *) exit "$rc" ;;
        esac
    done
    say "install: no bundle on this stick could run the check here"
    exit 4
fi

# An install names its root; the launcher's default is said aloud.
if [ "${1:-}" = install ]; then
    has_root=no
    for a in "$@"; do
        case "$a" in
            --root | --root=*) has_root=yes ;;
        esac
    done
    if [ "$has_root" = no ]; then
        root=${NXS_ROOT:-/opt/nxs}
        say "install: no --root given: installing into $root (--root DIR or NXS_ROOT to choose)"
        set -- "$@" --root "$root"
    fi
fi

# The files every platform has in common are kept once, in the shared part
# beside the bundles. A bundle run from anywhere else (a copy, or joined
# pieces) finds it through NXS_SHARED_DIR, unless the operator set it. Only
# a run that reads the payload needs it: joined here, not for `stick`.
shared="$product-$version.shared"
if [ -z "${NXS_SHARED_DIR:-}" ]; then
    NXS_SHARED_DIR="$stick/bundles"
    if [ ! -f "$stick/bundles/$shared" ] && [ -f "$stick/bundles/$shared.part-000" ]; then
        join_pieces "$shared"
        NXS_SHARED_DIR=$tmp
    fi
fi
export NXS_SHARED_DIR
say "install: $platform, because $why: running bundles/${bundle##*/} $*"
run_bundle "$bundle" "$@"
exit $?
