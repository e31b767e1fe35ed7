"""The names each registry holds, for validating a config against them.

The registries themselves (agent presets in phases.backends, task sources in runner.tasks) import
the config models; the config module imports neither, and is handed these names instead.
"""

from __future__ import annotations


def names() -> dict[str, list[str]]:
    """Registered names by what they name, as ``load_config`` takes them."""
    from phases.backends import BACKENDS
    from runner.tasks import TASK_SOURCES

    return {"preset": sorted(BACKENDS), "task source": sorted(TASK_SOURCES)}
