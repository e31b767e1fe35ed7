"""Read-only commands start from a snapshot of the last validated config, and never from a stale one."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

from runner.configsnap import cache_dir
from tests.conftest import CLI, clean_env, write_config

CONFIG = "base: live\nroot: state-a\nagent: {preset: command, command: ['true']}\nphases: {test: {run: [['true']]}}\n"

# Runs `main(argv)` in a fresh interpreter and prints, after the command's own output, which of the
# libraries a read-only command must not need were imported.
PROBE = """
import json, sys
from runner.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in ("pydantic", "pydantic_settings", "yaml", "loguru", "tenacity") if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy}))
"""


def probe(repo: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a command in ``repo`` (any directory of it) in a fresh interpreter; its exit code and the
    libraries it imported that a read-only command must not need."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], cwd=repo, env=clean_env(env), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def snapshots() -> list[Path]:
    return sorted(cache_dir().glob("*.json"))


def test_read_only_commands_start_without_the_config_libraries_once_a_snapshot_holds(
    cli: CLI, repo: Path
) -> None:
    write_config(repo, CONFIG)
    first = probe(repo, "status")  # nothing kept yet: validated in full
    assert first["code"] == 0 and {"pydantic", "yaml"} <= set(first["heavy"])
    assert cli("task", "add", "first", "--id", "t-1", cwd=repo).code == 0
    for command in (["status"], ["status", "--json"], ["task", "list"], ["task", "show", "t-1"]):
        assert probe(repo, *command) == {"code": 0, "heavy": []}, command


def test_the_snapshot_serves_every_directory_of_the_repository(cli: CLI, repo: Path) -> None:
    write_config(repo, CONFIG)
    assert cli("task", "add", "first", "--id", "t-1", cwd=repo).code == 0
    deep = repo / "src" / "pkg"
    deep.mkdir(parents=True)
    assert probe(deep, "task", "list") == {"code": 0, "heavy": []}
    assert "t-1" in cli("task", "list", cwd=deep).out
    assert probe(repo, "status") == {"code": 0, "heavy": []}  # and the top still, after the subdirectory


def test_an_edited_config_is_read_again_and_its_new_values_used(cli: CLI, repo: Path) -> None:
    write_config(repo, CONFIG)
    assert cli("task", "add", "in a", "--id", "t-a", cwd=repo).code == 0
    assert "t-a" in cli("task", "list", cwd=repo).out
    write_config(repo, CONFIG.replace("state-a", "state-b"))
    assert probe(repo, "task", "list")["heavy"] != []  # the edit is validated in full
    listed = cli("task", "list", "--json", cwd=repo)
    assert listed.code == 0, listed.err
    assert json.loads(listed.out) == []  # the new root holds no task yet, not the old root's
    assert probe(repo, "task", "list")["heavy"] == []  # and kept again


def test_a_config_made_invalid_is_refused_by_read_only_commands_too(cli: CLI, repo: Path) -> None:
    write_config(repo, CONFIG)
    assert cli("status", cwd=repo).code == 0
    write_config(repo, CONFIG + "concurrency: many\n")
    done = cli("status", cwd=repo)
    assert done.code == 1
    assert "pipeline.yaml" in done.err and "concurrency" in done.err


def test_a_file_it_extends_is_part_of_the_snapshot(cli: CLI, repo: Path) -> None:
    write_config(repo, CONFIG, name="shared.yaml")
    write_config(repo, "extends: shared.yaml\n")
    assert cli("task", "add", "in a", "--id", "t-a", cwd=repo).code == 0
    assert "t-a" in cli("task", "list", cwd=repo).out
    write_config(repo, CONFIG.replace("state-a", "state-b"), name="shared.yaml")
    assert json.loads(cli("task", "list", "--json", cwd=repo).out) == []
    (repo / "shared.yaml").unlink()
    done = cli("task", "list", cwd=repo)
    assert done.code == 1 and "shared.yaml" in done.err


def test_environment_variables_are_part_of_the_snapshot(cli: CLI, repo: Path) -> None:
    write_config(repo, CONFIG)
    assert cli("task", "add", "in a", "--id", "t-a", cwd=repo).code == 0
    assert "t-a" in cli("task", "list", cwd=repo).out
    moved = cli("task", "list", "--json", cwd=repo, env={"PIPELINE_ROOT": str(repo.parent / "elsewhere")})
    assert moved.code == 0 and json.loads(moved.out) == []
    assert "t-a" in cli("task", "list", cwd=repo).out


def test_warnings_are_printed_by_every_command_not_kept(cli: CLI, repo: Path) -> None:
    write_config(repo, CONFIG)
    assert cli("status", cwd=repo).code == 0
    for _ in range(2):
        done = cli("status", cwd=repo, env={"PIPELINE_CONCURENCY": "3"})
        assert done.code == 0
        assert "PIPELINE_CONCURENCY" in done.err


def test_a_damaged_or_foreign_snapshot_is_ignored_and_replaced(cli: CLI, repo: Path) -> None:
    write_config(repo, CONFIG)
    assert cli("task", "add", "in a", "--id", "t-a", cwd=repo).code == 0
    assert cli("status", cwd=repo).code == 0
    kept = [p for p in snapshots() if str(repo) in p.read_text()]
    assert len(kept) == 1
    assert stat.S_IMODE(kept[0].stat().st_mode) == 0o600  # agent.env may hold a credential
    for damage in ("{not json", json.dumps({"key": {}, "values": {}}), ""):
        kept[0].write_text(damage)
        listed = cli("task", "list", cwd=repo)
        assert listed.code == 0 and "t-a" in listed.out, listed.err
    assert json.loads(kept[0].read_text())["values"]["base"] == "live"


def test_an_unwritable_cache_costs_only_speed(cli: CLI, repo: Path, tmp_path: Path) -> None:
    write_config(repo, CONFIG)
    blocked = tmp_path / "cache-is-a-file"
    blocked.write_text("")
    env = {"XDG_CACHE_HOME": str(blocked)}
    assert cli("task", "add", "in a", "--id", "t-a", cwd=repo, env=env).code == 0
    for _ in range(2):
        listed = cli("task", "list", cwd=repo, env=env)
        assert listed.code == 0 and "t-a" in listed.out, listed.err


def test_a_secret_in_agent_env_is_masked_when_read_from_the_snapshot(cli: CLI, repo: Path) -> None:
    secret = "sk-live-0123456789abcdef"
    write_config(repo, CONFIG + f"agent: {{preset: command, command: ['true'], env: {{API_TOKEN: {secret}}}}}\n")
    assert cli("task", "add", f"use {secret} here", "--id", "t-a", cwd=repo).code == 0
    assert cli("status", cwd=repo).code == 0  # the snapshot now holds the config
    assert probe(repo, "task", "show", "t-a")["heavy"] == []
    shown = cli("task", "show", "t-a", cwd=repo)
    assert shown.code == 0
    assert secret not in shown.out and "t-a" in shown.out


def test_a_new_repository_around_the_config_moves_its_default_root(cli: CLI, repo: Path) -> None:
    sub = repo / "service"
    sub.mkdir()
    write_config(sub, CONFIG.replace("root: state-a\n", ""))
    assert cli("task", "add", "outer", "--id", "t-a", cwd=sub).code == 0
    assert (repo / ".pipeline-runner" / "state.db").is_file()  # the enclosing repository's root
    assert "t-a" in cli("task", "list", cwd=sub).out
    subprocess.run(["git", "init", "-q", "-b", "live", str(sub)], check=True)
    listed = cli("task", "list", "--json", cwd=sub)
    assert listed.code == 0, listed.err
    assert json.loads(listed.out) == []  # the new repository's own root, not the old one's tasks
