"""Attacks on several runners sharing one PostgreSQL state and one bare remote: a runner frozen past
its lease and woken again, started again on its root after it was taken over, several `run --once`
at the same time, odd lease settings. Each task lands once, and a runner whose work was handed to
others neither writes nor lands anything more."""

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

import pytest
import yaml

from tests.conftest import clean_env
from tests.pg_server import PgServer, _as_server_user
from tests.test_fleet_runners import _cli, _hosts, _landed

# The agent of tests/test_fleet_runners.py, whose commit also says which workspace it was made in.
AGENT = textwrap.dedent(
    """\
    import os, subprocess, sys, time
    time.sleep(float(os.environ.get("AGENT_SECONDS", "1")))
    tid = os.environ["PIPELINE_TASK_ID"]
    open(f"{tid}.txt", "w").write("good\\n")
    subprocess.run(["git", "add", f"{tid}.txt"], check=True)
    body = f"Do {tid}\\n\\nMade by {os.environ['AGENT_MARK']}\\n\\nTask-Id: {tid}\\n"
    subprocess.run(["git", "commit", "-q", "-m", body], check=True)
    """
)


def _start(clone: Path, log: Path, agent_seconds: float, mark: str, *args: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "runner", "run", *args], cwd=clone,
            env=clean_env({"AGENT_SECONDS": str(agent_seconds), "AGENT_MARK": mark}), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def _wait_for(what: str, log: Path, seconds: float) -> None:
    deadline = time.time() + seconds
    while what not in log.read_text(errors="replace"):
        assert time.time() < deadline, log.read_text(errors="replace")[-3000:]
        time.sleep(0.05)


def _agents_under(root: Path) -> list[int]:
    """The agent processes whose working directory is under ``root``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if cwd.startswith(str(root)) and b"agent.py" in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _stop(*procs: subprocess.Popen[bytes]) -> None:
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _kill_agents(*roots: Path) -> None:
    for root in roots:
        for pid in _agents_under(root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _with_agent(tmp_path: Path) -> None:
    (tmp_path / "agent.py").write_text(AGENT)


def _two_hosts(tmp_path: Path, pg_url: str) -> tuple[Path, dict[str, Path], list[str], dict[str, Path]]:
    """Two hosts with a 2 s lease and two tasks added on h1: the remote, the clones, the task ids
    and where each host's runner logs."""
    remote, clones = _hosts(tmp_path, pg_url, ["h1", "h2"], lease=2)
    _with_agent(tmp_path)
    tasks = ["t-1", "t-2"]
    for task_id in tasks:
        assert _cli(clones["h1"], "task", "add", f"task {task_id}", "--id", task_id).returncode == 0
    return remote, clones, tasks, {name: tmp_path / f"{name}.log" for name in clones}


def _wait_started(log: Path, agents: int, seconds: float = 30) -> None:
    deadline = time.time() + seconds
    while log.read_text(errors="replace").count("dev started") < agents:
        assert time.time() < deadline, log.read_text(errors="replace")[-3000:]
        time.sleep(0.05)


def _frozen_with_two_agents(clones: dict[str, Path], logs: dict[str, Path], agent_seconds: int) -> subprocess.Popen[bytes]:
    """h1 started, its agents started on both tasks, then h1 alone frozen (SIGSTOP): its agents run on."""
    h1 = _start(clones["h1"], logs["h1"], agent_seconds, "frozen-h1")
    _wait_started(logs["h1"], 2)
    h1.send_signal(signal.SIGSTOP)
    return h1


def _thawed_it_stops_taken_over(h1: subprocess.Popen[bytes], log: Path, seconds: float) -> None:
    """A frozen runner taken over meanwhile, thawed (SIGCONT): it stops (exit 1), saying so."""
    h1.send_signal(signal.SIGCONT)
    assert h1.wait(timeout=seconds) == 1, log.read_text(errors="replace")[-3000:]
    assert "was taken over by runner" in log.read_text(errors="replace")


def test_a_runner_frozen_past_its_lease_writes_and_lands_nothing_and_its_agents_stop_when_it_restarts(
    tmp_path: Path, pg_url: str
) -> None:
    remote, clones, tasks, logs = _two_hosts(tmp_path, pg_url)
    # h1 claims both tasks; its agents outlive the freeze (however long a busy machine makes the
    # takeover take) and would commit after it.
    h1 = _frozen_with_two_agents(clones, logs, 40)
    procs = [h1]
    try:
        procs.append(_start(clones["h2"], logs["h2"], 1, "h2"))
        _wait_for("stopped renewing its lease", logs["h2"], 30)
        _thawed_it_stops_taken_over(h1, logs["h1"], 30)
        # Started again on its root, h1 stops the agents it left on tasks that are h2's now.
        left = _agents_under(tmp_path / "h1.root")
        assert len(left) == 2
        procs.append(_start(clones["h1"], logs["h1"], 1, "h1-again"))
        deadline = time.time() + 15
        while any(_alive(pid) for pid in left):
            assert time.time() < deadline, logs["h1"].read_text(errors="replace")[-3000:]
            time.sleep(0.1)
        deadline = time.time() + 60
        while sorted(_landed(remote)) != tasks and time.time() < deadline:
            time.sleep(0.3)
        # Landed on the remote; recorded done an instant later (a stop in between is recovered
        # by the next start, not by this one).
        while not all('"status": "done"' in _cli(clones["h2"], "task", "show", t, "--json").stdout for t in tasks):
            assert time.time() < deadline, logs["h2"].read_text(errors="replace")[-3000:]
            time.sleep(0.3)
    finally:
        _stop(*procs)
        _kill_agents(tmp_path / "h1.root", tmp_path / "h2.root")
    assert sorted(_landed(remote)) == tasks, logs["h2"].read_text(errors="replace")[-3000:]
    body = subprocess.run(["git", "log", "--format=%B", "live"], cwd=remote, capture_output=True, text=True).stdout
    assert "frozen-h1" not in body
    for task_id in tasks:
        shown = _cli(clones["h2"], "task", "show", task_id, "--json")
        assert '"status": "done"' in shown.stdout
        assert '"failure"' not in shown.stdout, shown.stdout


@pytest.mark.parametrize("lease", ["0", "-5", "0.001", "1e12", ".inf"])
def test_a_lease_no_runner_could_keep_is_refused_as_a_config_error(tmp_path: Path, lease: str) -> None:
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", "init"], cwd=repo, check=True, env=clean_env({}))
    (repo / "pipeline.yaml").write_text(
        f'base: main\nlease: {lease}\nagent: {{preset: command, command: ["true"]}}\n'
        'phases: {verify: {run: ["true"]}}\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "runner", "run", "--once"], cwd=repo, env=clean_env({}), capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "key 'lease'" in done.stderr and "internal error" not in done.stderr, done.stderr


def test_run_once_on_several_hosts_at_the_same_time_lands_each_task_once(tmp_path: Path, pg_url: str) -> None:
    remote, clones = _hosts(tmp_path, pg_url, ["h1", "h2", "h3"], lease=30)
    _with_agent(tmp_path)
    tasks = [f"t-{i}" for i in range(1, 6)]
    for task_id in tasks:
        assert _cli(clones["h1"], "task", "add", f"task {task_id}", "--id", task_id).returncode == 0
    env = clean_env({"AGENT_SECONDS": "0.5", "AGENT_MARK": "cron"})
    rounds = 0
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            rounds += 1
            # Cron fires on every host at the same second.
            argv = [sys.executable, "-m", "runner", "run", "--once"]
            runs = [
                subprocess.Popen(argv, cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                for clone in clones.values()
            ]
            outs = [(run.communicate(timeout=60)[0].decode(errors="replace"), run.returncode) for run in runs]
            for out, code in outs:
                assert code == 0, out[-3000:]
            listed = _cli(clones["h2"], "task", "list", "--json")
            if listed.stdout.count('"status": "done"') == len(tasks):
                break
            time.sleep(0.3)
    finally:
        _kill_agents(*(tmp_path / f"{name}.root" for name in clones))
    assert sorted(_landed(remote)) == tasks, (rounds, _cli(clones["h2"], "task", "list").stdout)
    for task_id in tasks:
        shown = _cli(clones["h3"], "task", "show", task_id, "--json")
        assert '"status": "done"' in shown.stdout, shown.stdout
        assert '"failure"' not in shown.stdout, shown.stdout


@pytest.mark.parametrize("point", ["claimed", "agent-recorded", "verified", "before-swap", "swapped", "integrated"])
def test_a_runner_killed_at_its_worst_moments_has_its_work_finished_once_by_the_fleet(
    tmp_path: Path, pg_url: str, point: str
) -> None:
    remote, clones = _hosts(tmp_path, pg_url, ["h1", "h2"], lease=2)
    _with_agent(tmp_path)
    tasks = ["t-1", "t-2", "t-3"]
    for task_id in tasks:
        assert _cli(clones["h1"], "task", "add", f"task {task_id}", "--id", task_id).returncode == 0
    logs = {name: tmp_path / f"{name}.log" for name in clones}
    with open(logs["h1"], "wb") as out:
        dying = subprocess.run(
            [sys.executable, "-m", "runner", "run"], cwd=clones["h1"],
            env=clean_env({"AGENT_SECONDS": "0.5", "AGENT_MARK": "h1", "PIPELINE_KILL_AT": point}), stdout=out,
            stderr=subprocess.STDOUT, timeout=60,
        )  # fmt: skip
    assert dying.returncode == -signal.SIGKILL, logs["h1"].read_text(errors="replace")[-3000:]
    # h2 takes h1's work over once its lease ran out; h1, started again after that, joins in.
    procs = [_start(clones["h2"], logs["h2"], 0.5, "h2")]
    try:
        _wait_for("stopped renewing its lease", logs["h2"], 20)
        procs.append(_start(clones["h1"], logs["h1"], 0.5, "h1-again"))
        deadline = time.time() + 40
        while time.time() < deadline:
            listed = _cli(clones["h2"], "task", "list", "--json").stdout
            if listed.count('"status": "done"') == len(tasks):
                break
            time.sleep(0.3)
    finally:
        _stop(*procs)
        _kill_agents(tmp_path / "h1.root", tmp_path / "h2.root")
    assert sorted(_landed(remote)) == tasks, logs["h2"].read_text(errors="replace")[-3000:]
    for task_id in tasks:
        shown = _cli(clones["h2"], "task", "show", task_id, "--json")
        assert '"status": "done"' in shown.stdout, logs["h2"].read_text(errors="replace")[-3000:]
        assert '"failure"' not in shown.stdout, shown.stdout


def test_the_database_restarted_mid_run_loses_nothing_and_charges_nothing(
    tmp_path: Path, pg_url: str, pg_server: PgServer
) -> None:
    remote, clones = _hosts(tmp_path, pg_url, ["h1", "h2"], lease=2)
    _with_agent(tmp_path)
    tasks = [f"t-{i}" for i in range(1, 6)]
    for task_id in tasks:
        assert _cli(clones["h1"], "task", "add", f"task {task_id}", "--id", task_id).returncode == 0
    logs = {name: tmp_path / f"{name}.log" for name in clones}
    procs = {name: _start(clone, logs[name], 1, name) for name, clone in clones.items()}
    try:
        _wait_for("dev started", logs["h1"], 30)
        # Restarted by its administrator (the test server, without fsync, loses commits on a crash).
        stop = [str(pg_server.bin / "pg_ctl"), "-D", str(pg_server.dir / "data"), "-m", "fast", "stop"]
        subprocess.run(_as_server_user(stop), capture_output=True, check=True, timeout=60)
        time.sleep(1.5)
        assert pg_server.start()
        deadline = time.time() + 60
        while time.time() < deadline:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    # Stopped by the outage: clearly, and carries on once started again.
                    text = logs[name].read_text(errors="replace")
                    assert proc.returncode == 1 and "internal error" not in text, text[-3000:]
                    assert "State database" in text, text[-3000:]
                    procs[name] = _start(clones[name], logs[name], 1, name)
            listed = _cli(clones["h2"], "task", "list", "--json").stdout
            if listed.count('"status": "done"') == len(tasks):
                break
            time.sleep(0.3)
    finally:
        _stop(*procs.values())
        _kill_agents(tmp_path / "h1.root", tmp_path / "h2.root")
        pg_server.start()  # for the tests after this one, whatever happened here
    assert sorted(_landed(remote)) == tasks, logs["h1"].read_text(errors="replace")[-3000:]
    for task_id in tasks:
        shown = _cli(clones["h2"], "task", "show", task_id, "--json")
        assert '"status": "done"' in shown.stdout, shown.stdout
        assert '"failure"' not in shown.stdout, [
            (r.get("phase"), r.get("error")) for r in json.loads(shown.stdout).get("runs", []) if r.get("status") == "failure"
        ]


def test_a_runner_frozen_inside_a_write_transaction_does_not_stall_the_fleet(tmp_path: Path, pg_url: str) -> None:
    remote, clones, tasks, logs = _two_hosts(tmp_path, pg_url)
    h1 = _start(clones["h1"], logs["h1"], 30, "frozen-h1")
    procs = [h1]
    try:
        _wait_started(logs["h1"], 2)
        # Frozen (or cut off) between two statements of a write transaction: its lease renews
        # in one every lease/3 seconds, so keep stopping it until it is caught in one (one
        # connection asks, so that each try takes milliseconds: the window is that short).
        import psycopg

        with psycopg.connect(pg_url, autocommit=True) as watcher:
            deadline = time.time() + 90
            while True:
                h1.send_signal(signal.SIGSTOP)
                time.sleep(0.003)
                row = watcher.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                ).fetchone()
                if row and row[0]:
                    break
                h1.send_signal(signal.SIGCONT)
                assert time.time() < deadline, "never caught inside a write transaction"
                time.sleep((time.time() * 1000 % 5) / 1000)
        procs.append(_start(clones["h2"], logs["h2"], 0.5, "h2"))
        _wait_for("stopped renewing its lease", logs["h2"], 15)
        deadline = time.time() + 20
        while sorted(_landed(remote)) != tasks:
            assert time.time() < deadline, logs["h2"].read_text(errors="replace")[-3000:]
            time.sleep(0.3)
        # Thawed, its transaction is gone with the connection the server ended: it says it was
        # taken over (not only that its connection closed) and stops.
        _thawed_it_stops_taken_over(h1, logs["h1"], 30)
    finally:
        _stop(*procs)
        _kill_agents(tmp_path / "h1.root", tmp_path / "h2.root")
    assert "frozen-h1" not in subprocess.run(
        ["git", "log", "--format=%B", "live"], cwd=remote, capture_output=True, text=True
    ).stdout


def _kill_runner_and_agents(proc: subprocess.Popen[bytes], root: Path) -> None:
    proc.kill()
    proc.wait()
    _kill_agents(root)


def test_work_an_orphan_agent_committed_after_its_runner_was_taken_over_is_not_charged_to_the_next_attempt(
    tmp_path: Path, pg_url: str
) -> None:
    remote, clones, tasks, logs = _two_hosts(tmp_path, pg_url)
    h1 = _frozen_with_two_agents(clones, logs, 3)
    procs = [h1]
    try:
        # h2 takes both tasks over and works on them, slowly.
        h2 = _start(clones["h2"], logs["h2"], 60, "h2")
        procs.append(h2)
        _wait_started(logs["h2"], 2)
        # With nothing of its own left to write, it learns it was taken over from its renewal (or,
        # frozen inside a transaction the server then ended, from the runners table).
        _thawed_it_stops_taken_over(h1, logs["h1"], 15)
        # h1's agents, alone now, commit their work in h1's workspaces.
        deadline = time.time() + 15
        while _agents_under(tmp_path / "h1.root"):
            assert time.time() < deadline
            time.sleep(0.1)
        # h2's host dies; h1, started again, takes its work over in those same workspaces.
        _kill_runner_and_agents(h2, tmp_path / "h2.root")
        procs.append(_start(clones["h1"], logs["h1"], 0.5, "h1-again"))
        deadline = time.time() + 30
        while time.time() < deadline:
            if _cli(clones["h1"], "task", "list", "--json").stdout.count('"status": "done"') == len(tasks):
                break
            time.sleep(0.3)
    finally:
        _stop(*procs)
        _kill_agents(tmp_path / "h1.root", tmp_path / "h2.root")
    for task_id in tasks:
        shown = _cli(clones["h1"], "task", "show", task_id, "--json")
        assert '"failure"' not in shown.stdout, [
            (r.get("phase"), r.get("error_summary")) for r in json.loads(shown.stdout)["runs"]
            if r.get("status") == "failure"
        ]  # fmt: skip
        assert '"status": "done"' in shown.stdout, logs["h1"].read_text(errors="replace")[-3000:]
    assert sorted(_landed(remote)) == tasks


def test_a_second_runner_on_the_same_root_of_the_same_host_does_nothing(tmp_path: Path, pg_url: str) -> None:
    remote, clones = _hosts(tmp_path, pg_url, ["h1", "h2"], lease=2)
    _with_agent(tmp_path)
    # h2's clone points at h1's root: one lock file for both.
    config = yaml.safe_load((clones["h2"] / "pipeline.yaml").read_text())
    config["root"] = str(tmp_path / "h1.root")
    (clones["h2"] / "pipeline.yaml").write_text(yaml.safe_dump(config))
    assert _cli(clones["h1"], "task", "add", "work", "--id", "t-1").returncode == 0
    logs = {name: tmp_path / f"{name}.log" for name in clones}
    h1 = _start(clones["h1"], logs["h1"], 1, "h1")
    try:
        _wait_for("dev started", logs["h1"], 30)
        for clone in (clones["h1"], clones["h2"]):
            second = subprocess.run(
                [sys.executable, "-m", "runner", "run"], cwd=clone, env=clean_env({"AGENT_MARK": "second"}),
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert second.returncode == 0, second.stderr[-3000:]
            assert "Another pipeline-runner" in second.stdout + second.stderr
        deadline = time.time() + 30
        while _landed(remote) != ["t-1"]:
            assert time.time() < deadline, logs["h1"].read_text(errors="replace")[-3000:]
            time.sleep(0.3)
        status = json.loads(_cli(clones["h1"], "status", "--json").stdout)
    finally:
        _stop(h1)
        _kill_agents(tmp_path / "h1.root")
    fleet = status.get("fleet") or status.get("runners")
    assert fleet is not None and len(fleet) == 1, status.keys()


def _frozen(proc: subprocess.Popen[bytes], log: Path, seconds: float = 30) -> None:
    """Wait until ``proc`` stopped itself at its kill point (PIPELINE_KILL_SIGNAL=STOP)."""
    deadline = time.time() + seconds
    while Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
        assert proc.poll() is None and time.time() < deadline, log.read_text(errors="replace")[-3000:]
        time.sleep(0.05)


def _start_frozen_at(clone: Path, log: Path, point: str, mark: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "runner", "run"], cwd=clone,
            env=clean_env({"AGENT_SECONDS": "0.3", "AGENT_MARK": mark, "PIPELINE_KILL_AT": point,
                           "PIPELINE_KILL_SIGNAL": "STOP"}),
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


@pytest.mark.parametrize("late_push", ["refused", "first"])
def test_an_integrator_frozen_just_before_its_push_never_lands_a_task_twice(
    tmp_path: Path, pg_url: str, late_push: str
) -> None:
    remote, clones = _hosts(tmp_path, pg_url, ["h1", "h2"], lease=2)
    _with_agent(tmp_path)
    assert _cli(clones["h1"], "task", "add", "work", "--id", "t-1").returncode == 0
    logs = {name: tmp_path / f"{name}.log" for name in clones}
    # h1 integrates t-1: its candidate recorded and its receipt attached, it freezes before pushing.
    h1 = _start_frozen_at(clones["h1"], logs["h1"], "receipt-attached", "h1")
    procs = [h1]
    try:
        _frozen(h1, logs["h1"])
        if late_push == "refused":
            # h2 takes the integration over and lands t-1 first: h1's push, once woken, is refused.
            procs.append(_start(clones["h2"], logs["h2"], 0.3, "h2"))
            deadline = time.time() + 30
            while _landed(remote) != ["t-1"]:
                assert time.time() < deadline, logs["h2"].read_text(errors="replace")[-3000:]
                time.sleep(0.2)
            h1.send_signal(signal.SIGCONT)
            # Its push is refused: base moved. Taken over meanwhile (h2 looked at the runners while
            # it was frozen) it stops; woken first, it renewed its lease and goes on as a runner.
            deadline = time.time() + 30
            while "not moved on origin (moved)" not in logs["h1"].read_text(errors="replace"):
                assert time.time() < deadline, logs["h1"].read_text(errors="replace")[-3000:]
                time.sleep(0.2)
            try:
                code: int | None = h1.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None  # woken before h2 looked at the runners: its lease renewed, it goes on
            if code is not None:
                assert code == 1 and "was taken over by runner" in logs["h1"].read_text(errors="replace")
        else:
            # h2 takes over and freezes with its own candidate of t-1 built; h1 wakes and pushes first.
            h2 = _start_frozen_at(clones["h2"], logs["h2"], "integrate-started", "h2")
            procs.append(h2)
            _frozen(h2, logs["h2"])
            assert "stopped renewing its lease" in logs["h2"].read_text(errors="replace")
            h1.send_signal(signal.SIGCONT)
            assert h1.wait(timeout=30) == 1, logs["h1"].read_text(errors="replace")[-3000:]
            assert _landed(remote) == ["t-1"]  # its push, unfenced, went through: a checked candidate
            h2.send_signal(signal.SIGCONT)
            assert "was taken over by runner" in logs["h1"].read_text(errors="replace")
        deadline = time.time() + 30
        while '"status": "done"' not in _cli(clones["h2"], "task", "show", "t-1", "--json").stdout:
            assert time.time() < deadline, logs["h2"].read_text(errors="replace")[-3000:]
            time.sleep(0.3)
        time.sleep(1)  # a second landing would come now
    finally:
        _stop(*procs)
        _kill_agents(tmp_path / "h1.root", tmp_path / "h2.root")
    assert _landed(remote) == ["t-1"]
    shown = _cli(clones["h2"], "task", "show", "t-1", "--json").stdout
    assert '"failure"' not in shown, shown


def test_a_task_verified_on_a_host_that_died_before_publishing_its_commit_is_redone_uncharged(
    tmp_path: Path, pg_url: str
) -> None:
    remote, clones = _hosts(tmp_path, pg_url, ["h1", "h2"], lease=2)
    _with_agent(tmp_path)
    # h1 cannot push to the remote (a network that lets it read, not write): its verified commit
    # stays on h1 alone.
    hook = remote / "hooks" / "pre-receive"
    hook.write_text('#!/bin/sh\n[ -z "$REJECT_PUSH" ]\n')
    hook.chmod(0o755)
    assert _cli(clones["h1"], "task", "add", "work", "--id", "t-1").returncode == 0
    logs = {name: tmp_path / f"{name}.log" for name in clones}
    with open(logs["h1"], "ab") as out:
        h1 = subprocess.Popen(
            [sys.executable, "-m", "runner", "run"], cwd=clones["h1"],
            env=clean_env({"AGENT_SECONDS": "0.3", "AGENT_MARK": "h1", "REJECT_PUSH": "1"}),
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    procs = [h1]
    try:
        _wait_for("verification passed", logs["h1"], 30)
        time.sleep(1)
        h1.kill()  # the host dies
        h1.wait()
        _kill_agents(tmp_path / "h1.root")
        procs.append(_start(clones["h2"], logs["h2"], 0.3, "h2"))
        deadline = time.time() + 30
        while '"status": "done"' not in _cli(clones["h2"], "task", "show", "t-1", "--json").stdout:
            assert time.time() < deadline, logs["h2"].read_text(errors="replace")[-3000:]
            time.sleep(0.3)
    finally:
        _stop(*procs)
        _kill_agents(tmp_path / "h1.root", tmp_path / "h2.root")
    assert _landed(remote) == ["t-1"]
    shown = json.loads(_cli(clones["h2"], "task", "show", "t-1", "--json").stdout)
    assert [r["error_summary"] for r in shown["runs"] if r["status"] == "failure"] == []
