""".github/workflows/packages.yml: the macOS and Windows jobs build their package and run the unit tests there.

GitHub runs it, not `make test`; this checks its shape, so that a rename here does not silently break it."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = yaml.safe_load((ROOT / ".github" / "workflows" / "packages.yml").read_text())


def _commands(job: dict) -> list[list[str]]:
    """Every shell command of the job's run steps, split into words."""
    lines = [line for step in job["steps"] if "run" in step for line in step["run"].splitlines()]
    return [shlex.split(line) for line in lines if line.strip()]


def test_triggers_and_jobs():
    # YAML 1.1 reads the bare key `on` as True.
    triggers = WORKFLOW.get("on", WORKFLOW.get(True))
    assert {"push", "pull_request", "workflow_dispatch"} <= set(triggers)
    assert {name: job["runs-on"] for name, job in WORKFLOW["jobs"].items()} == {
        "macos": "macos-latest",
        "windows": "windows-latest",
    }


def test_each_job_sets_up_python_311_installs_dev_and_runs_the_unit_tests():
    for name, job in WORKFLOW["jobs"].items():
        uses = [step.get("uses", "") for step in job["steps"]]
        assert uses[0].startswith("actions/checkout@"), name
        setup = next(step for step in job["steps"] if step.get("uses", "").startswith("actions/setup-python@"))
        assert str(setup["with"]["python-version"]) == "3.11", name
        commands = _commands(job)
        install = commands.index(["python", "-m", "pip", "install", "-e", ".[dev]"])
        test = next(i for i, c in enumerate(commands) if c[:3] == ["python", "-m", "pytest"] and "tests/unit" in c)
        assert install < test, name
        assert any(u.startswith("actions/upload-artifact@") for u in uses), name


def test_the_macos_job_builds_the_pkg_with_a_runtime_for_its_architecture():
    commands = _commands(WORKFLOW["jobs"]["macos"])
    build = next(c for c in commands if c[:2] == ["python", "packaging/macos/build.py"])
    assert (ROOT / build[1]).is_file()
    tarball = build[build.index("--python-tarball") + 1]
    download = next(c for c in commands if c[0] == "curl")
    assert download[download.index("-o") + 1] == tarball
    # what build.check_host demands of the tarball's name on an arm64 runner
    assert "aarch64-apple-darwin" in tarball and "install_only" in tarball
    assert "aarch64-apple-darwin-install_only" in WORKFLOW["jobs"]["macos"]["env"]["PYTHON_RUNTIME"]
    assert ["brew", "install", "shellcheck"] in commands  # test_macos_package runs it


def test_the_windows_job_builds_with_the_windows_build_script():
    commands = _commands(WORKFLOW["jobs"]["windows"])
    assert any(c[:2] == ["python", "packaging/windows/build.py"] for c in commands)
