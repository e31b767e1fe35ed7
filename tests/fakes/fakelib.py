"""Behaviour shared by the fake agent CLIs: what one attempt at a task does, read from a plan.

FAKE_PLAN names a JSON file {task_id: [attempt, attempt, ...]}; attempt n uses entry n (the last
entry repeats). FAKE_STATE is a directory where attempts are counted and prompts are kept.
An attempt may hold: files {path: text} to write, commits (default 1; 0 makes none), a commit
message (default: one with the Task-Id trailer the prompt asks for), sleep seconds,
exit code, cost cents, error text, sleeper seconds (a child that outlives a timeout unless killed).
With per_edit_commits (aider's way), each file is committed on its own, with a message of the
agent's own (no Task-Id trailer) and the author marked "(aider)", never amending. With
git="read-only" (codex's workspace-write sandbox) the files are written and every git command that
writes .git fails as it does there; with git="denied" (claude's acceptEdits) the files are written
and git is never run (with git="nothing", as when every write is denied, nothing is written);
attempt["git_output"] then holds what the agent saw.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout.strip()


def attempt_for(task_id: str) -> tuple[int, dict[str, Any]]:
    """The attempt to do now, counted."""
    number, attempt = peek(task_id)
    (Path(os.environ["FAKE_STATE"]) / f"{task_id}.count").write_text(str(number + 1))
    return number, attempt


def peek(task_id: str) -> tuple[int, dict[str, Any]]:
    """The attempt that perform() will do next, without counting it."""
    state = Path(os.environ["FAKE_STATE"])
    state.mkdir(parents=True, exist_ok=True)
    counter = state / f"{task_id}.count"
    number = int(counter.read_text()) if counter.exists() else 0
    plan_file = os.environ.get("FAKE_PLAN")
    plan: dict[str, list[dict[str, Any]]] = json.loads(Path(plan_file).read_text()) if plan_file else {}
    attempts = plan.get(task_id) or [{}]
    return number, attempts[min(number, len(attempts) - 1)]


def perform(
    prompt_file: str | None = None,
    prompt_text: str | None = None,
    per_edit_commits: bool = False,
    git: str = "allowed",
) -> tuple[int, dict[str, Any]]:
    """Do one attempt in the current directory; returns (exit code, attempt)."""
    task_id = os.environ["PIPELINE_TASK_ID"]
    number, attempt = attempt_for(task_id)
    state = Path(os.environ["FAKE_STATE"])
    # Who worked where and when, so that a test can tell whether two agents ever shared a workspace.
    with open(state / "occupancy.log", "a") as log:
        log.write(f"{os.getcwd()} {os.getpid()} start {time.time()}\n")
    # Stopped politely (SIGTERM), it still says when it left.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    try:
        return _perform(task_id, number, attempt, state, prompt_file, prompt_text, per_edit_commits, git)
    finally:
        with open(state / "occupancy.log", "a") as log:
            log.write(f"{os.getcwd()} {os.getpid()} end {time.time()}\n")


def _perform(
    task_id: str,
    number: int,
    attempt: dict[str, Any],
    state: Path,
    prompt_file: str | None,
    prompt_text: str | None,
    per_edit_commits: bool,
    git: str,
) -> tuple[int, dict[str, Any]]:
    prompt = prompt_text if prompt_text is not None else Path(prompt_file or "").read_text()
    (state / f"{task_id}.{number}.prompt").write_text(prompt)
    (state / f"{task_id}.{number}.argv.json").write_text(json.dumps(sys.argv[1:]))
    secret = os.environ.get("FAKE_SECRET")
    seen = {
        "PLAIN_SETTING": os.environ.get("PLAIN_SETTING"),
        "keys_holding_secret": sorted(
            k for k, v in os.environ.items() if secret and v == secret and k != "FAKE_SECRET"
        ),
        "task": os.environ.get("PIPELINE_TASK_ID"),
        "cwd": os.getcwd(),
        **{k: os.environ.get(k) for k in ("IS_SANDBOX", "GEMINI_CLI_TRUST_WORKSPACE", "PWD")},
    }
    (state / f"{task_id}.{number}.env.json").write_text(json.dumps(seen))
    if attempt.get("leak"):
        # A careless CLI echoing its credentials: the runner must keep them out of what it writes.
        print(f"debug: using key {os.environ.get(attempt['leak'], '')}", file=sys.stderr, flush=True)
        print(
            f"debug: remote https://bot:{os.environ.get(attempt['leak'], '')}@example.com/repo.git",
            flush=True,
        )
    if attempt.get("no_work") or attempt.get("error"):
        return int(attempt.get("exit", 0)), attempt
    if attempt.get("sleeper"):
        marker = state / f"{task_id}.{number}.sleeper-survived"
        code = f"import time, pathlib; time.sleep({attempt['sleeper']}); pathlib.Path({str(marker)!r}).write_text('alive')"
        subprocess.Popen([sys.executable, "-c", code])
    if attempt.get("sleep"):
        time.sleep(float(attempt["sleep"]))
    files = attempt.get("files", {f"{task_id}.txt": f"{task_id} done\n"})
    if per_edit_commits:
        author = {
            **os.environ,
            "GIT_AUTHOR_NAME": "Dev Person (aider)",
            "GIT_AUTHOR_EMAIL": "dev@example.com",
        }
        for name, text in files.items():
            path = Path(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            _git("add", name)
            subprocess.run(
                ["git", "commit", "-q", "-m", f"feat: Update {name}"],
                check=True,
                capture_output=True,
                env=author,
            )
        return int(attempt.get("exit", 0)), attempt
    if git == "nothing":
        return int(attempt.get("exit", 0)), attempt
    if git != "allowed":
        for name, text in files.items():
            path = Path(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        output = ""
        if git == "read-only":
            # The sandbox mounts the git directory read-only: the first write into it fails.
            git_dir = _git("rev-parse", "--absolute-git-dir")
            output = f"fatal: Unable to create '{git_dir}/index.lock': Read-only file system\n"
        return int(attempt.get("exit", 0)), {**attempt, "git_output": output}
    commits = int(attempt.get("commits", 1))
    for index in range(commits):
        for name, text in files.items():
            path = Path(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text if index == 0 else text + f"more {index}\n")
        _git("add", "-A")
        base = os.environ["PIPELINE_BASE"]
        ahead = int(_git("rev-list", "--count", f"refs/heads/{base}..HEAD"))
        message = attempt.get("message") or f"{task_id}: attempt {number}\n\nTask-Id: {task_id}\n"
        if ahead >= 1 and index == 0:
            _git("commit", "-q", "--allow-empty", "--amend", "-m", message)
        else:
            _git("commit", "-q", "--allow-empty", "-m", message)
    return int(attempt.get("exit", 0)), attempt
