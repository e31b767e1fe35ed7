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

# The fake agent: writes one file named for the task and commits it with its Task-Id trailer.
AGENT = """\
import os, subprocess
task = os.environ["PIPELINE_TASK_ID"]
open(task + ".txt", "w").write(task + "\\n")
subprocess.run(["git", "add", task + ".txt"], check=True)
subprocess.run(["git", "commit", "-q", "-m", task + "\\n\\nTask-Id: " + task], check=True)
"""


def git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd`` with the benchmarks' identity; its output, stripped."""
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


def command_env(**extra: str) -> dict[str, str]:
    """The environment of a timed `pipeline-runner` process: as on any machine, bytecode caches
    allowed (PYTHONDONTWRITEBYTECODE would compile every module on every start) and no
    ``PIPELINE_*`` variable of the person running the benchmark."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE" and not k.startswith("PIPELINE_")}
    env.update(GIT_ENV, **extra)
    return env


def filesystem_of(path: Path) -> str:
    """The type and mount point of the file system ``path`` is on ("ext4 on /"), from
    /proc/mounts; the figures of a run depend on it (creating files is cheap on tmpfs, and costly
    on an ext4 whose inode tables are full of files deleted recently)."""
    resolved = str(path.resolve())
    best = ("?", "?")
    try:
        lines = Path("/proc/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return "unknown (no /proc/mounts)"
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = fields[1].replace("\\040", " ")
        if (resolved == mount or resolved.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best[1]):
            best = (fields[2], mount)
    return f"{best[0]} on {best[1]}"
