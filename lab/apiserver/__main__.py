"""``python -m tether.lab.apiserver``: the lab's Kubernetes API server as a process."""

import sys

from tether.lab.apiserver.main import main

sys.exit(main())
