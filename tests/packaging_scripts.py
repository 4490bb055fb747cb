"""The packaging scripts (packaging/*/...py) as modules, for their tests.

They cannot be imported by name: a `packaging` package of the project's would be shadowed by (or shadow) PyPI's
`packaging`, which pip, setuptools and pytest import.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PACKAGING = Path(__file__).resolve().parents[1] / "packaging"


def load(relative: str, name: str) -> ModuleType:
    """packaging/<relative> as module ``name`` (loaded once)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, PACKAGING / relative)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while being defined
        spec.loader.exec_module(module)
    return sys.modules[name]


def payload() -> ModuleType:
    return load("payload.py", "tether_payload")
