"""Helpers for end-to-end loop tests: a sample repository, a plan for the fake agents, and runners."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from runner import killpoints, registries
from runner.config import PipelineConfig, load_config
from runner.layout import Layout
from runner.state import Database, open_db
from runner.tasks import BuiltinTaskStore, NewTask
from tests.conftest import clean_env, git, make_repo, write_config

# The verify recipe of the sample repository: fails when a .txt file says BAD. When PUSH_FROM is set
# and the tree holds PUSH_DURING_<phase>, it first commits to base in the main checkout, once, as a
# person pushing meanwhile would.
CHECK_PY = """\
import os, pathlib, subprocess, sys
here = pathlib.Path.cwd()
phase = "integrate" if "integration" in here.parts else "verify"
push_from = os.environ.get("PUSH_FROM")
marker = pathlib.Path(os.environ.get("FAKE_STATE", "/nonexistent")) / "pushed"
if push_from and (here / f"PUSH_DURING_{phase}").exists() and not marker.exists():
    marker.write_text("yes")
    main = pathlib.Path(push_from)
    (main / "person.md").write_text("a person's change\\n")
    subprocess.run(["git", "add", "person.md"], cwd=main, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "A person's commit"], cwd=main, check=True)
bad = sorted(str(p.relative_to(here)) for p in here.rglob("*.txt") if "BAD" in p.read_text())
print("checked", here.name, "bad files:", bad)
sys.exit(1 if bad else 0)
"""


@dataclass
class Sample:
    """A repository under test with its config, plan and fake-agent state."""

    repo: Path
    state: Path
    plan_file: Path
    config: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.repo / ".pipeline-runner"

    def write_config(self, **changes: Any) -> None:
        # A graph given replaces the one before: phases of two graphs do not mix.
        base = {k: v for k, v in self.config.items() if not (k == "phases" and "phases" in changes)}
        merged = _merge(base, changes)
        self.config = merged
        (self.repo / ".git" / "info" / "exclude").write_text("pipeline.yaml\n")
        (self.repo / "pipeline.yaml").write_text(yaml.safe_dump(merged))

    def plan(self, plan: Mapping[str, list[dict[str, Any]]]) -> None:
        self.plan_file.write_text(json.dumps(plan))

    def full_env(self) -> dict[str, str]:
        return clean_env({"FAKE_STATE": str(self.state), "FAKE_PLAN": str(self.plan_file), **self.env})

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "runner", *args], cwd=self.repo, env=self.full_env(),
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def add(self, title: str, *args: str) -> str:
        done = self.cli("task", "add", title, "--json", *args)
        assert done.returncode == 0, done.stderr
        task_id: str = json.loads(done.stdout)["id"]
        return task_id

    def status(self) -> dict[str, Any]:
        done = self.cli("status", "--json")
        assert done.returncode == 0, done.stderr
        doc: dict[str, Any] = json.loads(done.stdout)
        return doc

    def task(self, task_id: str) -> dict[str, Any]:
        done = self.cli("task", "show", task_id, "--json")
        assert done.returncode == 0, done.stderr
        data: dict[str, Any] = json.loads(done.stdout)
        return data

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "runner", "run", *args], cwd=self.repo, env=self.full_env(),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip

    def run_until(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 90) -> dict[str, Any]:
        """Run the daemon until ``predicate(status)`` holds, then stop it with SIGTERM."""
        proc = self.start()
        try:
            doc: dict[str, Any] = wait_for(lambda: _if(self.status(), predicate), timeout, proc)
        finally:
            stop(proc)
        return doc

    def run_once_until(self, predicate: Callable[[dict[str, Any]], bool], limit: int = 60) -> int:
        """Run separate `run --once` processes until ``predicate(status)``; returns how many ran.

        Each must exit 0, or 3 (it sent a task to needs help, or work is paused on the way)."""
        for count in range(1, limit + 1):
            done = self.cli("run", "--once")
            assert done.returncode in (0, 3), done.stdout + done.stderr
            if predicate(self.status()):
                return count
            time.sleep(0.05)
        raise AssertionError(f"not reached after {limit} runs: {self.status()}")

    def run_once_until_verified(self, count: int = 1, limit: int = 60) -> int:
        """`run --once` until ``count`` tasks are verified and wait to land: a lock on base's ref
        (as a running git command holds) keeps each run from landing them, as it lands all it can
        otherwise; the lock is gone again afterwards."""
        lock = self.repo / ".git" / "refs" / "heads" / f"{self.config.get('base', 'live')}.lock"
        lock.touch()
        try:
            return self.run_once_until(lambda d: d["verified"] == count, limit)
        finally:
            lock.unlink(missing_ok=True)

    def run_once_until_killed(self, point: str, limit: int = 60) -> None:
        """Run `run --once` processes with the runner set to SIGKILL itself at kill point ``point``
        until one is killed there; the kill point is unset again afterwards."""
        self.env[killpoints.ENV] = point
        try:
            for _ in range(limit):
                done = self.cli("run", "--once")
                if done.returncode == -9:
                    return
                assert done.returncode in (0, 3), done.stdout + done.stderr
            raise AssertionError(f"the runner never reached {point}")
        finally:
            del self.env[killpoints.ENV]

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.root / "state.db")
        try:
            return list(conn.execute(sql, params))
        finally:
            conn.close()

    def base_log(self) -> list[str]:
        return git(self.repo, "log", "--format=%s", "live").splitlines()

    def trailers(self) -> list[str]:
        out = git(self.repo, "log", "--format=%(trailers:key=Task-Id,valueonly)", "live")
        return [line.strip() for line in out.splitlines() if line.strip()]

    def task_branches(self) -> list[str]:
        out = git(self.repo, "for-each-ref", "--format=%(refname:short)", "refs/heads")
        return [b for b in out.splitlines() if b != "live"]

    def leftover_worktrees(self) -> list[str]:
        wt = self.root / "worktrees"
        listed = [line for line in git(self.repo, "worktree", "list", "--porcelain").splitlines()
                  if line.startswith("worktree ") and "/worktrees/" in line]  # fmt: skip
        return sorted([p.name for p in wt.iterdir()] if wt.exists() else []) + listed


def _if(doc: dict[str, Any], predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    return doc if predicate(doc) else None


def wait_for(fn: Callable[[], Any], timeout: float, proc: subprocess.Popen[str] | None = None) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = fn()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"runner exited early ({proc.returncode}): {proc.stdout.read() if proc.stdout else ''}"
            )
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s")


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> str:
    if proc.poll() is None:
        os.killpg(proc.pid, sig) if sig == signal.SIGKILL else proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    return out or ""


def kill_leftovers(root: Path) -> list[str]:
    """Kill processes whose command line mentions ``root`` (supervisors); return their command lines."""
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(root) in cmd and int(pid) != os.getpid():
            found.append(cmd)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(pid), signal.SIGKILL)
    return found


def all_done(n: int) -> Callable[[dict[str, Any]], bool]:
    return lambda doc: doc["done"] == n


def _merge(low: dict[str, Any], high: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(low)
    for key, value in high.items():
        out[key] = (
            _merge(out[key], value)
            if isinstance(value, Mapping) and isinstance(out.get(key), dict)
            else value
        )
    return out


def make_sample(tmp_path: Path, **config: Any) -> Sample:
    repo = make_repo(tmp_path / "repo", files={"check.py": CHECK_PY, "README.md": "sample\n"})
    base_config: dict[str, Any] = {
        "base": "live",
        "concurrency": 2,
        "interval": 0.05,
        "limits": {"max_retries": 3},
        "agent": {"preset": "command", "command": ["fake-agent", "{prompt_file}"], "timeout": 60},
        "phases": {"verify": {"run": [["python3", "check.py"]]}},
    }
    sample = Sample(repo, tmp_path / "fake-state", tmp_path / "plan.json", base_config)
    sample.write_config(**config)
    sample.plan({})
    return sample


def in_process(tmp_path: Path, settings: str, tasks: int = 3) -> tuple[PipelineConfig, BuiltinTaskStore, Database]:
    """For tests that drive the loop's steps in this process: a repository on base `live` with its
    root under ``tmp_path`` and the config ``settings`` (YAML lines), and its store holding the open
    tasks t-0, t-1, ..."""
    repo = make_repo(tmp_path / "repo")
    write_config(repo, f"base: live\nroot: {tmp_path / 'root'}\n{settings}")
    config = load_config(repo / "pipeline.yaml", registries=registries.names()).config
    Layout(config.root).ensure()
    db = open_db(config.state_db)
    store = BuiltinTaskStore(db)
    for index in range(tasks):
        store.add(NewTask(id=f"t-{index}", title=f"task {index}"))
    return config, store, db
