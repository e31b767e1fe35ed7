#!/usr/bin/env python3
"""EXAMPLE AGENT for the demo: a scripted stand-in for a coding agent, not an AI.

It behaves like a command agent: started in the task's worktree with the prompt file as its
argument, it applies the change prepared for the task under changes/TASK_ID/ and commits it with
the Task-Id trailer (amending its earlier commit on a retry). For `add-mul` its first attempt is
deliberately wrong, so that the demo shows verification failing and the feedback reaching the next
prompt, which this agent reads to pick the corrected change.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

CHANGES = Path(__file__).resolve().parent / "changes"


def git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout.strip()


def main() -> int:
    prompt = Path(sys.argv[1]).read_text()
    task = os.environ["PIPELINE_TASK_ID"]
    base = os.environ["PIPELINE_BASE"]
    retry = "Previous Review Feedback" in prompt
    source = CHANGES / task
    if not retry and (CHANGES / f"{task}.first-try").is_dir():
        source = CHANGES / f"{task}.first-try"
    print(
        f"example agent: task {task}, {'retry after feedback' if retry else 'first attempt'}: {source.name}"
    )
    if not source.is_dir():
        print(f"example agent: no prepared change for {task}", file=sys.stderr)
        return 1
    for path in source.rglob("*"):
        if path.is_file():
            target = Path(path.relative_to(source))
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    git("add", "-A")
    title = prompt.split("### Title", 1)[1].strip().splitlines()[0]
    message = f"{title}\n\nTask-Id: {task}\n"
    ahead = int(git("rev-list", "--count", f"refs/heads/{base}..HEAD"))
    identity = ["-c", "user.name=Example Agent", "-c", "user.email=example-agent@localhost"]
    git(*identity, "commit", "-q", *(["--amend"] if ahead else []), "-m", message)
    print("example agent: committed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
