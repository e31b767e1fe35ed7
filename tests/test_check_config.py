"""In process: config that could never check a task, or could never run, is refused or warned about;
verification results say when nothing was checked; the state schema records skips."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from phases.outcomes import VerifyStatus
from phases.verify import (
    RecipeRun,
    counts_as_passed,
    coverage_problem,
    run_recipes,
)
from runner import state
from runner.config import load_config
from runner.errors import ConfigError
from runner.init_config import detect_test_command
from runner.sqldialect import SQLITE
from tests.conftest import CLI, make_repo, write_config

SHIPPED = Path(__file__).resolve().parents[1] / "pipeline.yaml"


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return str(caught.value)


# -- defaults ----------------------------------------------------------------------------------


def test_defaults_have_no_skip_codes_no_recipes_and_do_not_allow_unchecked(repo: Path) -> None:
    config = load_config(write_config(repo, "base: live\n")).config
    assert config.phases == {}
    assert config.allow_unchecked is False


def test_the_shipped_config_has_real_checks_and_no_skip_codes() -> None:
    config = load_config(SHIPPED).config
    assert all(phase.skip_exit_codes == [] for phase in config.phases.values())
    assert config.phases and coverage_problem(config.phases) is None
    assert "bild" not in SHIPPED.read_text().split("phases:")[1]


def test_allow_unchecked_is_shown_by_config_show(cli: CLI, repo: Path) -> None:
    write_config(repo, "allow_unchecked: true\n")
    values = cli("config", "show", "--json", cwd=repo).json()["values"]
    assert values["allow_unchecked"]["value"] is True
    assert values["allow_unchecked"]["source"].endswith("pipeline.yaml")
    env = cli("config", "show", "--json", cwd=repo, env={"PIPELINE_ALLOW_UNCHECKED": "false"}).json()
    assert env["values"]["allow_unchecked"] == {"value": False, "source": "env PIPELINE_ALLOW_UNCHECKED"}


# -- bad values are errors naming the key and the file ------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("phases:\n  verify:\n    run: ['make \"test']\n", "phases.verify.run"),
        ('phases:\n  integrate:\n    run: ["pytest \'tests"]\n', "phases.integrate.run"),
        ('agent:\n  preset: command\n  command: "my-agent \'{prompt_file}"\n', "agent.command"),
    ],
)
def test_an_unbalanced_quote_is_an_error(repo: Path, text: str, key: str) -> None:
    path = write_config(repo, text)
    message = config_error(path)
    assert repr(key) in message and str(path.resolve()) in message
    assert "cannot be split into words" in message and "list of arguments" in message


def test_an_empty_recipe_is_an_error(repo: Path) -> None:
    message = config_error(write_config(repo, "phases:\n  verify:\n    run: ['make test', '']\n"))
    assert "'phases.verify.run'" in message and "recipe 2 is empty" in message


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("agent:\n  timeout: {}\n", "agent.timeout"),
        ("phases:\n  verify:\n    timeout: {}\n", "phases.verify.timeout"),
        ("phases:\n  integrate:\n    timeout: {}\n", "phases.integrate.timeout"),
        ("phases:\n  unit:\n    run: [x]\n    timeout: {}\n", "phases.unit.timeout"),
    ],
)
def test_timeouts_are_capped_at_seven_days(repo: Path, section: str, key: str) -> None:
    path = write_config(repo, section.format(10**11))
    message = config_error(path)
    assert repr(key) in message and str(path.resolve()) in message and "7 days" in message
    load_config(write_config(repo, section.format(7 * 24 * 3600)))  # a week is still fine


def test_a_huge_timeout_from_the_environment_names_the_variable(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPELINE_AGENT__TIMEOUT", str(10**11))
    message = config_error(write_config(repo, "base: live\n"))
    assert "PIPELINE_AGENT__TIMEOUT" in message and "'agent.timeout'" in message


def test_zero_max_retries_is_an_error_asking_for_a_positive_number(repo: Path) -> None:
    path = write_config(repo, "limits:\n  max_retries: 0\n")
    message = config_error(path)
    assert "'limits.max_retries'" in message and str(path.resolve()) in message
    assert "positive number" in message and "unlimited" in message


def test_a_root_that_would_hide_or_hold_the_repository_is_an_error(repo: Path) -> None:
    for root, why in [
        (".", "is the repository itself"),
        (".git/pipeline", "inside the repository's .git directory"),
        (".git", "inside the repository's .git directory"),
        ("..", "contains the repository"),
    ]:
        path = write_config(repo, f"root: {root}\n")
        message = config_error(path)
        assert "'root'" in message and str(path.resolve()) in message and why in message, root
    # Beside the repository, or anywhere inside it but .git, is fine.
    assert (
        load_config(write_config(repo, "root: .runner-state\n")).config.root == (repo / ".runner-state").resolve()
    )
    assert (
        load_config(write_config(repo, "root: ../beside\n")).config.root == (repo.parent / "beside").resolve()
    )
    assert (
        load_config(write_config(repo, "root: state/here\n")).config.root == (repo / "state/here").resolve()
    )


def test_a_bad_root_given_as_a_flag_names_the_flag(repo: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(repo, "base: live\n"), {"root": str(repo)})
    assert "flag --root" in str(caught.value) and "'root'" in str(caught.value)


# -- warnings: config that would check nothing -------------------------------------------------


def test_validate_warns_when_some_tasks_would_get_no_check(cli: CLI, repo: Path) -> None:
    for recipes, warned in [
        ("[]", "no phases are configured"),
        ("['bild {namespace}', ['bild', '--test', '{namespace}']]", "every recipe of a required phase needs {namespace}"),
        ("['bild {namespace}', 'make test']", None),
        ("['make test']", None),
    ]:
        write_config(repo, f"phases:\n  verify:\n    run: {recipes}\n")
        done = cli("config", "validate", "--schema-only", cwd=repo)
        assert done.code == 0, done.err
        warnings = [x for x in done.err.splitlines() if x.startswith("warning:")]
        if warned is None:
            assert warnings == [], recipes
        else:
            (line,) = warnings
            assert warned in line and "'phases'" in line and "pipeline.yaml" in line


# -- init ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "makefile",
    [
        "build:\n\tcc main.c\n",  # no test target
        "test := unit\nbuild:\n\tcc main.c\n",  # a variable named test
        "all:\n\techo test: done\n",  # `test:` only inside a recipe line
    ],
)
def test_init_does_not_pick_make_test_without_a_test_target(cli: CLI, tmp_path: Path, makefile: str) -> None:
    repo = make_repo(tmp_path / "r", files={"Makefile": makefile})
    assert detect_test_command(repo) is None
    done = cli("init", "--preset", "codex", "--base", "live", "--yes", cwd=repo)
    assert done.code == 0, done.err
    assert "No test command detected" in done.out
    text = (repo / "pipeline.yaml").read_text()
    assert "skip_exit_codes" not in text
    values = cli("config", "show", "--json", cwd=repo).json()["values"]
    assert values["phases"]["value"] == {}
    validate = cli("config", "validate", cwd=repo)
    assert validate.code == 0 and "warning:" in validate.err


@pytest.mark.parametrize(
    ("name", "makefile"),
    [
        ("Makefile", "check test: build\n\ttrue\n"),
        ("GNUmakefile", "test::\n\ttrue\n"),
        ("makefile", "test :\n\ttrue\n"),
    ],
)
def test_init_finds_a_test_target_in_the_makefile_make_reads(
    tmp_path: Path, name: str, makefile: str
) -> None:
    repo = make_repo(tmp_path / "r", files={name: makefile})
    found = detect_test_command(repo)
    assert found is not None and found.argv == ["make", "test"]


# -- verification results ------------------------------------------------------------------------


def spec(**values: str | None) -> RecipeRun:
    return RecipeRun(values={"namespace": None, **values}, skip_exit_codes=[3], timeout=30)


def test_no_recipe_that_ran_and_passed_is_unchecked(tmp_path: Path) -> None:
    log = tmp_path / "verify.log"
    ok = ["python3", "-c", "pass"]
    skip = ["python3", "-c", "raise SystemExit(3)"]
    none = run_recipes([], tmp_path, spec(), log)
    needs_namespace = run_recipes([["python3", "-c", "pass", "{namespace}"]], tmp_path, spec(), log)
    skipped_first = run_recipes([skip, ok], tmp_path, spec(), log)
    for result in (none, needs_namespace, skipped_first):
        assert result.status is VerifyStatus.UNCHECKED and result.passed == 0
        assert not counts_as_passed(result, allow_unchecked=False)
        assert counts_as_passed(result, allow_unchecked=True)
    assert "pass {namespace} (no namespace)" in needs_namespace.summary
    checked = run_recipes([ok, ["python3", "-c", "pass", "{namespace}"]], tmp_path, spec(), log)
    assert checked.status is VerifyStatus.PASS and checked.passed == 1 and checked.skipped
    partly = run_recipes([ok, skip, ok], tmp_path, spec(), log)
    assert partly.status is VerifyStatus.SKIP and partly.passed == 1
    assert counts_as_passed(partly, allow_unchecked=False)


def test_exit_2_is_a_failure_unless_declared_a_skip_code(repo: Path) -> None:
    defaults = load_config(write_config(repo, "base: live\nphases: {test: {run: [x]}}\n")).config.phases["test"]
    two = ["python3", "-c", "raise SystemExit(2)"]
    run = RecipeRun(values={}, skip_exit_codes=defaults.skip_exit_codes, timeout=30)
    result = run_recipes([two], repo, run, repo.parent / "log")
    assert result.status is VerifyStatus.FAIL and "failed (exit 2)" in result.summary
    assert not counts_as_passed(result, allow_unchecked=True)


# -- the state schema ----------------------------------------------------------------------------


def test_a_version_1_database_is_migrated_keeping_its_runs_and_accepting_skips(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    conn.executescript(state.migration_sql(state.MIGRATIONS[0], SQLITE))
    conn.execute("PRAGMA user_version = 1")
    for status in ("success", "failure", "cancelled"):
        conn.execute(
            "INSERT INTO pipeline_runs (task_id, phase, patchset, status, cost_cents, started_at, error_summary) "
            "VALUES ('t-1', 'verify', 0, ?, 1.5, '2026-01-01T00:00:00+00:00', ?)",
            (status, f"was {status}"),
        )
    conn.commit()
    conn.close()

    db = state.open_db(path)
    try:
        runs = state.Runs(db)
        kept = runs.for_task("t-1")
        assert [(r.id, r.status, r.error_summary, r.cost_cents) for r in kept] == [
            (1, state.RunStatus.SUCCESS, "was success", 1.5),
            (2, state.RunStatus.FAILURE, "was failure", 1.5),
            (3, state.RunStatus.CANCELLED, "was cancelled", 1.5),
        ]
        row = runs.start("t-1", state.Phase.VERIFY, 0)
        assert row == 4
        runs.finish(row, state.RunStatus.SKIPPED, error="no check ran")
        skipped = runs.last_attempt("t-1", state.Phase.VERIFY)
        assert skipped is not None and skipped.id == row and skipped.status is state.RunStatus.SKIPPED
        # A skip is not a failure of the task.
        assert runs.failures_since("t-1", None)[0] == 1
        # The phase column no longer restricts phases, so a new one needs no migration.
        with db.write() as c:
            c.execute(
                "INSERT INTO pipeline_runs (task_id, phase, patchset, status, started_at) "
                "VALUES ('t-1', 'review', 0, 'running', '2026-01-01T00:00:00+00:00')"
            )
        assert db.scalar("PRAGMA user_version") == state.SCHEMA_VERSION
        indexes = {r[0] for r in db.query("SELECT name FROM sqlite_master WHERE tbl_name = 'pipeline_runs'")}
        assert {"idx_pipeline_runs_task", "idx_pipeline_runs_status"} <= indexes
    finally:
        db.close()
