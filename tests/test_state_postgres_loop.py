"""The runner's main loop with its state on a real PostgreSQL server: `run --once` from cron, as
on SQLite, with a fake agent on a small real repository."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.loop_helpers import make_sample, wait_for
from tests.pg_server import server_binaries, start_server


def test_run_once_develops_verifies_and_lands_tasks_with_the_state_on_postgresql(
    tmp_path: Path, pg_url: str
) -> None:
    s = make_sample(tmp_path, concurrency=2, state={"url": pg_url})
    # t-1 is rejected once by the check: its feedback must reach the next prompt through the state.
    s.plan({"t-1": [{"files": {"x.txt": "BAD value\n"}}, {"files": {"x.txt": "good\n"}}]})
    first = s.add("fix x")
    second = s.add("beside x")
    s.run_once_until(lambda d: d["done"] == 2, limit=10)
    assert sorted(s.trailers()) == sorted([first, second])
    assert "bad files: ['x.txt']" in (s.state / "t-1.1.prompt").read_text()
    task = s.task(first)
    assert [r["phase"] + ":" + r["status"] for r in task["runs"]] == [
        "dev:success", "verify:failure", "dev:success", "verify:success", "integrate:success",
    ]  # fmt: skip
    assert task["patchset"] == 1
    status = s.status()
    assert status["initialized"] and status["done"] == 2 and status["cost_cents"] == 0
    # Nothing of the state went to a SQLite file under the root.
    assert not (s.root / "state.db").exists()


def test_a_database_that_goes_away_stops_the_runner_and_charges_no_task(tmp_path: Path) -> None:
    bin_dir = server_binaries()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server installed (Debian's postgresql: /usr/lib/postgresql/*/bin/initdb)")
    server = start_server(bin_dir)  # its own: this test stops it
    try:
        s = make_sample(tmp_path, concurrency=1, interval=0.2, state={"url": server.database()})
        s.plan({"t-1": [{"sleep": 2, "files": {"x.txt": "ok\n"}}]})
        s.add("x")
        runner = s.start()
        wait_for(lambda: s.status()["in_progress"] == 1, 30, runner)
        server.kill()  # while the agent works
        out, _ = runner.communicate(timeout=60)
        assert runner.returncode == 1, out
        assert "cannot be used" in out and "Traceback" not in out
        assert server.start()
        # The agent outlived the runner; the next run takes its commit up, and nothing was charged.
        s.run_once_until(lambda d: d["done"] == 1, limit=6)
        assert [(r["phase"], r["status"]) for r in s.task("t-1")["runs"]] == [
            ("dev", "success"), ("verify", "success"), ("integrate", "success"),
        ]  # fmt: skip
    finally:
        server.stop()
