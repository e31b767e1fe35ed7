"""`status` text on a terminal and off it, `status --watch` / `top`, and `logs [-f] [--run]`, as
real processes over real state: runs made by the fake agents, or rows and logs written as the
runner writes them."""

from __future__ import annotations

import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import CLI, clean_env, default_root, make_repo
from tests.loop_helpers import Sample, make_sample, stop, wait_for

ESC = b"\x1b"
NOW_ISO = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())


def _spawn(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "runner", *args], cwd=cwd, env=clean_env(env), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, bufsize=0,
    )  # fmt: skip


def _read_until(proc: subprocess.Popen[bytes], seen: bytearray, needle: bytes, timeout: float = 20) -> None:
    """Read the process's stdout into ``seen`` until ``needle`` is in it."""
    assert proc.stdout is not None
    deadline = time.time() + timeout
    while needle not in seen:
        left = deadline - time.time()
        assert left > 0, f"{needle!r} not printed: {bytes(seen)!r}"
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            assert chunk, f"stdout closed before {needle!r}: {bytes(seen)!r}"
            seen += chunk


def _quiet_for(proc: subprocess.Popen[bytes], seconds: float) -> bytes:
    """What the process prints within ``seconds`` (b"" when it stays quiet)."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], seconds)
    return os.read(proc.stdout.fileno(), 65536) if ready else b""


def _on_a_terminal(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> bytes:
    """What ``pipeline-runner ARGS`` prints with a pseudo-terminal as its stdout."""
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", *args], cwd=cwd, env=clean_env(env), stdout=slave, stderr=subprocess.PIPE
    )
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the terminal's other side closed
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    return out


def _populate(repo: Path, cli: CLI) -> None:
    """Tasks and runs in every state `status` explains, written as the runner writes them: a dev,
    a verify (a phase running) and an integrate run active, each with output in its log."""
    tasks = [
        {"id": task, "title": f"title of {task}", "dependencies": {"t-w": ["t-dev"], "t-b": ["t-nh"]}.get(task, [])}
        for task in ("t-dev", "t-ver", "t-int", "t-w", "t-nh", "t-b", "t-c1", "t-c2", "t-bo")
    ]
    (repo / "tasks.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tasks))
    assert cli("task", "import", "tasks.jsonl", cwd=repo).code == 0
    # Now, not at import: t-bo must still be backing off when the test reads status.
    now_iso = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    root = default_root(repo)
    logs = root / "logs" / "tasks"
    for task, text in (("t-dev", "agent: editing parser.py\n"), ("t-ver", "[unit] started\n"),
                       ("t-int", "[unit] passed\n")):  # fmt: skip
        (logs / task).mkdir(parents=True)
        (logs / task / "attempt.log").write_text(text)
    (logs / "t-ver" / "attempt").mkdir()
    (logs / "t-ver" / "attempt" / "unit.log").write_text("$ pytest\ncollected 12 items\n")
    db = sqlite3.connect(root / "state.db")
    with db:
        for task, status in (("t-dev", "in_progress"), ("t-ver", "in_progress"), ("t-int", "verified"),
                             ("t-nh", "needs_help")):  # fmt: skip
            db.execute("UPDATE tasks SET status = ? WHERE id = ?", (status, task))
        db.execute("INSERT INTO task_dependencies (task_id, depends_on) VALUES ('t-c1', 't-c2'), ('t-c2', 't-c1')")
        for task, phase, cost in (("t-dev", "dev", 250.0), ("t-ver", "verify", 0.0), ("t-int", "integrate", 0.0)):
            db.execute(
                "INSERT INTO pipeline_runs (task_id, phase, patchset, status, cost_cents, started_at, log_path) "
                "VALUES (?, ?, 0, 'running', ?, ?, ?)",
                (task, phase, cost, now_iso, str(logs / task / "attempt.log")),
            )
        parent = db.execute("SELECT id FROM pipeline_runs WHERE task_id = 't-ver'").fetchone()[0]
        db.execute(
            "INSERT INTO pipeline_runs (task_id, phase, patchset, status, started_at, parent_id) "
            "VALUES ('t-ver', 'unit', 0, 'running', ?, ?)",
            (now_iso, parent),
        )
        # t-dev spent $1.23 on an earlier attempt; t-bo failed just now and backs off.
        db.execute(
            "INSERT INTO pipeline_runs (task_id, phase, patchset, status, cost_cents, started_at, finished_at) "
            "VALUES ('t-dev', 'dev', 0, 'failure', 123.0, ?, ?), ('t-bo', 'dev', 0, 'failure', 0, ?, ?)",
            (now_iso, now_iso, now_iso, now_iso),
        )
        db.execute(
            "INSERT INTO task_comments (task_id, author, body, created_at) "
            "VALUES ('t-nh', 'system', 'needs help: 5 failed attempts', ?)",
            (now_iso,),
        )
    db.close()


def test_status_text_shows_every_run_the_queue_and_why(cli: CLI, repo: Path) -> None:
    _populate(repo, cli)
    done = cli("status", cwd=repo)
    assert done.code == 0, done.err
    text = done.out
    for task, phase in (("t-dev", "dev"), ("t-ver", "verify"), ("t-int", "integrate")):
        assert f"  {task}  {phase}  patchset 0  for " in text
    assert "> agent: editing parser.py" in text  # the agent's log
    assert "> collected 12 items" in text  # the running phase's log, before its row names it
    assert "unit: running for" in text
    assert "cost so far $3.73" in text and "Cost so far: $3.73" in text
    reasons = {
        "t-w": "dependency: waiting on t-dev (in_progress)",
        "t-b": "blocked: t-nh needs help",
        "t-c1": "cycle: is in a dependency cycle: t-c1 -> t-c2 -> t-c1",
        "t-bo": "backoff: backing off after a failure, until ",
    }
    for task, reason in reasons.items():
        assert reason in text.split(f"  {task}  open")[1].splitlines()[1], (task, text)
    assert "needs help: 5 failed attempts" in text
    doc = cli("status", "--json", cwd=repo).json()
    assert doc["schema_version"] == 2
    assert {r["phase"] for r in doc["active_runs"]} == {"dev", "verify", "integrate"}
    why = {item["id"]: (item["why"], item["waiting_on"]) for item in doc["queue"]}
    assert why["t-w"] == ("dependency", ["t-dev"]) and why["t-b"] == ("blocked", ["t-nh"])
    assert why["t-c2"][0] == "cycle" and why["t-bo"][0] == "backoff"
    assert "t-dev" not in why and "t-int" not in why  # running: not in the queue
    # Piped, with NO_COLOR or with --no-color: not one escape byte. On a terminal: drawn with rich.
    assert ESC not in done.out.encode()
    assert ESC in _on_a_terminal(["status"], repo)
    for args, env in ((["status"], {"NO_COLOR": "1"}), (["status", "--no-color"], None)):
        shown = _on_a_terminal(args, repo, env)
        assert ESC not in shown and b"waiting on t-dev" in shown


def test_watch_without_a_terminal_prints_a_snapshot_per_change_and_stops_on_ctrl_c(cli: CLI, repo: Path) -> None:
    assert cli("task", "add", "first", cwd=repo).code == 0
    proc = _spawn(["status", "--watch", "--interval", "0.2"], repo)
    seen = bytearray()
    try:
        _read_until(proc, seen, b"Logs: ")
        assert seen.count(b"== ") == 1 and b"t-1  open" in seen
        assert _quiet_for(proc, 1.0) == b""  # nothing changed: nothing printed again
        assert cli("task", "add", "second", cwd=repo).code == 0
        _read_until(proc, seen, b"t-2  open")
        assert seen.count(b"Pipeline status") == 2
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read() if proc.stderr else b""
    assert b"Traceback" not in err and ESC not in seen


def test_top_ends_quietly_when_its_reader_goes_away(repo: Path, cli: CLI) -> None:
    assert cli("task", "add", "first", cwd=repo).code == 0
    proc = _spawn(["top", "--interval", "0.2"], repo)
    seen = bytearray()
    try:
        _read_until(proc, seen, b"t-1  open")  # `top` is `status --watch`
        assert proc.stdout is not None
        proc.stdout.close()  # as `| head -5` does once it has its lines
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert b"Traceback" not in (proc.stderr.read() if proc.stderr else b"")


def _sample_with_two_attempts(tmp_path: Path) -> tuple[Sample, str]:
    sample = make_sample(tmp_path)
    task = sample.add("Make it")
    # The first attempt fails its check (a file says BAD); the second passes and lands.
    sample.plan({task: [{"files": {f"{task}.txt": "BAD\n"}}, {}]})
    done = sample.cli("run", "--until-idle")
    assert done.returncode == 0, done.stdout + done.stderr
    return sample, task


def test_logs_print_the_latest_attempt_of_agent_and_checks(tmp_path: Path) -> None:
    sample, task = _sample_with_two_attempts(tmp_path)
    done = sample.cli("logs", task)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.count("fake-agent: reading") == 1  # the agent's log, of the latest attempt only
    assert "checked" in out and "bad files: []" in out  # the check's own output
    assert "bad files: ['" not in out  # not the first, failed attempt's
    assert "[verify] verify: passed" in out  # the attempt's log, a line per phase
    assert out.startswith("==> ") and f"/logs/tasks/{task}/" in out
    runs = sample.task(task)["runs"]
    failed = next(r for r in runs if r["phase"] == "verify" and r["status"] == "failure")
    one = sample.cli("logs", task, "--run", str(failed["id"]))
    assert one.returncode == 0 and "bad files: ['" in one.stdout and "fake-agent" not in one.stdout
    unknown = sample.cli("logs", task, "--run", "9999")
    assert unknown.returncode == 1 and f"{task} has no run 9999" in unknown.stderr
    assert f"{failed['id']} (verify, failure)" in unknown.stderr  # names the task's runs
    missing = sample.cli("logs", "t-404")
    assert missing.returncode == 1 and "t-404" in missing.stderr


def test_logs_refuse_a_bad_task_id_before_touching_anything(cli: CLI, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "fresh")
    for bad in ("../etc", "--id=x"):
        done = cli("logs", "--", bad, cwd=repo) if bad.startswith("-") else cli("logs", bad, cwd=repo)
        assert done.code == 1 and "Invalid task id" in done.err, done
    assert not default_root(repo).exists()


WRITER = """
import sys, time
with open(sys.argv[1], "a") as log:
    for i in range(12):
        log.write(f"line {i}\\n"); log.flush(); time.sleep(0.15)
"""


def test_logs_follow_a_log_as_it_grows_and_end_with_its_run(cli: CLI, repo: Path) -> None:
    assert cli("task", "add", "grow", "--id", "t-g", cwd=repo).code == 0
    log = default_root(repo) / "logs" / "tasks" / "t-g" / "t-g-1.log"
    log.parent.mkdir(parents=True)
    log.write_text("")
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(log)])
    db = sqlite3.connect(default_root(repo) / "state.db")
    with db:
        db.execute("UPDATE tasks SET status = 'in_progress' WHERE id = 't-g'")
        db.execute(
            "INSERT INTO pipeline_runs (task_id, phase, patchset, status, started_at, log_path, pid) "
            "VALUES ('t-g', 'dev', 0, 'running', ?, ?, ?)",
            (NOW_ISO, str(log), writer.pid),
        )
    db.close()
    follower = _spawn(["logs", "t-g", "-f"], repo)
    seen = bytearray()
    try:
        _read_until(follower, seen, b"line 3")
        assert writer.poll() is None  # printed while the run is still writing
        _read_until(follower, seen, b"line 11")
        assert writer.wait(timeout=20) == 0
        # The run's process ended and no runner will take a next step: the attempt is over.
        assert follower.wait(timeout=20) == 0
    finally:
        for proc in (writer, follower):
            if proc.poll() is None:
                proc.kill()
    assert follower.stdout is not None
    seen += follower.stdout.read()
    assert bytes(seen).count(b"==> ") == 1
    assert [f"line {i}" for i in range(12)] == [line for line in seen.decode().splitlines() if line.startswith("line")]


def test_logs_follow_an_attempt_from_its_agent_through_its_checks(tmp_path: Path) -> None:
    sample = make_sample(tmp_path)
    task = sample.add("Slow one")
    sample.plan({task: [{"sleep": 1.5}]})
    daemon = sample.start()
    try:
        wait_for(lambda: sample.status()["active_dev_runs"] == 1, 30, daemon)
        follower = subprocess.run(
            [sys.executable, "-m", "runner", "logs", task, "-f"], cwd=sample.repo, env=sample.full_env(),
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert follower.returncode == 0, follower.stderr
        # It ended with the attempt: the task landed, and everything up to then was printed.
        assert sample.status()["done"] == 1
    finally:
        stop(daemon)
    out = follower.stdout
    assert "fake-agent: reading" in out and "bad files: []" in out
    assert out.index("fake-agent: reading") < out.index("bad files: []")
    assert json.loads(sample.cli("status", "--json").stdout)["active_runs"] == []


def test_watch_on_a_terminal_is_a_live_view_that_ctrl_c_ends(cli: CLI, repo: Path) -> None:
    assert cli("task", "add", "first", cwd=repo).code == 0
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "status", "--watch", "--interval", "0.2"], cwd=repo, env=clean_env(),
        stdout=slave, stderr=subprocess.PIPE,
    )  # fmt: skip
    os.close(slave)
    shown = b""
    try:
        deadline = time.time() + 20
        while b"t-1" not in shown and time.time() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                shown += os.read(master, 65536)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert b"t-1" in shown and ESC in shown  # drawn by rich, in colour
    assert b"Traceback" not in (proc.stderr.read() if proc.stderr else b"")
