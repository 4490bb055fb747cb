"""packaging/payload.py: what every workstation package ships, read from the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath

import pytest

from tests.packaging_scripts import payload as payload_module

payload = payload_module()
ROOT = Path(__file__).resolve().parents[2]


def test_commands_are_the_workstation_entry_points_of_pyproject():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    commands = {item.destination.name: item.source for item in payload.payload(ROOT) if item.kind == "command"}
    assert commands == {name: scripts[name] for name in ("tether", "tether-tray", "tether-helper")}
    assert set(payload.ON_PATH) | {payload.SERVICE_COMMAND} == set(commands)


def test_chart_and_icons_are_every_file_of_theirs():
    items = payload.payload(ROOT)
    chart = {item.destination for item in items if item.kind == "chart"}
    expected = {
        PurePosixPath("share/helm/tether-manager", p.relative_to(ROOT / "packaging/helm/tether-manager").as_posix())
        for p in (ROOT / "packaging/helm/tether-manager").rglob("*")
        if p.is_file()
    }
    assert chart == expected
    assert PurePosixPath("share/helm/tether-manager/templates/deployment.yaml") in chart
    icons = {item.destination.name for item in items if item.kind == "icon"}
    assert icons == {p.name for p in (ROOT / "resources/icons").glob("*.svg")}
    assert "connected.svg" in icons
    assert items == sorted(items)


def _checkout(tmp_path: Path, scripts: str) -> Path:
    (tmp_path / "pyproject.toml").write_text(f"[project.scripts]\n{scripts}")
    (tmp_path / "packaging/helm/tether-manager").mkdir(parents=True)
    (tmp_path / "packaging/helm/tether-manager/Chart.yaml").write_text("name: tether-manager\n")
    (tmp_path / "resources/icons").mkdir(parents=True)
    (tmp_path / "resources/icons/a.svg").write_text("<svg/>")
    return tmp_path


GOOD_SCRIPTS = 'tether = "a.b:main"\ntether-tray = "c:main"\ntether-helper = "d:run"\n'


def test_completions_ship_when_the_checkout_has_them(tmp_path):
    checkout = _checkout(tmp_path, GOOD_SCRIPTS)
    assert not [item for item in payload.payload(checkout) if item.kind == "completion"]
    (checkout / "packaging/completions/bash").mkdir(parents=True)
    (checkout / "packaging/completions/bash/tether").write_text("complete -F _tether tether\n")
    completions = [item for item in payload.payload(checkout) if item.kind == "completion"]
    assert completions == [
        payload.Item(PurePosixPath("share/completions/bash/tether"), "completion", "packaging/completions/bash/tether")
    ]


def test_a_missing_or_malformed_entry_point_is_named(tmp_path):
    with pytest.raises(payload.PayloadError, match="lacks tether-tray, tether-helper"):
        payload.payload(_checkout(tmp_path, 'tether = "a:main"\n'))
    with pytest.raises(payload.PayloadError, match='tether-helper = "d" is not'):
        payload.entry_points('[project.scripts]\ntether = "a:m"\ntether-tray = "c:m"\ntether-helper = "d"\n')


def test_a_checkout_without_chart_or_icons_is_refused(tmp_path):
    checkout = _checkout(tmp_path, GOOD_SCRIPTS)
    (checkout / "resources/icons/a.svg").unlink()
    with pytest.raises(payload.PayloadError, match="no tray icons"):
        payload.payload(checkout)
    (checkout / "packaging/helm/tether-manager/Chart.yaml").unlink()
    with pytest.raises(payload.PayloadError, match="no Helm chart"):
        payload.payload(checkout)


@pytest.mark.skipif(sys.platform == "win32", reason="a launcher is a script with a shebang")
def test_launcher_runs_the_entry_point_isolated_from_pythonpath(tmp_path):
    script = tmp_path / "bin" / "pretty"
    script.parent.mkdir()
    script.write_text(payload.launcher("json.tool:main", PurePosixPath(sys.executable)))
    script.chmod(0o755)
    # A package on PYTHONPATH would shadow the standard library's without -I.
    shadow = tmp_path / "shadow" / "json"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    (shadow / "tool.py").write_text("def main():\n    print('shadowed')\n")
    env = {**os.environ, "PYTHONPATH": str(shadow.parent)}
    result = subprocess.run(
        [script, "--sort-keys"], input='{"b": 1, "a": 2}', capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == '{\n    "a": 2,\n    "b": 1\n}\n'


def test_requirements_are_the_dependencies_and_the_packaged_extras():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = payload.requirements((ROOT / "pyproject.toml").read_text())
    assert required == [*pyproject["dependencies"], *pyproject["optional-dependencies"]["chart"]]
    assert not set(pyproject["optional-dependencies"]["dev"]) & set(required)
    with pytest.raises(payload.PayloadError, match="optional-dependencies] lacks chart"):
        payload.requirements('[project]\ndependencies = ["a"]\n[project.optional-dependencies]\nlab = ["b"]\n')
