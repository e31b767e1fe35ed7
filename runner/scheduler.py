"""The loop: one cycle integrates verified tasks, harvests agents and verifies, then develops."""

from __future__ import annotations

from runner.config import PipelineConfig
from runner.errors import PipelineError


def run_loop(config: PipelineConfig, *, once: bool, dry_run: bool) -> int:
    """Run cycles until interrupted (or one with ``once``)."""
    raise PipelineError("The run loop is not built yet; use `task` and `status` for now.")
