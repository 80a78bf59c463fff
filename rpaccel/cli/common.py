"""Pieces shared by the ``rpaccel`` commands."""

import json

from ..config import ConfigError, preset

__all__ = ["CLIError", "CommandFailed", "config_from_args", "positive_ints", "print_json"]


class CLIError(Exception):
    """A usage error: an unknown name or an invalid value (exit status 2)."""


class CommandFailed(Exception):
    """The command ran and failed: a mismatch, a tool error (exit status 1)."""


def config_from_args(args):
    """The :class:`~rpaccel.config.AccelConfig` named by ``--preset``."""
    try:
        return preset(args.preset)
    except ConfigError as error:
        raise CLIError(str(error)) from None


def print_json(data):
    print(json.dumps(data, indent=2, sort_keys=False))


def positive_ints(text, option):
    """Parse the value of ``option``, comma-separated positive integers (``"16,64"``); one-line error if not."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise CLIError(f"{option} must be comma-separated positive integers, not {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise CLIError(f"{option} must be comma-separated positive integers, not {text!r}")
    return values
