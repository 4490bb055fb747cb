"""The installed PySide6 must not leak references to None/True on signal emission.

PySide6 6.12.0 under Python 3.11 drops one reference to ``None`` per emit; the tray, fed thousands of state
updates, then aborts with "deallocating None". pyproject pins a version without the bug; this catches a
regression of the pin (or of PySide6) in a child process, since the failure is a hard abort.
"""

import subprocess
import sys

SCRIPT = """
import sys
from PySide6.QtCore import QCoreApplication, QObject, Signal

class Source(QObject):
    changed = Signal(object)

app = QCoreApplication([])
source = Source()
seen = []
source.changed.connect(lambda value: seen.append(value))
before = sys.getrefcount(None)
for i in range(3000):
    source.changed.emit(None)
print(len(seen), sys.getrefcount(None) - before)
"""


def test_emitting_keeps_none_alive():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    calls, drift = map(int, done.stdout.split())
    assert calls == 3000
    assert drift >= 0  # slots may hold references; what must never happen is losing them
