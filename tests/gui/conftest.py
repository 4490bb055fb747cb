"""pytest-qt tests of the tray app: offscreen Qt, no display and no tray host needed."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
