"""The workspace benchmarks run, on a tiny size, and print their figures (so that they do not rot)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import clean_env

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args], env=clean_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_utilisation_prints_the_share_of_slot_time_agents_ran() -> None:
    out = run("utilisation.py", "--tasks", "4", "--concurrency", "2", "--seconds", "0.2")
    share = float(re.search(r"slot utilisation:\s+([\d.]+)%", out).group(1))  # type: ignore[union-attr]
    assert 0 < share <= 100
    assert "agent-seconds:" in out and "in 4 agent runs" in out


def test_task_start_prints_cold_and_warm_starts_and_their_ratio() -> None:
    out = run("task_start.py", "--large", "40", "--small", "4", "--repeat", "1")
    assert re.search(r"40 files: cold\s+[\d.]+ ms\s+warm\s+[\d.]+ ms", out)
    assert re.search(r"large / small:\s+cold\s+[\d.]+x\s+warm\s+[\d.]+x", out)


def test_startup_prints_each_read_only_command_kept_and_in_full() -> None:
    out = run("startup.py", "--repeat", "1", "--tasks", "5")
    for command in ("status", "task list", "task show"):
        assert re.search(rf"^{command}\s+\d+ / \d+\s+\d+ / \d+\s*$", out, re.M), out
    assert re.search(r"^python -c pass\s+\d+ / \d+", out, re.M)
