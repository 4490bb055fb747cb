#!/bin/sh
# After unpacking (deb postinst "configure", rpm %post): the tether group, the installing user in it, the
# helper service enabled and started where systemd runs.
set -e
if [ "$1" = "configure" ] || [ "$1" -ge 1 ] 2>/dev/null; then
    if ! getent group tether >/dev/null; then
        groupadd --system tether
    fi
    user=""
    if [ -n "$SUDO_USER" ] && [ "$SUDO_USER" != "root" ]; then
        user=$SUDO_USER
    elif [ -n "$PKEXEC_UID" ] && [ "$PKEXEC_UID" != "0" ]; then
        user=$(getent passwd "$PKEXEC_UID" | cut -d: -f1)
    fi
    if [ -n "$user" ] && ! id -nG "$user" | tr ' ' '\n' | grep -qx tether; then
        usermod --append --groups tether "$user"
        echo "tether: added $user to the tether group; log out and back in (or run \`newgrp tether\`) to use it"
    fi
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload
        systemctl enable tether-helper.service
        systemctl restart tether-helper.service
    else
        echo "tether: systemd is not running; start the helper yourself: sudo /opt/tether/bin/tether-helper"
    fi
fi
exit 0
