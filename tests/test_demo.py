"""The README's first command: the bundled example runs the real loop to the end."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import clean_env

REPO = Path(__file__).resolve().parents[1]


def test_demo_ships_every_task_without_touching_this_repository() -> None:
    before = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "demo" / "run.py")],
        cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert re.search(r"Done:\s+3", output)
    assert "add-mul: verification failed" in output  # the deliberate first-try mistake ...
    assert "add-mul: integrated into live" in output  # ... fixed from the feedback
    assert "unit  (needs: compile; on: verify, integrate" in output  # `phases`: two, one needing the other
    assert "add-mul: verification failed: phase unit failed" in output
    # add-pow was developed on the base it landed on: its candidate's tree is the verified tree,
    # so the receipt on live shows both phases reused at integration.
    receipt = output.split("$ pipeline-runner receipt live", 1)[1]
    assert receipt.splitlines()[1] == "pipeline-runner receipt: task add-pow (patchset 0), landed on live"
    assert re.search(r"^  unit: cached \(reused\)", receipt, re.MULTILINE)
    project = Path(re.findall(r"The demo project is in (\S+);", output)[0])
    log = subprocess.run(
        ["git", "log", "--format=%s", "live"], cwd=project, capture_output=True, text=True
    ).stdout
    assert log.splitlines() == [
        "Add pow_(a, b) built on mul",
        "Add mul(a, b) in mul.py",
        "Add sub(a, b) to calc.py",
        "Sample project",
    ]
    tests = subprocess.run(
        [sys.executable, "-m", "unittest", "discover", "-q"], cwd=project, capture_output=True, text=True
    )
    assert tests.returncode == 0, tests.stderr
    after = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
    assert after == before
