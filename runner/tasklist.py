"""`task list` as a table a person reads: one line per task, whatever its title holds.

A title may be long or span lines (an imported issue's body pasted as its title); a line of the
table shows only its first line, cut with "..." to the width, so the columns stay columns.
`task list --json` keeps every field whole.
"""

from __future__ import annotations

import os
import shutil
import sys
import unicodedata
from collections.abc import Sequence

from runner.tasks import Task, TaskStatus, TaskType

# The width when the output is not a terminal (a pipe, a file): fixed, so a script gets the same
# lines wherever it runs.
PIPE_WIDTH = 120
MIN_TITLE = 10  # a title keeps at least this many characters, however narrow the terminal
ID_MAX = 24  # wider ids are cut too, with an ellipsis (a 64-character id would push the rest off)
ELLIPSIS = "..."  # ASCII: the output may go where only ASCII can

_STATUS_WIDTH = max(len(s.value) for s in TaskStatus)


def output_width() -> int:
    """The terminal's width when stdout is one (COLUMNS wins, as for other tools), else PIPE_WIDTH."""
    if os.environ.get("COLUMNS", "").isdigit():
        return int(os.environ["COLUMNS"])
    if sys.stdout.isatty():
        return shutil.get_terminal_size((PIPE_WIDTH, 24)).columns
    return PIPE_WIDTH


def first_line(text: str) -> str:
    """The first line of ``text`` with whitespace runs as one space; " ..." marks more lines.
    Control and format characters are shown as '?' (runner.tasklist.printable)."""
    lines = text.strip().splitlines() or [""]
    head = printable(" ".join(lines[0].split()))
    return head + f" {ELLIPSIS}" if len(lines) > 1 else head


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` safe to print on a terminal: control and format characters (an escape sequence,
    a carriage return, a bidirectional override in a title) become '?', so whoever queued a
    task cannot colour, retitle or rewrite the terminal of whoever lists it. Newlines and tabs
    are kept only when asked (a description printed as a block)."""
    return "".join(
        c if (keep_newlines and c in "\n\t") or not unicodedata.category(c).startswith("C") else "?" for c in text
    )


def clip(text: str, width: int) -> str:
    """``text`` (one line) cut to ``width`` characters, the cut marked with an ellipsis."""
    if len(text) <= width:
        return text
    return text[: max(0, width - len(ELLIPSIS))].rstrip() + ELLIPSIS


def task_table(tasks: Sequence[Task], width: int) -> list[str]:
    """A header and one line per task, none wider than ``width`` (the title gets what the other
    columns leave, at least MIN_TITLE)."""
    id_width = min(ID_MAX, max([len("ID"), *(len(t.id) for t in tasks)]))
    fixed = id_width + 2 + _STATUS_WIDTH + 2 + 3 + 2
    title_width = max(MIN_TITLE, width - fixed)
    lines = [f"{'ID':<{id_width}}  {'STATUS':<{_STATUS_WIDTH}}  PRI  TITLE"]
    for task in tasks:
        extra = " [epic]" if task.type is TaskType.EPIC else ""
        if task.dependencies:
            extra += f" (after {', '.join(task.dependencies)})"
        title = clip(first_line(task.title) + extra, title_width)
        lines.append(
            f"{clip(task.id, id_width):<{id_width}}  {task.status.value:<{_STATUS_WIDTH}}  "
            f"{task.priority_name:<3}  {title}"
        )
    return lines
