"""Measured figures in ``docs/results.md``: each section is written by the command that measured it.

A section sits between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` markers and starts with the date, the
commit (``git rev-parse --short HEAD``, ``+dirty`` when the working tree has changes) and the exact command that
produced it; rerunning the command replaces the section and leaves the rest of the file alone. The file opens
with two sections generated from the others, rewritten whenever a section is: the status table
(:data:`HEADLINES`: each headline figure, its target and whether it is met) and the seeds' claims
(:data:`CLAIMS`: each claim of RecPipe and DeepRecSys, the paper's figure, ours, and a verdict computed from the
figures by the rules :func:`judge_factor`, :func:`judge_iso_quality` and :func:`judge_agreement`).
"""

import datetime
import math
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CLAIMS", "GENERATED", "HEADLINES", "RESULTS_FILE", "VERDICTS", "Claim", "Headline", "claims_table",
           "format_table", "git_commit", "invocation", "judge_agreement", "judge_factor", "judge_iso_quality",
           "read_sections", "status_table", "write_section", "write_status"]

#: Default results file, relative to the working directory (the repository root when run from there).
RESULTS_FILE = Path("docs") / "results.md"


def invocation(argv=None):
    """The command line as a user would type it (``rpaccel ...``)."""
    argv = sys.argv[1:] if argv is None else argv
    return shlex.join(["rpaccel", *argv])


def git_commit(cwd=None, *, ignore=()):
    """The short hash of ``HEAD`` in ``cwd``, with ``+dirty`` if the working tree has changes (beyond the files and
    folders in ``ignore``: the results file a run writes into and its plots are no change to what measured it);
    None outside git."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout

    try:
        commit = git("rev-parse", "--short", "HEAD").strip()
        top = Path(git("rev-parse", "--show-toplevel").strip())
        changes = git("status", "--porcelain", "--untracked-files=no").splitlines()
    except (OSError, subprocess.CalledProcessError):
        return None
    ignored = [Path(path).resolve() for path in ignore]
    dirty = [line for line in changes
             if not any((top / line[3:]).resolve().is_relative_to(path) for path in ignored)]
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
        The commit measured (default: :func:`git_commit` of the working directory, the results file and the plots
        beside it, in its folder's ``img``, ignored; left out outside git).
    path : path-like
        The results file.
    today : datetime.date, optional
        Date to record (default: today).
    """
    generated = [each for each, _ in GENERATED]
    if not re.fullmatch(r"[A-Za-z0-9-]+", name) or name in generated:
        raise ValueError(f"Results section name must be letters, digits and dashes (not "
                         f"{' or '.join(map(repr, generated))}), not {name!r}")
    path = Path(path)
    date = (today or datetime.date.today()).isoformat()
    command = command or invocation()
    commit = commit or git_commit(ignore=(path, path.parent / "img"))
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
    path.write_text(_with_generated(text))
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


def _replay_scale(tables):
    row = next((row for table in tables for row in table if "projected for 100,000" in row), None)
    if row is None:
        return None
    hours = _number(row["projected for 100,000"].removesuffix(" h"))
    return (f"{row['projected for 100,000']} projected ({row['queries']} queries replayed, "
            f"{row['host s per query']} s each)"), hours is not None and hours * 3600 <= 300


#: RecPipe's factors at iso-quality over its TPU-like baseline (its abstract).
RECPIPE_FACTORS = {"latency": 3, "throughput": 6}


def _iso_quality_factor(tables, what):
    """RecPipe's factor at iso-quality from the claims section's table: ``what`` ``"latency"`` (the baseline's p95
    over the lowest of the RPAccel rows at iso-quality: ``yes`` in their ``iso-quality`` column, by the section's
    rule) or ``"throughput"`` (the highest throughput of those over the baseline's); ``(factor, text)``, ``(None,
    text)`` if no RPAccel row is at iso-quality (the text: the closest row, the one whose difference from the
    baseline has the highest lower bound), None if the table has no baseline."""
    rows = [row for table in tables for row in table if "iso-quality" in row and _number(row.get("queries/s"))]
    baseline = next((row for row in rows if row["mode"] == "baseline"), None)
    if baseline is None:
        return None
    rpaccel = [row for row in rows if row["mode"] == "rpaccel"]
    rivals = [row for row in rpaccel if row["iso-quality"] == "yes"]
    if not rivals:
        if not rpaccel:
            return None, "no RPAccel row measured"
        column = next(name for name in rpaccel[0] if name.startswith("vs baseline"))

        def low(row):
            bound = re.search(r"\[([+-]?[\d.]+),", row[column])
            return float(bound.group(1)) if bound else -math.inf
        closest = max(rpaccel, key=low)
        return None, f"closest: {closest['stages']}, {closest[column]} points of NDCG against the baseline"
    if what == "latency":
        best = min(rivals, key=lambda row: _number(row["p95 latency (us)"]))
        ratio = _number(baseline["p95 latency (us)"]) / _number(best["p95 latency (us)"])
    else:
        best = max(rivals, key=lambda row: _number(row["queries/s"]))
        ratio = _number(best["queries/s"]) / _number(baseline["queries/s"])
    return ratio, f"{ratio:.2f}x ({best['stages']}, split {best['split']})"


def _claim(what):
    """RecPipe's claim at iso-quality from the claims section's table: ``what`` ``"latency"`` (RecPipe: 3x) or
    ``"throughput"`` (6x)."""

    def measure(tables):
        found = _iso_quality_factor(tables, what)
        if found is None:
            return None
        ratio, text = found
        if ratio is None:
            return f"no RPAccel row at iso-quality ({text})", False
        return text, ratio >= RECPIPE_FACTORS[what]
    return measure


def _sched_ratio(tables):
    statics = [row for table in tables for row in table if row.get("scheduler") == "static"]
    tuned = [row for table in tables for row in table if row.get("scheduler") == "DeepRecSched"]
    loads = [[_number(row["highest load meeting p95 (q/s)"]) or 0 for row in rows] for rows in (statics, tuned)]
    if not statics or not tuned or not max(loads[0]):
        return None
    return max(loads[1]) / max(loads[0]), max(loads[1]), max(loads[0])


def _sched_headline(tables):
    found = _sched_ratio(tables)
    if found is None:
        return None
    ratio, tuned, static = found
    return f"{ratio:.2f}x ({tuned:g} against {static:g} queries/s)", ratio > 1


def _sched_geomean(column):
    """The geometric mean of DeepRecSched's ratios over the static scheduler across models (``column`` of the
    ``sched-models`` table: ``"ratio, CPU"`` or ``"ratio, CPU + chip"``): ``(ratio, models)``, None if absent."""

    def measure(tables):
        rows = [row for table in tables for row in table if column in row]
        mean = next((row for row in rows if row.get("model") == "geometric mean"), None)
        ratio = _number((mean or {}).get(column, "").rstrip("x"))
        if ratio is None:
            return None
        return ratio, sum(_number(row[column].rstrip("x")) is not None for row in rows if row is not mean)
    return measure


def _sched_models_ratio(column):
    """``(ratio, text)`` of the geometric mean of ``column`` (see :func:`_sched_geomean`), None if absent."""
    geomean = _sched_geomean(column)

    def described(tables):
        found = geomean(tables)
        if found is None:
            return None
        ratio, models = found
        return ratio, f"{ratio:.2f}x (geometric mean over {models} model{'' if models == 1 else 's'})"
    return described


def _sched_models_headline(column):
    described = _sched_models_ratio(column)

    def measure(tables):
        found = described(tables)
        return None if found is None else (found[1], found[0] > 1)
    return measure


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
             "> 1x (issue 21; DeepRecSys: about 2x)", _sched_headline),
    Headline("DeepRecSched over the static scheduler across the zoo's models, CPU cores and the chip",
             "sched-models", "> 1x (issue 22; DeepRecSys: about 2x)", _sched_models_headline("ratio, CPU + chip")),
    Headline("DeepRecSched over the static scheduler across the zoo's models, CPU cores alone", "sched-models",
             "> 1x (DeepRecSys: 2x on server CPUs)", _sched_models_headline("ratio, CPU")),
    Headline("DeepRecSched over the static scheduler across the zoo's models, CPU cores and the paper chip",
             "sched-models-paper", "> 1x (issue 22; DeepRecSys: about 2x)",
             _sched_models_headline("ratio, CPU + chip")),
    Headline("Model backend: 100,000 two-stage queries of 4,096 candidates, host time", "replay-scale",
             "<= 5 min (issue 21)", _replay_scale),
)


def _source(name, section):
    """The link to section ``name`` with the date (and commit) it was measured."""
    when = re.search(r"Measured (\S+)(?: at commit `([^`]+)`)?", section["measured"])
    return f"[`{name}`](#{_anchor(section['title'])})" + (
        f", {when.group(1)}" + (f" at `{when.group(2)}`" if when.group(2) else "") if when else "")


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
        rows.append([headline.figure, value, headline.target, verdict, _source(headline.section, section)])
    return format_table(["figure", "measured", "target", "met", "section"], rows)


# --- the seeds' claims -----------------------------------------------------------------------------------

#: The verdicts of the claims table, from the claim holding to it failing.
VERDICTS = ("reproduced", "partly", "refuted")

#: A claimed factor counts as reproduced from this fraction of it (RecPipe's "3x", DeepRecSys's "2x").
FACTOR_SHARE = 0.9

#: A modelled time agrees with a measured one within this relative error.
AGREEMENT = 0.10

#: Quality below the reference by less than this many standard errors cannot be told from iso-quality.
STANDARD_ERRORS = 2


def judge_factor(ours, claimed):
    """The verdict on a claimed improvement factor ``claimed`` (``3`` for "3x") given ours.

    Reproduced if ours is at least :data:`FACTOR_SHARE` of the claim, partly if it is an improvement (above 1x)
    short of that, refuted if it is none.

    Returns
    -------
    (str, str)
        The verdict (one of :data:`VERDICTS`) and its reason in a sentence.
    """
    if ours >= FACTOR_SHARE * claimed:
        return "reproduced", f"{ours:.2f}x is at least {FACTOR_SHARE:.0%} of the claimed {claimed:g}x."
    if ours > 1:
        return "partly", f"{ours:.2f}x is an improvement, short of {FACTOR_SHARE:.0%} of the claimed {claimed:g}x."
    return "refuted", f"{ours:.2f}x is no improvement."


def judge_iso_quality(change, error, share):
    """The verdict on "a cheaper pipeline reaches the reference's quality": ``change`` its quality minus the
    reference's (points of NDCG, paired), ``error`` the change's standard error, ``share`` its compute over the
    reference's.

    Reproduced if it costs less and loses no quality; partly if it costs less and loses less than
    :data:`STANDARD_ERRORS` standard errors; refuted if it saves no compute or loses more.
    """
    if share >= 1:
        return "refuted", f"it needs {share:.1%} of the reference's compute: none saved."
    if change >= 0:
        return "reproduced", f"{change:+.2f} points of NDCG at {share:.1%} of the compute."
    if change > -STANDARD_ERRORS * error:
        return "partly", (f"{share:.1%} of the compute, {change:+.2f} points of NDCG: below the reference, within "
                          f"{STANDARD_ERRORS} standard errors ({error:.2f}).")
    return "refuted", (f"{change:+.2f} points of NDCG is below the reference by more than {STANDARD_ERRORS} "
                       f"standard errors ({error:.2f}).")


def judge_agreement(errors):
    """The verdict on "a model gives the accelerator's time" from its relative ``errors`` (model / measured - 1)
    over the cases measured: reproduced if every one is within :data:`AGREEMENT`, partly if some are, refuted if
    none is."""
    within = sum(abs(error) <= AGREEMENT for error in errors)
    worst = max(errors, key=abs)
    said = f"{within} of {len(errors)} cases within {AGREEMENT:.0%} (worst {worst:+.1%})."
    return ("reproduced" if within == len(errors) else "partly" if within else "refuted"), said


@dataclass(frozen=True)
class Claim:
    """A claim of the seed papers and how to judge it from a section of the results file.

    Attributes
    ----------
    claim : str
        What the paper says, with where.
    figure : str
        The paper's figure.
    section : str
        The results section with our figure.
    command : str
        The command that writes that section (shown while it is not measured).
    judge : callable
        ``judge(tables)`` -> ``(our figure, verdict, reason)`` from the section's tables, through one of the rules
        (:func:`judge_factor`, :func:`judge_iso_quality`, :func:`judge_agreement`); None if the figure is not in
        them.
    """

    claim: str
    figure: str
    section: str
    command: str
    judge: Callable


def _factor_claim(what):
    def judge(tables):
        found = _iso_quality_factor(tables, what)
        if found is None:
            return None
        ratio, text = found
        if ratio is None:
            return f"no RPAccel configuration at iso-quality ({text})", "refuted", (
                f"no RPAccel configuration is at iso-quality with the baseline on the same queries ({text}): "
                "nothing to compare at iso-quality.")
        return (text, *judge_factor(ratio, RECPIPE_FACTORS[what]))
    return judge


def _quality_claim(tables):
    rows = [row for table in tables for row in table
            if re.match(r"[23]-stage", row.get("pipeline", "")) and "MACs vs 1-stage rm-large" in row]
    judged = []
    for row in rows:
        change = re.fullmatch(r"([+-]?[\d.]+) ± ([\d.]+)", row.get("vs 1-stage rm-large (points, paired)", ""))
        share = _number(row["MACs vs 1-stage rm-large"])
        if change and share is not None:
            verdict, reason = judge_iso_quality(float(change.group(1)), float(change.group(2)), share / 100)
            judged.append((VERDICTS.index(verdict), share, row, verdict, reason))
    if not judged:
        return None
    _, _, row, verdict, reason = min(judged, key=lambda each: each[:2])      # the best verdict, then the cheapest
    pipeline = row["pipeline"].split(" ", 1)[0]
    return (f"{pipeline}: {row['vs 1-stage rm-large (points, paired)']} points at {row['MACs vs 1-stage rm-large']}"
            " of the MACs", verdict, f"{pipeline} pipeline: {reason}")


def _model_agreement(rows, estimate, measured, against):
    """RecPipe's model (column ``estimate``) against ``measured`` over ``rows``: its error range and the verdict of
    :func:`judge_agreement`; None without rows."""
    if not rows:
        return None
    errors = [_number(row[estimate]) / _number(row[measured]) - 1 for row in rows]
    verdict, reason = judge_agreement(errors)
    return (f"its model / {against} - 1: {min(errors):+.1%} to {max(errors):+.1%} ({len(rows)} cases)",
            verdict, reason)


def _recpipe_model_vs_rtl(tables):
    # The claim is RPAccel's latency: the RPAccel-mode rows.
    rows = [row for row in _chip_model_rows(tables) if _number(row.get("RecPipe model")) and
            row.get("mode") == "rpaccel"]
    return _model_agreement(rows, "RecPipe model", "RTL cycles", "the RTL's")


def _recpipe_model_vs_timed(tables):
    # RPAccel's configurations, each once (a row with a chosen lane map repeats its default row's latency).
    rows = [row for table in tables for row in table
            if _number(row.get("RecPipe model (us)")) and _number(row.get("p95 latency (us)"))
            and row.get("mode") == "rpaccel" and row.get("lanes per stage", "default") == "default"]
    return _model_agreement(rows, "RecPipe model (us)", "p95 latency (us)", "the timed model's")


def _sched_claim(tables):
    found = _sched_ratio(tables)
    if found is None:
        return None
    ratio, tuned, static = found
    return (f"{ratio:.2f}x ({tuned:g} against {static:g} queries/s)", *judge_factor(ratio, 2))


def _sched_models_claim(column):
    described = _sched_models_ratio(column)

    def judge(tables):
        found = described(tables)
        return None if found is None else (found[1], *judge_factor(found[0], 2))
    return judge


#: The seeds' claims, in the order of the claims table.
CLAIMS = (
    Claim("RecPipe (abstract): RPAccel's latency at iso-quality against a TPU-like accelerator (p95, the paper's "
          "128 x 128 array and its splits)", "3x", "claims-paper", "rpaccel bench claims --write",
          _factor_claim("latency")),
    Claim("RecPipe (abstract): RPAccel's throughput at iso-quality against a TPU-like accelerator",
          "6x", "claims-paper", "rpaccel bench claims --write", _factor_claim("throughput")),
    Claim("RecPipe: multi-stage pipelines reach the quality of one large model at a fraction of its compute "
          "(NDCG@64 against 1-stage RM-large, paired queries)", "iso-quality at fewer MACs", "quality-pipelines",
          "rpaccel bench quality --write", _quality_claim),
    Claim("RecPipe's artifact: its analytical model gives RPAccel's latency (the small chip's RTL, RecPipe's "
          "pipelines)", "its model's cycles", "model-chip", "rpaccel bench model --units chip,regression --write",
          _recpipe_model_vs_rtl),
    Claim("RecPipe's artifact: its analytical model gives RPAccel's latency (the paper's configurations, against "
          "the timed model)", "its model's cycles", "claims-paper", "rpaccel bench claims --write",
          _recpipe_model_vs_timed),
    Claim("DeepRecSys (abstract): DeepRecSched's throughput at the tail-latency target over a static scheduler, "
          "server CPUs, across its models", "2x", "sched-models", "rpaccel bench sched --models --write",
          _sched_models_claim("ratio, CPU")),
    Claim("DeepRecSys: DeepRecSched with an accelerator (queries above a threshold offloaded) over a static "
          "scheduler, across its models", "2x", "sched-models", "rpaccel bench sched --models --write",
          _sched_models_claim("ratio, CPU + chip")),
    Claim("DeepRecSys: DeepRecSched with an accelerator over a static scheduler, across its models, on RecPipe's "
          "128 x 128 chip (paper, which holds the models too large for small)", "2x", "sched-models-paper",
          "rpaccel bench sched --models --preset paper --write", _sched_models_claim("ratio, CPU + chip")),
    Claim("DeepRecSys: DeepRecSched with an accelerator over a static scheduler, RMC1", "2x", "sched",
          "rpaccel bench sched --write", _sched_claim),
)


def claims_table(text):
    """The seeds' claims table of a results file's text: each of :data:`CLAIMS` with our figure and its verdict,
    or "not measured" and the command that would measure it."""
    sections = read_sections(text)
    rows = []
    for claim in CLAIMS:
        section = sections.get(claim.section)
        judged = claim.judge(section["tables"]) if section else None
        if judged is None:
            rows.append([claim.claim, claim.figure, "not measured", "", "", f"`{claim.command}`"])
            continue
        ours, verdict, reason = judged
        command = re.search(r"with `([^`]+)`", section["measured"])
        rows.append([claim.claim, claim.figure, ours, f"**{verdict}**", reason,
                     f"`{command.group(1) if command else claim.command}` ({_source(claim.section, section)})"])
    return format_table(["claim", "paper", "ours", "verdict", "reason", "measured by"], rows)


def _claims_block(text):
    return ("<!-- BEGIN seed-claims -->\n## The seeds' claims\n\nGenerated by `rpaccel.results` from the sections "
            "below each time one is written: each headline claim of RecPipe (MICRO 2021) and DeepRecSys (ISCA "
            "2020), the paper's figure, ours, and a verdict computed from the figures by a stated rule. A claimed "
            f"factor is *reproduced* if ours is at least {FACTOR_SHARE:.0%} of it, *partly* if ours is an "
            "improvement (above 1x) short of that, *refuted* if it is none; RecPipe's factors are taken at "
            "iso-quality as the claims section decides it (the confidence interval of the NDCG's difference from the "
            "baseline, paired over the same queries, above minus a stated margin), and refuted when no RPAccel "
            "configuration is at iso-quality. Iso-quality at less compute is "
            "*reproduced* if the pipeline costs less and loses no NDCG, *partly* if it costs less and loses less "
            f"than {STANDARD_ERRORS} standard errors, *refuted* otherwise. A model of the accelerator's time is "
            f"*reproduced* if every case measured is within {AGREEMENT:.0%}, *partly* if some are, *refuted* if "
            "none is. A claim whose section is missing is *not measured*, with the command that measures it.\n\n"
            f"{claims_table(text)}\n<!-- END seed-claims -->")


# --- the generated sections ------------------------------------------------------------------------------

def _anchor(title):
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def _status_block(text):
    return ("<!-- BEGIN status -->\n## Status\n\nGenerated by `rpaccel.results` from the sections below each time "
            "one is written: each headline figure, its target and whether it is met.\n\n"
            f"{status_table(text)}\n<!-- END status -->")


#: The sections generated from the others, in their order at the head of the file: name and maker.
GENERATED = (("status", _status_block), ("seed-claims", _claims_block))


def _with_generated(text):
    """``text`` with its generated sections (:data:`GENERATED`) (re)made after the file's opening paragraphs,
    each in its place or, when new, after the one before it (the first before the first section)."""
    after = None
    for name, make in GENERATED:
        block = make(text)
        pattern = _markers(name)
        if pattern.search(text):
            text = pattern.sub(lambda _, block=block: block, text)
        elif after is not None:
            end = _markers(after).search(text).end()
            text = text[:end] + "\n\n" + block + text[end:]
        else:
            first = text.find("<!-- BEGIN ")
            text = (text.rstrip("\n") + "\n\n" + block + "\n" if first < 0 else
                    text[:first] + block + "\n\n" + text[first:])
        after = name
    return text


def write_status(path=RESULTS_FILE):
    """Regenerate the generated sections of the results file (the status table, the seeds' claims) from the
    sections it holds."""
    path = Path(path)
    path.write_text(_with_generated(path.read_text()))
    return path
