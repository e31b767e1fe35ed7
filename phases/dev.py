"""Dev phase: the prompt, starting an agent in the task's worktree, and judging what it left."""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from phases.agents import AgentBackend, AgentHandle, AgentOutcome, AgentRequest, AgentState
from runner.config import PipelineConfig, recipe_argv
from runner.errors import ConfigError
from runner.git import Git
from runner.redact import redact, register, resolve_agent_env
from runner.tasks import Author, Task
from runner.templates import fill, placeholders


def prompt_template(config: PipelineConfig) -> str:
    """The configured template file, or the built-in one."""
    path = config.agent.prompt_template
    if path is None:
        return resources.files("phases").joinpath("prompt.md").read_text(encoding="utf-8")
    template = Path(path)
    if not template.is_absolute():
        template = config.repo_path / template
    try:
        return template.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"agent.prompt_template: cannot read {template}: {exc.strerror}") from None


# A person's comments in a prompt: the most recent ones, so that a long discussion cannot crowd
# out the task itself.
MAX_PROMPT_COMMENTS = 20


def comments_section(task: Task) -> str:
    """A person's comments on the task (all of them, oldest first, up to the last
    ``MAX_PROMPT_COMMENTS``), as the prompt's section; empty when there are none. Each attempt's
    agent starts afresh, so an instruction given before an earlier attempt still holds."""
    said = [c for c in task.comments if c.author is Author.HUMAN]
    if not said:
        return ""
    shown = said[-MAX_PROMPT_COMMENTS:]
    lines = ["", "### Comments from a person", "Take these into account; the newest is last:", ""]
    if len(said) > len(shown):
        lines.append(f"({len(said) - len(shown)} earlier comment(s) not shown)")
    for comment in shown:
        body = comment.body.strip().replace("\n", "\n  ")
        lines.append(f"- [{comment.created_at[:16].replace('T', ' ')}] {body}")
    return "\n".join(lines) + "\n"


def build_prompt(
    template: str, task: Task, *, base: str, workspace: Path, recipes: list[str], feedback: str | None
) -> str:
    """The prompt for one attempt. Task text is substituted once and never re-read as a template.

    A person's comments go where the template says ``{comments}``, or after everything when it
    does not say (a template written before comments reached the prompt): they are never lost."""
    feedback_section = ""
    if feedback:
        feedback_section = (
            "\n### Previous Review Feedback\n"
            "The previous patchset was rejected. Fix the issues below:\n\n"
            f"{feedback.strip()}\n"
        )
    comments = comments_section(task)
    if comments and "comments" not in placeholders(template):
        template += "\n{comments}"
    return redact(
        fill(
            template,
            {
                "comments": comments,
                "task_id": task.id,
                "title": task.title,
                "description": task.description or "(none)",
                "namespace": task.namespace or "(none)",
                "base": base,
                "patchset": str(task.patchset),
                "priority": task.priority_name,
                "workspace": str(workspace),
                "verify_recipes": "; ".join(f"`{r}`" for r in recipes) or "(none configured)",
                "feedback": feedback_section,
            },
        )
    )


def recipe_texts(config: PipelineConfig) -> list[str]:
    """The recipes of the phases that check the task's commit, as a person reads them."""
    return [" ".join(recipe_argv(r)) for phase in config.stage_phases("verify").values() for r in phase.run]


def template_values(
    config: PipelineConfig, task: Task, run_id: str, workspace: Path, prompt_file: Path
) -> dict[str, str | None]:
    """Values for agent command templates."""
    agent = config.agent
    return {
        "prompt_file": str(prompt_file),
        "run_id": run_id,
        "task_id": task.id,
        "namespace": task.namespace,
        "workspace": str(workspace),
        "base": config.base,
        "patchset": str(task.patchset),
        "timeout": str(agent.timeout),
        "max_iter": str(agent.max_iter),
        "max_cost": str(agent.max_cost),
        "provider": agent.provider,
    }


def agent_env(config: PipelineConfig, task: Task, run_id: str, prompt_file: Path) -> dict[str, str]:
    """The agent's environment: the runner's, plus what identifies this run."""
    env = dict(os.environ)
    env.update(resolve_agent_env(config.agent.env, os.environ))
    register(env)
    env.update(
        PIPELINE_TASK_ID=task.id,
        PIPELINE_RUN_ID=run_id,
        PIPELINE_PATCHSET=str(task.patchset),
        PIPELINE_PROMPT_FILE=str(prompt_file),
        PIPELINE_BASE=config.base,
    )
    return env


def start_agent(
    backend: AgentBackend,
    config: PipelineConfig,
    task: Task,
    *,
    run_id: str,
    workspace: Path,
    prompt: str,
    prompt_file: Path,
    log_path: Path,
    status_file: Path,
) -> AgentHandle:
    """Write the prompt and start the agent; raises ProcessError if it cannot start."""
    prompt_file.parent.mkdir(parents=True, exist_ok=True)
    prompt_file.write_text(prompt, encoding="utf-8")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    request = AgentRequest(
        run_id=run_id,
        workspace=workspace,
        prompt_file=prompt_file,
        log_path=log_path,
        status_file=status_file,
        values=template_values(config, task, run_id, workspace, prompt_file),
        env=agent_env(config, task, run_id, prompt_file),
    )
    return backend.start(request)


class DevStatus(enum.StrEnum):
    """How a finished dev attempt is judged."""

    RUNNING = "running"
    COMMITTED = "committed"
    FAILED = "failed"


@dataclass(frozen=True)
class DevResult:
    """The judgement of a dev attempt."""

    status: DevStatus
    error: str | None = None
    cost_cents: float = 0.0
    tokens: int | None = None
    after_sha: str | None = None


def judge(outcome: AgentOutcome, after: str | None, before_sha: str | None) -> DevResult:
    """An agent's outcome and the commit the runner brought in from its workspace, as a dev result.

    A success means a new commit: an agent that says it succeeded but left its task branch where
    it was has failed, whatever its exit code.
    """
    if outcome.state is AgentState.RUNNING:
        return DevResult(DevStatus.RUNNING)
    if outcome.state is AgentState.FAILED:
        if outcome.work_counts and after is not None and after != before_sha:
            # Out of turns or budget after committing: the commit is judged by verification.
            return DevResult(DevStatus.COMMITTED, None, outcome.cost_cents, outcome.tokens, after)
        return DevResult(
            DevStatus.FAILED, outcome.error or "agent failed", outcome.cost_cents, outcome.tokens
        )
    if after is None:
        return DevResult(
            DevStatus.FAILED,
            "the task branch is gone from the workspace after the agent ran",
            outcome.cost_cents,
            outcome.tokens,
        )
    if after == before_sha:
        error = "agent made no commit" + (f"; {outcome.detail}" if outcome.detail else "")
        return DevResult(DevStatus.FAILED, error, outcome.cost_cents, outcome.tokens)
    return DevResult(DevStatus.COMMITTED, None, outcome.cost_cents, outcome.tokens, after)


def fold_commits(git: Git, task: Task, base: str, ref: str) -> str | None:
    """The task's commits over ``base`` as one commit, titled for the task.

    For agents that commit each edit with messages of their own (aider): returns the new tip of
    ``ref`` (the runner's ref for the task), or None when it already holds one commit (integration adds a missing
    ``Task-Id`` trailer, as for any agent).
    """
    fork = git.merge_base(f"refs/heads/{base}", ref)
    messages = git.messages(fork, ref)
    if len(messages) <= 1:
        return None
    title = " ".join(task.title.split()) or task.id
    lines: list[str] = []
    for text in messages:
        # A commit folded on an earlier attempt contributes the subjects it listed, not its title.
        listed = text.partition(f"\n{FOLD_HEADING}\n")[2].partition("\n\n")[0].splitlines()
        for line in listed or [f"- {text.splitlines()[0]}"]:
            if line not in lines:
                lines.append(line)
    message = f"{title}\n\n{FOLD_HEADING}\n" + "\n".join(lines) + f"\n\nTask-Id: {task.id}\n"
    return git.fold(ref, fork, message)


FOLD_HEADING = "The agent's commits, folded into one:"


def left_work_message(task: Task, run_id: str | None) -> str:
    """The message of the commit the runner makes of what an agent left uncommitted."""
    title = " ".join(task.title.split()) or task.id
    run = f" (run {run_id})" if run_id else ""
    return (
        f"{title}\n\n"
        f"The agent{run} left these changes uncommitted in its workspace: its sandbox or permission "
        "mode lets it edit files but not run git, so pipeline-runner committed them for it.\n\n"
        f"Task-Id: {task.id}\n"
    )
