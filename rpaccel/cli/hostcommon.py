"""Pieces shared by the host-workload commands (``data``, ``train``, ``quantize``, ``quality``, ``models``)."""

from contextlib import contextmanager

from .common import CLIError, CommandFailed

__all__ = ["add_quiet", "host_errors", "positive_int"]


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
