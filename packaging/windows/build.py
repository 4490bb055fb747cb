"""`make package-windows`: Tether's Windows installer (NSIS), built on Linux from this checkout.

Two inputs cannot be had here and come from ``--input`` (default packaging/windows/input/):

    python-3.11.<n>-embed-amd64.zip  the CPython "embeddable package" for 64-bit Windows, from
                                     https://www.python.org/downloads/windows/ (e.g. .../ftp/python/3.11.9/)
    wintun.dll                       bin/amd64/wintun.dll from the zip at https://www.wintun.net

Everything else is built here: the tether wheel of this checkout, and every runtime dependency as a win_amd64
wheel for CPython 3.11 (wheels.py; pip's cache keeps repeats quick), installed into the runtime's
Lib/site-packages. The staged tree (python/ with wintun.dll beside python.exe, which runs the helper; bin/
with tether.cmd) becomes dist/tether-<version>-windows-x64-setup.exe through makensis and tether.nsi.
Code signing (sign.py) is on when TETHER_SIGN_PKCS12 names a certificate.

    python3 packaging/windows/build.py [--input DIR] [--out dist] [--work build/windows] [--fast]
                                   [--skip-without-inputs]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
# wheels and sign sit beside this script; payload (what every OS's package ships) and tetherwheel (the tether
# wheel) in packaging/, which is not a Python package.
sys.path[:0] = [str(HERE), str(HERE.parent)]

import payload  # noqa: E402
import sign  # noqa: E402
import tetherwheel  # noqa: E402
import wheels  # noqa: E402

CHECKOUT = HERE.parents[1]
SCRIPT = HERE / "tether.nsi"
EMBED_PATTERN = re.compile(r"python-3\.11\.\d+-embed-amd64\.zip")
WINTUN = "wintun.dll"
INPUT_HELP = (
    "python-3.11.<n>-embed-amd64.zip (https://www.python.org/downloads/windows/, 'Windows embeddable package "
    "(64-bit)') and wintun.dll (bin/amd64/wintun.dll from the zip at https://www.wintun.net)"
)
# The embeddable runtime ignores PYTHONPATH and site-packages unless its ._pth file names them.
PTH_NAME = "python311._pth"
PTH = "python311.zip\n.\nLib\\site-packages\nimport site\n"
TETHER_CMD = '@"%~dp0..\\python\\python.exe" -m tether.helper.user.cli.main %*\r\n'


class InputError(Exception):
    """An input is not what its name says, or the project cannot be packaged; the message names it."""


class MissingInputs(InputError):
    """The input folder lacks a file; the message names each and where it comes from."""


@dataclass(frozen=True)
class Inputs:
    embed_zip: Path
    wintun: Path


def find_inputs(folder: Path) -> Inputs:
    embeds = sorted(p for p in folder.glob("*.zip") if EMBED_PATTERN.fullmatch(p.name)) if folder.is_dir() else []
    missing = []
    if len(embeds) > 1:
        raise InputError(f"{folder} holds several CPython runtimes ({', '.join(p.name for p in embeds)}): keep one")
    if not embeds:
        missing.append("python-3.11.<n>-embed-amd64.zip")
    if not (folder / WINTUN).is_file():
        missing.append(WINTUN)
    if missing:
        raise MissingInputs(f"{folder} lacks {' and '.join(missing)}; it needs {INPUT_HELP}")
    return Inputs(embeds[0], folder / WINTUN)


def project() -> tuple[str, list[str]]:
    """This checkout's version (x.y.z, as the installer's version resource needs) and the requirements every
    package installs with tether (packaging/payload.py)."""
    text = (CHECKOUT / "pyproject.toml").read_text()
    version = tomllib.loads(text)["project"]["version"]
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise InputError(f"version {version!r} in pyproject.toml: the installer needs x.y.z")
    return version, payload.requirements(text)


def stage_runtime(inputs: Inputs, python_dir: Path) -> None:
    """The embeddable CPython, its ._pth rewritten to find site-packages, and Wintun beside python.exe."""
    with zipfile.ZipFile(inputs.embed_zip) as archive:
        names = set(archive.namelist())
        lacking = sorted({"python.exe", "pythonw.exe", "python311.dll"} - names)
        if lacking:
            raise InputError(f"{inputs.embed_zip} is not CPython's embeddable package: it lacks {', '.join(lacking)}")
        archive.extractall(python_dir)
    (python_dir / PTH_NAME).write_text(PTH.replace("\n", "\r\n"))
    shutil.copyfile(inputs.wintun, python_dir / WINTUN)


def tether_wheel(work: Path) -> Path:
    out = work / "tether-wheel"
    shutil.rmtree(out, ignore_errors=True)
    return tetherwheel.tether_wheel(CHECKOUT, out)


def makensis_command(
    version: str, stage: Path, outfile: Path, signing: sign.SigningConfig | None, fast: bool = False
) -> list[str]:
    """makensis with warnings as errors; ``fast``: zlib instead of solid LZMA (about 3 minutes here, ~60 MiB)."""
    command = ["makensis", "-V2", "-WX", f"-DVERSION={version}", f"-DSTAGE={stage}", f"-DOUTFILE={outfile}"]
    if fast:
        command.append("-DCOMPRESSOR=zlib")
    if signing is not None:
        command.append(f'-DSIGN_COMMAND="{sys.executable}" "{HERE / "sign.py"}"')
    return [*command, str(SCRIPT)]


def build(input_dir: Path, out: Path, work: Path, environ: dict[str, str], fast: bool = False) -> Path:
    inputs = find_inputs(input_dir)
    signing = sign.config_from(environ)  # before the long part: a wrong certificate path fails now
    version, dependencies = project()
    stage = work / "stage"
    shutil.rmtree(stage, ignore_errors=True)
    stage_runtime(inputs, stage / "python")
    bundle = [*wheels.resolve(dependencies, work / "wheels"), tether_wheel(work)]
    wheels.install(bundle, stage / "python" / "Lib" / "site-packages")
    (stage / "bin").mkdir()
    (stage / "bin" / "tether.cmd").write_text(TETHER_CMD, newline="")
    out.mkdir(parents=True, exist_ok=True)
    outfile = (out / f"tether-{version}-windows-x64-setup.exe").resolve()
    subprocess.run(makensis_command(version, stage.resolve(), outfile, signing, fast), check=True, env=environ)
    return outfile


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, default=HERE / "input", help=f"folder with {INPUT_HELP}")
    parser.add_argument("--out", type=Path, default=CHECKOUT / "dist")
    parser.add_argument("--work", type=Path, default=CHECKOUT / "build" / "windows", help="staging and wheel cache")
    parser.add_argument(
        "--skip-without-inputs", action="store_true", help="succeed without building when an input is missing"
    )
    parser.add_argument("--fast", action="store_true", help="compress with zlib: quicker, about half again larger")
    args = parser.parse_args(argv)
    try:
        outfile = build(args.input, args.out, args.work, dict(os.environ), args.fast)
    except InputError as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        if args.skip_without_inputs and isinstance(exc, MissingInputs):
            print("build.py: the Windows installer is skipped", file=sys.stderr)
            return 0
        return 2
    except ValueError as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 2
    print(f"{outfile} ({outfile.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
