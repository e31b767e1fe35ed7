"""Validation of what tasks name: ids become git branch and directory names, namespaces become
arguments of verify recipes, so both are checked before anything is written."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from runner.errors import TaskError

_ID_CHARS = re.compile(r"[A-Za-z0-9._-]{1,64}")


def id_problem(task_id: str) -> str | None:
    """Return why ``task_id`` is unsafe as a branch and directory name, or None when it is safe."""
    if not _ID_CHARS.fullmatch(task_id):
        if not task_id:
            return "it is empty"
        if len(task_id) > 64:
            return f"it is {len(task_id)} characters long (at most 64)"
        return "it may hold only letters, digits, '.', '_' and '-'"
    if task_id[0] in "-.":
        return f"it may not start with {task_id[0]!r}"
    if ".." in task_id:
        return "it may not contain '..'"
    if task_id.endswith(".lock"):
        return "it may not end in '.lock'"
    if task_id.endswith("."):
        return "it may not end in '.'"
    return None


def check_task_id(task_id: str) -> str:
    """Return ``task_id`` unchanged, or raise TaskError saying why it cannot be used."""
    problem = id_problem(task_id)
    if problem is not None:
        raise TaskError(
            f"Invalid task id {task_id!r}: {problem}. Task ids become git branch and directory "
            "names, so they must be 1-64 characters of letters, digits, '.', '_' or '-', not start "
            "with '-' or '.', and not contain '..' or end in '.lock' or '.'."
        )
    return task_id


NAMESPACE_MAX = 255


def namespace_problem(namespace: str) -> str | None:
    """Return why ``namespace`` is unsafe as one argument of a verify recipe, or None when it is safe.

    A namespace is a path in the repository (``lib/parser.py``, ``Omni/Task.hs``). It never reaches
    a shell, but a recipe's tool would read a leading '-' as an option of its own.
    """
    if not namespace.strip():
        return "it is empty"
    if len(namespace) > NAMESPACE_MAX:
        return f"it is {len(namespace)} characters long (at most {NAMESPACE_MAX})"
    if namespace.startswith("-"):
        return "it may not start with '-' (a recipe's tool would take it for an option)"
    if any(ord(c) < 32 or ord(c) == 127 for c in namespace):
        return "it may not hold control characters (newlines included)"
    if namespace.startswith("/") or ".." in PurePosixPath(namespace).parts:
        return "it must be a path inside the repository (no leading '/', no '..')"
    return None
