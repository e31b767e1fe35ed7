"""Every example config loads and validates; per-epic ones narrow what they extend."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml

from phases.backends import BACKENDS, make_backend
from runner.config import load_config
from tests.conftest import CLI, write_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "configs"
FILES = sorted(EXAMPLES.rglob("*.yaml"))


def test_there_is_an_example_for_every_preset() -> None:
    presets = {load_config(path).config.agent.preset for path in FILES}
    assert presets == set(BACKENDS)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_example_loads_and_validates(path: Path) -> None:
    loaded = load_config(path)
    assert make_backend(loaded.config.agent).check() is None


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_examples_declare_named_phases_not_the_older_form(path: Path) -> None:
    phases = yaml.safe_load(path.read_text(encoding="utf-8")).get("phases") or {}
    assert not {"verify", "integrate"} & set(phases)


def test_the_readme_phases_example_loads(tmp_path: Path) -> None:
    readme = (EXAMPLES.parents[1] / "README.md").read_text(encoding="utf-8")
    example = readme.split("## Phases", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    config = load_config(write_config(tmp_path, example)).config
    assert config.phase_order() == ["lint", "types", "unit", "e2e", "docs", "build"]
    assert config.phases["unit"].needs == ["lint"] and config.phases["e2e"].on == ["integrate"]
    assert config.phases["docs"].optional and config.phases["build"].skip_exit_codes == [77]
    assert config.check_concurrency == 4


def test_epic_config_narrows_the_repo_config() -> None:
    base = load_config(EXAMPLES / "claude-code.yaml").config
    epic = load_config(EXAMPLES / "epics" / "auth.yaml").config
    assert epic.parent == "epic-auth" and base.parent is None
    assert epic.concurrency == 1 < base.concurrency
    assert epic.limits.max_retries == 2 and epic.limits.max_task_cost == 600
    assert epic.agent == base.agent  # inherited whole
    assert epic.phases["unit"].run == [["python", "-m", "pytest", "-q", "tests/auth"]]
    assert epic.phases["unit"].needs == ["lint"] and epic.phases["lint"] == base.phases["lint"]


def test_examples_validate_through_the_cli(cli: CLI, tmp_path: Path) -> None:
    for path in (EXAMPLES / "epics" / "docs.yaml", EXAMPLES / "command.yaml"):
        done = cli("-c", str(path), "config", "validate", "--schema-only", cwd=tmp_path)
        assert done.code == 0, done.err


def test_codex_endpoint_example_gives_codex_a_home_with_a_responses_provider() -> None:
    # codex-cli 0.171 ignores OPENAI_BASE_URL: a custom endpoint is a provider in CODEX_HOME.
    agent = load_config(EXAMPLES / "codex-endpoint.yaml").config.agent
    home = tomllib.loads((EXAMPLES / "codex-home" / "config.toml").read_text(encoding="utf-8"))
    provider = home["model_providers"][home["model_provider"]]
    assert agent.preset == "codex" and agent.permissions == "workspace-write"
    assert provider["wire_api"] == "responses" and provider["base_url"].startswith("http")
    assert Path(agent.env["CODEX_HOME"]).is_absolute()
    # The key reaches the agent from the runner's environment, under the name codex reads.
    assert agent.env[provider["env_key"]] == "${" + provider["env_key"] + "}"
