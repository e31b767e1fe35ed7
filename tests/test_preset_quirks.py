"""The presets against the behaviour recorded from the real CLIs (Claude Code 2.1.197 and 2.1.332,
codex-cli 0.171.0, gemini-cli 0.61.0, opencode-ai 1.18.33), which the fakes in tests/fakes reproduce:
same flags, same events, same exit codes."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import git
from tests.loop_helpers import Sample, all_done
from tests.test_presets import preset_sample

CODEX_USAGE = {"input": 24763, "cached": 24448, "output": 122}


def runs(s: Sample, task_id: str = "t-1") -> list[str]:
    return [f"{r['phase']}:{r['status']}" for r in s.task(task_id)["runs"]]


def dev_errors(s: Sample) -> list[str]:
    return [str(e) for (e,) in s.rows("SELECT error_summary FROM pipeline_runs WHERE phase='dev' ORDER BY id")]


def pipeline_log(s: Sample) -> str:
    return (s.root / "logs" / "pipeline.jsonl").read_text()


def seen_env(s: Sample, attempt: int = 0, task_id: str = "t-1") -> dict[str, Any]:
    seen: dict[str, Any] = json.loads((s.state / f"{task_id}.{attempt}.env.json").read_text())
    return seen


def needs_help(doc: dict[str, Any]) -> bool:
    return bool(doc["needs_help"] == 1)


def landed_files(s: Sample) -> list[str]:
    return sorted(git(s.repo, "show", "--name-only", "--format=", "live").splitlines())


# -- every preset: the prompt is never an option --------------------------------------------------


# aider reads its prompt from a file: nothing to mistake for an option there.
@pytest.mark.parametrize("preset", ["claude-code", "codex", "gemini", "opencode"])
def test_a_prompt_starting_with_a_dash_is_never_taken_for_an_option(tmp_path: Path, preset: str) -> None:
    template = tmp_path / "prompt.md"
    template.write_text("{title}\n\n{description}\n\nCommit with the trailer Task-Id: {task_id}\n")
    s = preset_sample(tmp_path, preset)
    s.write_config(agent={"prompt_template": str(template)})
    title = "--version prints nothing: make it print the version"
    done = s.cli("task", "add", "--json", "--", title)
    assert done.returncode == 0, done.stderr
    s.run_until(all_done(1))
    prompt = (s.state / "t-1.0.prompt").read_text()
    # opencode joins its message words and quotes one holding a space, as the real one does.
    assert prompt.lstrip('"').startswith("--version prints nothing"), prompt[:80]
    assert s.trailers() == ["t-1"]


# -- codex --------------------------------------------------------------------------------------------


def test_codex_sandbox_keeps_git_read_only_so_the_runner_commits_what_it_left(tmp_path: Path) -> None:
    s = preset_sample(tmp_path, "codex")  # the default sandbox: workspace-write
    s.plan({"t-1": [{"files": {
        "src/feature.txt": "new feature\n", "README.md": "sample, with a changed line\n",
        ".gitignore": "*.log\n", "debug.log": "noise the agent left\n",
    }}]})  # fmt: skip
    s.add("Add the feature")
    s.run_until(all_done(1))
    assert runs(s) == ["dev:success", "verify:success", "integrate:success"]
    # The fake's own `git commit` failed as codex's does under the sandbox...
    stdout = next((s.root / "runs").glob("*.stdout")).read_text()
    assert "index.lock': Read-only file system" in stdout and '"turn.completed"' in stdout
    assert json.loads((s.state / "t-1.0.argv.json").read_text())[1:4] == ["--json", "--sandbox", "workspace-write"]
    # ...so the runner committed what it left: tracked and untracked files, not what .gitignore excludes.
    assert s.base_log() == ["Add the feature", "initial"]
    assert s.trailers() == ["t-1"]
    assert landed_files(s) == [".gitignore", "README.md", "src/feature.txt"]
    assert "left these changes uncommitted" in git(s.repo, "log", "-1", "--format=%B", "live")
    assert (s.repo / "README.md").read_text() == "sample, with a changed line\n"


def test_codex_retry_after_a_rejection_amends_the_commit_the_runner_made(tmp_path: Path) -> None:
    s = preset_sample(tmp_path, "codex", max_retries=3)
    s.plan({"t-1": [{"files": {"a.txt": "BAD value\n"}}, {"files": {"a.txt": "good\n"}}]})
    s.add("Fix a")
    s.run_until(all_done(1))
    assert runs(s) == ["dev:success", "verify:failure", "dev:success", "verify:success", "integrate:success"]
    # Still exactly one commit over base, as verify demands.
    assert s.base_log() == ["Fix a", "initial"] and s.trailers() == ["t-1"]
    assert (s.repo / "a.txt").read_text() == "good\n"


def test_codex_reconnecting_events_in_a_run_that_completes_are_not_a_failure(tmp_path: Path) -> None:
    s = preset_sample(tmp_path, "codex")
    s.write_config(agent={"permissions": "danger-full-access"})
    s.plan({"t-1": [{"reconnects": 2}]})
    s.add("do it")
    s.run_until(all_done(1))
    assert runs(s) == ["dev:success", "verify:success", "integrate:success"]
    stdout = next((s.root / "runs").glob("*.stdout")).read_text()
    assert stdout.count("Reconnecting... ") == 2 and '"turn.completed"' in stdout


def test_codex_that_only_reconnects_is_stopped_early_and_not_charged(tmp_path: Path) -> None:
    s = preset_sample(tmp_path, "codex")
    # max_retries 1: a charged failure would leave the task needing help.
    s.write_config(agent={"offline_timeout": 1, "timeout": 60})
    s.plan({"t-1": [{"offline": True}, {}]})
    s.add("do it")
    s.run_until(all_done(1), timeout=60)
    assert runs(s) == ["dev:cancelled", "dev:success", "verify:success", "integrate:success"]
    error = dev_errors(s)[0]
    assert error.startswith("not charged to the task: codex cannot reach its model endpoint"), error
    assert "waiting for network" in error and "unreachable" in error
    assert "dev paused (not charged to any task" in pipeline_log(s)
    started, finished = s.rows("SELECT started_at, finished_at FROM pipeline_runs WHERE id = 1")[0]
    took = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    assert took < 30  # stopped after offline_timeout, not after agent.timeout (60 s)


def test_codex_cached_input_tokens_are_priced_at_the_cached_price(tmp_path: Path) -> None:
    s = preset_sample(tmp_path, "codex")
    s.write_config(agent={"price_per_mtok": {"input": 2, "output": 8, "cached_input": 0.5}})
    s.add("do it")
    s.run_until(all_done(1))
    (cost, tokens) = s.rows("SELECT cost_cents, tokens FROM pipeline_runs WHERE phase='dev'")[0]
    uncached = CODEX_USAGE["input"] - CODEX_USAGE["cached"]
    dollars = uncached * 2 + CODEX_USAGE["cached"] * 0.5 + CODEX_USAGE["output"] * 8
    assert cost == pytest.approx(dollars / 1_000_000 * 100)
    assert tokens == CODEX_USAGE["input"] + CODEX_USAGE["output"]  # cached ones are part of input


def test_a_bad_cached_input_price_names_the_key_and_the_file(tmp_path: Path) -> None:
    s = preset_sample(tmp_path, "codex")
    s.write_config(agent={"price_per_mtok": {"input": 2, "output": 8, "cached_input": -1}})
    done = s.cli("config", "validate")
    assert done.returncode == 1
    assert "agent.price_per_mtok.cached_input" in done.stderr and "pipeline.yaml" in done.stderr
    assert "greater than or equal to 0" in done.stderr


# -- Claude Code ----------------------------------------------------------------------------------------


def test_claude_as_root_gets_is_sandbox_so_bypass_permissions_works(tmp_path: Path) -> None:
    s = preset_sample(tmp_path, "claude-code")
    s.env["FAKE_EUID"] = "0"  # the fake refuses as root does, whatever user runs the tests
    s.env["IS_SANDBOX"] = "yes"  # inherited, and not what claude accepts
    if os.geteuid() != 0:
        pytest.skip("the runner decides by its own user id, which is not root here")
    s.add("do it")
    s.run_until(all_done(1))
    assert seen_env(s)["IS_SANDBOX"] == "1"


def test_claude_refusing_root_is_an_environment_fault_that_names_the_fix(tmp_path: Path) -> None:
    s = preset_sample(tmp_path, "claude-code")
    s.env["FAKE_EUID"] = "0"
    s.write_config(agent={"env": {"ANTHROPIC_API_KEY": "${FAKE_SECRET}", "IS_SANDBOX": "0"}})
    s.add("do it")
    assert_environment_fault(s, "claude refused to start: as root, --permission-mode bypassPermissions needs IS_SANDBOX=1")
    assert "agent.permissions: acceptEdits" in dev_errors(s)[0]


def test_claude_accept_edits_cannot_commit_so_the_runner_commits(tmp_path: Path) -> None:
    s = preset_sample(tmp_path, "claude-code")
    s.write_config(agent={"permissions": "acceptEdits"})
    s.add("Teach it dates")
    s.run_until(all_done(1))
    assert runs(s) == ["dev:success", "verify:success", "integrate:success"]
    assert s.base_log() == ["Teach it dates", "initial"] and s.trailers() == ["t-1"]
    assert landed_files(s) == ["t-1.txt"]


def test_claude_permission_denials_are_shown_when_nothing_was_done(tmp_path: Path) -> None:
    s = preset_sample(tmp_path, "claude-code")
    s.write_config(agent={"permissions": "default"})
    s.add("do it")
    s.run_until(needs_help)
    error = dev_errors(s)[0]
    assert error.startswith("agent made no commit; permission mode default denied 2 tool call(s): Write("), error
    assert "notes.txt), Bash(git add -A && git commit -m 'Implement the task')" in error


def test_claude_api_error_exits_1_and_reports_status_and_message(tmp_path: Path) -> None:
    s = preset_sample(tmp_path, "claude-code")
    s.plan({"t-1": [{"error": "max_tokens: 64000 > 32000, the maximum for this model", "status": 400}]})
    s.add("do it")
    s.run_until(needs_help)
    assert dev_errors(s) == [
        "claude: API error 400: invalid_request_error: max_tokens: 64000 > 32000, the maximum for this model"
    ]


def test_claude_out_of_turns_after_its_commit_is_judged_by_the_work(tmp_path: Path) -> None:
    s = preset_sample(tmp_path, "claude-code")
    s.plan({"t-1": [{"max_turns": True}]})
    s.add("do it")
    s.run_until(all_done(1))
    assert runs(s) == ["dev:success", "verify:success", "integrate:success"]
    assert s.trailers() == ["t-1"]


def test_claude_caps_show_their_errors_and_tokens_come_from_model_usage(tmp_path: Path) -> None:
    s = preset_sample(tmp_path, "claude-code", max_retries=2)
    s.plan({"t-1": [{"max_turns": True, "no_work": True}, {"max_budget": True, "no_work": True, "cost": 160}]})
    s.add("do it")
    s.run_until(needs_help)
    assert dev_errors(s) == [
        "claude stopped on its cap (error_max_turns): Reached maximum number of turns (7)",
        "claude stopped on its cap (error_max_budget_usd): Reached maximum budget ($1.5)",
    ]
    # On the budget stop `usage` is all zeros; modelUsage has the tokens, total_cost_usd the money.
    assert s.rows("SELECT cost_cents, tokens FROM pipeline_runs WHERE phase='dev' ORDER BY id")[1] == (
        pytest.approx(160.0),
        1840 + 412 + 9120 + 2048 + 610 + 45,
    )


# -- Gemini CLI -------------------------------------------------------------------------------------------


def test_gemini_trusts_the_workspace_the_runner_made(tmp_path: Path) -> None:
    s = preset_sample(tmp_path, "gemini")
    s.add("do it")
    s.run_until(all_done(1))
    assert seen_env(s)["GEMINI_CLI_TRUST_WORKSPACE"] == "true"


@pytest.mark.parametrize(
    ("attempt", "error"),
    [
        ({"error": "Request contains an invalid argument.", "status": 400, "prefix": True},
         "gemini: Request contains an invalid argument. (HTTP 400; exit 144 is the status truncated to 8 bits)"),
        ({"error": "Tool \"run_shell_command\" failed: spawn ENOMEM", "exit": 54},
         "gemini: Tool \"run_shell_command\" failed: spawn ENOMEM (exit 54: tool execution failed)"),
    ],
)  # fmt: skip
def test_gemini_fatal_errors_are_read_from_stderr_and_named(
    tmp_path: Path, attempt: dict[str, Any], error: str
) -> None:
    s = preset_sample(tmp_path, "gemini")
    s.plan({"t-1": [attempt]})
    s.add("do it")
    s.run_until(needs_help)
    assert dev_errors(s) == [error]
    assert s.rows("SELECT tokens FROM pipeline_runs WHERE phase='dev'") == [(None,)]  # none reported


# -- opencode ---------------------------------------------------------------------------------------------


def test_opencode_works_in_its_workspace_whatever_pwd_it_inherits(tmp_path: Path) -> None:
    s = preset_sample(tmp_path, "opencode")
    # Started from a shell in the person's checkout: PWD names it, and opencode trusts PWD.
    s.env["PWD"] = str(s.repo)
    s.add("do it")
    s.run_until(all_done(1))
    assert seen_env(s)["cwd"] == str(s.root / "worktrees" / "t-1")
    argv = json.loads((s.state / "t-1.0.argv.json").read_text())
    assert argv[argv.index("--dir") + 1] == str(s.root / "worktrees" / "t-1")
    assert s.base_log() == ["t-1: attempt 0", "initial"]
    assert runs(s) == ["dev:success", "verify:success", "integrate:success"]


# -- environment faults: not charged to the task ----------------------------------------------------------------


def assert_environment_fault(s: Sample, message: str) -> None:
    """Every attempt fails the same way: runs are cancelled, never failures, and work pauses."""

    def two_cancelled(_doc: dict[str, Any]) -> bool:
        return len(s.rows("SELECT id FROM pipeline_runs WHERE status = 'cancelled'")) >= 2

    s.run_until(two_cancelled)
    assert s.rows("SELECT COUNT(*) FROM pipeline_runs WHERE status = 'failure'") == [(0,)]
    assert s.task("t-1")["status"] in ("open", "in_progress")
    error = dev_errors(s)[0]
    assert error.startswith(f"not charged to the task: {message}"), error
    assert "dev paused (not charged to any task" in pipeline_log(s)


ENVIRONMENT_FAULTS: dict[str, tuple[str, Callable[[Sample], None], str]] = {
    "claude-401": ("claude-code", lambda s: s.plan({"t-1": [{"error": "invalid x-api-key", "status": 401}]}),
                   "claude: API error 401: authentication_error: invalid x-api-key"),
    "gemini-41-auth": ("gemini", lambda s: s.plan({"t-1": [{"error": "Please set an Auth method", "exit": 41}]}),
                       "gemini: Please set an Auth method (exit 41: authentication failed)"),
    "gemini-44-sandbox": ("gemini", lambda s: s.plan({"t-1": [{"error": "sandbox image missing", "exit": 44}]}),
                          "gemini: sandbox image missing (exit 44: sandbox error)"),
    "gemini-52-config": ("gemini", lambda s: s.plan({"t-1": [{"error": "bad settings.json", "exit": 52}]}),
                         "gemini: bad settings.json (exit 52: configuration error)"),
    "gemini-55-untrusted": ("gemini", lambda s: s.write_config(agent={"env": {"GEMINI_CLI_TRUST_WORKSPACE": "false"}}),
                            "gemini: Approval mode \"yolo\" is overridden in an untrusted folder"),
    "opencode-auth": ("opencode", lambda s: s.plan({"t-1": [{"error": "API key is invalid",
                                                             "error_name": "ProviderAuthError"}]}),
                      "opencode: API key is invalid (ProviderAuthError)"),
    "opencode-unknown-model": ("opencode", lambda s: s.plan({"t-1": [{"error": "Unexpected error",
                                                                      "error_name": "UnknownError"}]}),
                               "opencode: Unexpected error (UnknownError), before its first step: opencode "
                               "reports an unknown model so; check agent.model"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(ENVIRONMENT_FAULTS))
def test_environment_faults_pause_the_work_and_are_not_charged(tmp_path: Path, case: str) -> None:
    preset, arrange, message = ENVIRONMENT_FAULTS[case]
    s = preset_sample(tmp_path, preset)
    arrange(s)
    s.add("do it")
    assert_environment_fault(s, message)
