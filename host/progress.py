"""A small progress bar on standard error for long host work (data generation, training, evaluation).

It redraws at most five times a second on a terminal and writes nothing else; when standard error is not a
terminal (a log file, CI) it prints one line when the work ends, so logs stay readable. ``enabled=False`` (the
commands' ``--quiet``) silences it.
"""

import sys
import time

__all__ = ["Progress"]


def _human(n):
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:g}" if isinstance(n, float) else str(n)


class Progress:
    """Progress of ``total`` units of work.

    Parameters
    ----------
    label : str
        What is being done.
    total : int
        Units of work in all.
    unit : str
        Name of a unit (``"samples"``).
    enabled : bool
        Draw anything at all.
    stream : file
        Where to draw (standard error by default).

    Examples
    --------
    >>> with Progress("training rm-small", 1000, "samples", enabled=False) as bar:
    ...     bar.update(500, loss=0.45)
    """

    def __init__(self, label, total, unit="items", *, enabled=True, stream=None):
        self.label = label
        self.total = max(int(total), 0) if total else 0  # 0: unknown, no bar
        self.unit = unit
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.done = 0
        self.info = {}
        self.started = time.monotonic()
        self._drawn = 0.0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.close()
        else:  # leave the line to the error message
            if self.enabled and self._tty and self._drawn:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
            self.enabled = False

    def update(self, n=1, **info):
        """Count ``n`` more units done; keyword arguments are shown after the bar (``loss=0.45``)."""
        self.done += n
        self.info.update(info)
        now = time.monotonic()
        if self.enabled and self._tty and now - self._drawn >= 0.2:
            self._drawn = now
            self.stream.write("\r" + self._line(now) + "\x1b[K")
            self.stream.flush()

    def _line(self, now):
        elapsed = now - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        extra = "".join(f" {k} {v:.4g}" if isinstance(v, float) else f" {k} {v}" for k, v in self.info.items())
        if not self.total:
            return f"{self.label}: {_human(self.done)} {self.unit} {_human(rate)}/s {elapsed:.0f}s" + extra
        fraction = min(self.done / self.total, 1.0)
        width = 24
        filled = int(fraction * width)
        bar = "#" * filled + "." * (width - filled)
        eta = (self.total - self.done) / rate if rate > 0 and self.done < self.total else 0.0
        return (f"{self.label} [{bar}] {fraction:4.0%} {_human(self.done)}/{_human(self.total)} {self.unit} "
                f"{_human(rate)}/s {elapsed:.0f}s" + (f" eta {eta:.0f}s" if eta else "") + extra)

    def close(self):
        """Finish the bar (one final line)."""
        if self.enabled:
            end = "\r" if self._tty else ""
            self.stream.write(end + self._line(time.monotonic()) + ("\x1b[K" if self._tty else "") + "\n")
            self.stream.flush()
            self.enabled = False
