"""Every wheel Tether needs on 64-bit Windows with CPython 3.11, downloaded on Linux.

pip downloads win_amd64 wheels with ``--platform``, but it evaluates environment markers against the machine
it runs on: left to resolve dependencies itself it would fetch Linux-only ones (uvloop, SecretStorage) and miss
Windows-only ones (keyring's pywin32-ctypes). So the dependency walk is done here: each round downloads the
requirements known so far with ``--no-deps``, reads the downloaded wheels' Requires-Dist, keeps those whose
markers hold on Windows (``WINDOWS``), and repeats until nothing new appears.
"""

from __future__ import annotations

import email.parser
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

PYTHON_VERSION = "3.11"
# The marker variables of CPython 3.11 on 64-bit Windows 10 or later.
WINDOWS = {
    "os_name": "nt",
    "sys_platform": "win32",
    "platform_system": "Windows",
    "platform_machine": "AMD64",
    "platform_release": "10",
    "platform_python_implementation": "CPython",
    "implementation_name": "cpython",
    "python_version": PYTHON_VERSION,
    "python_full_version": f"{PYTHON_VERSION}.9",
    "implementation_version": f"{PYTHON_VERSION}.9",
}
PIP_TARGET = ("--platform", "win_amd64", "--python-version", PYTHON_VERSION, "--implementation", "cp")
PIP_TARGET += ("--abi", "cp311", "--only-binary=:all:")
MAX_ROUNDS = 20


def applies(requirement: Requirement, extras: Iterable[str] = ()) -> bool:
    """Whether ``requirement`` holds on Windows for a distribution installed with ``extras``."""
    if requirement.marker is None:
        return True
    marker: Marker = requirement.marker
    return any(marker.evaluate({**WINDOWS, "extra": extra}) for extra in ("", *extras))


def windows_requirements(requirements: Iterable[str]) -> list[Requirement]:
    """The requirements (strings, as in pyproject) that hold on Windows."""
    return [req for req in map(Requirement, requirements) if applies(req)]


def wheel_requires(wheel: Path) -> list[Requirement]:
    """The Requires-Dist of a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
        metadata = email.parser.Parser().parsestr(archive.read(name).decode())
    return [Requirement(line) for line in metadata.get_all("Requires-Dist") or []]


def wheel_name(wheel: Path) -> str:
    return canonicalize_name(parse_wheel_filename(wheel.name)[0])


def next_round(known: Sequence[Requirement], wheels: Iterable[Path]) -> list[Requirement]:
    """``known`` plus what the downloaded ``wheels`` require on Windows (with the extras asked of them)."""
    asked: dict[str, set[str]] = {}
    for req in known:
        asked.setdefault(canonicalize_name(req.name), set()).update(req.extras)
    wanted = list(known)
    seen = {str(req) for req in known}
    for wheel in wheels:
        for req in wheel_requires(wheel):
            if applies(req, asked.get(wheel_name(wheel), ())):
                req.marker = None  # evaluated here; pip would evaluate it against Linux
                if str(req) not in seen:
                    seen.add(str(req))
                    wanted.append(req)
    return wanted


def download(requirements: Sequence[Requirement], dest: Path) -> list[Path]:
    """The wheels for ``requirements`` (no dependencies followed) in ``dest``; pip's own cache makes repeats cheap."""
    dest.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(dest), *PIP_TARGET]
    subprocess.run([*command, *(str(req) for req in requirements)], check=True)
    return sorted(dest.glob("*.whl"))


def resolve(roots: Sequence[str], work: Path) -> list[Path]:
    """Download the closure of ``roots`` for Windows into ``work``/final; one wheel per distribution."""
    for stale in (work / "rounds", work / "final"):  # old versions would be read or bundled
        shutil.rmtree(stale, ignore_errors=True)
    known = windows_requirements(roots)
    for _ in range(MAX_ROUNDS):
        wheels = download(known, work / "rounds")
        wanted = next_round(known, wheels)
        if len(wanted) == len(known):
            break
        known = wanted
    else:
        raise RuntimeError(f"the dependencies did not settle in {MAX_ROUNDS} rounds: {[str(r) for r in known]}")
    # The rounds' folder may hold a version that a later round's constraint ruled out.
    final = download(known, work / "final")
    names = [wheel_name(wheel) for wheel in final]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise RuntimeError(f"{work / 'final'} holds several versions of {', '.join(duplicates)}")
    return final


def install(wheels: Sequence[Path], site_packages: Path) -> None:
    """Unpack ``wheels`` into ``site_packages`` as Windows' pip would, without byte code (the installer compiles
    it) and without the Linux console scripts pip writes here."""
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--no-index"]
    command += ["--target", str(site_packages), *PIP_TARGET]
    subprocess.run([*command, *(str(wheel) for wheel in wheels)], check=True)
    scripts = site_packages / "bin"
    if scripts.is_dir():
        for script in scripts.iterdir():
            script.unlink()
        scripts.rmdir()
