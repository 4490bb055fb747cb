"""The Windows installer (packaging/windows/), built once here with stand-ins for the two inputs that cannot be had
on Linux (CPython's embeddable zip, wintun.dll), then opened with 7z; signing with a throw-away self-signed
certificate through osslsigncode. The build takes about 3 minutes here (the wheel download and makensis with
``--fast``), so it happens once for the module. Needs the network for PyPI (pip's cache makes repeats cheap).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

HERE = Path(__file__).resolve().parents[2] / "packaging" / "windows"
sys.path.insert(0, str(HERE))

import build  # noqa: E402
import sign  # noqa: E402
import wheels  # noqa: E402

RUNTIME = ("python.exe", "pythonw.exe", "python311.dll", "python311.zip", "python311._pth", "vcruntime140.dll")
TOOLS = ("makensis", "7z", "osslsigncode", "openssl")
pytestmark = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in TOOLS), reason=f"needs {', '.join(TOOLS)} (make deps)"
)


def stand_in_inputs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / "python-3.11.9-embed-amd64.zip", "w") as archive:
        for name in RUNTIME:
            archive.writestr(name, f"stand-in {name}\n")
    (folder / "wintun.dll").write_bytes(b"stand-in wintun.dll\n")
    return folder


@pytest.fixture(scope="module")
def installer(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("windows")
    inputs = stand_in_inputs(root / "input")
    work = build.CHECKOUT / "build" / "windows-test"
    environ = {key: value for key, value in build.os.environ.items() if not key.startswith("TETHER_SIGN_")}
    return build.build(inputs, root / "dist", work, environ, fast=True)


@pytest.fixture(scope="module")
def listing(installer) -> set[str]:
    out = subprocess.run(["7z", "l", "-slt", str(installer)], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"^Path = (.+)$", out, re.MULTILINE)[1:])  # the first is the archive itself


def test_the_installer_carries_the_runtime_wintun_beside_python_and_the_cli(installer, listing, tmp_path):
    assert installer.name == "tether-0.1.0-windows-x64-setup.exe"
    for name in RUNTIME:
        assert f"python/{name}" in listing
    assert {"python/wintun.dll", "bin/tether.cmd", "uninstall.exe"} <= listing
    subprocess.run(["7z", "x", f"-o{tmp_path}", str(installer), "python/*.dll", "python/*._pth", "bin/*"], check=True)
    assert (tmp_path / "python" / "wintun.dll").read_bytes() == b"stand-in wintun.dll\n"
    assert (tmp_path / "python" / "python311._pth").read_bytes().split(b"\r\n") == [
        b"python311.zip",
        b".",
        b"Lib\\site-packages",
        b"import site",
        b"",
    ]
    assert b'python.exe" -m tether.helper.user.cli.main %*' in (tmp_path / "bin" / "tether.cmd").read_bytes()


def test_every_windows_wheel_is_inside_and_no_linux_only_one(listing):
    site = "python/Lib/site-packages/"
    top = {path[len(site) :].split("/")[0] for path in listing if path.startswith(site)}
    assert {"tether", "grpc", "google", "kubernetes", "PySide6", "shiboken6", "yaml", "websockets", "keyring"} <= top
    assert "win32ctypes" in top  # keyring's Windows backend: a dependency only under sys_platform == "win32"
    assert "helm_python" in top  # the chart extra (packaging/payload.py): `tether manager install` needs no helm
    assert not {"uvloop", "dbus_fast", "secretstorage", "jeepney"} & top
    assert f"{site}tether/helper/root/winservice.py" in listing
    assert any(re.fullmatch(rf"{site}grpc/_cython/cygrpc\.cp311-win_amd64\.pyd", path) for path in listing)
    # No byte code of ours (the installer compiles it; PySide6's wheel ships two 3.10 files), no Linux scripts.
    assert not [path for path in listing if path.endswith(".cpython-311.pyc") or path.startswith(f"{site}bin/")]


def test_without_a_certificate_nothing_is_signed(installer):
    assert sign.config_from({}) is None
    assert not any("SIGN_COMMAND" in arg for arg in build.makensis_command("1.2.3", Path("/s"), Path("/o.exe"), None))
    result = subprocess.run(["osslsigncode", "verify", "-in", str(installer)], capture_output=True, text=True)
    assert result.returncode != 0 and "No signature found" in result.stdout + result.stderr


def test_with_a_certificate_the_hook_signs_the_installer(installer, tmp_path, monkeypatch):
    key, cert, p12, password = (tmp_path / name for name in ("key.pem", "cert.pem", "test.p12", "password"))
    request = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert]
    subprocess.run([*request, "-days", "1", "-subj", "/CN=Tether test signing"], check=True, capture_output=True)
    password.write_text("secret")
    subprocess.run(
        ["openssl", "pkcs12", "-export", "-inkey", key, "-in", cert, "-out", p12, "-passout", "pass:secret"],
        check=True,
    )
    environ = {sign.PKCS12_ENV: str(p12), sign.PASSWORD_ENV: str(password)}
    config = sign.config_from(environ)
    assert config is not None
    command = sign.sign_command(config, Path("in.exe"), Path("out.exe"))
    expected = ["osslsigncode", "sign", "-pkcs12", str(p12), "-readpass", str(password), "-h", "sha256"]
    assert command == [*expected, "-n", "Tether", "-in", "in.exe", "-out", "out.exe"]
    nsis = build.makensis_command("1.2.3", Path("/s"), Path("/o.exe"), config)
    assert f'-DSIGN_COMMAND="{sys.executable}" "{HERE / "sign.py"}"' in nsis  # !finalize and !uninstfinalize
    copy = tmp_path / "setup.exe"
    shutil.copyfile(installer, copy)
    for variable, value in environ.items():
        monkeypatch.setenv(variable, value)
    assert sign.main([str(copy)]) == 0
    verify = subprocess.run(["osslsigncode", "verify", "-in", str(copy)], capture_output=True, text=True)
    assert "Tether test signing" in verify.stdout + verify.stderr


def test_a_missing_certificate_file_is_named():
    with pytest.raises(ValueError, match=re.escape("TETHER_SIGN_PKCS12=/nonexistent.p12: no such file")):
        sign.config_from({sign.PKCS12_ENV: "/nonexistent.p12"})


def test_missing_inputs_are_named_with_where_they_come_from(tmp_path, capsys):
    assert build.main(["--input", str(tmp_path), "--out", str(tmp_path / "dist")]) == 2
    err = capsys.readouterr().err
    assert "lacks python-3.11.<n>-embed-amd64.zip and wintun.dll" in err and "https://www.wintun.net" in err
    assert build.main(["--input", str(tmp_path), "--skip-without-inputs"]) == 0
    assert "skipped" in capsys.readouterr().err


def test_a_zip_that_is_not_the_embeddable_runtime_is_refused(tmp_path):
    inputs = stand_in_inputs(tmp_path / "input")
    with zipfile.ZipFile(inputs / "python-3.11.9-embed-amd64.zip", "w") as archive:
        archive.writestr("README.txt", "not python")
    with pytest.raises(build.InputError, match=re.escape("lacks python.exe, python311.dll, pythonw.exe")):
        build.stage_runtime(build.find_inputs(inputs), tmp_path / "stage")


def test_markers_are_evaluated_for_windows_not_for_this_machine():
    assert wheels.applies(Requirement("pywin32-ctypes>=0.2; sys_platform == 'win32'"))
    assert not wheels.applies(Requirement("SecretStorage>=3.2; sys_platform == 'linux'"))
    assert not wheels.applies(Requirement("uvloop>=0.21; sys_platform != 'win32'"))
    assert wheels.applies(Requirement("PySocks; extra == 'socks'"), {"socks"})
    assert not wheels.applies(Requirement("PySocks; extra == 'socks'"))


def test_the_uninstaller_undoes_what_the_installer_adds():
    script = build.SCRIPT.read_text()
    install, uninstall = script.split('Section "Uninstall"')
    assert 'sc.exe" create ${SERVICE}' in install and "obj= LocalSystem" in install
    assert 'sc.exe" delete ${SERVICE}' in uninstall
    assert "localgroup ${GROUP} /add" in install and "localgroup ${GROUP} /delete" in uninstall
    for key in set(re.findall(r'WriteReg\w+ HKLM "(\$\{\w+\})"', install)):
        assert f'DeleteRegKey HKLM "{key}"' in uninstall
    assert 'WriteRegStr HKCU "${RUN_KEY}" "${RUN_VALUE}"' in install
    assert 'DeleteRegValue HKCU "${RUN_KEY}" "${RUN_VALUE}"' in uninstall
    assert 'RMDir /r "$SMPROGRAMS\\Tether"' in uninstall and 'RMDir /r "$APPDATA\\Tether"' in uninstall
    for check in ("${RunningX64}", "${IsNativeAMD64}", "${AtLeastWin10}"):
        assert f"${{IfNot}} {check}" in script
