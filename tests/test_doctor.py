"""`doctor` and the runner's preflight: the checks as functions (in-process), and the queue paused
by a red base or a missing program, end to end, with nothing charged to any task."""

from __future__ import annotations

import json
import os
import stat
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from phases.dev import build_prompt, template_values
from phases.probes import probe_agent
from runner import procs, registries
from runner.config import PipelineConfig, load_config
from runner.doctor import (
    Finding,
    Verdict,
    check_agent_cli,
    check_placeholders,
    check_recipe_programs,
    program_problem,
    render,
    static_findings,
)
from runner.faults import FaultBoard
from runner.preflight import ENVIRONMENT, BaseAction, Preflight, base_action, path_stamp
from runner.templates import AGENT_PLACEHOLDERS, PROMPT_PLACEHOLDERS
from tests.conftest import FAKES, git, make_repo
from tests.loop_helpers import Sample, all_done, make_sample
from tests.test_presets import preset_sample


def config_of(repo: Path, **data: Any) -> PipelineConfig:
    path = repo / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"base": "live", **data}))
    return load_config(path, None, registries.names()).config


def verdicts(findings: list[Finding]) -> dict[str, Verdict]:
    return {f.item: f.verdict for f in findings}


def executable(path: Path, text: str = "#!/bin/sh\nexit 0\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


# -- the decisions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tip", "green", "red", "due", "action"),
    [
        ("a", "a", None, True, BaseAction.GO),  # passed on this tip
        ("b", "a", None, True, BaseAction.CHECK),  # base moved: not known yet
        ("a", None, "a", False, BaseAction.WAIT),  # red here, the delay is not up: no re-run
        ("a", None, "a", True, BaseAction.CHECK),  # red here, the delay is up: once more
        ("b", None, "a", False, BaseAction.CHECK),  # red on an older tip: the new one may be fixed
        ("a", "a", "a", False, BaseAction.GO),  # passed since (a flaky check): green wins
    ],
)
def test_base_action_table(tip: str, green: str | None, red: str | None, due: bool, action: BaseAction) -> None:
    assert base_action(tip, green, red, due) is action


def test_program_problem_tells_bare_names_absolute_paths_and_what_it_cannot_know(tmp_path: Path) -> None:
    tool = executable(tmp_path / "bin" / "tool")
    plain = tmp_path / "bin" / "plain"
    plain.write_text("not executable")
    path = str(tmp_path / "bin")
    assert program_problem("tool", path) is None
    assert program_problem("no-such-tool-xyz", path) == "'no-such-tool-xyz' was not found on PATH"
    assert program_problem(str(tool), path) is None
    assert program_problem(str(tmp_path / "gone"), path) == f"{tmp_path / 'gone'} does not exist"
    assert program_problem(str(plain), path) == f"{plain} is not an executable file"
    assert program_problem(str(tmp_path / "bin"), path) == f"{tmp_path / 'bin'} is not an executable file"
    # Relative to the checkout the recipe runs in, or a placeholder: only known at run time.
    assert program_problem("./gradlew", path) is None
    assert program_problem("{workspace}/run", path) is None


def test_missing_recipe_programs_and_agent_cli_are_named_with_their_keys(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    config = config_of(
        repo,
        agent={"preset": "claude-code", "executable": "/opt/nowhere/claude"},
        phases={
            "lint": {"run": ["no-such-tool-xyz --check", ["python3", "-c", "pass"]]},
            "unit": {"run": [["./gradlew", "test"]], "env": {"PATH": "/nonexistent"}},
        },
    )
    programs = check_recipe_programs(config)
    assert [(f.verdict, f.key) for f in programs] == [(Verdict.FAIL, "phases.lint.run")]
    assert "no-such-tool-xyz" in programs[0].message and "install no-such-tool-xyz" in programs[0].fix
    agent = check_agent_cli(config)
    assert agent.verdict is Verdict.FAIL and agent.key == "agent.executable"
    assert "/opt/nowhere/claude does not exist" in agent.message
    # A phase's own PATH is the one its program is looked up on.
    config = config_of(repo, phases={"unit": {"run": ["python3 -V"], "env": {"PATH": "/nonexistent"}}})
    assert check_recipe_programs(config)[0].verdict is Verdict.FAIL


def test_a_misspelled_placeholder_names_the_key_the_valid_names_and_the_close_match(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    config = config_of(
        repo,
        agent={"preset": "command", "command": ["fake-agent", "{prompt_fle}"], "args": []},
        phases={"unit": {"run": ["python3 check.py {namspace}", "awk '{print}' notes"]}},
    )
    found = check_placeholders(config, "Do {title}; {titel}.", lambda key: "pipeline.yaml")
    failed = {f.key: f for f in found if f.verdict is Verdict.FAIL}
    assert set(failed) == {"agent.command", "phases.unit.run", "agent.prompt_template"}
    recipe = failed["phases.unit.run"]
    assert "{namspace}" in recipe.message and "pipeline.yaml" in recipe.message
    assert "{namespace}, {workspace}" in recipe.message  # the valid names
    assert "did you mean {namespace}?" in recipe.fix
    assert "did you mean {prompt_file}?" in failed["agent.command"].fix
    assert "did you mean {title}?" in failed["agent.prompt_template"].fix
    # Braces that are no misspelling (awk's) are left as they are: a warning, nothing refused.
    assert next(f.message for f in found if f.verdict is Verdict.WARN).count("{print}") == 1


def test_the_placeholder_lists_are_what_the_runner_fills(tmp_path: Path) -> None:
    config = config_of(make_repo(tmp_path / "repo"))
    task = SimpleNamespace(id="t-1", namespace="ns", patchset=0, title="T", description="d", priority_name="P2", comments=[])
    values = template_values(config, task, "r", tmp_path, tmp_path / "p.md")  # type: ignore[arg-type]
    assert sorted(values) == sorted(AGENT_PLACEHOLDERS)
    template = " ".join("{" + name + "}" for name in PROMPT_PLACEHOLDERS)
    filled = build_prompt(template, task, base="live", workspace=tmp_path, recipes=[], feedback=None)  # type: ignore[arg-type]
    assert "{" not in filled


def test_static_findings_on_a_directory_that_is_no_repository(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    config = config_of(tmp_path / "plain", agent={"preset": "command", "command": ["fake-agent", "{prompt_file}"]})
    found = verdicts(static_findings(config))
    assert found["git repository"] is Verdict.FAIL and "base branch" not in found
    config = config_of(make_repo(tmp_path / "repo"), base="trunk")
    assert verdicts(static_findings(config))["base branch"] is Verdict.FAIL


# -- the agents' probes (a scripted CLI, in-process) ----------------------------------------------


def scripted(answers: dict[str, tuple[int, str]], timed_out: bool = False) -> Any:
    """A probe runner answering by the argv's second word (`--version`, `-p`, `login`, ...)."""
    calls: list[list[str]] = []

    def run(argv: list[str], env: dict[str, str], timeout: float) -> procs.ProcResult:
        calls.append(argv)
        code, output = answers.get(argv[1], (0, ""))
        return procs.ProcResult(argv, code, output, timed_out=timed_out and argv[1] != "--version")

    run.calls = calls  # type: ignore[attr-defined]
    return run


def test_claude_as_root_without_is_sandbox_names_the_fix_before_any_call(tmp_path: Path) -> None:
    config = config_of(make_repo(tmp_path / "repo"), agent={"preset": "claude-code", "env": {"IS_SANDBOX": "0"}})
    run = scripted({"--version": (0, "2.1.332 (Claude Code)")})
    found = probe_agent(config, run=run, environ={"PATH": "/bin"}, euid=0)
    assert [(f.item, f.verdict) for f in found] == [("agent version", Verdict.OK), ("claude as root", Verdict.FAIL)]
    assert "IS_SANDBOX" in found[1].fix and "acceptEdits" in found[1].fix
    assert len(run.calls) == 1  # no paid call once the refusal is certain
    # As root with the defaults the runner sets IS_SANDBOX=1 itself: nothing to fix.
    config = config_of(make_repo(tmp_path / "r2"), agent={"preset": "claude-code"})
    ok = scripted({"-p": (0, json.dumps({"type": "result", "subtype": "success", "total_cost_usd": 0.001}))})
    assert [f.verdict for f in probe_agent(config, run=ok, environ={}, euid=0)] == [Verdict.OK, Verdict.OK]


def test_claude_rejected_key_or_endless_retries_fail_in_one_call(tmp_path: Path) -> None:
    config = config_of(make_repo(tmp_path / "repo"), agent={"preset": "claude-code"})
    rejected = json.dumps({"type": "result", "is_error": True, "api_error_status": 401, "result": "API Error: 401"})
    found = probe_agent(config, run=scripted({"-p": (1, rejected)}), environ={}, euid=1000)
    assert found[-1].verdict is Verdict.FAIL and "ANTHROPIC_API_KEY" in found[-1].fix
    found = probe_agent(config, run=scripted({}, timed_out=True), environ={}, euid=1000)
    assert found[-1].verdict is Verdict.FAIL and "retries a rejected key" in found[-1].message
    assert probe_agent(config, call=False, run=scripted({}), environ={}, euid=1000)[-1].item == "agent version"
    # Root as the CLI sees it (a container's user namespace, say): its own refusal, with the fix.
    refusal = "--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons"
    found = probe_agent(config, run=scripted({"-p": (1, refusal)}), environ={}, euid=1000)
    assert found[-1].verdict is Verdict.FAIL and refusal in found[-1].message and "IS_SANDBOX" in found[-1].fix


def test_codex_endpoint_setup_and_login(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    config = config_of(repo, agent={"preset": "codex", "env": {"OPENAI_BASE_URL": "http://127.0.0.1:8089/v1"}})
    found = probe_agent(config, run=scripted({}), environ={})
    assert found[-2].item == "codex endpoint" and "ignores it" in found[-2].message and "CODEX_HOME" in found[-2].fix
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text('model_provider = "local"\n[model_providers.local]\nname = "x"\n')
    config = config_of(repo, agent={"preset": "codex", "env": {"CODEX_HOME": str(home)}})
    found = probe_agent(config, run=scripted({}), environ={})
    assert found[-1].verdict is Verdict.FAIL and "base_url" in found[-1].message
    config = config_of(repo, agent={"preset": "codex"})
    found = probe_agent(config, run=scripted({"login": (1, "Not logged in")}), environ={})
    assert found[-1].item == "codex login" and found[-1].verdict is Verdict.FAIL


def test_gemini_trust_and_auth_exit_codes(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    config = config_of(repo, agent={"preset": "gemini", "env": {"GEMINI_CLI_TRUST_WORKSPACE": "false"}})
    assert probe_agent(config, run=scripted({}), environ={})[-1].item == "gemini trust"
    config = config_of(repo, agent={"preset": "gemini"})
    found = probe_agent(config, run=scripted({"--output-format": (41, "API key not valid")}), environ={})
    assert found[-1].verdict is Verdict.FAIL and "authentication failed" in found[-1].message
    assert "GEMINI_API_KEY" in found[-1].fix


# -- the preflight's environment fault (real files, real PATH lookups) ----------------------------


def test_environment_fault_is_recorded_once_and_clears_when_the_program_is_installed(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    config = config_of(
        repo,
        agent={"preset": "command", "command": ["fake-agent", "{prompt_file}"]},
        phases={"unit": {"run": ["my-linter --strict"], "env": {"PATH": f"{bin_dir}:{os.environ['PATH']}"}}},
    )
    board = FaultBoard(tmp_path / "faults.json", lambda n: 60.0)
    pre = Preflight(config, board, tmp_path / "green", lambda: None, lambda: None)
    os.environ["PATH"] = f"{FAKES}:{os.environ['PATH']}"
    try:
        assert not pre.environment_ok()
        fault = board.get(ENVIRONMENT)
        assert fault is not None and "my-linter" in fault.message and "phases.unit.run" in fault.message
        assert not pre.environment_ok() and board.get(ENVIRONMENT) == fault  # not recorded again
        before = path_stamp(config, dict(os.environ))
        time.sleep(0.01)
        executable(bin_dir / "my-linter")
        assert path_stamp(config, dict(os.environ)) != before
        assert pre.environment_ok() and ENVIRONMENT not in board
    finally:
        os.environ["PATH"] = os.environ["PATH"].removeprefix(f"{FAKES}:")
        pre.close()


# -- end to end -----------------------------------------------------------------------------------


def dev_runs(s: Sample) -> list[tuple[str, str]]:
    return [(t, st) for t, st in s.rows("SELECT task_id, status FROM pipeline_runs WHERE phase = 'dev' ORDER BY id")]


def agent_calls(s: Sample) -> list[Path]:
    return sorted(s.state.glob("*.count")) if s.state.exists() else []


def test_red_base_starts_no_agent_until_fixed_then_the_queue_resumes_with_nothing_charged(tmp_path: Path) -> None:
    s = make_sample(tmp_path)
    (s.repo / "base.txt").write_text("BAD\n")  # check.py fails on any .txt saying BAD: base is red
    git(s.repo, "add", "base.txt")
    git(s.repo, "commit", "-q", "-m", "base goes red")
    a, b = s.add("A"), s.add("B")
    doctor = s.cli("doctor", "--no-agent-call")
    assert doctor.returncode == 1, doctor.stdout
    assert "[FAIL] base checks: base is red" in doctor.stdout and "fix live" in doctor.stdout
    for _ in range(3):
        done = s.cli("run", "--once")
        assert done.returncode == 3, done.stderr  # paused: cron hears of it
    assert agent_calls(s) == [] and dev_runs(s) == []
    doc = s.status()
    assert [f["area"] for f in doc["faults"]] == ["red-base"]
    assert "base is red: queue paused" in doc["faults"][0]["message"]
    assert {q["why"] for q in doc["queue"]} == {"fault"} and doc["open"] == 2
    # --until-idle stops at once: only a person can fix base.
    assert s.cli("run", "--until-idle").returncode == 3
    git(s.repo, "rm", "-q", "base.txt")
    git(s.repo, "commit", "-q", "-m", "base green again")
    s.run_once_until(all_done(2))
    assert sorted(dev_runs(s)) == [(a, "success"), (b, "success")]  # one attempt each, none charged
    assert s.status()["faults"] == []


def test_a_verified_task_is_not_integrated_by_run_once_while_base_is_red(tmp_path: Path) -> None:
    # The end of `run --once` lands what is ready: not onto a red base, where its checks would
    # fail for base's fault and be charged to the task.
    s = make_sample(tmp_path)
    s.add("A")
    s.run_once_until_verified()
    (s.repo / "base.txt").write_text("BAD\n")
    git(s.repo, "add", "base.txt")
    git(s.repo, "commit", "-q", "-m", "base goes red")
    done = s.cli("run", "--once")
    assert done.returncode == 3, done.stdout + done.stderr
    assert s.task("t-1")["status"] == "verified" and s.task("t-1")["patchset"] == 0
    assert s.rows("SELECT COUNT(*) FROM pipeline_runs WHERE phase = 'integrate'") == [(0,)]
    git(s.repo, "rm", "-q", "base.txt")
    git(s.repo, "commit", "-q", "-m", "base green again")
    s.run_once_until(all_done(1))
    assert s.task("t-1")["patchset"] == 0  # landed on its first attempt, nothing charged


def test_a_missing_recipe_program_is_named_and_pauses_agents_until_installed(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    s = make_sample(tmp_path, phases={"verify": {"run": [["python3", "check.py"], ["no-such-tool-xyz", "--check"]]}})
    s.env["PATH"] = f"{bin_dir}:{FAKES}:{os.environ['PATH']}"
    validate = s.cli("config", "validate")
    assert validate.returncode == 1
    assert "no-such-tool-xyz" in validate.stderr and "phases.verify.run" in validate.stderr
    assert "pipeline.yaml" in validate.stderr
    doctor = s.cli("doctor", "--json")
    assert doctor.returncode == 1
    failed = [i for i in json.loads(doctor.stdout)["items"] if i["verdict"] == "fail"]
    assert [i["item"] for i in failed][:1] == ["recipe program"] and "no-such-tool-xyz" in failed[0]["message"]
    s.add("A")
    for _ in range(2):
        assert s.cli("run", "--once").returncode == 3  # paused: cron hears of it
    assert agent_calls(s) == [] and dev_runs(s) == []
    assert [f["area"] for f in s.status()["faults"]] == ["environment"]
    executable(bin_dir / "no-such-tool-xyz")
    s.run_once_until(all_done(1))
    assert dev_runs(s) == [("t-1", "success")]


def test_doctor_names_the_fix_for_claude_as_root_and_a_rejected_key(tmp_path: Path) -> None:
    s = preset_sample(tmp_path, "claude-code")
    # Root as the fake sees it, and IS_SANDBOX set by the config to something other than 1.
    s.write_config(agent={"env": {"IS_SANDBOX": "0"}})
    s.env["FAKE_EUID"] = "0"
    done = s.cli("doctor")
    assert done.returncode == 1
    assert "--dangerously-skip-permissions cannot be used with root/sudo privileges" in done.stdout
    assert "IS_SANDBOX" in done.stdout and "fix:" in done.stdout
    del s.config["agent"]["env"]["IS_SANDBOX"]
    s.write_config()
    del s.env["FAKE_EUID"]
    s.env["FAKE_AUTH"] = "bad"
    done = s.cli("doctor", "--json")
    items = {i["item"]: i for i in json.loads(done.stdout)["items"]}
    assert done.returncode == 1 and items["claude call"]["verdict"] == "fail"
    assert "HTTP 401" in items["claude call"]["message"] and "ANTHROPIC_API_KEY" in items["claude call"]["fix"]
    assert items["base checks"]["verdict"] == "ok"
    del s.env["FAKE_AUTH"]
    healthy = s.cli("doctor")
    assert healthy.returncode == 0, healthy.stdout
    assert agent_calls(s) == []  # the probe is no task's attempt


def test_opencode_retrying_a_persistent_500_is_stopped_early_and_not_charged(tmp_path: Path) -> None:
    s = preset_sample(tmp_path, "opencode")
    s.write_config(agent={"offline_timeout": 1, "timeout": 60})
    s.plan({"t-1": [{"server_error": True}, {}]})
    s.add("do it")
    s.run_until(all_done(1), timeout=60)
    statuses = [r["status"] for r in s.task("t-1")["runs"] if r["phase"] == "dev"]
    assert statuses == ["cancelled", "success"]
    (error,) = [e for (e,) in s.rows("SELECT error_summary FROM pipeline_runs WHERE status = 'cancelled'")]
    assert "opencode's model calls keep failing" in error and "Internal server error" in error
    started, finished = s.rows("SELECT started_at, finished_at FROM pipeline_runs WHERE id = 1")[0]
    assert (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds() < 30


def test_opencode_is_stalled_only_by_failing_calls_after_its_last_event(tmp_path: Path) -> None:
    from phases.agents import AgentHandle, stdout_file
    from phases.presets import OpenCode
    from runner.config import AgentConfig

    preset = OpenCode(AgentConfig(preset="opencode", offline_timeout=5))
    now = time.time()
    handle = AgentHandle("r", 1, tmp_path / "r.log", tmp_path / "r.json", now - 60)

    def at(seconds_ago: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now - seconds_ago))

    def write(event_ago: float, errors_ago: list[float]) -> None:
        stdout_file(handle.status_file).write_text(json.dumps({"type": "step_start", "timestamp": (now - event_ago) * 1000}) + "\n")
        handle.log_path.write_text("".join(f"ERROR {at(a)} +2ms service=llm error=500 stream error\n" for a in errors_ago))

    write(50, [40, 20, 8])
    assert preset.stalled(handle) is not None and "3 failed calls" in (preset.stalled(handle) or "")
    write(50, [])  # a long quiet tool call: nothing says the endpoint fails
    assert preset.stalled(handle) is None
    write(3, [40, 20, 1])  # an event 3 s ago: still within offline_timeout
    assert preset.stalled(handle) is None
    write(30, [55, 45, 35])  # failures before its last event were retried through
    assert preset.stalled(handle) is None


def test_a_red_base_is_checked_once_per_tip_until_its_delay_is_up_and_clears_on_a_green_tip(tmp_path: Path) -> None:
    counter = tmp_path / "runs.log"
    check_py = (
        "import pathlib, sys\n"
        f"with open({str(counter)!r}, 'a') as f: f.write('run\\n')\n"
        "sys.exit(1 if pathlib.Path('RED').exists() else 0)\n"
    )
    repo = make_repo(tmp_path / "repo", files={"check.py": check_py, "RED": "x\n"})
    config = config_of(repo, phases={"test": {"run": [["python3", "check.py"]]}})
    board = FaultBoard(tmp_path / "faults.json", lambda n: 3600.0)
    woken: list[bool] = []
    pre = Preflight(config, board, tmp_path / "green", lambda: git(repo, "rev-parse", "live"), lambda: woken.append(True))
    try:
        assert not pre.base_green(wait=True)
        fault = board.get("red-base")
        assert fault is not None and "base is red" in fault.message and fault.data["tip"] == git(repo, "rev-parse", "live")
        for _ in range(3):  # the same red tip, the delay not up: never run again
            assert not pre.base_green(wait=True)
        assert counter.read_text().count("run") == 1 and board.get("red-base") == fault
        git(repo, "rm", "-q", "RED")
        git(repo, "commit", "-q", "-m", "fixed")
        wait_until = time.time() + 30
        while not pre.base_green(wait=False):
            assert time.time() < wait_until
            time.sleep(0.05)
        assert woken  # the check ran beside the loop, which it woke when done
        assert "red-base" not in board and (tmp_path / "green").read_text().split()[0] == git(repo, "rev-parse", "live")
        assert pre.base_green(wait=True) and counter.read_text().count("run") == 2  # known green: no run
        # A tip the runner landed is green without a run of its own.
        git(repo, "commit", "-q", "--allow-empty", "-m", "landed by the runner")
        pre.landed(git(repo, "rev-parse", "live"))
        assert pre.base_green(wait=True) and counter.read_text().count("run") == 2
    finally:
        pre.close()


def test_a_tip_green_under_old_checks_is_checked_again_once_the_checks_change(tmp_path: Path) -> None:
    # Base passed `test`; a person then adds a phase base fails (or fixes one that failed). The
    # tip is the same, but what it is checked against is not: a stale green would let every agent
    # start on a base that rejects every task, a stale red would keep the queue paused.
    repo = make_repo(tmp_path / "repo", files={"check.py": "import sys\nsys.exit(0)\n"})
    tip = git(repo, "rev-parse", "live")
    green = tmp_path / "green"
    board = FaultBoard(tmp_path / "faults.json", lambda n: 3600.0)

    def preflight(phases: dict[str, Any]) -> Preflight:
        config = config_of(repo, phases=phases)
        return Preflight(config, board, green, lambda: tip, lambda: None)

    first = preflight({"test": {"run": [["python3", "check.py"]]}})
    try:
        assert first.base_green(wait=True)
    finally:
        first.close()
    stricter = preflight({"test": {"run": [["python3", "check.py"]]}, "lint": {"run": [["false"]]}})
    try:
        assert not stricter.base_green(wait=True)
        fault = board.get("red-base")
        assert fault is not None and fault.data["tip"] == tip
    finally:
        stricter.close()
    fixed = preflight({"test": {"run": [["python3", "check.py"]]}, "lint": {"run": [["true"]]}})
    try:
        assert fixed.base_green(wait=True)  # the red tip's delay is not up, but the checks changed
        assert "red-base" not in board
    finally:
        fixed.close()


def test_a_probe_quoting_the_cli_prints_no_escape_sequence() -> None:
    # A probe's message quotes what the agent CLI printed, which may colour or retitle a terminal.
    hostile = Finding("claude call", Verdict.FAIL, "\x1b]0;owned\x07\x1b[31mAPI Error: 401\x1b[0m", fix="set the key")
    text = render([hostile])
    assert "\x1b" not in text and "\x07" not in text
    assert "API Error: 401" in text and "fix: set the key" in text
