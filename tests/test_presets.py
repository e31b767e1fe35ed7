"""Agent presets against fake CLIs of the same name that print the real output formats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import git
from tests.loop_helpers import Sample, all_done, make_sample

SECRET = "sk-test-3f9a8b7c6d5e4f3a2b1c"

# preset -> (the variable its CLI reads the key from, flags the argv must hold, cost in cents for
# the plan's cost of 25 cents, error text expected in the failure)
CASES: dict[str, dict[str, Any]] = {
    "claude-code": {
        "key": "ANTHROPIC_API_KEY",
        "flags": [["--output-format", "json"], ["--max-turns", "7"], ["--max-budget-usd", "1.50"],
                  ["--permission-mode", "bypassPermissions"], ["--model", "m-1"]],
        # tokens from modelUsage: both models, cache reads and writes included
        "cost": 25.0, "tokens": 1840 + 412 + 9120 + 2048 + 610 + 45,
        "error": "claude: API error 529: overloaded_error: overloaded",
    },
    "codex": {
        "key": "OPENAI_API_KEY",
        "flags": [["exec", "--json"], ["--sandbox", "workspace-write"], ["--model", "m-1"]],
        # no dollar figure: tokens priced by price_per_mtok {input: 2, output: 8}
        "cost": (24763 * 2 + 122 * 8) / 1_000_000 * 100, "tokens": 24763 + 122, "error": "codex: overloaded",
    },
    "aider": {
        "key": "ANTHROPIC_API_KEY",
        "flags": [["--yes-always"], ["--model", "m-1"]],
        "cost": 25.0, "tokens": 5510 + 990, "error": "aider sent no message to the model (exit 0)",
    },
    "opencode": {
        "key": "OPENROUTER_API_KEY",
        "flags": [["run", "--format", "json"], ["--model", "m-1"]],
        "cost": 25.0, "tokens": 2400, "error": "opencode: overloaded",
    },
    "gemini": {
        "key": "GEMINI_API_KEY",
        "flags": [["--output-format", "json"], ["--approval-mode", "yolo"], ["--model", "m-1"]],
        "cost": 0.0, "tokens": 3500, "error": "gemini: overloaded (exit 53: turn limit reached)",
    },
}  # fmt: skip


def preset_sample(tmp_path: Path, preset: str, **limits: int) -> Sample:
    key = CASES[preset]["key"]
    agent: dict[str, Any] = {
        "preset": preset, "command": None, "model": "m-1", "max_iter": 7, "max_cost": 150,
        "args": ["--extra-flag", "x y"], "env": {key: "${FAKE_SECRET}", "PLAIN_SETTING": "on"},
    }  # fmt: skip
    if preset == "codex":
        agent["price_per_mtok"] = {"input": 2, "output": 8}
    s = make_sample(tmp_path, agent=agent, limits={"max_retries": 1, **limits})
    s.env["FAKE_SECRET"] = SECRET
    return s


def holds(argv: list[str], flags: list[str]) -> bool:
    return any(argv[i : i + len(flags)] == flags for i in range(len(argv)))


def secret_leaks(s: Sample) -> list[str]:
    leaks = [str(p) for p in s.root.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    for task in json.loads(s.cli("task", "list", "--json").stdout):
        shown = s.cli("task", "show", task["id"], "--json").stdout
        if SECRET in shown:
            leaks.append(f"task {task['id']}")
    return leaks


@pytest.mark.parametrize("preset", sorted(CASES))
def test_preset_success_argv_cost_and_no_secret_written(tmp_path: Path, preset: str) -> None:
    case = CASES[preset]
    s = preset_sample(tmp_path, preset)
    s.plan({"t-1": [{"cost": 25, "leak": case["key"]}]})
    s.add("do it")
    s.run_until(all_done(1))
    argv = json.loads((s.state / "t-1.0.argv.json").read_text())
    for flags in case["flags"]:
        assert holds(argv, flags), (flags, argv)
    assert argv[-2:] == ["--extra-flag", "x y"] or holds(argv, ["--extra-flag", "x y"])
    (cost, tokens) = s.rows("SELECT cost_cents, tokens FROM pipeline_runs WHERE phase='dev'")[0]
    assert cost == pytest.approx(case["cost"])
    assert tokens == case["tokens"]
    assert s.trailers() == ["t-1"]
    # The CLI echoed its key to stdout and stderr; none of it reached what the runner wrote.
    assert secret_leaks(s) == []
    log_text = "".join(p.read_text() for p in (s.root / "logs" / "tasks").rglob("*.log"))
    assert "debug: using key ***" in log_text


@pytest.mark.parametrize("preset", sorted(CASES))
def test_preset_error_is_a_failure_even_with_exit_0(tmp_path: Path, preset: str) -> None:
    s = preset_sample(tmp_path, preset)
    s.plan({"t-1": [{"error": "overloaded", "leak": CASES[preset]["key"]}]})
    s.add("do it")
    s.run_until(lambda d: d["needs_help"] == 1)
    (status, error) = s.rows("SELECT status, error_summary FROM pipeline_runs WHERE phase='dev'")[0]
    assert status == "failure"
    assert error.startswith(CASES[preset]["error"]), error
    assert s.base_log() == ["initial"]
    assert secret_leaks(s) == []


def test_agent_env_passes_runner_variable_and_plain_values(tmp_path: Path) -> None:
    s = preset_sample(tmp_path, "claude-code")
    s.add("x")
    s.run_until(all_done(1))
    seen = json.loads((s.state / "t-1.0.env.json").read_text())
    assert seen["PLAIN_SETTING"] == "on"
    assert seen["keys_holding_secret"] == ["ANTHROPIC_API_KEY"]  # ${FAKE_SECRET} passed through
    assert seen["task"] == "t-1"
    assert secret_leaks(s) == []


def test_preset_not_installed_is_a_clear_error_and_pauses_agents(tmp_path: Path) -> None:
    s = make_sample(
        tmp_path, agent={"preset": "claude-code", "command": None, "executable": "no-claude-here"}
    )
    s.add("x")
    done = s.cli("run", "--once")
    assert done.returncode == 3  # paused (not refused, exit 1): it resumes once the CLI is installed
    assert "no-claude-here" in done.stderr and "claude-code" in done.stderr
    assert [f["area"] for f in s.status()["faults"]] == ["environment"] and s.status()["open"] == 1


def test_aider_commits_per_edit_are_folded_into_one_commit_with_the_trailer(tmp_path: Path) -> None:
    s = preset_sample(tmp_path, "aider", max_retries=3)
    # First attempt: two edits, two commits of aider's own, one of them bad. Second attempt: aider
    # fixes the bad file with a third commit on top of the rejected ones.
    s.plan({"t-1": [
        {"files": {"a.txt": "fine\n", "b.txt": "BAD value\n"}},
        {"files": {"b.txt": "good\n"}},
    ]})  # fmt: skip
    s.add("Teach the parser dates")
    s.run_until(all_done(1))
    runs = [r["phase"] + ":" + r["status"] for r in s.task("t-1")["runs"]]
    assert runs == ["dev:success", "verify:failure", "dev:success", "verify:success", "integrate:success"]
    # Exactly one commit landed, with the trailer, the task's title, aider's subjects and author.
    assert s.base_log() == ["Teach the parser dates", "initial"]
    assert s.trailers() == ["t-1"]
    body = git(s.repo, "log", "-1", "--format=%B", "live")
    assert "- feat: Update a.txt" in body and "- feat: Update b.txt" in body
    assert git(s.repo, "log", "-1", "--format=%an", "live") == "Dev Person (aider)"
    assert (s.repo / "a.txt").read_text() == "fine\n" and (s.repo / "b.txt").read_text() == "good\n"
    # The first verify saw one folded commit, not two ("exactly one commit over base" holds).
    first_failure = s.rows("SELECT error_summary FROM pipeline_runs WHERE phase='verify' ORDER BY id")[0][0]
    assert "b.txt" in first_failure and "expected exactly 1 commit" not in first_failure
