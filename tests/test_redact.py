"""The secrets an agent is handed, as the runner works them out from its configuration."""

from __future__ import annotations

from runner.redact import agent_secrets


def test_agent_secrets_cover_configured_passed_through_and_inherited_values() -> None:
    environ = {
        "HOME": "/home/runner",
        "GITHUB_TOKEN": "ghp_inherited_value",
        "CI_OPENAI": "sk-passed-through",
        "SHORT_KEY": "abc",
        "REMOTE": "https://deploy:url-password@git.example.com/repo.git",
        "MIRROR": "https://ghp_0123456789abcdefghijklmn@github.com/o/r.git",
        "PROFILE": "https://alice@example.com/",
    }
    agent_env = {
        "OPENAI_API_KEY": "${CI_OPENAI}",
        "SERVICE_SECRET": "literal-in-config",
        "AUTH_HEADER": "Bearer ${GITHUB_TOKEN}",
        "LOG_LEVEL": "debug-verbose",
        "SAME_TOKEN": "${GITHUB_TOKEN}",
    }

    secrets = agent_secrets(agent_env, environ)

    assert secrets == {
        "OPENAI_API_KEY": "sk-passed-through",
        "SERVICE_SECRET": "literal-in-config",
        "AUTH_HEADER": "Bearer ghp_inherited_value",
        "SAME_TOKEN": "ghp_inherited_value",
        "REMOTE's URL credentials": "url-password",
        "MIRROR's URL credentials": "ghp_0123456789abcdefghijklmn",
    }
