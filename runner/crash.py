"""What the CLI does when a command ends in a way no command meant: a closed pipe or a bug.

A reader that goes away (``pipeline-runner task list | head -1``) is the reader's choice, not an
error: the command stops quietly, exit 0. Any other exception
that escapes a command is a bug in pipeline-runner: its traceback is written to a file and the
person gets one line naming that file, never a traceback in the middle of their terminal.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from runner.logs import logger
from runner.redact import redact

CRASH_DIR_NAME = "crashes"


class CrashLog:
    """Where a bug's traceback goes: under the root's logs once a command knows its root."""

    def __init__(self) -> None:
        self.root: Path | None = None

    def directory(self) -> Path:
        """ROOT/logs/crashes when the root exists, else a folder in the system's temporary directory."""
        import tempfile  # here, as traceback below: only a crash needs them, not every start-up

        # The root is never created just to hold a crash: a bug before it exists goes to /tmp.
        if self.root is not None and self.root.is_dir():
            return self.root / "logs" / CRASH_DIR_NAME
        return Path(tempfile.gettempdir()) / "pipeline-runner-crashes"

    def write(self, exc: BaseException, argv: list[str]) -> Path:
        """Write ``exc``'s traceback, with the command line, to a new file; return its path."""
        import tempfile
        import traceback

        stamp = time.strftime("%Y%m%d-%H%M%S")
        text = "".join(traceback.format_exception(exc))
        header = f"pipeline-runner {' '.join(argv)}\n"
        for folder in (self.directory(), Path(tempfile.gettempdir())):
            try:
                folder.mkdir(parents=True, exist_ok=True)
                path = folder / f"crash-{stamp}-{os.getpid()}.log"
                # Masked like every log: a traceback can hold a value the agent was handed.
                path.write_text(redact(header + text), encoding="utf-8")
                return path
            except OSError:
                continue  # a read-only root: the temporary directory will do
        raise OSError("no directory to write the traceback to")


# Where a bug's traceback goes; the CLI points it at the root once a command has loaded its config.
CRASH_LOG = CrashLog()


def report_bug(exc: BaseException, argv: Sequence[str] | None) -> None:
    """Write ``exc``'s traceback to a file and say, in one line on stderr, where it is."""
    words = list(argv) if argv is not None else sys.argv[1:]
    try:
        path = str(CRASH_LOG.write(exc, words))
    except OSError:
        path = "nowhere: no directory could be written"
    logger.opt(exception=exc).debug("bug")
    print(
        f"pipeline-runner: internal error ({type(exc).__name__}: {redact(str(exc))[:200]}); this is a bug in "
        f"pipeline-runner, not in your input. The traceback is in {path}",
        file=sys.stderr,
    )


def stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader has gone (the kernel reports it as an error)."""
    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def silence_stdout() -> None:
    """After the reader of stdout went away: point stdout at /dev/null, so that the flush at exit
    does not fail again and print a traceback (what Python's documentation recommends)."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
