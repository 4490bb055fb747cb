"""``python -m tether.gui``: the tray app, as ``tether-tray``."""

import sys

from tether.gui.app import main

sys.exit(main())
