"""Pieces shared by the ``rpaccel`` commands."""

import argparse
import json

from ..config import PRESETS, ConfigError, preset

__all__ = ["CLIError", "CommandFailed", "add_config_arguments", "apply_settings", "config_from_args", "config_given",
           "non_negative_int", "positive_ints", "print_json", "say"]


class CLIError(Exception):
    """A usage error: an unknown name or an invalid value (exit status 2)."""


class CommandFailed(Exception):
    """The command ran and failed: a mismatch, a tool error (exit status 1)."""


def add_config_arguments(parser, default="small", default_help=None):
    """Add ``--preset NAME`` and the repeatable ``--set FIELD=VALUE`` (read them with :func:`config_from_args`).

    ``default`` is the preset used without ``--preset`` (None: the command decides, see ``default_help``, and
    applies ``--set`` with :func:`apply_settings`).
    """
    parser.add_argument("--preset", metavar="NAME",
                        help=f"configuration preset: {', '.join(PRESETS)} (default "
                             f"{default_help or default})")
    parser.add_argument("--set", action="append", default=[], dest="settings", metavar="FIELD=VALUE",
                        help="change a field of the preset's configuration (repeatable; e.g. --set array_rows=8 "
                             "--set splits=1,2); checked like any configuration")
    parser.set_defaults(default_preset=default)


def config_given(args):
    """Whether ``--preset`` or ``--set`` was given (else the command's default configuration applies)."""
    return args.preset is not None or bool(args.settings)


def config_from_args(args):
    """The :class:`~rpaccel.config.AccelConfig` of ``--preset`` and ``--set`` (one-line error if invalid)."""
    try:
        base = preset(args.preset or args.default_preset)
    except ConfigError as error:
        raise CLIError(str(error)) from None
    return apply_settings(base, args)


def apply_settings(config, args):
    """``config`` with the ``--set`` changes of ``args`` (one-line error if invalid)."""
    try:
        return config.with_settings(args.settings)
    except ConfigError as error:
        raise CLIError(f"--set: {error}") from None


def print_json(data):
    print(json.dumps(data, indent=2, sort_keys=False))


def say(line):
    """Print a progress line at once (the experiments' ``progress``)."""
    print(line, flush=True)


def non_negative_int(text):
    """argparse type: a non-negative integer, such as a seed (the error names the value)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, not {value}")
    return value


def positive_ints(text, option):
    """Parse the value of ``option``, comma-separated positive integers (``"16,64"``); one-line error if not."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise CLIError(f"{option} must be comma-separated positive integers, not {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise CLIError(f"{option} must be comma-separated positive integers, not {text!r}")
    return values
