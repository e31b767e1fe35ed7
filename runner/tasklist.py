"""`task list` as a table a person reads: one line per task, whatever its title holds.

A title may be long or span lines (an imported issue's body pasted as its title); a line of the
table shows only its first line, cut with "..." to the width, so the columns stay columns.
`task list --json` keeps every field whole.

A listing is paged (``DEFAULT_LIMIT`` tasks unless told otherwise) and read page by page from the
store, so that it costs the same, in time and memory, on a store of any size.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import unicodedata
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TextIO

from runner.tasks import BuiltinTaskStore, Task, TaskStatus, TaskType

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


def task_table(tasks: Sequence[Task], width: int, *, widest_id: int = 0, header: bool = True) -> list[str]:
    """A header (unless not wanted) and one line per task, none wider than ``width`` (the title
    gets what the other columns leave, at least MIN_TITLE). ``widest_id``: the longest id of the
    whole listing, when ``tasks`` is one page of it, so that every page's columns line up."""
    id_width = min(ID_MAX, max([len("ID"), widest_id, *(len(t.id) for t in tasks)]))
    fixed = id_width + 2 + _STATUS_WIDTH + 2 + 3 + 2
    title_width = max(MIN_TITLE, width - fixed)
    lines = [f"{'ID':<{id_width}}  {'STATUS':<{_STATUS_WIDTH}}  PRI  TITLE"] if header else []
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


# What `task list` shows without --limit or --all (--json lists every task unless given --limit).
DEFAULT_LIMIT = 200
# Tasks read from the store at once when a listing goes on past one page (--all, --json).
BATCH = 1000


@dataclass(frozen=True)
class Listing:
    """What `task list` was asked for: ``limit`` None lists every task from ``offset`` on."""

    statuses: Collection[TaskStatus] = ()
    parent: str | None = None
    limit: int | None = DEFAULT_LIMIT
    offset: int = 0
    as_json: bool = False


def list_tasks(store: BuiltinTaskStore | None, listing: Listing, out: TextIO, err: TextIO) -> int:
    """Write the listing to ``out`` a batch at a time (a table, or a JSON array of `task show
    --json` objects, comments included); when tasks are left after it, say on ``err`` how many
    and how to see them. The number of tasks written."""
    width = output_width()
    offset, written, total = listing.offset, 0, 0
    if listing.as_json:
        out.write("[")
    while True:
        size = BATCH if listing.limit is None else min(BATCH, listing.limit - written)
        page = (
            store.page(listing.statuses, listing.parent, limit=size, offset=offset, with_comments=listing.as_json)
            if store is not None and size > 0
            else None
        )
        tasks = page.tasks if page is not None else []
        total = page.total if page is not None else total
        if listing.as_json:
            for task in tasks:
                out.write(("," if written else "") + "\n" + _indented(task))
                written += 1
        elif tasks:
            out.write("\n".join(task_table(tasks, width, widest_id=page.widest_id if page else 0,
                                            header=written == 0)) + "\n")  # fmt: skip
            written += len(tasks)
        offset += len(tasks)
        if len(tasks) < size or size == 0:
            break
    if listing.as_json:
        out.write("\n]\n" if written else "]\n")
    elif not written:
        out.write("No tasks.\n" if not listing.offset or total == 0 else f"No tasks after the first {listing.offset}.\n")
    left = max(0, total - offset) if listing.limit is not None else 0
    if left:
        err.write(
            f"{left} more {'task' if left == 1 else 'tasks'} after these {written}: `task list --offset {offset}` "
            "for the next page, `--all` for every one.\n"
        )
    return written


def _indented(task: Task) -> str:
    """One task as `task list --json` writes it inside its array (as json.dumps(indent=2) would)."""
    text = json.dumps(task.to_json(), indent=2, default=str)
    return "\n".join("  " + line for line in text.splitlines())
