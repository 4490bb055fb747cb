"""The lab's systemd-resolved workstation variant (`tether lab up --resolver systemd-resolved`).

The systemd-resolved package is never installed (its install script repoints the host's resolv.conf).
Its .deb and the matching libsystemd-shared are downloaded with `apt-get download` into a cache and
unpacked with `dpkg-deb -x`. The daemon runs in the workstation's network namespace; every process
of the variant (dbus-daemon, resolved, the helper, `tether lab run` commands) starts through the
`enter` script written here, which, inside the private mount namespace `ip netns exec` gives each
process, binds over the host's paths:

* ``/run/systemd``: a lab directory (resolved's runtime files, shared by all the variant's processes);
* ``/etc/passwd`` and ``/etc/group``: copies that add the ``systemd-resolve`` user resolved drops to;
* ``/etc/systemd``: a directory holding only resolved.conf (the lab's upstream DNS as global server);
* ``/etc/resolv.conf``: resolved's stub-resolv.conf (nameserver 127.0.0.53 and the current search
  domains), as on a desktop whose resolv.conf links to it;

and points ``DBUS_SYSTEM_BUS_ADDRESS`` at a private dbus-daemon's socket. The mounts live and die
with each process's mount namespace, so `tether lab down` only ends the processes and deletes the
lab directory.

`make deps` fetches and checks the packages ahead (``python -m tether.lab.resolved``), so a test run
does not depend on the network; the libraries they load come from the Makefile's APT_PACKAGES.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tether.lab.runner import LabError

RESOLVER = "systemd-resolved"
RESOLVERS = ("", RESOLVER)  # "" is the plain workstation (resolv.conf names the upstream)
DEB_CACHE = Path(os.environ.get("TETHER_LAB_DEB_CACHE", "/var/cache/tether-lab-debs"))
PACKAGES = ("systemd-resolved", "libsystemd-shared")
STUB = "127.0.0.53"
RESOLVED_BIN = "lib/systemd/systemd-resolved"  # Debian 12 keeps it out of the merged /usr
LIBDIRS = ("usr/lib/x86_64-linux-gnu/systemd", "usr/lib/aarch64-linux-gnu/systemd", "usr/lib/systemd")


def unpacked(cache: Path = DEB_CACHE) -> Path:
    """The unpacked packages' root, downloading and unpacking them the first time."""
    root = cache / "root"
    if (root / RESOLVED_BIN).exists():
        return root
    cache.mkdir(parents=True, exist_ok=True)
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise LabError(f"the systemd-resolved lab needs {tool} (a Debian or Ubuntu host)")
    got = subprocess.run(["apt-get", "download", *PACKAGES], cwd=cache, capture_output=True, text=True)
    if got.returncode != 0:
        raise LabError(download_error(cache, got.returncode, got.stderr))
    staging = cache / "root.new"
    shutil.rmtree(staging, ignore_errors=True)
    for deb in sorted(cache.glob("*.deb")):
        if deb.name.split("_", 1)[0] in PACKAGES:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(staging)], check=True, capture_output=True)
    if not (staging / RESOLVED_BIN).exists():
        raise LabError(f"the unpacked packages in {staging} hold no {RESOLVED_BIN}")
    check_libraries(staging)
    staging.rename(root)
    return root


def download_error(cache: Path, returncode: int, stderr: str) -> str:
    """What to say when `apt-get download` failed, with the likely fix."""
    text = stderr.strip()
    hint = ""
    if re.search(r"Unable to locate package|has no candidate|Can't select candidate|No packages found", text):
        hint = " (the package lists do not know them: run `apt-get update` first; `make deps` does)"
    elif re.search(r"Temporary failure resolving|Could not resolve|Failed to fetch|Connection", text):
        hint = " (the Debian mirror is out of reach: fetch them once with network access, `make deps`)"
    return f"apt-get download {' '.join(PACKAGES)} failed in {cache} ({returncode}){hint}: {text}"


def not_found(ldd_output: str) -> list[str]:
    """The libraries an `ldd` listing could not find, in its order."""
    return [line.split("=>", 1)[0].strip() for line in ldd_output.splitlines() if "=> not found" in line]


def check_libraries(root: Path) -> None:
    missing = missing_libraries(root)
    if missing:
        raise LabError(
            f"{root / RESOLVED_BIN} cannot load {', '.join(missing)}: install the packages that hold them "
            "(`make deps` installs the Makefile's APT_PACKAGES, which list systemd-resolved's libraries)"
        )


def missing_libraries(root: Path) -> list[str]:
    """The shared libraries the unpacked resolved needs and the host lacks (the unpacked ones searched too)."""
    if shutil.which("ldd") is None:
        return []
    env = {**os.environ, "LD_LIBRARY_PATH": ":".join(str(root / d) for d in LIBDIRS)}
    listing = subprocess.run(["ldd", str(root / RESOLVED_BIN)], capture_output=True, text=True, env=env)
    return not_found(listing.stdout)


@dataclass(frozen=True)
class ResolvedFiles:
    """The variant's files under the lab's state directory."""

    dir: Path

    @property
    def enter(self) -> Path:
        return self.dir / "enter"

    @property
    def bus_socket(self) -> Path:
        return self.dir / "system_bus_socket"

    @property
    def bus_conf(self) -> Path:
        return self.dir / "bus.conf"

    @property
    def run_systemd(self) -> Path:
        return self.dir / "run-systemd"

    @property
    def stub_resolv_conf(self) -> Path:
        return self.run_systemd / "resolve/stub-resolv.conf"


def passwd_with_resolve(passwd: str) -> str:
    if any(line.startswith("systemd-resolve:") for line in passwd.splitlines()):
        return passwd
    return passwd.rstrip("\n") + "\nsystemd-resolve:x:991:991:systemd Resolver:/:/usr/sbin/nologin\n"


def group_with_resolve(group: str) -> str:
    if any(line.startswith("systemd-resolve:") for line in group.splitlines()):
        return group
    return group.rstrip("\n") + "\nsystemd-resolve:x:991:\n"


def resolved_conf(upstream: str) -> str:
    return f"[Resolve]\nDNS={upstream}\nDNSSEC=no\nDNSOverTLS=no\nLLMNR=no\nMulticastDNS=no\nDNSStubListener=yes\n"


def bus_conf(socket_path: Path) -> str:
    # Everyone may own and call anything: the bus exists only for this lab's root processes and resolved.
    return (
        '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"\n'
        ' "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">\n'
        "<busconfig>\n"
        "  <type>system</type>\n"
        f"  <listen>unix:path={socket_path}</listen>\n"
        "  <auth>EXTERNAL</auth>\n"
        '  <policy context="default">\n'
        '    <allow user="*"/>\n    <allow own="*"/>\n'
        '    <allow send_destination="*"/>\n    <allow receive_sender="*"/>\n'
        "  </policy>\n"
        "</busconfig>\n"
    )


def enter_script(files: ResolvedFiles, debs: Path) -> str:
    libdirs = ":".join(str(debs / d) for d in LIBDIRS)
    q = shlex.quote
    return (
        "#!/bin/sh\n"
        "# Runs CMD inside the lab's systemd-resolved environment (see tether.lab.resolved).\n"
        "set -e\n"
        f"mount --bind {q(str(files.run_systemd))} /run/systemd\n"
        f"mount --bind {q(str(files.dir / 'passwd'))} /etc/passwd\n"
        f"mount --bind {q(str(files.dir / 'group'))} /etc/group\n"
        f"mount --bind {q(str(files.dir / 'etc-systemd'))} /etc/systemd\n"
        f"if [ -e {q(str(files.stub_resolv_conf))} ]; then\n"
        f"  mount --bind {q(str(files.stub_resolv_conf))} /etc/resolv.conf\n"
        "fi\n"
        f"export DBUS_SYSTEM_BUS_ADDRESS=unix:path={q(str(files.bus_socket))}\n"
        f"export PATH={q(str(debs / 'usr/bin'))}:$PATH\n"
        f"export LD_LIBRARY_PATH={q(libdirs)}\n"
        'exec "$@"\n'
    )


def write_files(files: ResolvedFiles, debs: Path, upstream: str) -> None:
    """Everything the variant's processes need, under files.dir (removed with the lab's directory)."""
    if not Path("/run/systemd").is_dir() or not Path("/etc/systemd").is_dir():
        raise LabError("the systemd-resolved lab binds over /run/systemd and /etc/systemd: neither may be missing")
    (files.run_systemd / "netif/links").mkdir(parents=True, exist_ok=True)
    (files.dir / "etc-systemd").mkdir(parents=True, exist_ok=True)
    os.chmod(files.dir, 0o755)
    (files.dir / "passwd").write_text(passwd_with_resolve(Path("/etc/passwd").read_text()))
    (files.dir / "group").write_text(group_with_resolve(Path("/etc/group").read_text()))
    (files.dir / "etc-systemd/resolved.conf").write_text(resolved_conf(upstream))
    files.bus_conf.write_text(bus_conf(files.bus_socket))
    files.enter.write_text(enter_script(files, debs))
    files.enter.chmod(0o755)


def dbus_argv(files: ResolvedFiles) -> list[str]:
    # Inside the environment too: the bus must know the systemd-resolve user to let it connect.
    return [str(files.enter), "dbus-daemon", "--nofork", "--nopidfile", f"--config-file={files.bus_conf}"]


def resolved_argv(files: ResolvedFiles, debs: Path) -> list[str]:
    return [str(files.enter), str(debs / RESOLVED_BIN)]


def main() -> int:
    """Fetch, unpack and check the packages (what `make deps` runs); prints where they are."""
    try:
        root = unpacked()
        check_libraries(root)  # also when unpacked earlier: the host's libraries may have changed since
        print(root)
    except LabError as exc:
        print(f"systemd-resolved lab: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
