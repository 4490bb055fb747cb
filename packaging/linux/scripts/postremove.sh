#!/bin/sh
# After the files went (deb postrm, rpm %postun): the helper's state and whatever Python wrote beside the
# package; on purge (deb) or erase (rpm: nothing is left to purge later) the tether group too.
set -e
case "$1" in
    remove | purge | 0)
        rm -rf /opt/tether /var/lib/tether /run/tether
        # No Debian package owns /opt (base-files' postinst makes it), so dpkg removes it with the last package
        # that shipped files there: put it back as base-files leaves it.
        if [ ! -d /opt ]; then
            mkdir -m 0755 /opt
        fi
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
