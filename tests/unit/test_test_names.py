"""The test files' names: pytest imports them by basename (rootdir mode, no packages), so two files with one name
in different folders break the collection of a whole `make test` while each folder alone passes."""

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_two_test_files_share_a_name():
    names = Counter(path.name for path in TESTS.rglob("test_*.py"))
    assert [name for name, count in names.items() if count > 1] == []
