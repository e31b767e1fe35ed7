"""`run --once` / `--until-idle` as cron and CI see them: the summary, exit codes, `-q`, notify
commands run by the real loop, and SIGTERM ending the daemon cleanly."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

from tests.loop_helpers import Sample, make_sample, stop, wait_for

# A notify command: appends its argv and what it read on stdin to a file, one JSON line a call.
RECORDER = """\
import json, sys
data = sys.stdin.read()
with open(sys.argv[1], "a") as out:
    out.write(json.dumps({"argv": sys.argv[2:], "stdin": json.loads(data)}) + "\\n")
"""


def recorder(tmp_path: Path, on: list[str]) -> tuple[dict[str, Any], Path]:
    script = tmp_path / "record.py"
    script.write_text(RECORDER)
    out = tmp_path / "notified.jsonl"
    rule = {"on": on, "run": [sys.executable, str(script), str(out), "{event}", "{task_id}", "{title}"]}
    return rule, out


def notified(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


def hopeless_and_fine(tmp_path: Path, **config: Any) -> Sample:
    """t-1 always fails its check (needs help after one attempt); t-2 lands."""
    s = make_sample(tmp_path, limits={"max_retries": 1}, concurrency=2, **config)
    s.plan({"t-1": [{"files": {"x.txt": "BAD\n"}}]})
    s.add("hopeless")
    s.add("fine $(touch pwned)")
    return s


def test_once_exit_codes_quiet_output_and_notifications(tmp_path: Path) -> None:
    rule, out = recorder(tmp_path, ["needs_help", "landed"])
    s = hopeless_and_fine(tmp_path, notify=[rule])
    codes, stdout, stderr = [], "", ""
    for _ in range(60):
        done = s.cli("-q", "run", "--once")
        codes.append(done.returncode)
        stdout += done.stdout
        stderr += done.stderr
        doc = s.status()
        if doc["needs_help"] == 1 and doc["done"] == 1:
            break
    else:
        raise AssertionError(f"not settled: {s.status()}")
    # The invocation that sent t-1 to needs_help exits 3; the others 0.
    assert codes.count(3) == 1 and set(codes) <= {0, 3}, codes
    # -q: exactly the needs-help event, one line, nothing on stderr.
    assert stdout.splitlines() == [stdout.splitlines()[0]] and stdout.startswith("needs help: t-1 hopeless: ")
    assert "max_retries=1" in stdout
    assert stderr == ""
    # Once more, nothing new: exit 0 (t-1 needed help before this run), silent.
    again = s.cli("-q", "run", "--once")
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    calls = notified(out)
    assert sorted(c["argv"][0] for c in calls) == ["landed", "needs_help"]
    landed = next(c for c in calls if c["argv"][0] == "landed")
    # The title is one inert argument, never run by a shell.
    assert landed["argv"] == ["landed", "t-2", "fine $(touch pwned)"]
    assert not (s.repo / "pwned").exists()
    assert landed["stdin"]["event"] == "landed" and landed["stdin"]["task_id"] == "t-2"
    assert "integrated into live" in landed["stdin"]["message"]
    helped = next(c for c in calls if c["argv"][0] == "needs_help")
    assert "max_retries=1" in helped["stdin"]["message"] and helped["stdin"]["text"].startswith("needs help: t-1")


def test_until_idle_summary_and_exit_code(tmp_path: Path) -> None:
    s = hopeless_and_fine(tmp_path)
    done = s.cli("run", "--until-idle")
    assert done.returncode == 3, done.stdout + done.stderr
    paragraph = done.stdout.splitlines()[0]
    assert paragraph.startswith("This run: 1 task landed (t-2); 1 attempt was rejected; ")
    assert "1 task went to needs help (t-1)" in paragraph and "$0.00 (0 cents)" in paragraph
    assert "t-1  needs help: hopeless" in done.stdout  # what waits for a person, listed
    # Nothing left: still 3 (t-1 waits for a person), and a summary of nothing.
    again = s.cli("run", "--until-idle")
    assert again.returncode == 3
    assert again.stdout.startswith("This run: 0 tasks landed; 0 attempts were rejected; 0 tasks went to needs help")
    quiet = s.cli("-q", "run", "--until-idle")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (3, "", "")


def test_notify_command_that_hangs_or_fails_never_stops_the_loop(tmp_path: Path) -> None:
    rule, out = recorder(tmp_path, ["landed"])
    hang = {"on": ["landed"], "run": ["sleep", "30"], "timeout": 1}
    fail = {"on": ["landed"], "run": ["sh", "-c", "echo no route to chat >&2; exit 7"]}
    missing = {"on": ["landed"], "run": ["no-such-notifier-xyz"]}
    s = make_sample(tmp_path, notify=[hang, fail, missing, rule])
    s.add("a")
    s.add("b")
    done = s.cli("run", "--until-idle", timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert s.status()["done"] == 2
    # Both landings told by the command after the broken ones, in the order they landed.
    assert [c["argv"][:2] for c in notified(out)] == [["landed", t] for t in reversed(s.trailers())]
    assert "'sleep' for landed was stopped after its timeout of 1s" in done.stderr
    assert "'sh' for landed exited 7" in done.stderr
    assert "no-such-notifier-xyz" in done.stderr and "could not run" in done.stderr
    assert "no route to chat" in (s.root / "logs" / "notify.log").read_text()


def test_sigterm_stops_the_daemon_with_exit_0_and_the_next_start_harvests(tmp_path: Path) -> None:
    s = make_sample(tmp_path, concurrency=1)
    s.plan({"t-1": [{"sleep": 2}]})
    s.add("slow")
    proc = s.start()
    wait_for(lambda: s.status()["active_dev_runs"] == 1, 30, proc)
    out = stop(proc, signal.SIGTERM)
    assert proc.returncode == 0 and "stopped by SIGTERM" in out, out
    assert s.status()["in_progress"] == 1  # the agent was left running, as on Ctrl-C
    done = s.cli("run", "--until-idle")
    assert done.returncode == 0, done.stdout + done.stderr
    assert s.status()["done"] == 1
