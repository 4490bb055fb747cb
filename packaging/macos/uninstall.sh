#!/bin/bash
# Removes Tether from this Mac: sudo /opt/tether/uninstall.sh
# The helper is stopped first (it undoes its routes and resolver files at SIGTERM), then
# `tether helper cleanup` undoes whatever a crashed helper left; only then are files, agents and the group removed.
set -euo pipefail

LABEL=dev.tether.helper
AGENT=dev.tether.tray
GROUP=tether
ROOT=/opt/tether

main() {
	if [ "$(id -u)" -ne 0 ]; then
		echo "run it as root: sudo $0" >&2
		exit 1
	fi

	if launchctl print "system/${LABEL}" >/dev/null 2>&1; then
		launchctl bootout "system/${LABEL}" || true
	fi
	if [ -x "${ROOT}/bin/tether" ]; then
		"${ROOT}/bin/tether" helper cleanup || echo "tether helper cleanup failed; removing Tether anyway" >&2
	fi

	# Each user's autostart agent (written by the tray's "Start at login"), unloaded from their session first.
	local agent uid
	for agent in /Users/*/Library/LaunchAgents/"${AGENT}".plist; do
		[ -e "$agent" ] || continue
		uid=$(stat -f %u "$agent")
		launchctl bootout "gui/${uid}/${AGENT}" 2>/dev/null || true
		rm -f "$agent"
	done

	rm -f "/Library/LaunchDaemons/${LABEL}.plist"
	rm -f /private/etc/newsyslog.d/tether.conf
	local link
	for link in /usr/local/bin/tether /usr/local/bin/tether-tray; do
		# Only our own links: a tether installed some other way is left alone.
		if [ -L "$link" ] && [[ "$(readlink "$link")" == "${ROOT}/"* ]]; then
			rm -f "$link"
		fi
	done
	rm -rf "$ROOT" /Library/Logs/Tether /var/db/tether /var/run/tether

	if dscl . -read "/Groups/${GROUP}" >/dev/null 2>&1; then
		dscl . -delete "/Groups/${GROUP}"
	fi
	pkgutil --forget dev.tether.pkg >/dev/null 2>&1 || true
	echo "Tether is removed"
}

# Everything runs from main, which bash has read whole before it deletes this file's folder.
main "$@"
