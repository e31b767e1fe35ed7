"""Secrets a person types into tasks are masked before they are stored or reach an agent's prompt.

Through the real CLI, with the secrets in its environment, and the real state.db read back.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.loop_helpers import make_sample

TOKEN = "tok-4f9a8c2e7b1d"
URL_PASSWORD = "pw-91c3e5a7"
CONFIG_SECRET = "literal-secret-in-config"


def dump(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


def test_task_text_with_secrets_is_masked_in_the_database_and_the_prompt(tmp_path: Path) -> None:
    sample = make_sample(tmp_path)
    sample.env.update(ACC_TOKEN=TOKEN, REMOTE=f"https://deploy:{URL_PASSWORD}@git.example.com/r.git")
    task_id = sample.add(f"Call the API with {TOKEN}", "--description",
                         f"Use {TOKEN} against https://me:{URL_PASSWORD}@api.example.com, or {URL_PASSWORD}")  # fmt: skip
    (sample.repo / "tasks.yaml").write_text(
        f"- id: imported\n  title: Imported {TOKEN}\n  description: pass {URL_PASSWORD}\n  tags: [{TOKEN}]\n"
    )
    assert sample.cli("task", "import", "tasks.yaml").returncode == 0
    assert sample.cli("task", "comment", task_id, f"the token is {TOKEN}").returncode == 0

    stored = dump(sample.root / "state.db")
    assert TOKEN not in stored and URL_PASSWORD not in stored
    shown = sample.task(task_id)
    assert shown["title"] == "Call the API with ***"
    assert shown["description"] == "Use *** against https://***@api.example.com, or ***"
    assert shown["comments"][0]["body"] == "the token is ***"
    imported = sample.task("imported")
    assert imported["title"] == "Imported ***" and imported["description"] == "pass ***"
    assert imported["tags"] == ["***"]

    sample.plan({task_id: [{"files": {"a.py": "print(1)\n"}}]})
    done = sample.cli("run", "--once")
    assert done.returncode == 0, done.stderr
    prompts = list((sample.root / "prompts").glob("*.md"))
    assert prompts
    for prompt in prompts:
        text = prompt.read_text()
        assert TOKEN not in text and URL_PASSWORD not in text
    assert any("Call the API with ***" in p.read_text() for p in prompts)


def test_a_secret_given_only_in_agent_env_is_masked_in_tasks_and_the_first_prompt(tmp_path: Path) -> None:
    sample = make_sample(tmp_path, agent={"env": {"SERVICE_SECRET": CONFIG_SECRET}})
    task_id = sample.add("Deploy", "--description", f"the service secret is {CONFIG_SECRET}")
    sample.plan({task_id: [{"files": {"a.py": "print(1)\n"}}]})
    assert sample.cli("run", "--once").returncode == 0

    assert CONFIG_SECRET not in dump(sample.root / "state.db")
    for prompt in (sample.root / "prompts").glob("*.md"):
        assert CONFIG_SECRET not in prompt.read_text()
