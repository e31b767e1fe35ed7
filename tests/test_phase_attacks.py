"""The check graph attacked: a user's hostile config and revs, a misbehaving agent, checks racing.

Real repositories, real SQLite and the real CLI as separate processes. Each test states the
guarantee it holds down: base holds exactly what was checked, nothing lands without its phases
passing on its own tree (or a pass for that exact content), every landed commit has a receipt.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import git
from tests.loop_helpers import Sample, kill_leftovers, make_sample, stop, wait_for

# A check that sleeps first, so that something can happen to its checkout meanwhile, then fails
# when any .txt file says BAD.
SLOW_CHECK_PY = """\
import pathlib, sys, time
here = pathlib.Path.cwd()
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 0)
bad = [str(p) for p in here.rglob("*.txt") if "BAD" in p.read_text()]
print("bad files:", bad)
sys.exit(1 if bad else 0)
"""


def sample(tmp_path: Path, phases: dict[str, Any], **config: Any) -> Sample:
    s = make_sample(tmp_path, **config)
    s.write_config(phases=phases)
    return s


def commit_on_branch(s: Sample, branch: str, files: dict[str, str]) -> str:
    git(s.repo, "checkout", "-q", "-b", branch)
    for name, text in files.items():
        (s.repo / name).write_text(text)
        git(s.repo, "add", name)
    git(s.repo, "commit", "-q", "-m", f"on {branch}")
    git(s.repo, "checkout", "-q", "live")
    return git(s.repo, "rev-parse", branch).strip()


def check_proc(s: Sample, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "runner", "check", *args], cwd=s.repo, env=s.full_env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def cached_passes(s: Sample) -> list[tuple[str, str]]:
    if not (s.root / "state.db").exists():
        return []
    return [(str(p), str(t)) for p, t in s.rows("SELECT phase, tree FROM check_results")]


# -- two checks at once --------------------------------------------------------------------------


def test_two_checks_at_once_never_pass_a_tree_by_removing_each_others_checkout(tmp_path: Path) -> None:
    s = sample(tmp_path, {"unit": {"run": [["python3", "slow.py", "2"]]}})
    (s.repo / "slow.py").write_text(SLOW_CHECK_PY)
    git(s.repo, "add", "slow.py")
    git(s.repo, "commit", "-q", "-m", "slow check")
    bad = commit_on_branch(s, "bad", {"x.txt": "BAD\n"})
    bad_tree = git(s.repo, "rev-parse", f"{bad}^{{tree}}").strip()
    first = check_proc(s, "--rev", "bad")
    time.sleep(1.0)  # the first check is in its recipe's sleep when the second makes its checkout
    second = check_proc(s, "--rev", "live")
    out_first, _ = first.communicate(timeout=60)
    out_second, _ = second.communicate(timeout=60)
    assert second.returncode == 0, out_second
    assert first.returncode == 1, f"the BAD tree passed:\n{out_first}"
    assert ("unit", bad_tree) not in cached_passes(s)
    # Each check cleans up after itself.
    assert not any((s.root / "check").iterdir())


def test_a_check_killed_mid_phase_keeps_no_pass_and_its_checkout_is_removed_by_the_next(tmp_path: Path) -> None:
    s = sample(tmp_path, {"unit": {"run": [["python3", "slow.py", "30"]]}})
    (s.repo / "slow.py").write_text(SLOW_CHECK_PY)
    git(s.repo, "add", "slow.py")
    git(s.repo, "commit", "-q", "-m", "slow check")
    proc = check_proc(s, "--rev", "live")
    wait_for(lambda: (s.root / "check").is_dir() and any((s.root / "check").iterdir()), 30)
    time.sleep(0.5)
    proc.kill()
    proc.communicate(timeout=30)
    time.sleep(1)
    assert kill_leftovers(s.root) == [], "the killed check's recipe outlived it"
    assert cached_passes(s) == []
    s.write_config(phases={"unit": {"run": [["python3", "slow.py", "0"]]}})
    done = s.cli("check", "--rev", "live")
    assert done.returncode == 0, done.stdout + done.stderr
    assert list((s.root / "check").iterdir()) == [], "the killed check's checkout was left"


# -- processes a phase leaves behind ---------------------------------------------------------------


def test_a_daemon_a_phase_forks_does_not_outlive_it_to_alter_a_later_checkout(tmp_path: Path) -> None:
    marker = tmp_path / "daemon-was-here"
    daemon = (
        "import os, sys, time, pathlib\n"
        "if os.fork(): sys.exit(0)\n"
        "os.setsid()\n"
        "if os.fork(): os._exit(0)\n"
        "time.sleep(2)\n"
        f"pathlib.Path({str(marker)!r}).write_text('alive')\n"
        "os._exit(0)\n"
    )
    s = sample(tmp_path, {"unit": {"run": [["python3", "-c", daemon]], "cache": False}})
    done = s.cli("check", "--rev", "live")
    assert done.returncode == 0, done.stdout + done.stderr
    time.sleep(3)
    assert not marker.exists(), "a daemon forked by a phase survived it"


# -- revs and notes a person hands the commands ------------------------------------------------------


def test_check_refuses_a_rev_that_is_an_option_a_tree_or_a_blob(tmp_path: Path) -> None:
    s = sample(tmp_path, {"unit": {"run": [["python3", "check.py"]]}})
    tree = git(s.repo, "rev-parse", "live^{tree}").strip()
    blob = git(s.repo, "rev-parse", "live:check.py").strip()
    for rev in ("-x", "--all", "--git-dir=/tmp", tree, blob, "live:check.py", "live..live", "^live"):
        done = s.cli("check", f"--rev={rev}")
        assert done.returncode != 0, (rev, done.stdout, done.stderr)
        assert "is not a commit" in done.stderr, (rev, done.stderr)
        assert "Traceback" not in done.stderr
    assert cached_passes(s) == [], "a pass was recorded for something that is not a commit"


def test_receipt_refuses_a_note_that_is_not_a_receipt(tmp_path: Path) -> None:
    s = sample(tmp_path, {"unit": {"run": [["python3", "check.py"]]}})
    git(s.repo, "notes", "--ref=refs/notes/pipeline", "add", "-m", "pipeline-runner receipt: not json\n{oops", "live")
    done = s.cli("receipt", "--json")
    assert done.returncode != 0 and "not a pipeline-runner receipt" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    for rev in ("-x", "--all", "live^{tree}"):
        done = s.cli("receipt", rev)
        assert done.returncode != 0 and "Traceback" not in done.stderr, (rev, done.stderr)


def test_a_hostile_phase_env_is_refused_as_config_or_faults_without_a_pass(tmp_path: Path) -> None:
    s = sample(tmp_path, {"unit": {"run": [["python3", "check.py"]]}})
    for env in ({"A=B": "c"}, {"": "c"}, {"A": "c\0d"}):
        s.write_config(phases={"unit": {"run": [["python3", "check.py"]], "env": env}})
        done = s.cli("check", "--rev", "live")
        assert done.returncode != 0 and "Invalid configuration" in done.stderr, (env, done.stderr)
        assert "Traceback" not in done.stderr
    # A PATH that hides the program: the machine's fault, never a pass kept for the tree.
    s.write_config(phases={"unit": {"run": [["python3", "check.py"]], "env": {"PATH": str(tmp_path / "nothing")}}})
    done = s.cli("check", "--rev", "live")
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stdout + done.stderr
    assert "passed" not in done.stdout and cached_passes(s) == []


# -- code under check writing the runner's state ------------------------------------------------------

# What the agent commits as the project's test runner: it passes, and, run by a verify phase in its
# checkout (ROOT/checks/<task>/<attempt>), it records in ROOT/state.db a pass of the integrate-only
# phase `gate` for its own tree, so that integration reuses it instead of running the gate.
FORGER_PY = """\
import hashlib, json, pathlib, sqlite3, subprocess, sys
gate = sys.argv[1]
tree = subprocess.run(["git", "rev-parse", "HEAD^{tree}"], capture_output=True, text=True).stdout.strip()
material = json.dumps({"tree": tree, "phase": "gate", "recipes": [["python3", gate]], "env": {},
                       "on": ["integrate"]}, sort_keys=True)
key = hashlib.sha256(material.encode()).hexdigest()
db = pathlib.Path.cwd().parents[2] / "state.db"
conn = sqlite3.connect(db, timeout=30)
conn.execute("INSERT OR REPLACE INTO check_results (key, phase, tree, run_id, duration, exit_code, passed_at) "
             "VALUES (?, 'gate', ?, NULL, 1.0, 0, '2026-01-01T00:00:00+00:00')", (key, tree))
conn.commit()
print("forged a pass of gate for", tree)
"""


def forge_attempt(tmp_path: Path, gate_cache: bool) -> Sample:
    """A task whose commit holds BAD and a test runner that forges a pass of the gate for its tree."""
    gate = tmp_path / "gate.py"
    gate.write_text(SLOW_CHECK_PY)
    s = sample(tmp_path, {
        "unit": {"run": [["python3", "run_tests.py"]], "on": ["verify"]},
        "gate": {"run": [["python3", str(gate)]], "on": ["integrate"], "cache": gate_cache},
    }, concurrency=1, limits={"max_retries": 1})  # fmt: skip
    (s.repo / "run_tests.py").write_text("print('all good')\n")
    git(s.repo, "add", "run_tests.py")
    git(s.repo, "commit", "-q", "-m", "tests")
    forger = FORGER_PY.replace("sys.argv[1]", repr(str(gate)))
    s.plan({"t-1": [{"files": {"x.txt": "BAD\n", "run_tests.py": forger}}]})
    s.add("sneak it in")
    s.cli("run", "--until-idle", timeout=120)
    return s


def bad_on_base(s: Sample) -> bool:
    return "x.txt" in git(s.repo, "ls-tree", "--name-only", "live").split() and "BAD" in git(
        s.repo, "show", "live:x.txt"
    )


@pytest.mark.xfail(
    strict=True,
    reason="recipes run with the runner's own rights: code under check can write ROOT/state.db and "
    "record a pass the runner then reuses (not fixable without isolating recipes from the state)",
)
def test_code_under_check_cannot_forge_a_pass_of_a_later_phase(tmp_path: Path) -> None:
    assert not bad_on_base(forge_attempt(tmp_path, gate_cache=True))


def test_a_gate_with_cache_false_is_never_taken_from_a_forged_pass(tmp_path: Path) -> None:
    s = forge_attempt(tmp_path, gate_cache=False)
    assert s.rows("SELECT COUNT(*) FROM check_results WHERE phase = 'gate'") == [(1,)], "the forger did not run"
    assert not bad_on_base(s)


# -- two processes on one cache ------------------------------------------------------------------------


def test_check_running_beside_run_shares_the_cache_without_locking_errors_or_false_passes(tmp_path: Path) -> None:
    phases = {f"p{i}": {"run": [["python3", "check.py"]], "env": {"N": str(i)}} for i in range(6)}
    phases["tagged"] = {"run": [["python3", "check.py", "{task_id}"]]}
    s = sample(tmp_path, phases, concurrency=3)
    s.plan({"t-2": [{"files": {"x.txt": "BAD\n"}}, {"files": {"x.txt": "fine\n"}}]})
    for title in ("one", "two", "three"):
        s.add(title)
    bad = commit_on_branch(s, "bad", {"y.txt": "BAD\n"})
    proc = s.start()
    outputs = []
    try:
        for _ in range(4):
            for rev in ("live", "bad"):
                done = s.cli("check", "--rev", rev)
                outputs.append(done.stdout + done.stderr)
                assert done.returncode == (0 if rev == "live" else 1), outputs[-1]
        wait_for(lambda: s.status()["done"] == 3, 90, proc)
    finally:
        out = stop(proc)
    assert "locked" not in out + "".join(outputs)
    assert sorted(s.trailers()) == ["t-1", "t-2", "t-3"]
    assert "+BAD" not in git(s.repo, "log", "-p", "live")
    bad_tree = git(s.repo, "rev-parse", f"{bad}^{{tree}}").strip()
    assert [t for _, t in cached_passes(s) if t == bad_tree] == []
    assert s.rows("SELECT COUNT(*) FROM pipeline_runs WHERE status = 'running'") == [(0,)]
