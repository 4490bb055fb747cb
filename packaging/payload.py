"""What every workstation package of Tether ships (pure): its commands, the traffic-manager chart, the tray's icons
and shell completions, each with its place under the install root, and the Python requirements installed with it.

The Linux, macOS and Windows builds lay these out for their OS and their tests check the layout against this one
list, so that no package quietly ships less than another. Read it from a checkout:

    items = payload(Path("."))      # every Item, sorted by destination
    roots = requirements(Path("pyproject.toml").read_text())     # what pip installs beside tether

It is loaded by file path (tests/payload_module.py), never as ``packaging.payload``: PyPI's ``packaging`` owns that
name in every environment that has pip.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

#: Where the Linux and macOS packages put Tether and its private Python runtime (no spaces: shebangs and
#: shell scripts take it unquoted).
INSTALL_ROOT = PurePosixPath("/opt/tether")
#: The workstation's commands, as named in pyproject [project.scripts]; tether-manager and tether-agent run in
#: the cluster (from the image, packaging/image) and are left out.
COMMANDS = ("tether", "tether-tray", "tether-helper")
#: Commands users type; tether-helper is started by the service manager (or `tether helper start`).
ON_PATH = ("tether", "tether-tray")
SERVICE_COMMAND = "tether-helper"
CHART_DIR = PurePosixPath("packaging/helm/tether-manager")
ICON_DIR = PurePosixPath("resources/icons")
#: Shell completions, when the checkout has them: <shell>/<file> beneath this folder (e.g. bash/tether).
COMPLETION_DIR = PurePosixPath("packaging/completions")
#: pyproject's optional-dependency groups every package installs with Tether: `chart` renders the
#: traffic-manager's chart (Helm embedded), so that `tether manager install` needs nothing else.
EXTRAS = ("chart",)


class PayloadError(ValueError):
    """The checkout lacks something every package must ship; the message names it."""


@dataclass(frozen=True, order=True)
class Item:
    """One file of the payload.

    ``kind`` is command, chart, icon or completion; ``destination`` is relative to ``INSTALL_ROOT``; ``source``
    is relative to the checkout (for a command, the entry point ``module:function`` its launcher calls)."""

    destination: PurePosixPath
    kind: str
    source: str


def entry_points(pyproject_text: str) -> dict[str, str]:
    """The workstation's commands -> their ``module:function``, from pyproject.toml's [project.scripts]."""
    scripts = tomllib.loads(pyproject_text).get("project", {}).get("scripts", {})
    missing = [name for name in COMMANDS if name not in scripts]
    if missing:
        raise PayloadError(f"pyproject [project.scripts] lacks {', '.join(missing)}")
    for name in COMMANDS:
        module, _, function = scripts[name].partition(":")
        if not module or not function:
            raise PayloadError(f'entry point {name} = "{scripts[name]}" is not "module:function"')
    return {name: scripts[name] for name in COMMANDS}


def requirements(pyproject_text: str) -> list[str]:
    """The Python requirements every package installs with tether (as pyproject spells them, markers kept):
    [project] dependencies and those of ``EXTRAS``."""
    project = tomllib.loads(pyproject_text).get("project", {})
    groups = project.get("optional-dependencies", {})
    missing = [extra for extra in EXTRAS if extra not in groups]
    if missing:
        raise PayloadError(f"pyproject [project.optional-dependencies] lacks {', '.join(missing)}")
    return [*project.get("dependencies", []), *(req for extra in EXTRAS for req in groups[extra])]


def _files(checkout: Path, folder: PurePosixPath, pattern: str) -> list[PurePosixPath]:
    base = checkout / folder
    return sorted(PurePosixPath(p.relative_to(checkout).as_posix()) for p in base.rglob(pattern) if p.is_file())


def payload(checkout: Path) -> list[Item]:
    """Every item a package of the checkout at ``checkout`` ships, sorted by destination."""
    items = [
        Item(PurePosixPath("bin", name), "command", target)
        for name, target in entry_points((checkout / "pyproject.toml").read_text()).items()
    ]
    chart = _files(checkout, CHART_DIR, "*")
    if not any(path.name == "Chart.yaml" for path in chart):
        raise PayloadError(f"no Helm chart in {checkout / CHART_DIR}")
    items += [Item(PurePosixPath("share/helm", *p.parts[2:]), "chart", str(p)) for p in chart]
    icons = _files(checkout, ICON_DIR, "*.svg")
    if not icons:
        raise PayloadError(f"no tray icons (*.svg) in {checkout / ICON_DIR}")
    items += [Item(PurePosixPath("share/icons", p.name), "icon", str(p)) for p in icons]
    items += [
        Item(PurePosixPath("share/completions", *p.parts[2:]), "completion", str(p))
        for p in _files(checkout, COMPLETION_DIR, "*")
    ]
    return sorted(items)


def launcher(entry_point: str, python: PurePosixPath) -> str:
    """A command's launcher script: ``python`` in isolated mode (-I: no PYTHONPATH, no user site, which matters
    for a daemon run as root) calling the entry point; argv[0] stays the command's own path."""
    module, _, function = entry_point.partition(":")
    return f"#!{python} -I\nimport sys\n\nfrom {module} import {function}\n\nsys.exit({function}())\n"
