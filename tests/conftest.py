"""Shared fixtures: real git repositories in temporary directories and the CLI as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runner.git import Git
from runner.layout import Layout
from runner.workspace import Workspaces
from tests.pg_server import PgServer, server_binaries, start_server

FAKES = Path(__file__).parent / "fakes"


@dataclass
class Done:
    """A finished CLI process."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment without any PIPELINE_* variable of the person running the tests."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env.update(
        GIT_AUTHOR_NAME="Test", GIT_AUTHOR_EMAIL="test@example.com",
        GIT_COMMITTER_NAME="Test", GIT_COMMITTER_EMAIL="test@example.com",
        PATH=f"{FAKES}{os.pathsep}{env.get('PATH', '')}",
    )  # fmt: skip
    env.update(extra or {})
    return env


CLI = Callable[..., Done]


@pytest.fixture
def cli() -> CLI:
    """Run `pipeline-runner ARGS` as a separate process in ``cwd``."""

    def run(*args: str, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 120) -> Done:
        proc = subprocess.run(
            [sys.executable, "-m", "runner", *args],
            cwd=cwd,
            env=clean_env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Done(proc.returncode, proc.stdout, proc.stderr)

    return run


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` and return its stripped stdout."""
    return subprocess.run(
        ["git", *args], cwd=repo, env=clean_env(), check=True, capture_output=True, text=True
    ).stdout.strip()


def make_workspaces(tmp_path: Path) -> tuple[Path, Workspaces]:
    """A repository (tmp_path/repo, base ``live``) and the runner's workspaces for it (root tmp_path/root)."""
    repo = make_repo(tmp_path / "repo")
    layout = Layout(tmp_path / "root")
    layout.ensure()
    return repo, Workspaces(Git(repo), layout)


def make_repo(path: Path, base: str = "live", files: Mapping[str, str] | None = None) -> Path:
    """A git repository at ``path`` with one commit on branch ``base``."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", base)
    for name, text in (files or {"README.md": "hello\n"}).items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A fresh repository with base branch ``live``."""
    return make_repo(tmp_path / "repo")


def default_root(repo: Path) -> Path:
    """Where the runner keeps its state for ``repo`` when the config does not say: .pipeline-runner."""
    return repo / ".pipeline-runner"


def write_config(repo: Path, text: str, name: str = "pipeline.yaml") -> Path:
    """Write a config file into the repository."""
    path = repo / name
    path.write_text(text)
    return path


@pytest.fixture(autouse=True, scope="session")
def _config_snapshots(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Snapshots of loaded configs (runner.configsnap) go to a folder of this test session, not to
    the cache directory of the person running the tests."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL server for this test session (one per xdist worker), stopped at its end;
    the tests that need one skip, saying why, where no server is installed."""
    bin_dir = server_binaries()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server installed (Debian's postgresql: /usr/lib/postgresql/*/bin/initdb)")
    server = start_server(bin_dir)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """The URL of a new, empty PostgreSQL database."""
    return pg_server.database()


@pytest.fixture(params=["sqlite", "postgresql"])
def state_target(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where a test's state is: a SQLite file, then a PostgreSQL database (open_db takes either)."""
    if request.param == "sqlite":
        return tmp_path / "state.db"
    server: PgServer = request.getfixturevalue("pg_server")
    return server.database()
