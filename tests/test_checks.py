"""End to end: a task lands only when a check ran and passed; what is not a pass is shown as such.

Real repositories, the real loop as a separate process, the fake agent CLI.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import git
from tests.loop_helpers import Sample, make_sample

ALWAYS_BAD = {"files": {"x.txt": "BAD\n"}}


def commit_to_base(s: Sample, files: dict[str, str]) -> None:
    """A person's commit on base, in the main checkout, before any task runs."""
    for name, text in files.items():
        (s.repo / name).write_text(text)
    git(s.repo, "add", *files)
    git(s.repo, "commit", "-q", "-m", "setup")


def until_idle(s: Sample, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return s.cli("run", "--until-idle", timeout=timeout)


def runs_of(s: Sample, task_id: str) -> list[str]:
    return [f"{r['phase']}:{r['status']}" for r in s.task(task_id)["runs"]]


def system_comments(s: Sample, task_id: str) -> str:
    return "\n".join(c["body"] for c in s.task(task_id)["comments"] if c["author"] == "system")


# -- exit 2 is not a pass ----------------------------------------------------------------------


def test_make_test_exiting_2_on_a_failing_test_does_not_land(tmp_path: Path) -> None:
    s = make_sample(tmp_path, limits={"max_retries": 1}, phases={"verify": {"run": ["make test"]}})
    # A failing test run the way unittest and pytest report one: a traceback, then exit 1.
    fail = "python3 -c \"raise AssertionError('a test failed')\""
    commit_to_base(s, {"Makefile": f"test:\n\tpython3 check.py || {fail}\n"})
    start = git(s.repo, "rev-parse", "live")
    s.plan({"t-1": [ALWAYS_BAD], "t-2": [{"files": {"good.txt": "fine\n"}}]})
    s.add("breaks the tests")
    s.add("keeps them green")
    done = until_idle(s)
    assert done.returncode == 3, done.stdout + done.stderr
    # make exits 2 when its recipe fails: that is a failure, not a skip.
    assert runs_of(s, "t-1") == ["dev:success", "verify:failure"]
    (error,) = s.rows("SELECT error_summary FROM pipeline_runs WHERE task_id='t-1' AND phase='verify'")[0]
    assert "failed (exit 2)" in error and "AssertionError: a test failed" in error
    assert s.task("t-1")["status"] == "needs_help"
    assert "AssertionError: a test failed" in system_comments(s, "t-1")
    # The runner's own output keeps to the headline: a test's traceback is not taken for its own.
    assert "Traceback" not in done.stdout + done.stderr
    assert git(s.repo, "log", "--format=%(trailers:key=Task-Id,valueonly)", f"{start}..live").strip() == "t-2"
    assert not (s.repo / "x.txt").exists()


# -- skips are recorded as skips ---------------------------------------------------------------


def test_a_declared_skip_code_after_a_passing_check_promotes_and_is_recorded_skipped(tmp_path: Path) -> None:
    skip = ["python3", "-c", "raise SystemExit(3)"]
    s = make_sample(
        tmp_path, phases={"verify": {"run": [["python3", "check.py"], skip], "skip_exit_codes": [3]}}
    )
    s.add("fine")
    done = until_idle(s)
    assert done.returncode == 0, done.stdout + done.stderr
    assert s.trailers() == ["t-1"]
    runs = runs_of(s, "t-1")
    assert runs[:2] == ["dev:success", "verify:skipped"]
    assert "exited 3 (a skip code)" in system_comments(s, "t-1")
    shown = s.cli("task", "show", "t-1")
    assert shown.returncode == 0
    verify_line = next(line for line in shown.stdout.splitlines() if " verify " in line)
    assert "skipped" in verify_line and "success" not in verify_line


# -- zero checks is not a pass -----------------------------------------------------------------


def test_a_task_no_recipe_applies_to_goes_to_needs_help_without_spending_retries(tmp_path: Path) -> None:
    s = make_sample(tmp_path, phases={"verify": {"run": [["python3", "check.py", "{namespace}"]]}})
    s.add("no namespace")
    done = until_idle(s)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "t-1" in done.stdout and "needs help" in done.stdout
    assert s.base_log() == ["initial"]
    task = s.task("t-1")
    assert task["status"] == "needs_help"
    assert runs_of(s, "t-1") == ["dev:success", "verify:skipped"]
    note = system_comments(s, "t-1")
    assert "no check ran" in note and "key 'phases'" in note and "allow_unchecked: true" in note
    # Not the task's fault: nothing counts against its retries, and nothing starts again.
    assert s.rows("SELECT COUNT(*) FROM pipeline_runs WHERE status='failure'") == [(0,)]
    assert s.cli("run", "--once").returncode == 0
    assert s.rows("SELECT COUNT(*) FROM pipeline_runs WHERE phase='dev'") == [(1,)]
    doc = s.status()
    assert [t["id"] for t in doc["skipped_verifications"]] == ["t-1"]
    assert "Verification skipped" in s.cli("status").stdout
    # A task that has a namespace is checked by the same recipe, and lands.
    s.add("with one", "--namespace", "src")
    assert until_idle(s).returncode == 3  # t-1 still needs help
    assert s.trailers() == ["t-2"]


def test_a_skip_code_before_any_check_passed_is_unchecked(tmp_path: Path) -> None:
    skip = ["python3", "-c", "raise SystemExit(3)"]
    s = make_sample(
        tmp_path, phases={"verify": {"run": [skip, ["python3", "check.py"]], "skip_exit_codes": [3]}}
    )
    s.add("skipped at once")
    assert until_idle(s).returncode == 3
    assert s.task("t-1")["status"] == "needs_help"
    assert runs_of(s, "t-1") == ["dev:success", "verify:skipped"]
    assert s.base_log() == ["initial"]


def test_allow_unchecked_promotes_a_task_no_check_ran_on_and_says_so(tmp_path: Path) -> None:
    s = make_sample(
        tmp_path, allow_unchecked=True, phases={"verify": {"run": [["python3", "check.py", "{namespace}"]]}}
    )
    s.add("no namespace")
    done = until_idle(s)
    assert done.returncode == 0, done.stdout + done.stderr
    assert s.trailers() == ["t-1"]
    assert runs_of(s, "t-1")[:2] == ["dev:success", "verify:skipped"]
    assert "no check ran" in system_comments(s, "t-1")


def test_a_config_without_recipes_refuses_to_run_and_lands_nothing(tmp_path: Path) -> None:
    s = make_sample(tmp_path)
    s.config.pop("phases")
    s.write_config()
    s.add("anything")
    validate = s.cli("config", "validate")
    assert validate.returncode == 0
    assert "warning:" in validate.stderr and "'phases'" in validate.stderr
    done = s.cli("run", "--once")
    assert done.returncode == 1
    assert "key 'phases'" in done.stderr and "allow_unchecked" in done.stderr
    assert s.task("t-1")["status"] == "open" and s.task("t-1")["runs"] == []
    assert not s.state.exists() or not list(s.state.glob("*.prompt"))  # no agent started
    assert s.base_log() == ["initial"]

    # Saying so explicitly lands it, recorded as skipped.
    s.write_config(allow_unchecked=True)
    assert until_idle(s).returncode == 0
    assert s.trailers() == ["t-1"]
    assert runs_of(s, "t-1")[:2] == ["dev:success", "verify:skipped"]


# -- bad config is refused before a task is claimed ------------------------------------------


def test_a_recipe_with_an_unbalanced_quote_is_refused_before_any_task_is_claimed(tmp_path: Path) -> None:
    s = make_sample(tmp_path)
    s.add("x")
    s.write_config(phases={"verify": {"run": ['python3 "check.py']}})
    validate = s.cli("config", "validate")
    assert validate.returncode == 1
    assert "phases.verify.run" in validate.stderr and str(s.repo / "pipeline.yaml") in validate.stderr
    done = s.cli("run", "--once")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "phases.verify.run" in done.stderr
    assert s.rows("SELECT status FROM tasks") == [("open",)]
    assert s.rows("SELECT COUNT(*) FROM pipeline_runs") == [(0,)]


# -- run --until-idle ends, and says what is left ----------------------------------------------


def test_until_idle_exits_3_while_an_integration_is_held_then_0_once_it_lands(tmp_path: Path) -> None:
    s = make_sample(tmp_path)
    s.add("lands later")
    (s.repo / "README.md").write_text("a person's uncommitted edit\n")
    done = until_idle(s, timeout=60)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "t-1" in done.stdout and "integration held" in done.stdout and "uncommitted changes" in done.stdout
    assert s.status()["verified"] == 1 and s.base_log() == ["initial"]
    git(s.repo, "checkout", "README.md")
    done = until_idle(s, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert s.trailers() == ["t-1"]


# -- stray directories -------------------------------------------------------------------------


def test_a_stray_directory_under_worktrees_does_not_stop_the_runner(tmp_path: Path) -> None:
    s = make_sample(tmp_path)
    s.add("x")
    stray = s.root / "worktrees" / "not a task"
    stray.mkdir(parents=True)
    (stray / "notes.md").write_text("mine\n")
    done = s.cli("run", "--once")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "not a task" in done.stderr  # warned about, by name
    s.run_once_until(lambda d: d["done"] == 1)
    assert s.trailers() == ["t-1"]
    assert (stray / "notes.md").read_text() == "mine\n"  # not ours to delete
