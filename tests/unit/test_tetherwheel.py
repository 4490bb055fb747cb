"""packaging/tetherwheel.py: the tether wheel is built from the files git knows, never from a stale build/."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.packaging_scripts import load

tetherwheel = load("tetherwheel.py", "tether_tetherwheel")


def git(checkout: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(checkout), *args], check=True, capture_output=True)


def test_git_files_leave_out_what_git_ignores(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / ".gitignore").write_text("build/\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "kept.py").write_text("")
    (tmp_path / "build" / "lib" / "pkg").mkdir(parents=True)
    (tmp_path / "build" / "lib" / "pkg" / "deleted_long_ago.py").write_text("")
    git(tmp_path, "add", ".gitignore")
    (tmp_path / "new.txt").write_text("not added yet, not ignored\n")
    assert sorted(tetherwheel.git_files(tmp_path)) == [".gitignore", "new.txt", "pkg/kept.py"]


def test_outside_git_there_is_no_list(tmp_path: Path) -> None:
    assert tetherwheel.git_files(tmp_path) == []
