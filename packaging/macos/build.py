"""The macOS installer: dist/tether-<version>-macos-<arch>.pkg, built with pkgbuild and productbuild (macOS only).

What the package lays down (payload root ``/``, ownership root:wheel):

* ``/opt/tether``: a relocatable CPython 3.11 (python-build-standalone's ``install_only`` tarball, given with
  ``--python-tarball``; it is not on PyPI, so it is an input: CI downloads it) with the tether wheel of this
  checkout and its dependencies; ``bin/`` holds a launcher per command (packaging/payload.py), ``share/`` the
  chart, icons, completions and the tray's LaunchAgent; ``uninstall.sh``;
* ``/usr/local/bin/tether`` and ``tether-tray``: links into ``/opt/tether/bin``;
* ``/Library/LaunchDaemons/dev.tether.helper.plist``: the helper, started by postinstall and at every boot;
* ``/private/etc/newsyslog.d/tether.conf``: rotation of ``/Library/Logs/Tether/helper.log``.

The package is for one architecture, this Mac's (the tarball must match); distribution.xml refuses other
architectures and macOS before ``MIN_MACOS`` (PySide6 6.11's wheels are built for macOS 13).

    python3 packaging/macos/build.py --python-tarball cpython-3.11.*-aarch64-apple-darwin-install_only.tar.gz
        [--out dist] [--sign "Developer ID Installer: ..."]

``stage()`` and the renderers are pure enough to run anywhere (the tests use them on Linux); ``main`` refuses
to run anywhere but macOS.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from types import ModuleType

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parents[1]
IDENTIFIER = "dev.tether.pkg"
MIN_MACOS = "13.0"
# platform.machine() -> python-build-standalone's name for it (in its tarballs' names)
ARCHES = {"arm64": "aarch64-apple-darwin", "x86_64": "x86_64-apple-darwin"}
DAEMON_PLIST = "dev.tether.helper.plist"
AGENT_PLIST = "dev.tether.tray.plist"
LAUNCH_DAEMONS = PurePosixPath("/Library/LaunchDaemons")
PATH_LINKS = PurePosixPath("/usr/local/bin")
NEWSYSLOG = PurePosixPath("/private/etc/newsyslog.d/tether.conf")
TOOLS = ("pkgbuild", "productbuild")


class BuildError(Exception):
    """The package cannot be built here or from these inputs; the message says why."""


def _payload_module() -> ModuleType:
    # packaging/payload.py by path: a `packaging` package would be PyPI's.
    if "tether_payload" not in sys.modules:
        spec = importlib.util.spec_from_file_location("tether_payload", HERE.parent / "payload.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["tether_payload"] = module  # its dataclasses look their module up while being defined
        spec.loader.exec_module(module)
    return sys.modules["tether_payload"]


payload = _payload_module()
INSTALL_ROOT: PurePosixPath = payload.INSTALL_ROOT
PYTHON = INSTALL_ROOT / "python" / "bin" / "python3"


def project_version(checkout: Path = CHECKOUT) -> str:
    return tomllib.loads((checkout / "pyproject.toml").read_text())["project"]["version"]


def package_name(version: str, arch: str) -> str:
    return f"tether-{version}-macos-{arch}.pkg"


def _place(root: Path, path: PurePosixPath) -> Path:
    target = root / path.relative_to("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def stage(root: Path, checkout: Path = CHECKOUT) -> list[PurePosixPath]:
    """Lay the package's files (all but the Python runtime) out under ``root`` as they go under ``/``.

    Returns every path staged (files and links), absolute as installed, sorted."""
    staged: list[PurePosixPath] = []

    def write(path: PurePosixPath, data: bytes, mode: int) -> None:
        target = _place(root, path)
        target.write_bytes(data)
        target.chmod(mode)
        staged.append(path)

    for item in payload.payload(checkout):
        path = INSTALL_ROOT / item.destination
        if item.kind == "command":
            write(path, payload.launcher(item.source, PYTHON).encode(), 0o755)
        else:
            write(path, (checkout / item.source).read_bytes(), 0o644)
    write(LAUNCH_DAEMONS / DAEMON_PLIST, (HERE / DAEMON_PLIST).read_bytes(), 0o644)
    write(INSTALL_ROOT / "share" / "launchd" / AGENT_PLIST, (HERE / AGENT_PLIST).read_bytes(), 0o644)
    write(INSTALL_ROOT / "uninstall.sh", (HERE / "uninstall.sh").read_bytes(), 0o755)
    write(NEWSYSLOG, (HERE / "newsyslog-tether.conf").read_bytes(), 0o644)
    for name in payload.ON_PATH:
        link = PATH_LINKS / name
        _place(root, link).symlink_to(str(INSTALL_ROOT / "bin" / name))
        staged.append(link)
    return sorted(staged)


def distribution(version: str, arch: str, component: str) -> str:
    """distribution.xml with its placeholders filled in."""
    if arch not in ARCHES:
        raise BuildError(f'architecture "{arch}" is not one of {", ".join(ARCHES)}')
    text = (HERE / "distribution.xml").read_text()
    for key, value in {"VERSION": version, "ARCH": arch, "MIN_MACOS": MIN_MACOS, "COMPONENT": component}.items():
        text = text.replace(f"@{key}@", value)
    return text


def pkgbuild_command(root: Path, version: str, component: Path) -> list[str]:
    return [
        "pkgbuild",
        "--root", str(root),
        "--identifier", IDENTIFIER,
        "--version", version,
        "--scripts", str(HERE / "scripts"),
        "--install-location", "/",
        "--ownership", "recommended",
        str(component),
    ]  # fmt: skip


def productbuild_command(distribution_xml: Path, package_dir: Path, out: Path, sign: str | None) -> list[str]:
    signing = ["--sign", sign] if sign else []
    return [
        "productbuild",
        "--distribution", str(distribution_xml),
        "--package-path", str(package_dir),
        *signing,
        str(out),
    ]  # fmt: skip


def check_host(system: str, machine: str, tarball: Path, which: Callable[[str], str | None] = shutil.which) -> None:
    """Refuse, naming the reason, unless this is a Mac with the tools and a runtime tarball for its architecture."""
    if system != "Darwin":
        raise BuildError(f"the macOS package is built on macOS only (pkgbuild, productbuild); this is {system}")
    if machine not in ARCHES:
        raise BuildError(f'architecture "{machine}" is not one of {", ".join(ARCHES)}')
    missing = [tool for tool in TOOLS if which(tool) is None]
    if missing:
        raise BuildError(f"{', '.join(missing)} not found: install the Xcode command line tools")
    if ARCHES[machine] not in tarball.name or "install_only" not in tarball.name:
        raise BuildError(f"{tarball} is not python-build-standalone's {ARCHES[machine]} install_only tarball")


def install_runtime(root: Path, tarball: Path, checkout: Path) -> None:
    """The Python runtime at INSTALL_ROOT/python with tether and its dependencies, as it runs from there."""
    prefix = root / INSTALL_ROOT.relative_to("/")
    with tarfile.open(tarball) as archive:
        archive.extractall(prefix, filter="tar")  # its one top folder is python/
    python = root / PYTHON.relative_to("/")
    # With the extras every OS's package installs (payload.py): the chart's renderer for `tether manager install`.
    tether = f"{checkout}[{','.join(payload.EXTRAS)}]"
    pip = [python, "-m", "pip", "install", "-q", "--no-compile", "--no-warn-script-location", tether]
    subprocess.run(pip, check=True)
    # pip's own scripts name the staging folder in their shebang; our launchers in bin/ replace them.
    for script in (prefix / "python" / "bin").iterdir():
        if script.is_file() and not script.is_symlink():
            with script.open("rb") as stream:
                if stream.read(2 + len(str(root))) == b"#!" + str(root).encode():
                    script.unlink()
    # Compiled as installed: tracebacks name /opt/tether/..., not the staging folder.
    compile_all = [python, "-m", "compileall", "-q", "-j0", "-s", str(root), "-p", "/", prefix / "python" / "lib"]
    subprocess.run(compile_all, check=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build Tether's macOS .pkg (on macOS).")
    parser.add_argument(
        "--python-tarball",
        type=Path,
        required=True,
        help="python-build-standalone cpython-3.11.*-<arch>-apple-darwin-install_only.tar.gz",
    )
    parser.add_argument("--out", type=Path, default=CHECKOUT / "dist")
    parser.add_argument("--sign", help='a "Developer ID Installer" identity to sign the product with')
    args = parser.parse_args(argv)
    try:
        check_host(platform.system(), platform.machine(), args.python_tarball)
    except BuildError as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 2
    version, arch = project_version(), platform.machine()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tether-pkg-") as work_dir:
        work = Path(work_dir)
        root, components = work / "root", work / "components"
        components.mkdir()
        stage(root)
        install_runtime(root, args.python_tarball, CHECKOUT)
        component = components / "tether-component.pkg"
        subprocess.run(pkgbuild_command(root, version, component), check=True)
        dist_xml = work / "distribution.xml"
        dist_xml.write_text(distribution(version, arch, component.name))
        out = args.out / package_name(version, arch)
        subprocess.run(productbuild_command(dist_xml, components, out, args.sign), check=True)
    print(f"{out} ({os.path.getsize(out) / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
