"""The README's "Resolver modes" table names every mode the helper has (tether.helper.api.dnsmodes.Mode), once."""

from __future__ import annotations

from pathlib import Path

from tether.helper.api.dnsmodes import Mode

README = Path(__file__).resolve().parents[2] / "README.md"


def mode_rows(text: str) -> list[list[str]]:
    """The body rows of the first table under '### Resolver modes', as cells."""
    section = text.split("\n### Resolver modes\n", 1)[1]
    rows = []
    for line in section.splitlines():
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
        elif rows:
            break
    return rows[2:]  # the header and its --- line


def test_every_mode_has_one_row_with_when_what_and_undo() -> None:
    rows = mode_rows(README.read_text())
    assert sorted(row[0].strip("`") for row in rows) == sorted(mode.value for mode in Mode)
    assert all(len(row) == 4 and all(row) for row in rows), rows
