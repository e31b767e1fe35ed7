"""What the benchmarks share: a git identity for the repositories they make, and git itself."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

# The identity of every commit a benchmark makes (set in the environment, so the runner's own
# commits and the fake agents' use it too).
GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.com",
}  # fmt: skip


def git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd`` with the benchmarks' identity; its output, stripped."""
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()
