"""Plain-text tables for the command line."""

from __future__ import annotations


def render_table(header: list[str], rows: list[list[str]]) -> str:
    """First column left-aligned, the others right-aligned, a rule under the header."""
    cells = [header, *rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
