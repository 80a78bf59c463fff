"""Entry point and argument parsing of the ``rpaccel`` command.

Each command lives in its own module with a ``register(subparsers)`` function that adds its parser and sets
``func``. Usage errors and bad names (a :class:`~rpaccel.experiments.ExperimentError` names the option at fault)
are one line on standard error with exit status 2; a failed run (a mismatch, a tool failure) is one line with
exit status 1. No traceback reaches the user unless ``RPACCEL_DEBUG``
is set.
"""

import argparse
import os
import sys

from .. import __version__
from ..experiments import ExperimentError, ExperimentFailed
from ..threads import limit_blas_threads
from . import bench, data, demo, info, models, quality, quantize, replay, sweep, synth, timing, trace, train
from .common import CLIError, CommandFailed

__all__ = ["main"]

_COMMANDS = (demo, synth, timing, bench, info, models, data, trace, replay, sweep, train, quantize, quality)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser():
    parser = _Parser(prog="rpaccel", description="RPAccel recommendation-inference accelerator: RTL, "
                     "simulation, synthesis and host runtime.")
    parser.add_argument("--version", action="version", version=f"rpaccel {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for module in _COMMANDS:
        module.register(subparsers)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    limit_blas_threads()    # the products are small: see rpaccel.threads
    command = " ".join(filter(None, [args.command, getattr(args, "bench", None)]))
    try:
        status = args.func(args)
    except CLIError as error:
        print(f"rpaccel {command}: error: {error}", file=sys.stderr)
        return 2
    except ExperimentError as error:
        # The experiment's keyword arguments are the command's options of the same name.
        option = "" if error.parameter is None else f"--{error.parameter.replace('_', '-')} "
        print(f"rpaccel {command}: error: {option}{error.problem}", file=sys.stderr)
        return 2
    except (CommandFailed, ExperimentFailed) as error:
        print(f"rpaccel {command}: failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"rpaccel {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if os.environ.get("RPACCEL_DEBUG"):
            raise
        print(f"rpaccel {command}: internal error: {type(error).__name__}: {error} "
              "(set RPACCEL_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
