#!/bin/sh
# Before the files go (deb prerm "remove", rpm %preun with no version left): stop the helper and undo whatever a
# helper left behind (TUN device, routes, nftables, DNS settings); on an upgrade the new postinst restarts it.
set -e
if [ "$1" = "remove" ] || [ "$1" = "0" ]; then
    if [ -d /run/systemd/system ]; then
        systemctl disable --now tether-helper.service || true
    fi
    /opt/tether/bin/tether helper cleanup || echo "tether: \`tether helper cleanup\` failed; see its message above" >&2
fi
exit 0
