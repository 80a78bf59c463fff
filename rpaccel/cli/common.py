"""Pieces shared by the ``rpaccel`` commands."""

import json

from ..config import ConfigError, preset

__all__ = ["CLIError", "CommandFailed", "config_from_args", "print_json"]


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
