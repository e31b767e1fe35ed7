"""Whether `run --task-id ID` / `--parent EPIC` name a task at all, before a run starts.

A run limited to a task that does not exist has nothing to do and would exit 0 in silence, so
the person never learns the id was mistyped.
"""

from __future__ import annotations

from runner.config import LoadedConfig
from runner.state import open_db, state_exists
from runner.tasks import open_task_source


def scope_problem(loaded: LoadedConfig) -> str | None:
    """Why the task_id / parent the run is limited to names no task, or None (also when unlimited)."""
    config = loaded.config
    wanted = [(key, value) for key, value in (("task_id", config.task_id), ("parent", config.parent)) if value]
    if not wanted:
        return None
    known: set[str] = set()
    if state_exists(config.state_target):
        db = open_db(config.state_target, readonly=True)
        try:
            store = open_task_source(config.tasks.source, db)
            known = {value for _, value in wanted if store.exists(value)}
        finally:
            db.close()
    for key, value in wanted:
        if value not in known:
            return (
                f"{loaded.origin_of(key).describe()}: key {key!r}: no task has the id {value!r}, so the run "
                "would have nothing to do; `pipeline-runner task list` shows the tasks."
            )
    return None
