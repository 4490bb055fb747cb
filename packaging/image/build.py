"""`make image`: the traffic-manager's OCI image (the agent's too), built without a container engine.

A Debian 12 root from mmdebstrap (python3 and as little else as apt allows), a venv at /opt/tether holding the
tether wheel of this checkout and exactly the pins of requirements.txt (no pip, no Qt, no lab), a non-root user,
stripped; packed as one layer into an OCI layout by umoci and copied to a docker-archive by skopeo, both under
dist/. Needs root (mmdebstrap's root mode, chroot) and the network (deb.debian.org, PyPI).

    python3 packaging/image/build.py [--out dist] [--mirror URL]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tether.manager.api.version import MANAGER_IMAGE, image_tag

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parents[1]
REQUIREMENTS = HERE / "requirements.txt"

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# usr-is-merged satisfies init-system-helpers' "usrmerge | usr-is-merged" without usrmerge, which drags in perl.
# openssh-sftp-server: the agent serves the pod's volumes with its sftp-server (tether.manager.agent.sftp).
DEBIAN_PACKAGES = ("python3", "usr-is-merged", "openssh-sftp-server")
# Kept out of every package dpkg unpacks (and written to the image's dpkg.cfg.d, so later installs obey it too).
DPKG_EXCLUDES = (
    "/usr/share/doc/*",
    "/usr/share/man/*",
    "/usr/share/info/*",
    "/usr/share/locale/*",
    "/usr/share/lintian/*",
    "/usr/share/bash-completion/*",
)
DPKG_INCLUDES = ("/usr/share/doc/*/copyright",)  # the licences stay
# Essential's init-system-helpers still brings usrmerge, and with it perl (about 50 MB): nothing here runs them.
DEBIAN_PURGE = (
    "usrmerge",
    "libfile-find-rule-perl",
    "libnumber-compare-perl",
    "libtext-glob-perl",
    "perl",
    "libperl5.36",
    "perl-modules-5.36",
    "libgdbm-compat4",
)

VENV = "/opt/tether"
PYTHON_VERSION = "3.11"  # bookworm's python3
USER, UID = "tether", 65532
#: The console scripts the image is for; the wheel's other scripts (and the packages behind them) are removed.
SCRIPTS = ("tether-manager", "tether-agent")
KEPT_PACKAGES = ("manager", "runtime")  # of tether.*: what those scripts import (tests/unit/test_layering.py)
#: Declared by a pinned package but never imported by the manager: left out on purpose, each with its reason.
UNUSED_DECLARED = {
    "aiohttp": "kubernetes' asyncio client (kubernetes_asyncio-style); the manager uses the synchronous one",
    "aiohttp-retry": "retries for that asyncio client",
}
#: Parts of pinned packages removed from the venv (site-packages paths), each with its reason.
UNUSED_PARTS = {
    "kubernetes/aio": "the asyncio client (about 70 MB of generated code) needs aiohttp, left out above",
}

_PIN = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9.+!_-]+)(?:\s+#\s*via\s+(?P<via>.+))?")


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    via: tuple[str, ...]  # empty: imported by the manager itself

    @property
    def key(self) -> str:
        return canonical(self.name)


def canonical(name: str) -> str:
    """PEP 503's normalised project name: "PyYAML", "pydantic_core" -> "pyyaml", "pydantic-core"."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(text: str) -> list[Pin]:
    """The pins of a requirements file: `name==version`, optionally `# via a, b`; blank and comment lines skipped."""
    pins = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _PIN.fullmatch(line)
        if match is None:
            raise ValueError(f"requirements line {number} {raw!r} is not `name==version [# via name, ...]`")
        via = tuple(v.strip() for v in (match["via"] or "").split(",") if v.strip())
        pins.append(Pin(match["name"], match["version"], via))
    seen: set[str] = set()
    for pin in pins:
        if pin.key in seen:
            raise ValueError(f"requirements pin {pin.name!r} is listed twice")
        seen.add(pin.key)
    return pins


def labels(version: str, revision: str, source: str) -> dict[str, str]:
    """The image's OCI annotations (as config labels and manifest annotations)."""
    return {
        "org.opencontainers.image.title": MANAGER_IMAGE,
        "org.opencontainers.image.description": "Tether's traffic-manager (tether-manager) and agent (tether-agent)",
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.revision": revision,
        "org.opencontainers.image.source": source,
        "org.opencontainers.image.licenses": "Apache-2.0",
    }


def image_config_args(spec: ImageSpec) -> list[str]:
    """`umoci config` arguments: user, entrypoint, PATH, labels, creation time."""
    args = [
        f"--config.user={UID}:{UID}",
        "--config.entrypoint=tether-manager",
        f"--config.env=PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--config.env=PYTHONUNBUFFERED=1",
        "--config.workingdir=/",
        f"--created={datetime.fromtimestamp(spec.epoch, UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}",
        "--author=Tether",
    ]
    for key, value in labels(spec.version, spec.revision, spec.source).items():
        args += [f"--config.label={key}={value}", f"--manifest.annotation={key}={value}"]
    return args


def account_lines() -> tuple[str, str]:
    """The non-root user's /etc/passwd and /etc/group lines: no home, no shell."""
    return f"{USER}:x:{UID}:{UID}:Tether:/nonexistent:/usr/sbin/nologin\n", f"{USER}:x:{UID}:\n"


@dataclass(frozen=True)
class ImageSpec:
    version: str
    revision: str
    source: str
    epoch: int  # the commit's time: the layer's files and the config's "created"

    @property
    def tag(self) -> str:
        return image_tag(self.version)

    @property
    def reference(self) -> str:
        return f"{MANAGER_IMAGE}:{self.tag}"


@dataclass(frozen=True)
class Outputs:
    oci: Path  # an OCI image layout whose ref is the tag
    docker_archive: Path

    @staticmethod
    def under(out: Path, spec: ImageSpec) -> Outputs:
        return Outputs(out / f"{MANAGER_IMAGE}-oci", out / f"{MANAGER_IMAGE}-{spec.tag}.docker.tar")


def manifest(layout: Path, tag: str) -> dict[str, Any]:
    """The image manifest `tag` names in an OCI layout."""
    index = json.loads((layout / "index.json").read_text())
    refs = [m for m in index["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
    if len(refs) != 1:
        raise ValueError(f"OCI layout {layout} has {len(refs)} manifests tagged {tag!r}")
    return json.loads(blob(layout, refs[0]["digest"]).read_text())


def image_config(layout: Path, tag: str) -> dict[str, Any]:
    """The image configuration (user, entrypoint, labels...) of `tag`."""
    return json.loads(blob(layout, manifest(layout, tag)["config"]["digest"]).read_text())


def layer_blob_sizes(layout: Path, tag: str) -> list[int]:
    """The compressed sizes of the layers of `tag` in an OCI layout: what a registry stores and a node pulls."""
    return [layer["size"] for layer in manifest(layout, tag)["layers"]]


def blob(layout: Path, digest: str) -> Path:
    algorithm, _, hexdigest = digest.partition(":")
    return layout / "blobs" / algorithm / hexdigest


# ----------------------------------------------------------------------------------------------- the build (I/O)


def run(args: Sequence[str | Path], **kwargs: object) -> subprocess.CompletedProcess[str]:
    print("+", " ".join(str(a) for a in args), flush=True)
    return subprocess.run([str(a) for a in args], check=True, text=True, **kwargs)  # type: ignore[call-overload]


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(CHECKOUT), *args], capture_output=True, text=True).stdout.strip()


def describe_checkout() -> ImageSpec:
    version = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]["version"]
    revision = git("rev-parse", "HEAD") or "unknown"
    if revision != "unknown" and git("status", "--porcelain", "--untracked-files=no"):
        revision += "-dirty"  # built from uncommitted changes: say so rather than claim the commit
    # A clone knows where it came from; a checkout without a remote can only name itself.
    source = git("remote", "get-url", "origin") or CHECKOUT.as_uri()
    epoch = int(git("log", "-1", "--format=%ct") or time.time())
    return ImageSpec(version=version, revision=revision, source=source, epoch=epoch)


GLIBC_MINOR = 36  # bookworm's glibc: 2.36


def clean_copy(dest: Path) -> Path:
    """The checkout's files as git sees them (committed or not, ignored ones left out): setuptools would
    otherwise package whatever an earlier build left in build/, removed modules included."""
    listed = git("ls-files", "--cached", "--others", "--exclude-standard", "-z")
    if not listed:  # not a git checkout (an unpacked sdist, say): nothing stale to fear
        return CHECKOUT
    for name in listed.split("\0"):
        source = CHECKOUT / name
        if name and source.is_file():  # a deleted but not yet committed file is still listed
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def wheel_platforms(machine: str) -> list[str]:
    """The manylinux tags bookworm's glibc runs, newest first: pip's --platform takes no "this or older"."""
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    tags = []
    for minor in range(GLIBC_MINOR, 4, -1):
        tags.append(f"manylinux_2_{minor}_{machine}")
        if minor in legacy:
            tags.append(f"{legacy[minor]}_{machine}")
    return tags


def wheel_machine() -> str:
    """This machine's architecture as wheels spell it (the image is built for it)."""
    architecture = debian_architecture()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(architecture)
    if machine is None:
        raise SystemExit(f"build.py: no manylinux wheels for Debian architecture {architecture!r}")
    return machine


def debian_architecture() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()


def fetch_wheels(wheels: Path) -> None:
    """The tether wheel of this checkout, the pinned wheels for bookworm's CPython, and a pip to install them
    with (run from its wheel inside the root, never installed). Downloaded here, with this machine's pip
    settings, so that the root installs offline."""
    pip = [sys.executable, "-m", "pip"]
    run([*pip, "wheel", "-q", "--no-deps", "--wheel-dir", wheels, clean_copy(wheels.parent / "src")])
    target = [f"--platform={tag}" for tag in wheel_platforms(wheel_machine())]
    target += ["--python-version", PYTHON_VERSION, "--implementation", "cp"]
    run([*pip, "download", "-q", "--no-deps", "--only-binary=:all:", *target, "--dest", wheels, "-r", REQUIREMENTS])
    run([*pip, "download", "-q", "--no-deps", "--only-binary=:all:", "--dest", wheels, "pip"])


def make_root(root: Path, mirror: str, epoch: int) -> None:
    options = [f"--dpkgopt=path-exclude={p}" for p in DPKG_EXCLUDES]
    options += [f"--dpkgopt=path-include={p}" for p in DPKG_INCLUDES]
    run(
        [
            "mmdebstrap",
            "--quiet",
            "--mode=root",
            "--variant=apt",
            "--format=directory",
            f"--include={','.join(DEBIAN_PACKAGES)}",
            *options,
            SUITE,
            root,
            mirror,
        ],
        env={**os.environ, "SOURCE_DATE_EPOCH": str(epoch)},
    )


def install_venv(root: Path, wheels: Path) -> None:
    staging = root / "tmp" / "tether-build"
    shutil.copytree(wheels, staging)
    shutil.copy2(REQUIREMENTS, staging)
    inside = Path("/tmp/tether-build")
    (tether,) = wheels.glob("tether-*.whl")
    (pip,) = wheels.glob("pip-*.whl")
    # Offline, and deaf to this machine's pip settings and variables (--isolated, a bare environment).
    env = CHROOT_ENV
    try:
        run(["chroot", root, "/usr/bin/python3", "-m", "venv", "--without-pip", VENV], env=env)
        run(
            [
                *("chroot", root, f"{VENV}/bin/python", inside / pip.name / "pip", "install", "--isolated"),
                *("--quiet", "--no-index", "--find-links", inside, "--no-deps", "--only-binary=:all:"),
                *("--no-cache-dir", "--disable-pip-version-check", "--root-user-action=ignore"),
                *("--requirement", inside / REQUIREMENTS.name, inside / tether.name),
            ],
            env=env,
        )
    finally:
        shutil.rmtree(staging)


#: What commands run in the root see of the environment: nothing of this machine's (PYTHONPATH, PIP_*).
CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LC_ALL": "C.UTF-8"}


def site_packages(root: Path) -> Path:
    return root / VENV.lstrip("/") / "lib" / f"python{PYTHON_VERSION}" / "site-packages"


def purge_debian_extras(root: Path) -> None:
    run(
        ["chroot", root, "apt-get", "purge", "--yes", "--quiet=2", *DEBIAN_PURGE],
        env={**CHROOT_ENV, "DEBIAN_FRONTEND": "noninteractive"},
    )


def prune_venv(root: Path) -> None:
    """The wheel holds all of Tether; the image runs only the manager and the agent. Of the pinned packages,
    what needs a package left out goes too."""
    for part in UNUSED_PARTS:
        shutil.rmtree(site_packages(root) / part)
    for path in (site_packages(root) / "tether").iterdir():
        if path.is_dir() and path.name not in (*KEPT_PACKAGES, "__pycache__"):
            shutil.rmtree(path)
    for script in (root / VENV.lstrip("/") / "bin").glob("tether*"):
        if script.name not in SCRIPTS:
            script.unlink()


def add_user(root: Path) -> None:
    passwd, group = account_lines()
    with (root / "etc" / "passwd").open("a") as f:
        f.write(passwd)
    with (root / "etc" / "group").open("a") as f:
        f.write(group)


def strip_root(root: Path) -> None:
    """What a container never reads: device nodes (the runtime mounts /dev), apt's lists and caches, logs."""
    for folder in ("dev", "var/cache/apt", "var/lib/apt/lists", "var/log", "tmp", "root"):
        for path in (root / folder).glob("*"):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    for leftover in ("etc/hostname", "etc/resolv.conf"):  # the runtime writes its own
        (root / leftover).unlink(missing_ok=True)


SMOKE = (
    "import importlib, pkgutil, tether.manager, tether.runtime, uvloop\n"
    "for pkg in (tether.manager, tether.runtime):\n"
    "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
    "        importlib.import_module(m.name)\n"
)


def smoke_test(root: Path) -> None:
    """Every manager and runtime module imports in the root, as the image's user: the pins are complete."""
    run(["chroot", f"--userspec={UID}:{UID}", root, f"{VENV}/bin/python", "-c", SMOKE], env=CHROOT_ENV)


def top_level_entries(root: Path) -> Iterator[str]:
    return iter(sorted(p.name for p in root.iterdir()))


def pack(root: Path, work: Path, spec: ImageSpec, outputs: Outputs) -> None:
    layer = work / "layer.tar"
    run(
        [
            "tar",
            "--create",
            f"--file={layer}",
            f"--directory={root}",
            "--numeric-owner",
            "--sort=name",
            "--xattrs",
            f"--mtime=@{spec.epoch}",
            "--clamp-mtime",
            *top_level_entries(root),
        ]
    )
    layout = work / "oci"
    image = f"{layout}:{spec.tag}"
    run(["umoci", "init", "--layout", layout])
    run(["umoci", "new", "--image", image])
    run(["umoci", "raw", "add-layer", "--image", image, "--history.created_by=packaging/image/build.py", layer])
    run(["umoci", "config", "--image", image, *image_config_args(spec)])
    run(["umoci", "gc", "--layout", layout])
    (layout / "index.json").chmod(0o644)  # umoci writes it 0600: the layout should be readable like its blobs
    layer.unlink()
    archive = work / outputs.docker_archive.name
    # A local copy between two files of ours: no registry, so no signature policy to consult.
    run(
        ["skopeo", "--insecure-policy", "copy", "--quiet", f"oci:{image}", f"docker-archive:{archive}:{spec.reference}"]
    )
    outputs.oci.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(outputs.oci, ignore_errors=True)
    shutil.move(layout, outputs.oci)
    shutil.move(archive, outputs.docker_archive)


def build(out: Path, mirror: str = MIRROR, workdir: Path | None = None) -> tuple[ImageSpec, Outputs]:
    spec = describe_checkout()
    outputs = Outputs.under(out, spec)
    with tempfile.TemporaryDirectory(prefix="tether-image-", dir=workdir) as tmp:
        work = Path(tmp)
        root = work / "root"
        steps: list[tuple[str, float]] = []
        started = time.monotonic()

        def step(name: str) -> None:
            nonlocal started
            steps.append((name, time.monotonic() - started))
            started = time.monotonic()

        fetch_wheels(work / "wheels")
        step("wheels")
        make_root(root, mirror, spec.epoch)
        purge_debian_extras(root)
        step("debian root (mmdebstrap)")
        install_venv(root, work / "wheels")
        prune_venv(root)
        add_user(root)
        strip_root(root)
        step("venv")
        smoke_test(root)
        step("import check")
        pack(root, work, spec, outputs)
        step("pack (tar, umoci, skopeo)")
    size = sum(layer_blob_sizes(outputs.oci, spec.tag))
    print(f"built {spec.reference} (revision {spec.revision})")
    print(f"  OCI layout:     {outputs.oci} (ref {spec.tag})")
    print(f"  docker-archive: {outputs.docker_archive} (`docker load -i` it)")
    print(f"  compressed size: {size / 1e6:.1f} MB")
    for name, seconds in steps:
        print(f"  {name}: {seconds:.0f} s")
    return spec, outputs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="build.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=CHECKOUT / "dist", help="where the image goes (default dist/)")
    parser.add_argument("--mirror", default=os.environ.get("DEBIAN_MIRROR", MIRROR), help="the Debian mirror")
    parser.add_argument("--workdir", type=Path, help="where to build the root (default: the system's temp dir)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("building the root needs root (mmdebstrap --mode=root, chroot)")
    build(args.out.resolve(), args.mirror, args.workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
