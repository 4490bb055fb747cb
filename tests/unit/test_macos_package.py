"""packaging/macos: the launchd plists, the installer scripts, distribution.xml and the staged layout.

A .pkg is built on macOS only (CI's macOS job); here every part that does not need pkgbuild is checked: the
plists against the helper's own argument parser and socket path, the scripts with bash -n and shellcheck, the
distribution's version and architecture checks, and the staged files against packaging/payload.py.
"""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path, PurePosixPath

import pytest

from tests.packaging_scripts import load, payload
from tether.gui.autostart import LaunchAgentAutostart
from tether.helper.api.paths import DEFAULT_GROUP, platform_socket
from tether.helper.root.daemon import build_parser

# The layout's links, modes and shell scripts are POSIX things (CI's Windows job runs tests/unit too).
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the macOS layout is checked on POSIX systems")
build = load("macos/build.py", "tether_macos_build")
payload_module = payload()
ROOT = Path(__file__).resolve().parents[2]
MACOS = ROOT / "packaging" / "macos"
SCRIPTS = [MACOS / "scripts" / "preinstall", MACOS / "scripts" / "postinstall", MACOS / "uninstall.sh"]
BIN = payload_module.INSTALL_ROOT / "bin"


def read_plist(name: str) -> dict:
    with (MACOS / name).open("rb") as stream:
        return plistlib.load(stream)


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> tuple[Path, list[PurePosixPath]]:
    root = tmp_path_factory.mktemp("root")
    return root, build.stage(root)


def test_daemon_runs_the_staged_helper_with_the_sockets_group(staged):
    daemon = read_plist(build.DAEMON_PLIST)
    program, *arguments = daemon["ProgramArguments"]
    assert daemon["Label"] == "dev.tether.helper"
    assert PurePosixPath(program) == BIN / payload_module.SERVICE_COMMAND
    assert PurePosixPath(program) in staged[1]
    # The helper's own parser takes the arguments, and they name the macOS socket and the tether group.
    args = build_parser().parse_args(arguments)
    assert args.group == DEFAULT_GROUP
    assert args.socket == platform_socket("darwin")
    assert daemon["RunAtLoad"] is True
    assert daemon["KeepAlive"] == {"SuccessfulExit": False}
    assert daemon["UserName"] == "root"
    assert "/usr/sbin" in daemon["EnvironmentVariables"]["PATH"].split(":")
    assert daemon["StandardErrorPath"] == daemon["StandardOutPath"] == "/Library/Logs/Tether/helper.log"
    assert "/Library/Logs/Tether/helper.log" in (MACOS / "newsyslog-tether.conf").read_text()


def test_tray_agent_is_the_one_the_trays_start_at_login_setting_writes(staged):
    agent = read_plist(build.AGENT_PLIST)
    tray = str(BIN / "tether-tray")
    assert agent == LaunchAgentAutostart(command=[tray]).agent()
    assert PurePosixPath(tray) in staged[1]
    # Shipped for the user to copy, never loaded for everyone: nothing goes to /Library/LaunchAgents.
    assert not [p for p in staged[1] if p.parts[1:3] == ("Library", "LaunchAgents")]


def test_staged_files_are_the_payload_plus_the_macos_parts(staged):
    root, paths = staged
    shared = {payload_module.INSTALL_ROOT / item.destination for item in payload_module.payload(ROOT)}
    macos = {
        PurePosixPath("/Library/LaunchDaemons/dev.tether.helper.plist"),
        PurePosixPath("/opt/tether/share/launchd/dev.tether.tray.plist"),
        PurePosixPath("/opt/tether/uninstall.sh"),
        PurePosixPath("/private/etc/newsyslog.d/tether.conf"),
        PurePosixPath("/usr/local/bin/tether"),
        PurePosixPath("/usr/local/bin/tether-tray"),
    }
    assert set(paths) == shared | macos
    on_disk = {PurePosixPath("/", p.relative_to(root).as_posix()) for p in root.rglob("*") if not p.is_dir()}
    assert on_disk == set(paths)
    for name in payload_module.ON_PATH:
        link = root / "usr/local/bin" / name
        assert link.is_symlink() and PurePosixPath(os.readlink(link)) == BIN / name
    for item in payload_module.payload(ROOT):
        target = root / payload_module.INSTALL_ROOT.relative_to("/") / item.destination
        if item.kind == "command":
            module, _, function = item.source.partition(":")
            text = target.read_text()
            assert text.startswith(f"#!{build.PYTHON} -I\n") and f"from {module} import {function}\n" in text
            assert os.access(target, os.X_OK)
        else:
            assert target.read_bytes() == (ROOT / item.source).read_bytes()


def test_uninstall_removes_every_staged_path_and_what_the_helper_makes(staged):
    text = (MACOS / "uninstall.sh").read_text()
    outside = {p for p in staged[1] if not p.is_relative_to(payload_module.INSTALL_ROOT)}
    for path in outside - {PurePosixPath("/usr/local/bin", n) for n in payload_module.ON_PATH}:
        assert str(path).replace("dev.tether.helper", "${LABEL}") in text, path
    for name in payload_module.ON_PATH:
        assert f"/usr/local/bin/{name}" in text
    assert "ROOT=/opt/tether" in text and 'rm -rf "$ROOT"' in text
    daemon = build_parser().parse_args(read_plist(build.DAEMON_PLIST)["ProgramArguments"][1:])
    for made in (daemon.state_dir, daemon.socket.parent, Path("/Library/Logs/Tether")):
        assert str(made) in text, made
    assert f"pkgutil --forget {build.IDENTIFIER}" in text
    assert 'dscl . -delete "/Groups/${GROUP}"' in text and "GROUP=tether" in text
    # cleanup runs while the files are there, after the daemon is stopped
    stop, cleanup = text.index('launchctl bootout "system/${LABEL}"'), text.index('/bin/tether" helper cleanup')
    assert stop < cleanup < text.index("rm -rf")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse_and_pass_shellcheck(script):
    assert os.access(script, os.X_OK), f"{script} is not executable (pkgbuild runs the scripts as they are)"
    subprocess.run(["bash", "-n", script], check=True, timeout=30)
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: run `make deps` (it is in the Makefile's APT_PACKAGES)"
    result = subprocess.run([shellcheck, "--severity=style", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


def test_scripts_folder_holds_only_the_installer_scripts():
    assert sorted(p.name for p in (MACOS / "scripts").iterdir()) == ["postinstall", "preinstall"]
    preinstall = (MACOS / "scripts" / "preinstall").read_text()
    assert f"MIN_MACOS={build.MIN_MACOS.split('.')[0]}\n" in preinstall
    assert "dscl . -create" in preinstall
    postinstall = (MACOS / "scripts" / "postinstall").read_text()
    assert 'launchctl bootstrap system "$PLIST"' in postinstall
    assert "PLIST=/Library/LaunchDaemons/${LABEL}.plist" in postinstall


@pytest.mark.parametrize("arch", ["arm64", "x86_64"])
def test_distribution_refuses_other_macos_versions_and_architectures(arch):
    tree = ET.fromstring(build.distribution("1.2.3", arch, "tether-component.pkg"))
    assert tree.find("options").get("hostArchitectures") == arch
    assert [v.get("min") for v in tree.iter("os-version")] == [build.MIN_MACOS]
    check = tree.find("installation-check").get("script")
    script = tree.find("script").text
    assert check == "tether_supported()" and "function tether_supported()" in script
    assert f"'{build.MIN_MACOS}') < 0" in script and f"'{arch}' == 'arm64'" in script
    assert "my.result.type = 'Fatal'" in script
    ref = tree.find("pkg-ref")
    assert (ref.get("id"), ref.get("version"), ref.text) == (build.IDENTIFIER, "1.2.3", "tether-component.pkg")
    assert tree.find("choice/pkg-ref").get("id") == build.IDENTIFIER
    assert "@" not in ET.tostring(tree, encoding="unicode")


def test_distribution_refuses_an_unknown_architecture():
    with pytest.raises(build.BuildError, match='"ppc" is not one of arm64, x86_64'):
        build.distribution("1.2.3", "ppc", "c.pkg")


def test_build_commands():
    assert build.pkgbuild_command(Path("/w/root"), "1.2.3", Path("/w/c/tether-component.pkg")) == [
        "pkgbuild", "--root", "/w/root", "--identifier", "dev.tether.pkg", "--version", "1.2.3",
        "--scripts", str(MACOS / "scripts"), "--install-location", "/", "--ownership", "recommended",
        "/w/c/tether-component.pkg",
    ]  # fmt: skip
    unsigned = build.productbuild_command(Path("/w/d.xml"), Path("/w/c"), Path("/o/t.pkg"), None)
    assert unsigned == ["productbuild", "--distribution", "/w/d.xml", "--package-path", "/w/c", "/o/t.pkg"]
    signed = build.productbuild_command(Path("/w/d.xml"), Path("/w/c"), Path("/o/t.pkg"), "Developer ID Installer: X")
    assert signed[-3:] == ["--sign", "Developer ID Installer: X", "/o/t.pkg"]
    assert build.package_name("1.2.3", "arm64") == "tether-1.2.3-macos-arm64.pkg"


TARBALL = Path("cpython-3.11.10+20241016-aarch64-apple-darwin-install_only.tar.gz")


def test_build_refuses_anywhere_but_a_mac_with_the_tools(capsys):
    with pytest.raises(build.BuildError, match=r"built on macOS only .*; this is Linux"):
        build.check_host("Linux", "x86_64", TARBALL)
    with pytest.raises(build.BuildError, match="pkgbuild, productbuild not found"):
        build.check_host("Darwin", "arm64", TARBALL, which=lambda tool: None)
    with pytest.raises(build.BuildError, match="not python-build-standalone's x86_64-apple-darwin"):
        build.check_host("Darwin", "x86_64", TARBALL, which=lambda tool: f"/usr/bin/{tool}")
    build.check_host("Darwin", "arm64", TARBALL, which=lambda tool: f"/usr/bin/{tool}")
    if os.uname().sysname != "Darwin":
        assert build.main(["--python-tarball", str(TARBALL)]) == 2
        assert "built on macOS only" in capsys.readouterr().err
