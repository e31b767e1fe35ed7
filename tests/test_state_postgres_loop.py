"""The runner's main loop with its state on a real PostgreSQL server: `run --once` from cron, as
on SQLite, with a fake agent on a small real repository."""

from __future__ import annotations

from pathlib import Path

from tests.loop_helpers import make_sample


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
