"""Finding the config and reading it as a new user writes it: from a subdirectory, a directory
given with -c, an empty file, PIPELINE_* variables with a typo or bad JSON. The CLI as a process."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import CLI, default_root, make_repo, write_config


def test_the_config_is_found_from_a_subdirectory_up_to_the_repository_top(cli: CLI, tmp_path: Path) -> None:
    # A pipeline.yaml above the repository belongs to something else and is never read.
    write_config(tmp_path, "base: elsewhere\n")
    repo = make_repo(tmp_path / "repo")
    deep = repo / "src" / "pkg"
    deep.mkdir(parents=True)
    outside = cli("config", "show", "--json", cwd=deep)
    assert outside.code == 0, outside.err
    assert outside.json()["config_file"] is None
    assert outside.json()["values"]["base"]["value"] == "live"
    config = write_config(repo, "base: live\nconcurrency: 3\n")
    found = cli("config", "show", "--json", cwd=deep).json()
    assert found["config_file"] == str(config)
    assert found["values"]["concurrency"]["value"] == 3
    # Relative paths in it are the repository's, wherever the command ran: tasks go to one root.
    assert cli("task", "add", "from below", cwd=deep).code == 0
    assert "from below" in cli("task", "list", cwd=repo).out
    assert not (deep / ".git").exists() and default_root(repo).is_dir()


def test_a_directory_given_with_c_is_named_as_one(cli: CLI, repo: Path) -> None:
    done = cli("-c", str(repo), "status", cwd=repo)
    assert done.code == 1
    assert "is a directory" in done.err and "does not exist" not in done.err
    assert str(repo / "pipeline.yaml") in done.err


def test_an_empty_config_file_is_valid_with_a_warning(cli: CLI, repo: Path) -> None:
    write_config(repo, "# nothing yet\n")
    done = cli("config", "show", cwd=repo)
    assert done.code == 0
    assert "pipeline.yaml is empty" in done.err and "default" in done.err


def test_a_bad_json_variable_is_named_without_its_value(cli: CLI, repo: Path) -> None:
    for name, value in (("PIPELINE_AGENT__ENV", '{"KEY": "sk-secret-value'), ("PIPELINE_AGENT__ARGS", "--fast")):
        for command in (["status"], ["task", "list"], ["config", "show"]):
            done = cli(*command, cwd=repo, env={name: value})
            assert done.code == 1, (name, command, done.err)
            assert f"env {name}: not valid JSON" in done.err
            assert "Traceback" not in done.err and "sk-secret-value" not in done.err


def test_a_misspelled_variable_is_warned_of_and_real_ones_are_not(cli: CLI, repo: Path) -> None:
    # (A typo below a section, PIPELINE_AGENT__TIMOUT, is already an error naming the key.)
    done = cli("status", cwd=repo, env={"PIPELINE_CONCURENCY": "4", "PIPELINE_BASSE": "main"})
    assert done.code == 0
    assert "PIPELINE_CONCURENCY is not a configuration key" in done.err
    assert "did you mean PIPELINE_CONCURRENCY?" in done.err
    assert "did you mean PIPELINE_BASE?" in done.err
    valid = {
        "PIPELINE_CONCURRENCY": "3",
        "PIPELINE_AGENT__ENV__API_URL": "https://example.com",  # an entry of a mapping
        "PIPELINE_RUN_ID": "r-1",  # what the runner hands an agent, not a key
        "PIPELINE_LIMITS": '{"max_retries": 2}',  # a whole section as JSON
    }
    quiet = cli("config", "show", "--json", cwd=repo, env=valid)
    assert quiet.code == 0 and "warning" not in quiet.err, quiet.err
    values = quiet.json()["values"]
    # (The name of a mapping entry set this way comes out lowercased, which this test does not judge.)
    assert {k.lower(): v["value"] for k, v in values.items()}["agent.env.api_url"] == "https://example.com"
    assert values["limits.max_retries"]["value"] == 2
