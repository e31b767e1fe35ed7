"""Logging: readable lines on stderr, and a rotated JSON-lines file under the root."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from loguru import logger

from runner.redact import redact

if TYPE_CHECKING:
    from loguru import Record

LOG_FILE_NAME = "pipeline.jsonl"


def _redact_record(record: Record) -> None:
    record["message"] = redact(record["message"])


def setup_stderr(verbosity: int, *, silent: bool = False) -> None:
    """Replace loguru's default sink: -v shows debug lines, -q only warnings and errors.

    ``silent`` (`run -q`, from cron): no log line on stderr at all; the file sink added later
    still gets every record."""
    logger.remove()
    # Every record passes through redaction before any sink (stderr or the JSON file) sees it.
    logger.configure(patcher=_redact_record)
    if silent:
        return
    level = "DEBUG" if verbosity > 0 else "WARNING" if verbosity < 0 else "INFO"
    logger.add(
        sys.stderr,
        level=level,
        format="<green>{time:HH:mm:ss}</green> <level>{level: <7}</level> {message}",
        colorize=None,
    )


def add_file_sink(root: Path) -> Path:
    """Also log every record, as JSON lines, to ROOT/logs/pipeline.jsonl (rotated at 10 MB)."""
    path = root / "logs" / LOG_FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    logger.add(path, level="DEBUG", serialize=True, rotation="10 MB", retention=5, enqueue=False)
    return path
