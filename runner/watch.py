"""`status --watch` (and `top`): the status, drawn again as it changes, until Ctrl-C.

On a terminal a rich live view is redrawn in place every interval. Anywhere else (a pipe, a file,
``NO_COLOR``, ``--no-color``) a new plain snapshot is printed only when something changed, so a
log of it holds one entry per change rather than one per second. JSON prints one document a line.
"""

from __future__ import annotations

import copy
import enum
import io
import json
import os
import select
import stat
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from runner.crash import silence_stdout
from runner.statusview import render_plain, render_rich, use_rich

DEFAULT_INTERVAL = 1.0


class WatchMode(enum.StrEnum):
    """How each refresh is shown."""

    LIVE = "live"  # rich, redrawn in place on a terminal
    PLAIN = "plain"  # a plain snapshot per change
    JSON = "json"  # a JSON document per change, one a line


def stable(doc: dict[str, Any]) -> dict[str, Any]:
    """The document without what changes by the clock alone (elapsed times, a running phase's
    duration): two documents that differ only there show no change."""
    fixed = copy.deepcopy(doc)
    for run in fixed.get("active_runs", []):
        run.pop("elapsed", None)
        for phase in run.get("phases", []):
            if phase.get("status") == "running":
                phase.pop("duration", None)
    return fixed


def watch(build: Callable[[], dict[str, Any]], *, interval: float, mode: WatchMode, out: TextIO) -> int:
    """Show ``build()`` every ``interval`` seconds as ``mode`` says, until interrupted (exit 0)
    or the reader goes away (a closed pipe: exit 0 too, with nothing more written)."""
    try:
        if mode is WatchMode.LIVE:
            _live(build, interval, out)
        else:
            _snapshots(build, interval, mode, out)
        silence_stdout()  # the reader went away
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        silence_stdout()
        return 0
    return 0


def _snapshots(build: Callable[[], dict[str, Any]], interval: float, mode: WatchMode, out: TextIO) -> None:
    last: str | None = None
    while True:
        doc = build()
        key = json.dumps(stable(doc), sort_keys=True, default=str)
        if key != last:
            if mode is WatchMode.JSON:
                out.write(json.dumps(doc, default=str) + "\n")
            else:
                stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
                out.write(("\n" if last is not None else "") + f"== {stamp} ==\n{render_plain(doc)}\n")
            out.flush()
            last = key
        if _sleep_unless_reader_gone(out, interval):
            return


def _sleep_unless_reader_gone(out: TextIO, seconds: float) -> bool:
    """Wait ``seconds``; True as soon as ``out`` is a pipe whose reader closed it. Nothing may be
    written for a long while (nothing changed), so a closed pipe is looked for, not waited for."""
    try:
        fd = out.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            time.sleep(seconds)
            return False
    except (OSError, ValueError, io.UnsupportedOperation):
        time.sleep(seconds)
        return False
    poller = select.poll()
    poller.register(fd, 0)  # the write end of a pipe reports POLLERR once no reader is left
    return bool(poller.poll(seconds * 1000))


def _live(build: Callable[[], dict[str, Any]], interval: float, out: TextIO) -> None:
    from rich.console import Console
    from rich.live import Live

    console = Console(file=out)
    with Live(render_rich(build()), console=console, auto_refresh=False, redirect_stdout=False,
              redirect_stderr=False) as live:  # fmt: skip
        while True:
            time.sleep(interval)
            live.update(render_rich(build()), refresh=True)


def status_command(
    build: Callable[[], dict[str, Any]], *, as_json: bool, watching: bool, interval: float, no_color: bool,
    out: TextIO, env: dict[str, str],
) -> int:  # fmt: skip
    """`status` once, or `status --watch`: JSON, rich on a terminal, plain text otherwise."""
    rich = use_rich(out, no_color=no_color, env=env) and not as_json
    if watching:
        mode = WatchMode.JSON if as_json else WatchMode.LIVE if rich else WatchMode.PLAIN
        return watch(build, interval=interval, mode=mode, out=out)
    doc = build()
    try:
        if as_json:
            out.write(json.dumps(doc, indent=2, default=str) + "\n")
        elif rich:
            from rich.console import Console

            Console(file=out).print(render_rich(doc))
        else:
            out.write(render_plain(doc) + "\n")
        out.flush()
    except BrokenPipeError:
        silence_stdout()
    return 0
