#!/bin/sh
# After the files went (deb postrm, rpm %postun): the helper's state and whatever Python wrote beside the
# package; on purge (deb) or erase (rpm: nothing is left to purge later) the tether group too.
set -e
case "$1" in
    remove | purge | 0)
        rm -rf /opt/tether /var/lib/tether /run/tether
        if [ -d /run/systemd/system ]; then
            systemctl daemon-reload || true
        fi
        ;;
esac
case "$1" in
    purge | 0)
        if getent group tether >/dev/null; then
            groupdel tether
        fi
        ;;
esac
exit 0
