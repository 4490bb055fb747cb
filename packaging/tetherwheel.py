"""The tether wheel of a checkout, as every package that bundles a Python runtime installs it (Linux, Windows).

Built from a copy of the files git knows (tracked, or new and not ignored): a checkout's stale build/ folder,
which setuptools would otherwise pack along, never reaches a package.

    wheel = tether_wheel(checkout, work)     # work/tether-<version>-py3-none-any.whl
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def git_files(checkout: Path) -> list[str]:
    """The checkout's files as git sees them (ignored ones left out); [] outside a git checkout."""
    listed = subprocess.run(
        ["git", "-C", str(checkout), "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        capture_output=True,
        text=True,
    ).stdout
    return [name for name in listed.split("\0") if name and (checkout / name).is_file()]


def tether_wheel(checkout: Path, dest: Path) -> Path:
    """Build the wheel of ``checkout`` into ``dest`` (created) and return its path."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tether-wheel-src-") as tmp:
        source = Path(tmp)
        names = git_files(checkout)
        for name in names:
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(checkout / name, source / name)
        command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(dest)]
        subprocess.run([*command, str(source if names else checkout)], check=True)
    (wheel,) = dest.glob("tether-*.whl")
    return wheel
