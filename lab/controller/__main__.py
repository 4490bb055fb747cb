"""``python -m tether.lab.controller``."""

import sys

from tether.lab.controller.main import main

sys.exit(main())
