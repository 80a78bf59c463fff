"""Measured figures in ``docs/results.md``: each section is written by the command that measured it.

A section sits between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` markers and starts with the date, the
commit (``git rev-parse --short HEAD``, ``+dirty`` when the working tree has changes) and the exact command that
produced it; rerunning the command replaces the section and leaves the rest of the file alone. The file opens
with a status table generated from the sections (:data:`HEADLINES`: each headline figure, its target and whether
it is met), rewritten whenever a section is.
"""

import datetime
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HEADLINES", "RESULTS_FILE", "Headline", "format_table", "git_commit", "invocation", "read_sections",
           "status_table", "write_section", "write_status"]

#: Default results file, relative to the working directory (the repository root when run from there).
RESULTS_FILE = Path("docs") / "results.md"


def invocation(argv=None):
    """The command line as a user would type it (``rpaccel ...``)."""
    argv = sys.argv[1:] if argv is None else argv
    return shlex.join(["rpaccel", *argv])


def git_commit(cwd=None, *, ignore=()):
    """The short hash of ``HEAD`` in ``cwd``, with ``+dirty`` if the working tree has changes (beyond the files in
    ``ignore``: the results file a run writes into is no change to what measured it); None outside git."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout

    try:
        commit = git("rev-parse", "--short", "HEAD").strip()
        top = Path(git("rev-parse", "--show-toplevel").strip())
        changes = git("status", "--porcelain", "--untracked-files=no").splitlines()
    except (OSError, subprocess.CalledProcessError):
        return None
    ignored = {Path(path).resolve() for path in ignore}
    dirty = [line for line in changes if (top / line[3:]).resolve() not in ignored]
    return commit + ("+dirty" if dirty else "")


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


def _markers(name):
    return re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.S)


def write_section(name, title, body, *, command=None, commit=None, path=RESULTS_FILE, today=None):
    """Write (or replace) the section ``name`` of the results file, then its status table.

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
    commit : str, optional
        The commit measured (default: :func:`git_commit` of the working directory; left out outside git).
    path : path-like
        The results file.
    today : datetime.date, optional
        Date to record (default: today).
    """
    if not re.fullmatch(r"[A-Za-z0-9-]+", name) or name == "status":
        raise ValueError(f"Results section name must be letters, digits and dashes (not 'status'), not {name!r}")
    path = Path(path)
    date = (today or datetime.date.today()).isoformat()
    command = command or invocation()
    commit = commit or git_commit(ignore=(path,))
    at = f" at commit `{commit}`" if commit else ""
    block = (f"<!-- BEGIN {name} -->\n## {title}\n\nMeasured {date}{at} with `{command}`.\n\n{body.strip()}\n"
             f"<!-- END {name} -->")
    text = path.read_text() if path.exists() else "# Results\n"
    pattern = _markers(name)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_with_status(text))
    return path


# --- the status table ------------------------------------------------------------------------------------

def _tables(body):
    """The Markdown tables of ``body``, each a list of rows (dicts from header to cell text)."""
    tables, lines = [], body.splitlines()
    k = 0
    while k < len(lines):
        if lines[k].startswith("|") and k + 1 < len(lines) and re.fullmatch(r"\|( *-+:? *\|)+", lines[k + 1]):
            headers = [h.strip() for h in lines[k].strip("|").split(" | ")]
            rows, k = [], k + 2
            while k < len(lines) and lines[k].startswith("|"):
                cells = [c.strip() for c in re.split(r"(?<!\\)\|", lines[k].strip()[1:-1])]
                rows.append(dict(zip(headers, cells)))
                k += 1
            tables.append(rows)
        else:
            k += 1
    return tables


def read_sections(text):
    """The sections of a results file's text: ``{name: {"title", "measured", "body", "tables"}}``."""
    sections = {}
    for match in re.finditer(r"<!-- BEGIN ([A-Za-z0-9-]+) -->\n(.*?)<!-- END \1 -->", text, re.S):
        name, content = match.groups()
        title = re.search(r"^## (.*)$", content, re.M)
        measured = re.search(r"^Measured .*$", content, re.M)
        sections[name] = {"title": title.group(1) if title else "", "measured": measured.group(0) if measured else "",
                          "body": content, "tables": _tables(content)}
    return sections


def _number(cell):
    """A table cell's number (``"1,024"``, ``"98.9%"``, ``"-3.66"``), or None."""
    match = re.fullmatch(r"([+-]?[\d,]*\.?\d+)%?", (cell or "").strip())
    return float(match.group(1).replace(",", "")) if match else None


def _row(tables, where):
    """The first row of any table whose cells equal those of ``where`` (a dict from header to cell text)."""
    for table in tables:
        for row in table:
            if all(row.get(key) == value for key, value in where.items()):
                return row
    return None


@dataclass(frozen=True)
class Headline:
    """A headline figure of the status table.

    Attributes
    ----------
    figure : str
        What is measured.
    section : str
        The results section it is read from.
    target : str
        The target (from the issue that set it).
    measure : callable
        ``measure(tables)`` -> ``(measured text, met)`` from the section's tables, ``met`` True, False or None
        (judged in the section's note); None if the figure is not in them.
    """

    figure: str
    section: str
    target: str
    measure: Callable


def _fmax(component, target="ecp5-85f", goal=125.0, floor=100.0):
    def measure(tables):
        row = _row(tables, {"component": component, "target": target})
        if row is None:
            return None
        fmax = _number(row.get("Fmax MHz"))
        if fmax is None:
            return f"{row.get('Fmax MHz') or row.get('meets')}", False
        met = "yes" if fmax >= goal else f"floor only ({floor:g})" if fmax >= floor else False
        return f"{fmax:g} MHz", met
    return measure


def _utilisation(tables):
    row = _row(tables, {"model": "rm-large", "split": "1", "batch": "512"})
    return None if row is None else (row["utilisation"], _number(row["utilisation"]) >= 90)


def _both_caches(tables):
    both, static, dynamic = (_row(tables, {"arrangement": name, "Zipf": "1"}) for name in ("both", "static", "dynamic"))
    if not (both and static and dynamic):
        return None
    rates = [_number(r["on-chip (bytes)"]) for r in (both, static, dynamic)]
    return (f"{both['on-chip (bytes)']} on chip (static only {static['on-chip (bytes)']}, dynamic only "
            f"{dynamic['on-chip (bytes)']})", rates[0] > max(rates[1:]) or None)


def _all_hits(tables):
    row = _row(tables, {"case (arrangement both)": "all static hits"})
    return None if row is None else (f"{row['lookups/cycle']} rows/cycle", _number(row["lookups/cycle"]) >= 0.9)


def _all_misses(tables):
    row = _row(tables, {"case (arrangement both)": "all misses"})
    return None if row is None else (f"{row['of limit']} of the bandwidth", _number(row["of limit"]) >= 90)


def _topk_rate(tables):
    rows = [r for table in tables for r in table if r.get("lanes") == "1" and "candidates per cycle" in r]
    if not rows:
        return None
    rate = min(_number(r["candidates per cycle"]) for r in rows)
    return f"{rate:g} per cycle (one lane, every K_MAX)", rate >= 1


def _topk_fmax(tables):
    row = _row(tables, {"K_MAX": "64", "segments": "4"})
    if row is None:
        return None
    fmax = _number(row["Fmax MHz"])
    return (f"{row['Fmax MHz']} MHz" if fmax else row["Fmax MHz"]), (
        "yes" if fmax and fmax >= 125 else "floor only (100)" if fmax and fmax >= 100 else False)


def _fits(tables):
    row = _row(tables, {"unit": "share"})
    if row is None:
        return None
    shares = {key: _number(value) for key, value in row.items() if key != "unit"}
    worst = max(shares, key=shares.get)
    return f"{shares[worst]:g}% of the {worst}, the fullest", all(v <= 100 for v in shares.values())


def _blocks_meet(tables):
    rows = [r for table in tables for r in table if "meets" in r]
    if not rows:
        return None
    met = sum(r["meets"] == "yes" for r in rows)
    return f"{met} of {len(rows)} builds", met == len(rows)


def _mismatches(tables):
    rows = [r for table in tables for r in table if "mismatches" in r]
    if not rows:
        return None
    total = sum(_number(r["mismatches"]) or 0 for r in rows)
    return f"{total:g} in {len(rows)} runs", total == 0


def _iso_quality(tables):
    row = _row(tables, {"pipeline": "3-stage rm-small -> rm-med -> rm-large"})
    if row is None:
        return None
    change = row["vs 1-stage rm-large (points, paired)"]
    return (f"{change} points of NDCG at {row['MACs vs 1-stage rm-large']} of the MACs",
            _number(change.split()[0]) >= 0)


def _rpaccel_vs_baseline(mode):
    def measure(tables):
        row = _row(tables, {"pipeline": "2-stage", "mode": mode})
        if row is None:
            return None
        ratio = _number(row["baseline/this"].rstrip("x"))
        return f"{row['baseline/this']} ({row['cycles/query']} cycles per query)", ratio is not None and ratio > 1
    return measure


def _model_exact(tables):
    rows = [row for table in tables for row in table if "output cycles equal" in row]
    if not rows:
        return None
    exact = [row for row in rows if row["output cycles equal"].startswith("all") and
             row["RTL cycles"] == row["model cycles"]]
    return f"{len(exact)} of {len(rows)} cases", len(exact) == len(rows)


def _model_speedup(tables):
    rows = [row for table in tables for row in table if "speed-up" in row and row.get("unit") == "engine"]
    if not rows:
        return None
    best = max(rows, key=lambda row: _number(row["speed-up"].rstrip("x")) or 0)
    return f"{best['speed-up']} ({best['case']})", (_number(best["speed-up"].rstrip("x")) or 0) >= 1000


def _chip_model_rows(tables):
    return [row for table in tables for row in table if "model cycles" in row and _number(row.get("RTL cycles"))]


def _chip_model_error(tables):
    rows = _chip_model_rows(tables)
    if not rows:
        return None
    worst = max(rows, key=lambda row: abs(_number(row["error"].rstrip("%")) or 0))
    error = abs(_number(worst["error"].rstrip("%")) or 0)
    return f"{worst['error']} at worst ({worst['pipeline']} {worst['mode']}; {len(rows)} cases)", error == 0


def _chip_model_speedup(tables):
    rows = _chip_model_rows(tables)
    if not rows:
        return None
    best = max(rows, key=lambda row: _number(row["speed-up"].rstrip("x")) or 0)
    speedup = _number(best["speed-up"].rstrip("x")) or 0
    return f"{best['speed-up']} ({best['pipeline']} {best['mode']})", speedup >= 1000


def _claim(what):
    """RecPipe's claim at iso-quality from the claims section's table: ``what`` ``"latency"`` (baseline p95 over
    the best RPAccel row's at an NDCG at least the baseline's; RecPipe: 3x) or ``"throughput"`` (6x)."""

    def measure(tables):
        rows = [row for table in tables for row in table if "NDCG@64" in row and _number(row.get("queries/s"))]
        baseline = next((row for row in rows if row["mode"] == "baseline"), None)
        if baseline is None:
            return None
        rivals = [row for row in rows if row["mode"] == "rpaccel" and
                  (_number(row["NDCG@64"]) or 0) >= (_number(baseline["NDCG@64"]) or 0)]
        if not rivals:
            return "no RPAccel row at the baseline's NDCG", False
        if what == "latency":
            best = min(rivals, key=lambda row: _number(row["p95 latency (us)"]))
            ratio = _number(baseline["p95 latency (us)"]) / _number(best["p95 latency (us)"])
            target = 3
        else:
            best = max(rivals, key=lambda row: _number(row["queries/s"]))
            ratio = _number(best["queries/s"]) / _number(baseline["queries/s"])
            target = 6
        return f"{ratio:.2f}x ({best['pipeline']}, split {best['split']})", ratio >= target
    return measure


def _sched_ratio(tables):
    statics = [row for table in tables for row in table if row.get("scheduler") == "static"]
    tuned = [row for table in tables for row in table if row.get("scheduler") == "DeepRecSched"]
    loads = [[_number(row["highest load meeting p95 (q/s)"]) or 0 for row in rows] for rows in (statics, tuned)]
    if not statics or not tuned or not max(loads[0]):
        return None
    ratio = max(loads[1]) / max(loads[0])
    return f"{ratio:.2f}x ({max(loads[1]):g} against {max(loads[0]):g} queries/s)", ratio > 1


#: The figures of the status table, in its order.
HEADLINES = (
    Headline("MLP engine utilisation, RM-large bottom MLP, batch 512, whole array", "gemm", ">= 90% (issue 3)",
             _utilisation),
    Headline("MLP engine Fmax on the ECP5-85F (small), routed", "gemm-synth", "125 MHz, floor 100 MHz (issue 3)",
             _fmax("mlp")),
    Headline("Embedding: both caches vs either alone at Zipf 1.0, equal bytes", "embedding",
             "both beat either, or the note says why (issue 4)", _both_caches),
    Headline("Embedding: rows per cycle with all hits (one lane)", "embedding", "close to 1 (>= 0.9; issue 4)",
             _all_hits),
    Headline("Embedding: memory bandwidth used with all misses", "embedding", "approaches the limit (>= 90%; issue 4)",
             _all_misses),
    Headline("Embedding unit Fmax on the ECP5-85F (small), routed", "embedding-synth",
             "125 MHz, floor 100 MHz (issue 4)", _fmax("embedding")),
    Headline("Top-k: candidates per cycle sustained per unit", "topk", ">= 1 (issue 5)", _topk_rate),
    Headline("Top-k unit Fmax on the ECP5-85F, K_MAX 64", "topk", "125 MHz, floor 100 MHz (issue 5)", _topk_fmax),
    Headline("Small preset's units on the ECP5-85F, added up", "chip", "fit (issue 5)", _fits),
    Headline("Small preset's units on the ECP5-85F, as one design", "chip-whole", "fit", _fits),
    Headline("Blocks meeting their preset's clock", "synth-blocks", "all (issue 2)", _blocks_meet),
    Headline("Block scoreboards: mismatches against the golden models", "blocks-harness", "0", _mismatches),
    Headline("Quality: 3-stage pipeline vs 1-stage RM-large (synthetic data)", "quality-pipelines",
             "iso-quality, >= 0 points (RecPipe)", _iso_quality),
    Headline("Chip (small, RTL): 2-stage query, baseline cycles over RPAccel mode's (split array)", "accel",
             "> 1x (issue 19)", _rpaccel_vs_baseline("rpaccel")),
    Headline("Chip (small, RTL): 2-stage query, baseline cycles over RPAccel mode's on the whole array", "accel",
             "> 1x (issue 19)", _rpaccel_vs_baseline("rpaccel-whole")),
    Headline("Fast model's units: every output cycle equal to the RTL's", "model-units", "all (issue 20)",
             _model_exact),
    Headline("Fast model's speed-up over the RTL's simulation (engine, best case)", "model-units",
             ">= 1,000x (issue 20, for the whole chip)", _model_speedup),
    Headline("Whole chip's timed model: cycles against the RTL's (RecPipe's pipelines, small)", "model-chip",
             "0 (issue 20; named exceptions under 1%)", _chip_model_error),
    Headline("Whole chip's timed model: speed-up over the RTL's simulation", "model-chip",
             ">= 1,000x (issue 20)", _chip_model_speedup),
    Headline("RecPipe's claim on paper (timed model): p95 latency at iso-quality over the TPU-like baseline",
             "claims-paper", ">= 3x (RecPipe's abstract)", _claim("latency")),
    Headline("RecPipe's claim on paper (timed model): throughput at iso-quality over the TPU-like baseline",
             "claims-paper", ">= 6x (RecPipe's abstract)", _claim("throughput")),
    Headline("DeepRecSched over the static scheduler (highest load at the p95 target)", "sched",
             "> 1x (issue 21; DeepRecSys: about 2x)", _sched_ratio),
)


def status_table(text):
    """The status table of a results file's text: each of :data:`HEADLINES` with what its section measured."""
    sections = read_sections(text)
    rows = []
    for headline in HEADLINES:
        section = sections.get(headline.section)
        result = headline.measure(section["tables"]) if section else None
        if result is None:
            rows.append([headline.figure, "not measured", headline.target, "", f"`{headline.section}`"])
            continue
        value, met = result
        verdict = {True: "yes", False: "**no**", None: "see the note"}.get(met, met)
        when = re.search(r"Measured (\S+)(?: at commit `([^`]+)`)?", section["measured"])
        source = f"[`{headline.section}`](#{_anchor(section['title'])})" + (
            f", {when.group(1)}" + (f" at `{when.group(2)}`" if when.group(2) else "") if when else "")
        rows.append([headline.figure, value, headline.target, verdict, source])
    return format_table(["figure", "measured", "target", "met", "section"], rows)


def _anchor(title):
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def _with_status(text):
    """``text`` with its status table (re)generated after the file's opening paragraphs."""
    block = ("<!-- BEGIN status -->\n## Status\n\nGenerated by `rpaccel.results` from the sections below each time "
             "one is written: each headline figure, its target and whether it is met.\n\n"
             f"{status_table(text)}\n<!-- END status -->")
    pattern = _markers("status")
    if pattern.search(text):
        return pattern.sub(lambda _: block, text)
    first = text.find("<!-- BEGIN ")
    if first < 0:
        return text.rstrip("\n") + "\n\n" + block + "\n"
    return text[:first] + block + "\n\n" + text[first:]


def write_status(path=RESULTS_FILE):
    """Regenerate the status table of the results file from the sections it holds."""
    path = Path(path)
    path.write_text(_with_status(path.read_text()))
    return path
