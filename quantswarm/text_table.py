"""Rows of dicts as an aligned plain-text table (CLI output of every job)."""

from __future__ import annotations


def format_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """Rows as an aligned plain-text table: a header, a rule, one line per row."""
    if not rows:
        return "(nothing)"
    cols = columns or list(rows[0])
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols), "  ".join("-" * widths[c] for c in cols)]
    lines += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def markdown_table(rows: list[dict], columns: list[str] | None = None, empty: str = "(nothing)") -> str:
    """Rows as a Markdown table (reports of every job), ``empty`` when there are none."""
    if not rows:
        return empty + "\n"
    cols = columns or list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"
