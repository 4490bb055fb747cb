#!/bin/sh
# Refuse, before anything is unpacked, a machine the bundled wheels cannot run on: other architectures (a
# forced install would unpack x86-64 code) and C libraries older than 2.34 (the Qt wheels need glibc 2.34).
set -e
machine=$(uname -m)
if [ "$machine" != "@MACHINE@" ]; then
    echo "tether: this package is for @MACHINE@ machines; this one is $machine" >&2
    exit 1
fi
glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | sed -n 's/^glibc //p')
case "$glibc" in
    2.[0-9] | 2.[0-9].* | 2.[12][0-9] | 2.[12][0-9].* | 2.3[0-3] | 2.3[0-3].* | "")
        echo "tether: needs glibc 2.34 or newer (Debian 12, RHEL 9, Fedora 35 or later); this system has" \
            "${glibc:-no glibc}" >&2
        exit 1
        ;;
esac
exit 0
