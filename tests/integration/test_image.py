"""`make image` end to end, without the lab: the traffic-manager image is built into a temporary directory by
packaging/image/build.py (about two minutes here, mmdebstrap most of it; once for the module), unpacked with
umoci, and its entrypoints run inside the unpacked root with chroot as the user its configuration names.

Needs root (mmdebstrap's root mode, chroot), the network (deb.debian.org, PyPI) and mmdebstrap, umoci and skopeo
(`make deps`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.image_build import SCRIPT, image_build
from tether.manager.api.sidecar import DEFAULT_AGENT_IMAGE
from tether.manager.api.version import __version__, image_tag

build = image_build()
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="building the image needs root (mmdebstrap, chroot)")
TOOLS = ("mmdebstrap", "umoci", "skopeo", "chroot")
SIZE_LIMIT = 150_000_000  # bytes, compressed


@dataclass(frozen=True)
class Built:
    spec: Any  # build.ImageSpec
    oci: Path
    docker_archive: Path
    config: dict[str, Any]
    rootfs: Path

    def run(self, *args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
        """`args` in the unpacked root as the image's user (or `user`), with the image's environment only."""
        return subprocess.run(
            [
                *("chroot", f"--userspec={user or self.config['config']['User']}", self.rootfs),
                *("/usr/bin/env", "-i", *self.config["config"]["Env"], *args),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )

    @property
    def site_packages(self) -> Path:
        return build.site_packages(self.rootfs)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: `make deps` installs them")
    work = tmp_path_factory.mktemp("image")
    try:
        subprocess.run([sys.executable, SCRIPT, "--out", work / "dist", "--workdir", work], check=True, timeout=1500)
        spec = build.describe_checkout()
        outputs = build.Outputs.under(work / "dist", spec)
        bundle = work / "bundle"
        subprocess.run(
            ["umoci", "unpack", "--image", f"{outputs.oci}:{spec.tag}", bundle], check=True, capture_output=True
        )
        yield Built(
            spec=spec,
            oci=outputs.oci,
            docker_archive=outputs.docker_archive,
            config=build.image_config(outputs.oci, spec.tag),
            rootfs=bundle / "rootfs",
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the unpacked root and the image are a few hundred MB


def test_the_entrypoint_prints_tethers_version_as_a_user_that_is_not_root(image):
    user = image.config["config"]["User"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0, user
    passwd = {line.split(":")[2]: line.split(":")[0] for line in (image.rootfs / "etc/passwd").read_text().splitlines()}
    assert passwd[uid] == "tether"
    assert image.config["config"]["Entrypoint"] == ["tether-manager"]
    ran = image.run(*image.config["config"]["Entrypoint"], "--version")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == f"tether-manager {__version__}"
    whoami = image.run("/usr/bin/id", "-u")
    assert whoami.stdout.strip() == uid


def test_the_agent_runs_from_the_same_image(image):
    ran = image.run("tether-agent", "--version")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == f"tether-agent {__version__}"
    helped = image.run("tether-agent", "--help")
    assert helped.returncode == 0 and "--manager" in helped.stdout, helped.stderr


def test_every_manager_and_runtime_module_imports_in_the_image(image):
    ran = image.run("python3", "-c", build.SMOKE)
    assert ran.returncode == 0, ran.stderr
    probe = image.run("python3", "-c", "import uvloop, tether.runtime.eventloop as e; print(uvloop.__version__)")
    assert probe.stdout.strip() == next(
        p.version for p in build.read_pins(build.REQUIREMENTS.read_text()) if p.key == "uvloop"
    )


def test_the_labels_name_version_revision_and_source(image):
    labels = image.config["config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["org.opencontainers.image.title"] == "tether-manager"
    assert labels["org.opencontainers.image.revision"] == image.spec.revision
    assert labels["org.opencontainers.image.revision"].split("-")[0] == build.git("rev-parse", "HEAD")
    assert labels["org.opencontainers.image.source"]
    annotations = build.manifest(image.oci, image.spec.tag)["annotations"]
    assert {k: v for k, v in annotations.items() if k in labels} == labels


def test_the_tag_is_the_one_the_injector_names(image):
    assert image.spec.tag == image_tag(__version__)
    assert f"tether-manager:{image.spec.tag}" == DEFAULT_AGENT_IMAGE
    with tarfile.open(image.docker_archive) as archive:
        member = archive.extractfile("manifest.json")
        assert member is not None
        (entry,) = json.load(member)
    # skopeo writes the reference normalised; `docker load` lists it as tether-manager:<tag> all the same
    assert entry["RepoTags"] == [f"docker.io/library/{DEFAULT_AGENT_IMAGE}"]


def test_the_venv_holds_the_pins_and_tether_only(image):
    installed = {
        build.canonical(path.name.removesuffix(".dist-info").rpartition("-")[0]): path.name
        for path in image.site_packages.glob("*.dist-info")
    }
    pinned = {pin.key for pin in build.read_pins(build.REQUIREMENTS.read_text())}
    assert set(installed) == pinned | {"tether"}
    for absent in ("pyside6", "pyside6-essentials", "shiboken6", "kmock", "aiohttp", "pyroute2", "pip", "setuptools"):
        assert absent not in installed
    assert sorted(p.name for p in (image.site_packages / "tether").iterdir() if p.name != "__pycache__") == [
        "manager",
        "runtime",
    ]
    scripts = {p.name for p in (image.rootfs / build.VENV.lstrip("/") / "bin").glob("tether*")}
    assert scripts == {"tether-manager", "tether-agent"}
    assert not (image.site_packages / "kubernetes" / "aio").exists()


def test_the_image_is_small(image):
    compressed = sum(build.layer_blob_sizes(image.oci, image.spec.tag))
    unpacked = subprocess.run(["du", "-sb", image.rootfs], capture_output=True, text=True).stdout.split()[0]
    print(
        f"\nimage {image.spec.reference}: {compressed / 1e6:.1f} MB compressed, {int(unpacked) / 1e6:.0f} MB unpacked"
    )
    assert compressed < SIZE_LIMIT
    assert not list((image.rootfs / "usr/share/man").glob("*")), "man pages in the image"
    assert not list((image.rootfs / "var/lib/apt/lists").glob("*Packages*")), "apt lists in the image"
    status = (image.rootfs / "var/lib/dpkg/status").read_text()
    packages = {line.removeprefix("Package: ") for line in status.splitlines() if line.startswith("Package: ")}
    assert "python3" in packages
    assert not packages & set(build.DEBIAN_PURGE), "perl (beyond the essential perl-base) in the image"
