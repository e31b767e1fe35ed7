"""The runner's root is out of sight: a person's git, test runner and editor never meet the
agents' checkouts or the state, from the first command on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import CLI, default_root, git, make_repo
from tests.loop_helpers import make_sample


def test_after_a_run_git_status_is_clean_and_pytest_collects_only_the_persons_tests(tmp_path: Path) -> None:
    sample = make_sample(tmp_path)
    repo = sample.repo
    # A project whose tests import its library, as the one that hit nine import errors did.
    (repo / "lib.py").write_text("def answer() -> int:\n    return 42\n")
    (repo / "tests").mkdir()
    (repo / "tests" / "test_lib.py").write_text("from lib import answer\n\ndef test_answer():\n    assert answer() == 42\n")
    # Nothing is hidden by hand: the config is committed, and git's exclude file is emptied.
    (repo / ".git" / "info" / "exclude").write_text("")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "a project with tests, and the runner's config")
    sample.add("one")
    sample.add("two")
    done = sample.cli("run", "--until-idle")
    assert done.returncode == 0, done.stdout + done.stderr
    assert sample.status()["done"] == 2
    root = default_root(repo)
    assert sample.status()["root"] == str(root)
    # The root holds checkouts with the project's tests in them (a workspace kept for a person to
    # look at, a candidate's checkout while it is checked): what a person's tools must not see.
    kept = root / "worktrees" / "kept" / "tests"
    kept.mkdir(parents=True)
    (kept / "test_lib.py").write_text((repo / "tests" / "test_lib.py").read_text())
    assert list(root.rglob("test_lib.py")), "nothing under the root to hide: this test checks nothing"
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    # Listed only when asked for what git ignores, as what it is.
    assert git(repo, "status", "--porcelain", "--ignored") == "!! .pipeline-runner/"
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=repo, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert collected.returncode == 0, collected.stdout + collected.stderr
    ids = [line for line in collected.stdout.splitlines() if "::" in line]
    assert ids == ["tests/test_lib.py::test_answer"], collected.stdout


def test_the_first_command_leaves_git_status_clean(cli: CLI, repo: Path) -> None:
    assert cli("task", "add", "first", cwd=repo).code == 0
    assert (default_root(repo) / "state.db").is_file()
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""


def test_a_root_set_inside_the_repository_is_ignored_by_git_from_the_first_command(cli: CLI, repo: Path) -> None:
    (repo / "pipeline.yaml").write_text("root: _/pipeline\n")
    git(repo, "add", "pipeline.yaml")
    git(repo, "commit", "-q", "-m", "config")
    assert cli("task", "add", "first", cwd=repo).code == 0
    assert (repo / "_" / "pipeline" / "state.db").is_file()
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""


def test_state_at_the_old_default_root_is_pointed_out_not_lost(cli: CLI, repo: Path) -> None:
    (repo / "pipeline.yaml").write_text(yaml.safe_dump({"root": "_/pipeline"}))
    assert cli("task", "add", "made before the upgrade", cwd=repo).code == 0
    (repo / "pipeline.yaml").write_text("base: live\n")  # the root key left out, as most configs do
    done = cli("task", "list", cwd=repo)
    assert done.code == 0
    assert "_/pipeline (the old default root)" in done.err and "set root: _/pipeline" in done.err


def test_a_linked_worktree_keeps_its_root_in_its_own_top_directory(cli: CLI, tmp_path: Path) -> None:
    main = make_repo(tmp_path / "main")
    linked = tmp_path / "linked"
    git(main, "worktree", "add", "-q", "-b", "side", str(linked))
    assert cli("task", "add", "in the linked checkout", cwd=linked).code == 0
    root = Path(cli("status", "--json", cwd=linked).json()["root"])
    assert root == (linked / ".pipeline-runner").resolve()
    assert git(linked, "status", "--porcelain", "--untracked-files=all") == ""
    assert not default_root(main).exists()
