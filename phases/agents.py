"""Agent backends for the dev phase, in an explicit registry keyed by preset name.

A backend starts an agent that may outlive the runner, and later, possibly from another runner
process, polls it from what was stored in SQLite (run id, pid, log path) into an outcome.
"""

from __future__ import annotations

import abc
import contextlib
import enum
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from runner import procs, supervise
from runner.config import AgentConfig
from runner.supervise import read_status
from runner.templates import fill_argv

# The supervisor runs as a file under an isolated interpreter (-I -S: stdlib only, no site
# packages to scan), which halves its start-up; its path also identifies it in /proc.
SUPERVISOR_SCRIPT = str(Path(supervise.__file__).resolve())
SUPERVISOR_MODULE = SUPERVISOR_SCRIPT
# The variable every agent run is started with; all of the run's processes inherit it, which finds them
# once their supervisor is gone. Its value is the run's status file: a run id (t-1-1) repeats in
# every pipeline on the host, a path under one root does not, so another pipeline's run is never hit.
RUN_MARKER = "PIPELINE_RUN_MARK"


def run_mark(status_file: Path) -> str:
    """The RUN_MARKER value of the run whose status file is ``status_file``."""
    return str(status_file)


class AgentState(enum.StrEnum):
    """Where an agent run is."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class AgentOutcome:
    """What polling an agent run found."""

    state: AgentState
    error: str | None = None
    cost_cents: float = 0.0
    tokens: int | None = None
    # The run failed for a reason of the machine, the network or the agent's own setup (auth,
    # config, sandbox, an untrusted folder, an unreachable endpoint), not of the task: every task
    # would fail the same way, so the attempt is not charged to this one.
    environment: bool = False
    # The agent stopped on a cap (turns, budget) after it may have done the work: a commit it made
    # is brought in and verified like any other, and only without one is this a failure.
    work_counts: bool = False
    # What the agent reported that explains a failure found later ("agent made no commit"), such
    # as the tool calls its permission mode denied.
    detail: str | None = None


@dataclass(frozen=True)
class AgentRequest:
    """Everything a backend needs to start one run."""

    run_id: str
    workspace: Path
    prompt_file: Path
    log_path: Path
    status_file: Path
    values: dict[str, str | None]  # template values: {task_id}, {prompt_file}, ...
    env: dict[str, str]  # the full environment for the agent process


@dataclass(frozen=True)
class AgentHandle:
    """What is stored to find a run again from another process."""

    run_id: str
    pid: int | None
    log_path: Path
    status_file: Path
    started_at: float


class AgentBackend(abc.ABC):
    """A way of running a coding agent."""

    name: str = ""
    # Whether poll() is cheap enough (no process) to call many times a second while waiting.
    poll_is_cheap: bool = False
    # Whether the agent commits each edit on its own (aider does, with messages of its own): the
    # runner then folds its commits into the one commit, with the Task-Id trailer, verify expects.
    commits_per_edit: bool = False
    # Whether the runner commits what the agent left uncommitted in its workspace when it ended
    # without a commit: a sandbox (codex's workspace-write) or a permission mode (claude's
    # acceptEdits) lets these CLIs edit files but not write .git.
    runner_commits: bool = False

    def __init__(self, config: AgentConfig) -> None:
        self.config = config

    def check(self) -> str | None:
        """A problem that makes this backend unusable with its config, or None."""
        return None

    def executable_name(self) -> str | None:
        """The program this backend starts, to check it is installed before any task runs."""
        return None

    def finished(self, handle: AgentHandle) -> bool:
        """Cheap check whether a run has ended (only meaningful when poll_is_cheap)."""
        return False

    def poll_running(self, handle: AgentHandle) -> AgentOutcome:
        """``poll`` of a run the caller knows is still running (it watches the supervisor's exit):
        running, unless the backend stops it for a reason of its own (a preset's stalled run)."""
        return AgentOutcome(AgentState.RUNNING)

    def find_started(self, handle: AgentHandle) -> int | None:
        """The pid of a run that was started but whose pid was never recorded (the runner was
        killed in between), or None when it never started or is gone."""
        return None

    @abc.abstractmethod
    def start(self, request: AgentRequest) -> AgentHandle:
        """Start the agent; raises ProcessError when it cannot be started."""

    @abc.abstractmethod
    def poll(self, handle: AgentHandle) -> AgentOutcome:
        """Where the run is now."""

    @abc.abstractmethod
    def cancel(self, handle: AgentHandle) -> None:
        """Stop the run if it is still going."""


class AgentdBackend(AgentBackend):
    """The reference protocol: ``agentd run`` returns at once, ``agentd status --json`` is polled."""

    name = "agentd"
    executable = "agentd"
    # agentd may not know a run for a moment after `run` returns; past this, an unknown run is gone.
    UNKNOWN_GRACE_SECONDS = 60.0

    def executable_name(self) -> str | None:
        """agentd itself."""
        return self.executable

    def start(self, request: AgentRequest) -> AgentHandle:
        """Ask agentd to start the run in the background."""
        argv = [
            self.executable, "run", str(request.prompt_file), "-n", request.run_id,
            "--timeout", str(self.config.timeout), "--max-iter", str(self.config.max_iter),
            "--max-cost", str(self.config.max_cost),
        ]  # fmt: skip
        if self.config.provider:
            argv += ["-p", self.config.provider]
        procs.run(argv, cwd=request.workspace, env=request.env)
        return AgentHandle(request.run_id, None, request.log_path, request.status_file, time.time())

    def poll(self, handle: AgentHandle) -> AgentOutcome:
        """Read ``agentd status RUN --json``."""
        result = procs.run([self.executable, "status", handle.run_id, "--json"], check=False)
        if result.exit_code != 0:
            age = time.time() - handle.started_at
            if age > self.UNKNOWN_GRACE_SECONDS:
                return AgentOutcome(
                    AgentState.FAILED, f"agentd run {handle.run_id} is gone: {result.output.strip()[-500:]}"
                )
            return AgentOutcome(AgentState.RUNNING)
        try:
            data = json.loads(result.output)
        except ValueError:
            return AgentOutcome(AgentState.RUNNING)
        if not isinstance(data, dict):
            return AgentOutcome(AgentState.RUNNING)
        cost = number(data.get("cost_cents"))
        status = data.get("status")
        if status == "completed":
            return AgentOutcome(AgentState.SUCCEEDED, cost_cents=cost)
        if status == "failed":
            return AgentOutcome(AgentState.FAILED, str(data.get("error") or "agent run failed"), cost)
        if status == "timeout":
            return AgentOutcome(AgentState.FAILED, "agent run timed out", cost)
        return AgentOutcome(AgentState.RUNNING, cost_cents=cost)

    def cancel(self, handle: AgentHandle) -> None:
        """Best effort: agentd enforces its own timeout."""
        procs.run([self.executable, "kill", handle.run_id], check=False)


class CommandBackend(AgentBackend):
    """Any CLI: ``agent.command`` as an argv template, run detached under a supervisor."""

    name = "command"
    poll_is_cheap = True

    def check(self) -> str | None:
        """The command preset needs a command."""
        if not self.config.command:
            return "agent.command must be set (an argv list or a string) for preset 'command'"
        return None

    def executable_name(self) -> str | None:
        """The first word of the command."""
        return self.config.command[0] if self.config.command else None

    def find_started(self, handle: AgentHandle) -> int | None:
        """The supervisor of this run, found by the status file it was given, or None."""
        marker = str(handle.status_file).encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if marker in cmdline and SUPERVISOR_SCRIPT.encode() in cmdline:
                return int(entry)
        status = read_status(handle.status_file)
        # One forked from a fork server carries the server's command line, but its status file
        # names it before its agent starts.
        supervisor = status.get("supervisor") if status is not None else None
        if isinstance(supervisor, int) and procs.pid_alive(supervisor, SUPERVISOR_MODULE):
            return supervisor
        # It may have finished already: its verdict is there to harvest.
        if status is not None and isinstance(status.get("pid"), int):
            return int(status["pid"])
        return None

    def finished(self, handle: AgentHandle) -> bool:
        """The supervisor wrote its verdict, or is gone."""
        status = read_status(handle.status_file)
        if status is not None and status.get("state") == "finished":
            return True
        return not procs.pid_alive(handle.pid, SUPERVISOR_MODULE)

    # Presets that parse the agent's machine-readable stdout keep it apart from its stderr.
    separate_stdout = False

    def argv(self, request: AgentRequest) -> list[str]:
        """The agent's argv with the request's values substituted argument by argument."""
        return fill_argv(self.config.command or [], request.values)

    def start(self, request: AgentRequest) -> AgentHandle:
        """Start the command detached, under the supervisor that enforces the timeout."""
        agent_argv = self.argv(request)
        request.status_file.parent.mkdir(parents=True, exist_ok=True)
        request.status_file.unlink(missing_ok=True)
        stdout = ["--stdout", str(stdout_file(request.status_file))] if self.separate_stdout else []
        options = [
            "--status-file", str(request.status_file),
            "--timeout", str(self.config.timeout), "--max-bytes", str(procs.MAX_OUTPUT_BYTES), *stdout,
            "--", *agent_argv,
        ]  # fmt: skip
        env = {**request.env, RUN_MARKER: run_mark(request.status_file)}  # what kill_leftovers looks for
        pid = procs.spawn_supervisor(options, request.workspace, log_path=request.log_path, env=env)
        return AgentHandle(request.run_id, pid, request.log_path, request.status_file, time.time())

    def poll(self, handle: AgentHandle) -> AgentOutcome:
        """Read the supervisor's status file; a vanished supervisor is a failure."""
        verdict = self.verdict(handle)
        if verdict is not None:
            return verdict
        if procs.pid_alive(handle.pid, SUPERVISOR_MODULE):
            return AgentOutcome(AgentState.RUNNING)
        # It may have written its verdict and exited between the two looks.
        verdict = self.verdict(handle)
        if verdict is not None:
            return verdict
        # The supervisor died without a verdict (killed with the machine or by hand): make sure
        # nothing of the agent keeps running, then report it.
        self.kill_leftovers(handle)
        return AgentOutcome(
            AgentState.FAILED,
            f"agent process disappeared before reporting a result; its log ends: {log_tail(handle.log_path, 800)}",
        )

    def verdict(self, handle: AgentHandle) -> AgentOutcome | None:
        """The outcome once the supervisor has recorded the end of the run, else None."""
        status = read_status(handle.status_file)
        if status is None or status.get("state") != "finished":
            return None
        if status.get("error"):  # timed out or stopped: whatever the agent printed is moot
            return AgentOutcome(AgentState.FAILED, str(status["error"]))
        return self.judge_exit(int(status.get("exit_code", -1)), handle)

    def judge_exit(self, exit_code: int, handle: AgentHandle) -> AgentOutcome:
        """A plain command succeeds by its exit status."""
        if exit_code == 0:
            return AgentOutcome(AgentState.SUCCEEDED)
        return AgentOutcome(
            AgentState.FAILED, f"agent exited with status {exit_code}: {log_tail(handle.log_path)}"
        )

    def cancel(self, handle: AgentHandle) -> None:
        """Stop the supervisor (which ends every process of the run); without one, end them here."""
        if handle.pid and procs.pid_alive(handle.pid, SUPERVISOR_MODULE):
            # The supervisor stops the agent politely (TERM, then KILL after a grace period) and
            # records how the run ended.
            with contextlib.suppress(ProcessLookupError):
                os.kill(handle.pid, signal.SIGTERM)
        else:
            self.kill_leftovers(handle)

    def kill_leftovers(self, handle: AgentHandle) -> None:
        """End what a supervisor that is gone left running: the agent's group and all marked processes."""
        status = read_status(handle.status_file)
        if status is not None and isinstance(status.get("pgid"), int):
            procs.kill_group(status["pgid"])
        procs.kill_marked(RUN_MARKER, run_mark(handle.status_file))


def stdout_file(status_file: Path) -> Path:
    """Where a run's stdout is kept when a preset parses it."""
    return status_file.with_suffix(".stdout")


def number(value: object) -> float:
    """A figure from an agent's JSON as a float; a missing or malformed one counts as 0."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0


def log_tail(path: Path, limit: int = 1500) -> str:
    """The last ``limit`` bytes of a log file, for an error message."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read().decode("utf-8", "replace").strip()
    except OSError:
        return "(no log)"
