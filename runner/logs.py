"""Logging: readable lines on stderr, and a rotated JSON-lines file under the root."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from runner.redact import redact

if TYPE_CHECKING:
    from loguru import Logger, Record

LOG_FILE_NAME = "pipeline.jsonl"

_lock = threading.Lock()
_loaded: list[Logger] = []
_pending: list[Callable[[Logger], None]] = []  # set-up asked for before loguru was imported


def _real() -> Logger:
    """loguru's logger, imported on first use, with the set-up asked for until then applied."""
    if _loaded:
        return _loaded[0]
    with _lock:
        if not _loaded:
            from loguru import logger as real

            for step in _pending:
                step(real)
            _pending.clear()
            _loaded.append(real)
    return _loaded[0]


def load() -> None:
    """Import loguru now (a loop that is about to log: its first line should not wait for it)."""
    _real()


class _LazyLogger:
    """Stands for loguru's logger: a command that logs nothing (`status`, `task list`) never
    imports loguru, which costs about 45 ms of start-up (it imports asyncio)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(_real(), name)


# Every module logs through this one name (`from runner.logs import logger`).
logger = cast("Logger", _LazyLogger())


def _when_loaded(step: Callable[[Logger], None]) -> None:
    """Apply ``step`` to loguru's logger now if it is imported, or as soon as it is."""
    with _lock:
        if not _loaded:
            _pending.append(step)
            return
    step(_loaded[0])


def _redact_record(record: Record) -> None:
    record["message"] = redact(record["message"])


def setup_stderr(verbosity: int, *, silent: bool = False) -> None:
    """Replace loguru's default sink: -v shows debug lines, -q only warnings and errors.

    ``silent`` (`run -q`, from cron): no log line on stderr at all; the file sink added later
    still gets every record. Applied when loguru is first used."""

    def apply(log: Logger) -> None:
        log.remove()
        # Every record passes through redaction before any sink (stderr or the JSON file) sees it.
        log.configure(patcher=_redact_record)
        if silent:
            return
        level = "DEBUG" if verbosity > 0 else "WARNING" if verbosity < 0 else "INFO"
        log.add(
            sys.stderr,
            level=level,
            format="<green>{time:HH:mm:ss}</green> <level>{level: <7}</level> {message}",
            colorize=None,
        )

    _when_loaded(apply)


def add_file_sink(root: Path) -> Path:
    """Also log every record, as JSON lines, to ROOT/logs/pipeline.jsonl (rotated at 10 MB)."""
    path = root / "logs" / LOG_FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    logger.add(path, level="DEBUG", serialize=True, rotation="10 MB", retention=5, enqueue=False)
    return path
