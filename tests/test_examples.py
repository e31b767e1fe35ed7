"""Every example config loads and validates; per-epic ones narrow what they extend."""

from __future__ import annotations

from pathlib import Path

import pytest

from phases.backends import BACKENDS, make_backend
from runner.config import load_config
from tests.conftest import CLI

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "configs"
FILES = sorted(EXAMPLES.rglob("*.yaml"))


def test_there_is_an_example_for_every_preset() -> None:
    presets = {load_config(path).config.agent.preset for path in FILES}
    assert presets == set(BACKENDS)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_example_loads_and_validates(path: Path) -> None:
    loaded = load_config(path)
    assert make_backend(loaded.config.agent).check() is None


def test_epic_config_narrows_the_repo_config() -> None:
    base = load_config(EXAMPLES / "claude-code.yaml").config
    epic = load_config(EXAMPLES / "epics" / "auth.yaml").config
    assert epic.parent == "epic-auth" and base.parent is None
    assert epic.concurrency == 1 < base.concurrency
    assert epic.limits.max_retries == 2 and epic.limits.max_task_cost == 600
    assert epic.agent == base.agent  # inherited whole
    assert epic.phases.verify.run == [["python", "-m", "pytest", "-q", "tests/auth"]]


def test_examples_validate_through_the_cli(cli: CLI, tmp_path: Path) -> None:
    for path in (EXAMPLES / "epics" / "docs.yaml", EXAMPLES / "command.yaml"):
        done = cli("-c", str(path), "config", "validate", cwd=tmp_path)
        assert done.code == 0, done.err
