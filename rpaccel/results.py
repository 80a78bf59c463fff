"""Measured figures in ``docs/results.md``: each section is written by the command that measured it.

A section sits between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` markers and starts with the date and the
exact command that produced it; rerunning the command replaces the section and leaves the rest of the file alone.
"""

import datetime
import re
import shlex
import sys
from pathlib import Path

__all__ = ["RESULTS_FILE", "format_table", "invocation", "write_section"]

#: Default results file, relative to the working directory (the repository root when run from there).
RESULTS_FILE = Path("docs") / "results.md"


def invocation(argv=None):
    """The command line as a user would type it (``rpaccel ...``)."""
    argv = sys.argv[1:] if argv is None else argv
    return shlex.join(["rpaccel", *argv])


def format_table(headers, rows):
    """A Markdown table; numbers are right-aligned, floats shown with 3 significant digits (one decimal from 100)."""

    def cell(value):
        if isinstance(value, float):
            if value.is_integer() and abs(value) < 1e15:
                return f"{int(value):,}"
            return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.1f}"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return "" if value is None else str(value)

    aligns = ["---:" if rows and all(isinstance(r[i], (int, float)) and not isinstance(r[i], bool)
                                       for r in rows if r[i] is not None) else "---"
              for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(aligns) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name, title, body, *, command=None, path=RESULTS_FILE, today=None):
    """Write (or replace) the section ``name`` of the results file.

    Parameters
    ----------
    name : str
        Marker name of the section (letters, digits, dashes).
    title : str
        Heading of the section.
    body : str
        Markdown content (tables, notes).
    command : str, optional
        The command that produced it (default: this process's command line).
    path : path-like
        The results file.
    today : datetime.date, optional
        Date to record (default: today).
    """
    if not re.fullmatch(r"[A-Za-z0-9-]+", name):
        raise ValueError(f"Results section name must be letters, digits and dashes, not {name!r}")
    path = Path(path)
    date = (today or datetime.date.today()).isoformat()
    command = command or invocation()
    block = (f"<!-- BEGIN {name} -->\n## {title}\n\nMeasured {date} with `{command}`.\n\n{body.strip()}\n"
             f"<!-- END {name} -->")
    text = path.read_text() if path.exists() else "# Results\n"
    pattern = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
