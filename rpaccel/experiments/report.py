"""What every experiment returns, and the errors it raises."""

from dataclasses import dataclass, field

__all__ = ["ExperimentError", "ExperimentFailed", "Report", "Section", "check_fraction", "check_positive",
           "check_positives", "check_seed", "combine"]


class ExperimentError(ValueError):
    """An experiment cannot run with a parameter's value.

    Parameters
    ----------
    parameter : str or None
        The keyword argument at fault (the command line's option of the same name), or None when the problem is
        the combination (a model that does not fit the configuration).
    problem : str
        What is wrong, said after the parameter's name (``"must be a positive integer, not 0"``).
    """

    def __init__(self, parameter, problem):
        super().__init__(problem if parameter is None else f"{parameter} {problem}")
        self.parameter = parameter
        self.problem = problem


class ExperimentFailed(RuntimeError):
    """An experiment ran and could not finish: a tool failed or is missing (the message says which)."""


@dataclass(frozen=True)
class Section:
    """A section of the results file (``docs/results.md``, see :mod:`rpaccel.results`).

    Attributes
    ----------
    name : str
        Marker name of the section.
    title : str
        Its heading.
    body : str
        Its Markdown: tables and notes.
    """

    name: str
    title: str
    body: str


@dataclass(frozen=True)
class Report:
    """What an experiment measured.

    Attributes
    ----------
    rows : list of dict
        The measured rows (one per run), JSON-able.
    text : str
        What a user reads: the tables and verdicts, as printed by the command line.
    sections : tuple of Section
        The sections of the results file it fills.
    data : dict
        Everything measured, JSON-able (the command line's ``--json``).
    failures : tuple of str
        The checks that failed (outputs that differ from the golden model, a latency other than the design's);
        empty when every check passed.
    """

    rows: list
    text: str
    sections: tuple = ()
    data: dict = field(default_factory=dict)
    failures: tuple = ()

    @property
    def passed(self):
        """Whether every check of the experiment passed."""
        return not self.failures


def combine(*reports):
    """One report of several: rows, texts, sections and failures in order, ``data`` merged."""
    data = {}
    for report in reports:
        data.update(report.data)
    return Report(rows=[row for r in reports for row in r.rows], text="\n\n".join(r.text for r in reports if r.text),
                  sections=tuple(s for r in reports for s in r.sections), data=data,
                  failures=tuple(f for r in reports for f in r.failures))


def check_positive(**values):
    """Raise :class:`ExperimentError` on the first value that is not a positive integer."""
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ExperimentError(name, f"must be a positive integer, not {value!r}")


def check_positives(name, values):
    """Raise :class:`ExperimentError` unless ``values`` is a non-empty sequence of positive integers."""
    if not values or any(not isinstance(v, int) or isinstance(v, bool) or v <= 0 for v in values):
        raise ExperimentError(name, f"must be positive integers, not {list(values)!r}")


def check_seed(seed):
    """Raise :class:`ExperimentError` unless ``seed`` is a non-negative integer (numpy's and cocotb's seeds)."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ExperimentError("seed", f"must be a non-negative integer, not {seed!r}")


def check_fraction(name, value, *, closed=False):
    """Raise :class:`ExperimentError` unless ``value`` is in [0, 1) (or [0, 1] with ``closed``)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not (
            0 <= value <= 1 if closed else 0 <= value < 1):
        raise ExperimentError(name, f"must be in [0, 1{']' if closed else ')'}, not {value!r}")
