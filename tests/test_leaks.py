"""The leak scan over real repositories, and the secrets an agent is handed."""

from __future__ import annotations

import os
from pathlib import Path

from runner.git import Git
from runner.leaks import Leak, find_leaks, refusal
from runner.redact import agent_secrets
from tests.conftest import git, make_repo

TOKEN = "tok-4f9a8c2e7b1d"
PASSWORD = "pw-91c3e5a7"
SECRETS = {"ACC_TOKEN": TOKEN, "DB_PASSWORD": PASSWORD}


def commit(repo: Path, message: str, files: dict[str, str | bytes | None]) -> str:
    """Commit ``files`` (text, bytes, or None to delete) on the current branch; the new sha."""
    for name, content in files.items():
        path = repo / name
        if content is None:
            git(repo, "rm", "-q", "--", name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        git(repo, "add", "--", name)
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def scan(repo: Path, old: str, new: str = "HEAD") -> list[Leak]:
    return find_leaks(Git(repo), old, new, SECRETS)


def test_a_secret_in_an_added_file_is_found_and_never_shown(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    commit(repo, "Add config", {"config.txt": f"token = {TOKEN}\n", "notes.md": "nothing here\n"})

    leaks = scan(repo, git(repo, "rev-parse", "HEAD~1"))

    assert leaks == [Leak("ACC_TOKEN", ("config.txt",), in_message=False)]
    message = refusal(leaks)
    assert message == "the candidate contains the value of ACC_TOKEN in config.txt; base was not moved"
    assert TOKEN not in message


def test_a_secret_added_to_a_modified_file_is_found(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", files={"src/app.py": "print('hello')\n"})
    old = git(repo, "rev-parse", "HEAD")
    commit(repo, "Call the API", {"src/app.py": f"print('hello')\nKEY = '{PASSWORD}'\n"})

    assert scan(repo, old) == [Leak("DB_PASSWORD", ("src/app.py",))]


def test_a_secret_in_the_commit_message_is_found_with_the_file(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    old = git(repo, "rev-parse", "HEAD")
    commit(repo, f"Use the token {TOKEN}\n\nTask-Id: t-1", {"config.txt": f"{TOKEN}\n"})

    leaks = scan(repo, old)

    assert leaks == [Leak("ACC_TOKEN", ("config.txt",), in_message=True)]
    message = refusal(leaks)
    assert message == (
        "the candidate contains the value of ACC_TOKEN in config.txt and in the commit message; "
        "base was not moved"
    )
    assert TOKEN not in message


def test_a_secret_inside_a_binary_file_is_found(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    old = git(repo, "rev-parse", "HEAD")
    blob = b"\x89PNG\r\n\x1a\n\x00\x00" + PASSWORD.encode() + b"\x00\xff\xfe" * 100
    commit(repo, "Add an image", {"assets/logo.png": blob})

    assert scan(repo, old) == [Leak("DB_PASSWORD", ("assets/logo.png",))]


def test_a_secret_only_in_a_removed_line_is_not_a_leak(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", files={"config.txt": f"a = 1\ntoken = {TOKEN}\n"})
    old = git(repo, "rev-parse", "HEAD")
    commit(repo, "Stop hard-coding the token", {"config.txt": "a = 1\ntoken = os.environ\n"})

    assert scan(repo, old) == []


def test_a_secret_already_on_base_blocks_no_task(tmp_path: Path) -> None:
    # A person committed the token to base long ago; the task edits that very file and another.
    repo = make_repo(tmp_path / "repo", files={"config.txt": f"token = {TOKEN}\n", "b.txt": "b\n"})
    old = git(repo, "rev-parse", "HEAD")
    commit(repo, "Tidy", {"config.txt": f"# config\ntoken = {TOKEN}\n", "b.txt": "bb\n"})

    assert scan(repo, old) == []


def test_a_secret_added_then_removed_within_the_candidate_still_lands_in_history(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    old = git(repo, "rev-parse", "HEAD")
    commit(repo, "Add it", {"a.txt": f"{TOKEN}\n"})
    commit(repo, "Remove it", {"a.txt": None})

    assert scan(repo, old) == [Leak("ACC_TOKEN", ("a.txt",))]


def test_several_secrets_and_places_are_named_in_one_message(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    old = git(repo, "rev-parse", "HEAD")
    commit(repo, f"Wire the database ({PASSWORD})", {
        "a.txt": f"{TOKEN} {PASSWORD}\n", "b.txt": f"{TOKEN}\n", "c.txt": "clean\n",
    })  # fmt: skip

    leaks = scan(repo, old)

    assert leaks == [
        Leak("ACC_TOKEN", ("a.txt", "b.txt")),
        Leak("DB_PASSWORD", ("a.txt",), in_message=True),
    ]
    message = refusal(leaks, "the task goes back to dev")
    assert message == (
        "the candidate contains the value of ACC_TOKEN in a.txt and in b.txt, and the value of "
        "DB_PASSWORD in a.txt and in the commit message; the task goes back to dev"
    )


def test_a_secret_in_a_file_name_is_found_and_masked(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    old = git(repo, "rev-parse", "HEAD")
    commit(repo, "Cache", {f"cache/{TOKEN}.json": "{}\n"})

    leaks = scan(repo, old)

    assert leaks == [Leak("ACC_TOKEN", ("cache/***.json",))]
    assert TOKEN not in refusal(leaks)


def test_a_file_whose_name_is_not_utf8_is_still_searched(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    old = git(repo, "rev-parse", "HEAD")
    name = os.fsdecode(b"caf\xe9.txt")
    (repo / name).write_text(f"{TOKEN}\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "Add a file with a Latin-1 name")

    leaks = scan(repo, old)

    assert [leak.variable for leak in leaks] == ["ACC_TOKEN"]
    assert len(leaks[0].paths) == 1


def test_a_leak_among_more_changed_files_than_one_command_line_takes_is_found(tmp_path: Path) -> None:
    # The paths are searched in several git commands: the search is split, not truncated.
    repo = make_repo(tmp_path / "repo")
    old = git(repo, "rev-parse", "HEAD")
    folder = repo / ("generated-" + "x" * 150)
    folder.mkdir()
    for number in range(800):
        (folder / f"file-{number:05}.txt").write_text(f"{number}\n")
    (folder / "file-00799.txt").write_text(f"{PASSWORD}\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "Generate")

    assert scan(repo, old) == [Leak("DB_PASSWORD", (f"{folder.name}/file-00799.txt",))]


def test_a_multi_line_secret_is_found_by_its_longest_line(tmp_path: Path) -> None:
    key = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END KEY-----"
    repo = make_repo(tmp_path / "repo", files={"docs.md": "-----BEGIN KEY-----\n"})
    old = git(repo, "rev-parse", "HEAD")
    commit(repo, "Add the deploy key", {"deploy.pem": key + "\n"})

    leaks = find_leaks(Git(repo), old, "HEAD", {"DEPLOY_KEY": key})

    assert leaks == [Leak("DEPLOY_KEY", ("deploy.pem",))]


def test_a_clean_candidate_has_no_leaks(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    old = git(repo, "rev-parse", "HEAD")
    commit(repo, "Add docs", {"docs.md": "tok-\npw-\n"})

    assert scan(repo, old) == []
    assert find_leaks(Git(repo), old, "HEAD", {}) == []


def test_url_credentials_are_named_without_their_value(tmp_path: Path) -> None:
    secrets = agent_secrets({}, {"REMOTE": f"https://deploy:{PASSWORD}@git.example.com/r.git"})
    repo = make_repo(tmp_path / "repo")
    old = git(repo, "rev-parse", "HEAD")
    commit(repo, "Vendor the remote", {"remote.cfg": f"url = https://deploy:{PASSWORD}@git.example.com\n"})

    leaks = find_leaks(Git(repo), old, "HEAD", secrets)

    assert refusal(leaks) == (
        "the candidate contains REMOTE's URL credentials in remote.cfg; base was not moved"
    )
