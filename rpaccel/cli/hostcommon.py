"""Pieces shared by the host-workload commands (``data``, ``train``, ``quantize``, ``quality``, ``models``)."""

import os
from contextlib import contextmanager
from pathlib import Path

from .common import CLIError, CommandFailed

__all__ = ["add_quiet", "check_files", "host_errors", "positive_int", "same_file"]


def positive_int(text):
    """argparse type: a positive integer (the error names the value)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {value}")
    return value


def add_quiet(parser):
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def same_file(a, b):
    """Whether paths ``a`` and ``b`` name one file: the same inode when both exist (a symbolic or hard link, another
    spelling), else the same resolved path."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def check_files(inputs, outputs):
    """Refuse, before any work, outputs that cannot be written or would overwrite an input.

    Parameters
    ----------
    inputs, outputs : iterable of (str, path-like or None)
        ``(option, path)`` pairs, e.g. ``("--data", "train.tsv")``; pairs whose path is ``None`` are ignored.

    Raises
    ------
    CLIError
        If an output names a folder, lies below something that is not a folder, names the same file as an input
        or as another output, or its folder is not writable.
    """
    inputs = [(option, path) for option, path in inputs if path is not None]
    outputs = [(option, path) for option, path in outputs if path is not None]
    for i, (option, path) in enumerate(outputs):
        out = Path(path)
        if out.is_dir():
            raise CLIError(f"{option} {path} is a folder; name a file to write")
        folder = out.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise CLIError(f"{option} {path}: {folder} is not a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise CLIError(f"{option} {path}: cannot write into the folder {folder}")
        for other, source in inputs:
            if same_file(path, source):
                raise CLIError(f"{option} and {other} both name {_spelled(option, path, source)}: writing {option} "
                               "would overwrite the input; nothing written")
        for other, source in outputs[:i]:
            if same_file(path, source):
                raise CLIError(f"{option} and {other} both name {_spelled(option, path, source)}; name two files")


def _spelled(option, path, source):
    return str(source) if str(path) == str(source) else f"{source} ({option} through {path})"


@contextmanager
def host_errors():
    """Turn the host's input errors into one-line CLI errors: bad names, files and data lines exit with 2,
    a quantisation that cannot meet the numeric rules with 1."""
    from ..host.data import DataError
    from ..host.files import FileFormatError
    from ..host.models import ModelError
    from ..host.quant import QuantizationError

    try:
        yield
    except (DataError, FileFormatError, ModelError) as error:
        raise CLIError(str(error)) from None
    except QuantizationError as error:
        raise CommandFailed(str(error)) from None
