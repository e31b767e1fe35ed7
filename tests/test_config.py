"""Config precedence, extends, and errors that name the key and the file (through the real CLI)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import CLI, write_config


def effective(
    cli: CLI, repo: Path, *args: str, env: dict[str, str] | None = None
) -> dict[str, dict[str, object]]:
    done = cli("config", "show", "--json", *args, cwd=repo, env=env)
    assert done.code == 0, done.err
    values: dict[str, dict[str, object]] = done.json()["values"]
    return values


def test_precedence_flag_over_env_over_file_over_default(cli: CLI, repo: Path) -> None:
    env = {"PIPELINE_AGENT__TIMEOUT": "222", "PIPELINE_CONCURRENCY": "6"}
    write_config(repo, "concurrency: 5\nagent:\n  timeout: 111\n")

    both = effective(cli, repo, "--concurrency", "7", "--timeout", "333", env=env)
    assert both["concurrency"] == {"value": 7, "source": "flag --concurrency"}
    assert both["agent.timeout"] == {"value": 333, "source": "flag --timeout"}

    no_flag = effective(cli, repo, env=env)
    assert no_flag["concurrency"] == {"value": 6, "source": "env PIPELINE_CONCURRENCY"}
    assert no_flag["agent.timeout"] == {"value": 222, "source": "env PIPELINE_AGENT__TIMEOUT"}

    no_env = effective(cli, repo)
    assert no_env["concurrency"]["value"] == 5
    assert no_env["agent.timeout"]["value"] == 111
    assert str(no_env["concurrency"]["source"]).endswith("pipeline.yaml")

    (repo / "pipeline.yaml").unlink()
    defaults = effective(cli, repo)
    assert defaults["concurrency"] == {"value": 2, "source": "default"}
    assert defaults["agent.timeout"] == {"value": 1800, "source": "default"}
    assert defaults["limits.max_retries"] == {"value": 5, "source": "default"}
    assert defaults["base"]["value"] == "live"


def test_nested_env_for_limits(cli: CLI, repo: Path) -> None:
    values = effective(cli, repo, env={"PIPELINE_LIMITS__MAX_RETRIES": "9"})
    assert values["limits.max_retries"] == {"value": 9, "source": "env PIPELINE_LIMITS__MAX_RETRIES"}
    assert values["limits.max_task_cost"]["value"] == 0


def test_extends_merges_nested_mappings(cli: CLI, repo: Path) -> None:
    write_config(
        repo,
        "base: main\nconcurrency: 4\nagent:\n  timeout: 100\n  max_iter: 20\n"
        "phases:\n  verify:\n    run: ['make test']\n",
    )
    (repo / "epics").mkdir()
    write_config(repo, "extends: ../pipeline.yaml\nparent: t-9\nagent:\n  max_iter: 5\n", "epics/e.yaml")
    done = cli("-c", "epics/e.yaml", "config", "show", "--json", cwd=repo)
    assert done.code == 0, done.err
    values = done.json()["values"]
    assert values["parent"]["value"] == "t-9"
    assert values["agent.max_iter"]["value"] == 5
    assert str(values["agent.max_iter"]["source"]).endswith("epics/e.yaml")
    # Kept from the extended file, key by key inside the merged `agent` mapping.
    assert values["agent.timeout"]["value"] == 100
    assert str(values["agent.timeout"]["source"]).endswith("/pipeline.yaml")
    assert values["base"]["value"] == "main"
    assert values["phases.verify.run"]["value"] == ["make test"]


def test_unknown_key_names_key_file_and_suggestion(cli: CLI, repo: Path) -> None:
    path = write_config(repo, "agent:\n  timout: 10\n")
    done = cli("config", "validate", cwd=repo)
    assert done.code == 1
    assert "agent.timout" in done.err
    assert str(path.resolve()) in done.err
    assert "agent.timeout" in done.err  # the suggestion


def test_bad_value_names_key_and_file(cli: CLI, repo: Path) -> None:
    path = write_config(repo, "concurrency: lots\n")
    done = cli("config", "validate", cwd=repo)
    assert done.code == 1
    assert "'concurrency'" in done.err and str(path.resolve()) in done.err
    assert "Traceback" not in done.err


def test_bad_env_value_names_variable(cli: CLI, repo: Path) -> None:
    done = cli("config", "validate", cwd=repo, env={"PIPELINE_LIMITS__MAX_RETRIES": "-3"})
    assert done.code == 1
    assert "PIPELINE_LIMITS__MAX_RETRIES" in done.err and "limits.max_retries" in done.err


def test_unknown_preset_lists_valid_names(cli: CLI, repo: Path) -> None:
    write_config(repo, "agent:\n  preset: agnetd\n")
    done = cli("config", "validate", cwd=repo)
    assert done.code == 1
    assert "agentd" in done.err and "command" in done.err


def test_missing_config_given_with_c_is_an_error(cli: CLI, repo: Path) -> None:
    done = cli("-c", "nope.yaml", "status", cwd=repo)
    assert done.code == 1
    assert "nope.yaml" in done.err


def test_valid_config_validates(cli: CLI, repo: Path) -> None:
    write_config(repo, "base: live\nagent:\n  preset: command\n  command: ['fake-agent', '{prompt_file}']\n")
    done = cli("config", "validate", cwd=repo)
    assert done.code == 0, done.err


def test_command_preset_without_command_is_invalid(cli: CLI, repo: Path) -> None:
    write_config(repo, "agent:\n  preset: command\n")
    done = cli("config", "validate", cwd=repo)
    assert done.code == 1
    assert "agent.command" in done.err


def test_root_relative_to_repo_and_repo_defaults_to_git_toplevel(cli: CLI, repo: Path) -> None:
    (repo / "sub").mkdir()
    write_config(repo, "root: state\n", "sub/p.yaml")
    done = cli("-c", "sub/p.yaml", "config", "show", "--json", cwd=repo)
    values = done.json()["values"]
    assert values["repo"]["value"] == str(repo.resolve())
    assert values["root"]["value"] == str((repo / "state").resolve())


def test_usage_errors_exit_2(cli: CLI, repo: Path) -> None:
    assert cli("run", "--concurrency", "many", cwd=repo).code == 2
    assert cli("frobnicate", cwd=repo).code == 2
    assert cli("--help", cwd=repo).code == 0
    assert cli("task", "add", "--help", cwd=repo).code == 0
    version = cli("--version", cwd=repo)
    assert version.code == 0 and "pipeline-runner" in version.out
