"""Project hygiene: committed stubs match the protos; every package is shipped."""

import filecmp
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = {
    "gui": "tether.gui",
    "helper": "tether.helper",
    "manager": "tether.manager",
    "runtime": "tether.runtime",
    "lab": "tether.lab",
}


def test_generated_stubs_are_current(tmp_path):
    pytest.importorskip("grpc_tools")
    sys.path.insert(0, str(ROOT / "resources" / "proto"))
    try:
        import generate
    finally:
        sys.path.pop(0)
    written = generate.generate(tmp_path)
    assert written, "no .proto produced any stub"
    for fresh in written:
        committed = ROOT / fresh.relative_to(tmp_path)
        assert committed.exists(), f"{committed} is missing: run `make protos`"
        assert filecmp.cmp(fresh, committed, shallow=False), f"{committed} is stale: run `make protos`"


def test_every_python_package_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for folder, package in PACKAGE_DIRS.items():
        assert config["package-dir"][package] == folder
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            found.add(".".join([package, *relative.parts]))
    assert found == listed, (
        f"pyproject packages differ: missing {sorted(found - listed)}, extra {sorted(listed - found)}"
    )
