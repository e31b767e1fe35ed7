"""Placeholder substitution for argv templates and the prompt.

Templates are split into argv before substitution, and each value is inserted inside one argument,
so a value containing spaces, quotes or `$(...)` stays one inert argument and never meets a shell.
Only known ``{name}`` placeholders are replaced; other braces are left as they are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def placeholders(text: str) -> set[str]:
    """Names of the ``{name}`` placeholders in ``text``."""
    return set(_PLACEHOLDER.findall(text))


def fill(text: str, values: Mapping[str, str | None]) -> str:
    """Replace every known placeholder in ``text`` by its value (None becomes empty)."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            return match.group(0)
        value = values[name]
        return "" if value is None else str(value)

    return _PLACEHOLDER.sub(replace, text)


def fill_argv(argv: Sequence[str], values: Mapping[str, str | None]) -> list[str]:
    """Substitute placeholders argument by argument."""
    return [fill(arg, values) for arg in argv]


def missing_values(argv: Sequence[str], values: Mapping[str, str | None]) -> set[str]:
    """Placeholders in ``argv`` that are known but have no value (None) in ``values``."""
    needed: set[str] = set()
    for arg in argv:
        needed |= placeholders(arg)
    return {name for name in needed if name in values and values[name] is None}


# The placeholders each kind of template is given (phases.dev.template_values, the verifier's and
# integrator's check values, phases.dev.build_prompt); any other ``{name}`` is left as it is.
AGENT_PLACEHOLDERS = (
    "prompt_file", "run_id", "task_id", "namespace", "workspace", "base", "patchset",
    "timeout", "max_iter", "max_cost", "provider",
)  # fmt: skip
RECIPE_PLACEHOLDERS = ("task_id", "namespace", "workspace", "base", "patchset")
PROMPT_PLACEHOLDERS = (
    "task_id", "title", "description", "namespace", "base", "patchset", "priority", "workspace",
    "verify_recipes", "feedback", "comments",
)  # fmt: skip
