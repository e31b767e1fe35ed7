"""The options every command takes, before its name or after it: ``-c FILE``, ``-v``, ``-q``.

``pipeline-runner -q status`` and ``pipeline-runner status -q`` mean the same. After the command
they are declared again on its parser under names of their own and without defaults, because
argparse copies a command's parsed values over what was parsed before it: a default there would
clobber ``-c FILE`` given before the command. ``merge_global_options`` then joins the two.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_global_options(parser: argparse.ArgumentParser | Any, *, after_command: bool = False) -> None:
    """Declare -c/-v/-q on ``parser`` (or an argument group), for before or after the command."""
    # Declared once here, for both places.
    prefix, config_default, count_default = ("sub_", argparse.SUPPRESS, argparse.SUPPRESS) if after_command else ("", None, 0)
    parser.add_argument("-c", "--config", dest=prefix + "config", default=config_default, metavar="FILE", help="config file "
                        "(default: pipeline.yaml here or in the nearest directory above it in the repository)")
    parser.add_argument("-v", "--verbose", dest=prefix + "verbose", action="count", default=count_default,
                        help="more log output")
    parser.add_argument("-q", "--quiet", dest=prefix + "quiet", action="count", default=count_default,
                        help="only warnings and errors; for run: only the events needs help and paused, on stdout")  # fmt: skip


def global_options_after_command() -> argparse.ArgumentParser:
    """A parent parser that gives a command's parser the global options."""
    parent = argparse.ArgumentParser(add_help=False)
    add_global_options(parent.add_argument_group("global options"), after_command=True)
    return parent


def merge_global_options(args: argparse.Namespace) -> None:
    """Fold the options given after the command into ``config``, ``verbose`` and ``quiet``."""
    # Given after the command, -c wins (it is the later word); -v and -q add up from both places.
    args.config = getattr(args, "sub_config", None) or args.config
    args.verbose += getattr(args, "sub_verbose", 0)
    args.quiet += getattr(args, "sub_quiet", 0)
