"""Several runner processes, each with its own clone and root, sharing one PostgreSQL state and one
bare remote: work spreads over them, each task lands once on the remote's base, and a runner killed
with its agents (a host dying) has its work finished by the others, uncharged."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import clean_env, git
from tests.loop_helpers import Sample, make_sample

AGENT = textwrap.dedent(
    """\
    import os, subprocess, sys, time
    time.sleep(float(os.environ.get("AGENT_SECONDS", "1")))
    tid = os.environ["PIPELINE_TASK_ID"]
    open(f"{tid}.txt", "w").write("good\\n")
    subprocess.run(["git", "add", f"{tid}.txt"], check=True)
    subprocess.run(["git", "commit", "-q", "-m", f"Do {tid}\\n\\nTask-Id: {tid}\\n"], check=True)
    """
)


def _hosts(tmp_path: Path, pg_url: str, names: list[str], *, lease: float) -> tuple[Path, dict[str, Path]]:
    seed = tmp_path / "seed"
    git(tmp_path, "init", "-q", "-b", "live", str(seed))
    (seed / "README.md").write_text("# sample\n")
    git(seed, "add", ".")
    git(seed, "commit", "-qm", "init")
    remote = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(remote))
    agent = tmp_path / "agent.py"
    agent.write_text(AGENT)
    clones = {}
    for name in names:
        clone = tmp_path / name
        git(tmp_path, "clone", "-q", str(remote), str(clone))
        config = {
            "base": "live", "root": str(tmp_path / f"{name}.root"), "concurrency": 2, "interval": 0.5,
            "state": {"url": pg_url}, "remote": "origin", "lease": lease,
            "agent": {"preset": "command", "command": [sys.executable, str(agent), "{prompt_file}"], "timeout": 60},
            "phases": {"verify": {"run": ["true"]}},
        }  # fmt: skip
        (clone / "pipeline.yaml").write_text(yaml.safe_dump(config))
        (clone / ".git" / "info" / "exclude").write_text("pipeline.yaml\n")
        clones[name] = clone
    return remote, clones


def _cli(clone: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner", *args], cwd=clone, env=clean_env({}), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


def _start(clone: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "runner", "run"], cwd=clone, env=clean_env({"AGENT_SECONDS": "1"}),
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def _landed(remote: Path) -> list[str]:
    body = git(remote, "log", "--format=%B", "live")
    return [line.removeprefix("Task-Id: ") for line in body.splitlines() if line.startswith("Task-Id: ")]


def _kill_host(proc: subprocess.Popen[bytes], root: Path, clone: Path) -> None:
    """SIGKILL the runner and every process working under its root or clone, as a host dying would."""
    proc.kill()
    proc.wait()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd.startswith(str(root)) or cwd == str(clone):
            with contextlib.suppress(OSError):
                os.kill(int(entry.name), signal.SIGKILL)


def test_runners_share_the_queue_and_finish_the_work_of_one_killed_mid_run(tmp_path: Path, pg_url: str) -> None:
    remote, clones = _hosts(tmp_path, pg_url, ["h1", "h2", "h3"], lease=2)
    tasks = [f"t-{i}" for i in range(1, 10)]
    for task_id in tasks:
        done = _cli(clones["h1"], "task", "add", f"task {task_id}", "--id", task_id)
        assert done.returncode == 0, done.stderr
    procs = {name: _start(clone, tmp_path / f"{name}.log") for name, clone in clones.items()}
    try:
        # Once h2 has an agent running, it dies with it.
        deadline = time.time() + 60
        while "dev started" not in (tmp_path / "h2.log").read_text(errors="replace"):
            assert time.time() < deadline, (tmp_path / "h2.log").read_text(errors="replace")
            time.sleep(0.1)
        _kill_host(procs.pop("h2"), tmp_path / "h2.root", clones["h2"])
        deadline = time.time() + 150
        while len(_landed(remote)) < len(tasks) and time.time() < deadline:
            time.sleep(0.5)
        landed = _landed(remote)
        logs = {name: (tmp_path / f"{name}.log").read_text(errors="replace") for name in clones}
        assert sorted(landed) == sorted(tasks), logs["h1"][-3000:] + logs["h3"][-3000:]
        assert all("dev started" in logs[name] for name in ("h1", "h3"))
        # Recorded done an instant after the push (a stop in between is the next start's to finish).
        deadline = time.time() + 30
        while json.loads(_cli(clones["h1"], "status", "--json").stdout)["done"] != len(tasks):
            assert time.time() < deadline, _cli(clones["h1"], "status", "--json").stdout[-2000:]
            time.sleep(0.3)
        status = _cli(clones["h3"], "status", "--json")
        assert status.returncode == 0, status.stderr
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            proc.wait(timeout=60)
    # h2's task in progress was taken over, not charged: no task failed, none needs help.
    for task_id in tasks:
        shown = _cli(clones["h1"], "task", "show", task_id, "--json")
        assert '"status": "done"' in shown.stdout
        assert '"failure"' not in shown.stdout, shown.stdout
        # Claimed by one runner at a time: one agent's work made it, whichever host ran it.
        developed = [r for r in json.loads(shown.stdout)["runs"] if r["phase"] == "dev" and r["status"] == "success"]
        assert len(developed) == 1, shown.stdout
    assert "stopped renewing its lease" in _cli(clones["h1"], "task", "list", "--json").stdout or any(
        "stopped renewing its lease" in _cli(clones["h1"], "task", "show", t).stdout for t in tasks
    )


def test_the_integrator_killed_between_its_push_and_its_bookkeeping_is_taken_over_without_a_second_landing(
    tmp_path: Path, pg_url: str
) -> None:
    remote, clones = _hosts(tmp_path, pg_url, ["h1", "h2"], lease=2)
    done = _cli(clones["h1"], "task", "add", "first", "--id", "t-1")
    assert done.returncode == 0, done.stderr
    # h1 integrates (it is alone) and dies right after its push to the remote, before recording it.
    dying = subprocess.run(
        [sys.executable, "-m", "runner", "run"], cwd=clones["h1"],
        env=clean_env({"AGENT_SECONDS": "0", "PIPELINE_KILL_AT": "pushed"}), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert dying.returncode == -signal.SIGKILL, dying.stderr[-3000:]
    assert _landed(remote) == ["t-1"]
    assert '"status": "verified"' in _cli(clones["h1"], "task", "show", "t-1", "--json").stdout
    # h2 takes the integration over once h1's lease has run out, finds t-1 landed, and goes on.
    assert _cli(clones["h2"], "task", "add", "second", "--id", "t-2").returncode == 0
    proc = _start(clones["h2"], tmp_path / "h2.log")
    try:
        deadline = time.time() + 90
        while sorted(_landed(remote)) != ["t-1", "t-2"] and time.time() < deadline:
            time.sleep(0.3)
        for task_id in ("t-1", "t-2"):
            deadline = time.time() + 30
            while '"status": "done"' not in _cli(clones["h2"], "task", "show", task_id, "--json").stdout:
                assert time.time() < deadline, (tmp_path / "h2.log").read_text(errors="replace")[-3000:]
                time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert sorted(_landed(remote)) == ["t-1", "t-2"]  # t-1 once, though its push was never recorded
    shown = _cli(clones["h2"], "task", "show", "t-1")
    assert "recovered" in shown.stdout, shown.stdout


def test_a_tree_checked_on_one_host_is_not_checked_again_on_another(tmp_path: Path, pg_url: str) -> None:
    _, clones = _hosts(tmp_path, pg_url, ["h1", "h2"], lease=30)
    counter = tmp_path / "count.py"
    counter.write_text(f"open({str(tmp_path / 'runs')!r}, 'a').write('x')\n")
    for clone in clones.values():
        config = yaml.safe_load((clone / "pipeline.yaml").read_text())
        config["phases"] = {"unit": {"run": [[sys.executable, str(counter)]]}}
        (clone / "pipeline.yaml").write_text(yaml.safe_dump(config))
    first = _cli(clones["h1"], "check")
    assert first.returncode == 0, first.stdout + first.stderr
    assert (tmp_path / "runs").read_text() == "x"
    second = _cli(clones["h2"], "check")
    assert second.returncode == 0, second.stdout + second.stderr
    assert (tmp_path / "runs").read_text() == "x"  # not run again: the pass is in the shared state
    assert "unit: passed (" in second.stdout, second.stdout


def test_the_daily_cost_cap_counts_what_every_host_spent(tmp_path: Path, pg_url: str) -> None:
    # Host a spends under the cap, host b reaches it: neither starts another agent that day, each
    # counting the other's spending from the shared state (not its own alone).
    settings: dict[str, Any] = {
        "agent": {"preset": "agentd", "command": None}, "state": {"url": pg_url}, "remote": "origin",
        "concurrency": 1, "limits": {"max_daily_cost": 50},
    }  # fmt: skip
    a = make_sample(tmp_path / "a", **settings)
    remote = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(a.repo), str(remote))
    git(a.repo, "remote", "add", "origin", str(remote))
    git(tmp_path, "clone", "-q", str(remote), str(tmp_path / "b"))
    b = Sample(tmp_path / "b", tmp_path / "b-fake-state", a.plan_file, {})
    b.write_config(**a.config)
    a.plan({f"t-{n}": [{"files": {f"t{n}.txt": f"{n}\n"}, "cost": 40}] for n in (1, 2, 3)})
    a.add("one")
    a.run_once_until(lambda d: d["done"] == 1)
    assert a.status()["cost_cents"] == 40 and not a.status()["faults"]  # under the cap
    a.add("two")
    a.add("three")
    b.run_once_until(lambda d: d["done"] == 2)
    for host in (b, a):
        done = host.cli("run", "--once")
        assert done.returncode == 3, done.stdout + done.stderr  # paused: the day's cap
        doc = host.status()
        assert doc["cost_cents"] == 80 and doc["open"] == 1
        assert any(f["area"] == "budget" and "80 cents spent" in f["message"] for f in doc["faults"]), doc["faults"]
    landed = _landed(remote)
    assert len(landed) == 2 and "t-1" in landed  # b took t-2 or t-3 (its share of the queue)
