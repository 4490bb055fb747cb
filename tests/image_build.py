"""packaging/image/build.py as a module, for the tests of the image (unit and integration).

It cannot be imported by name: a `packaging` package of the project's would be shadowed by (or shadow) PyPI's
`packaging`, which pip, setuptools and pytest import.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[1] / "packaging" / "image" / "build.py"
NAME = "tether_image_build"


def image_build() -> ModuleType:
    if NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location(NAME, SCRIPT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[NAME] = module  # its dataclasses look their module up while being defined
        spec.loader.exec_module(module)
    return sys.modules[NAME]
