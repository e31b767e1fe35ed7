"""The README read literally: its quickstart, command by command, in a fresh repository; and (with
SLOW_TESTS=1, since each installs a virtualenv) its two commands from a fresh clone in either order."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FAKES, clean_env, git, make_repo

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def _block(heading: str, index: int = 0) -> list[str]:
    """The command lines of the index-th ```sh block under a heading, comments removed."""
    section = README.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"```sh\n(.*?)```", section, re.S)[index]
    return [line.split("   #")[0].split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_install_puts_pipeline_runner_on_path() -> None:
    lines = _block("Install")
    assert lines[0].startswith("python3 -m venv .venv")
    assert any(line.startswith("export PATH=") and ".venv/bin" in line for line in lines)


def test_the_quickstart_runs_as_written_in_a_fresh_repository(tmp_path: Path) -> None:
    lines = _block("60-second quickstart")
    assert lines[0] == "cd your-repo"
    repo = make_repo(tmp_path / "your-repo", base="trunk", files={"Makefile": "test:\n\ttrue\n"})
    state = tmp_path / "agent-state"
    state.mkdir()
    # pipeline-runner from this virtualenv and a `claude` (the fake one) on PATH, as after Install.
    path = os.pathsep.join([str(Path(sys.executable).parent), str(FAKES), os.environ["PATH"]])
    env = clean_env({"PATH": path, "FAKE_STATE": str(state)})
    assert shutil.which("pipeline-runner", path=path), "pipeline-runner is not installed in this venv"
    for line in lines[1:]:
        argv = shlex.split(line)
        assert argv[0] == "pipeline-runner", line
        done = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
        assert "Traceback" not in done.stderr and "warning" not in done.stderr, (line, done.stderr)
    assert "Done:        2" in done.stdout or re.search(r"Done:\s+2", done.stdout), done.stdout
    assert git(repo, "status", "--porcelain") == "?? pipeline.yaml"


def test_the_two_commands_are_the_scripts_that_set_themselves_up() -> None:
    assert _block("The two commands", 0) == ["bash examples/run-demo.sh"]
    assert _block("The two commands", 1) == ["bash .ci/test"]
    for script in ("examples/run-demo.sh", ".ci/test"):
        assert ".ci/setup" in (REPO / script).read_text()


@pytest.mark.skipif(os.environ.get("SLOW_TESTS") != "1", reason="installs two virtualenvs (SLOW_TESTS=1)")
@pytest.mark.parametrize("order", ["demo first", "tests first"])
def test_the_two_commands_work_from_a_fresh_clone_in_either_order(tmp_path: Path, order: str) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    env = {k: v for k, v in clean_env().items() if k != "VIRTUAL_ENV"}
    demo = ["bash", "examples/run-demo.sh"]
    # The README's test command, limited to one small file so that this stays a test of the setup.
    tests = ["bash", ".ci/test", "tests/test_waking.py"]
    for argv in (demo, tests) if order == "demo first" else (tests, demo):
        done = subprocess.run(argv, cwd=clone, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{argv}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"


def test_every_command_is_in_the_readme_and_every_preset_in_pipeline_yaml() -> None:
    import argparse

    from phases.backends import BACKENDS
    from runner.cli import build_parser

    listing = README.split("\nCommands: ", 1)[1].split("\n\n", 1)[0]
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name in commands.choices:
        assert f"`{name}" in listing or f"`{name}" in README, f"command {name!r} is not in the README"
    assert "`init" in listing
    preset_line = next(line for line in (REPO / "pipeline.yaml").read_text().splitlines() if "preset:" in line)
    assert all(name in preset_line for name in BACKENDS), preset_line
    assert "Every command takes `-c FILE`" in listing and "before or after the command" in listing.replace("\n", " ")
