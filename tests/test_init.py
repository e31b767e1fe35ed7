"""`init` writes a config that validates, detecting how the repository runs its tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import CLI, default_root, git, make_repo

KINDS = {
    "pytest": ({"pyproject.toml": "[tool.pytest.ini_options]\n", "tests/test_a.py": "def test(): pass\n"},
               ["python", "-m", "pytest", "-q"]),
    "npm test": ({"package.json": '{"name": "x", "scripts": {"test": "vitest run"}}'}, ["npm", "test"]),
    "make test": ({"Makefile": "build:\n\ttrue\n\ntest: build\n\ttrue\n"}, ["make", "test"]),
    "cargo test": ({"Cargo.toml": '[package]\nname = "x"\n'}, ["cargo", "test"]),
    "go test": ({"go.mod": "module example.com/x\n"}, ["go", "test", "./..."]),
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_init_detects_tests_and_writes_a_valid_config(cli: CLI, tmp_path: Path, kind: str) -> None:
    files, argv = KINDS[kind]
    repo = make_repo(tmp_path / "r", base="trunk", files=files)
    done = cli("init", "--preset", "codex", "--base", "trunk", "--yes", "--no-check", cwd=repo)
    assert done.code == 0, done.err
    assert kind in done.out
    assert cli("config", "validate", "--schema-only", cwd=repo).code == 0
    values = cli("config", "show", "--json", cwd=repo).json()["values"]
    assert values["phases.test.run"]["value"] == [argv]
    assert values["phases.test.on"]["value"] == ["verify", "integrate"]
    assert values["agent.preset"]["value"] == "codex"
    assert values["base"]["value"] == "trunk"
    assert "# " in (repo / "pipeline.yaml").read_text()  # commented for a person to read


def test_init_refuses_to_overwrite_unless_forced(cli: CLI, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    (repo / "pipeline.yaml").write_text("base: mine\n")
    done = cli("init", "--preset", "aider", "--base", "live", "--yes", cwd=repo)
    assert done.code == 1 and "--force" in done.err
    assert (repo / "pipeline.yaml").read_text() == "base: mine\n"
    assert cli("init", "--preset", "aider", "--base", "live", "--yes", "--force", cwd=repo).code == 0
    assert cli("config", "show", "--json", cwd=repo).json()["values"]["agent.preset"]["value"] == "aider"


def test_init_defaults_with_yes_and_current_branch(cli: CLI, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", base="develop")
    assert cli("init", "--yes", cwd=repo).code == 0
    values = cli("config", "show", "--json", cwd=repo).json()["values"]
    assert values["base"]["value"] == "develop"
    assert values["agent.preset"]["value"] == "claude-code"


def test_init_asks_when_not_told(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import clean_env

    repo = make_repo(tmp_path / "r")
    git(repo, "branch", "release")
    done = subprocess.run(
        [sys.executable, "-m", "runner", "init"], cwd=repo, env=clean_env(),
        input="gemini\nrelease\n", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Agent preset" in done.stdout and "Base branch" in done.stdout
    text = (repo / "pipeline.yaml").read_text()
    assert "preset: gemini" in text and "base: release" in text
    no_answer = subprocess.run(
        [sys.executable, "-m", "runner", "init", "--force"], cwd=repo, env=clean_env(),
        input="", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert no_answer.returncode == 1 and "--yes" in no_answer.stderr


# -- the detected tests, run on base's tip ---------------------------------------------------------


def test_init_runs_the_detected_tests_on_a_pristine_checkout_of_base(cli: CLI, tmp_path: Path) -> None:
    makefile = "test:\n\tgrep -q green state.txt\n\t@echo all 3 tests passed\n"
    repo = make_repo(tmp_path / "r", files={"Makefile": makefile, "state.txt": "green\n"})
    (repo / "state.txt").write_text("red\n")  # a person's edit, not on base: not what is checked
    done = cli("init", "--preset", "codex", "--yes", cwd=repo)
    assert done.code == 0, done.err
    assert "[test]" in done.out and "The checks pass on live." in done.out
    assert "warning" not in done.err
    assert cli("config", "validate", "--schema-only", cwd=repo).code == 0
    # The check's checkout and state stay in the runner's root, which git ignores.
    assert git(repo, "status", "--porcelain") == "M state.txt\n?? pipeline.yaml"
    # Its pass is the pipeline's: `check` on base reuses it.
    again = cli("check", "--rev", "live", cwd=repo)
    assert again.code == 0 and "cached from" in again.out


def test_init_says_the_tests_fail_on_base_and_still_writes_the_config(cli: CLI, tmp_path: Path) -> None:
    makefile = "test:\n\t@echo 'FAILED tests/test_login.py::test_login - assert 401 == 200'\n\t@exit 1\n"
    repo = make_repo(tmp_path / "r", files={"Makefile": makefile})
    done = cli("init", "--preset", "codex", "--yes", cwd=repo)
    assert done.code == 0, done.err
    assert "tests: make test" in done.out
    assert "warning: pipeline.yaml: the checks fail on live, so every task would be rejected until live is fixed" in done.err
    assert "phase test failed: `make test` failed (exit 2):" in done.err
    assert "FAILED tests/test_login.py::test_login - assert 401 == 200" in done.err  # the output's tail
    assert cli("config", "validate", "--schema-only", cwd=repo).code == 0
    values = cli("config", "show", "--json", cwd=repo).json()["values"]
    assert values["phases.test.run"]["value"] == [["make", "test"]]
    # --no-check writes the same config without running anything.
    quiet = cli("init", "--preset", "codex", "--yes", "--force", "--no-check", cwd=tmp_path / "r")
    assert quiet.code == 0 and "[test]" not in quiet.out and not quiet.err


def test_init_without_checks_or_base_runs_nothing(cli: CLI, tmp_path: Path) -> None:
    repo = tmp_path / "r"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "release")  # no commit yet: the branch HEAD will create is base
    (repo / "Makefile").write_text("test:\n\ttrue\n")
    done = cli("init", "--preset", "codex", "--yes", cwd=repo)
    assert done.code == 0 and "Not checked on release: the branch has no commit yet." in done.out
    bare = make_repo(tmp_path / "bare")
    done = cli("init", "--preset", "codex", "--yes", cwd=bare)
    assert done.code == 0 and "No test command detected" in done.out and "[test]" not in done.out
    assert not default_root(bare).exists()


# -- where and what init writes, asked by a new user ------------------------------------------------


def test_init_in_a_subdirectory_writes_at_the_repository_top(cli: CLI, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", files={"Makefile": "test:\n\ttrue\n"})
    sub = repo / "src" / "deep"
    sub.mkdir(parents=True)
    done = cli("init", "--preset", "codex", "--yes", cwd=sub)
    assert done.code == 0, done.err
    assert (repo / "pipeline.yaml").is_file() and not (sub / "pipeline.yaml").exists()
    assert "The checks pass on live." in done.out  # checked with the file just written
    # From the subdirectory, every command finds it; a second init there refuses to overwrite it.
    assert cli("config", "validate", cwd=sub).code == 0
    again = cli("init", "--preset", "codex", "--yes", cwd=sub)
    assert again.code == 1 and "--force" in again.err


def test_init_outside_a_repository_writes_nothing(cli: CLI, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    done = cli("init", "--yes", cwd=plain)
    assert done.code == 1
    assert "not inside a git repository" in done.err and "fatal" not in done.err
    assert list(plain.iterdir()) == []


def test_init_refuses_a_base_that_does_not_exist(cli: CLI, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    done = cli("init", "--preset", "codex", "--base", "liv", "--yes", cwd=repo)
    assert done.code == 1 and "no branch 'liv'" in done.err and "Did you mean 'live'?" in done.err
    assert not (repo / "pipeline.yaml").exists()
    typo = cli("init", "--preset", "claud", "--yes", cwd=repo)
    assert typo.code == 1 and "Did you mean 'claude-code'?" in typo.err


def test_a_typo_at_a_prompt_is_asked_again_with_a_suggestion(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import clean_env

    repo = make_repo(tmp_path / "r")
    done = subprocess.run(
        [sys.executable, "-m", "runner", "init", "--no-check"], cwd=repo, env=clean_env(),
        input="codx\ncodex\nlve\nlive\n", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "No preset 'codx'" in done.stdout and "Did you mean 'codex'?" in done.stdout
    assert "No branch 'lve'" in done.stdout and "Did you mean 'live'?" in done.stdout
    text = (repo / "pipeline.yaml").read_text()
    assert "preset: codex" in text and "base: live" in text


def test_the_default_preset_is_one_whose_cli_is_installed(cli: CLI, tmp_path: Path) -> None:
    import shutil

    from tests.conftest import FAKES

    repo = make_repo(tmp_path / "r")
    only = tmp_path / "bin"
    only.mkdir()
    (only / "gemini").symlink_to(FAKES / "gemini")
    path = f"{only}:{Path(shutil.which('git') or '/usr/bin/git').parent}"
    done = cli("init", "--yes", "--no-check", cwd=repo, env={"PATH": path})
    assert done.code == 0, done.err
    assert "preset: gemini" in (repo / "pipeline.yaml").read_text()
    assert "not on PATH" not in done.out
    # With none installed it proposes claude-code, and says its CLI is missing.
    (only / "gemini").unlink()
    done = cli("init", "--yes", "--no-check", "--force", cwd=repo, env={"PATH": path})
    assert done.code == 0 and "`claude` is not on PATH" in done.out
