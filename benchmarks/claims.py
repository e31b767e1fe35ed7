"""Benchmark: claims per second and claim latency with N runner processes sharing one PostgreSQL state.

    .venv/bin/python benchmarks/claims.py [--runners 1,2,4,8,16,32] [--tasks 1000] [--slots 4]

Starts a PostgreSQL server on loopback (Debian's binaries, as the tests do: tests/pg_server.py; no
fsync, so the figures leave out the disk), and for each N: a new database with ``--tasks`` open
tasks, and N processes that each join the fleet as a runner (runner.fleet) and then do what the
loop's develop step does with instant agents, until no task is left: read the ready tasks
(``BuiltinTaskStore.ready``), take its share of them (``runner.fleet.share_of_queue``; with
``--same-order`` every runner takes the head, to compare), and claim the first ``--slots``, each in its own write
transaction (fenced, as every write of a runner is: ``claimable``, move to in progress, the dev
attempt's row and its run id), exactly as ``Pipeline.claim`` does. A claim another runner made
first is a collision (the task is no longer open). Prints per N: claims per second (all runners,
first start to last end), the p50 and p99 of one claim transaction, the p99 of a whole cycle
(ready + claims), and the share of claims lost to collisions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runner.fleet import Fleet, share_of_queue
from runner.state import Phase, Runs, open_db
from runner.tasks import BuiltinTaskStore, NewTask, TaskStatus


def worker(url: str, index: int, slots: int, go: float, spread: bool) -> dict[str, object]:
    """One runner: join, then cycles of ready + claims until nothing is ready."""
    db = open_db(url)
    fleet = Fleet(db, root=Path(f"/bench/runner-{index}"), lease_seconds=60, host="bench")
    fleet.join()
    store, runs = BuiltinTaskStore(db), Runs(db, owner=fleet.id)
    while time.time() < go:
        time.sleep(0.001)
    claims: list[float] = []
    cycles: list[float] = []
    lost = 0
    started = time.time()
    while True:
        cycle_start = time.perf_counter()
        ready = store.ready()
        if not ready:
            break
        if spread:
            ready = share_of_queue(ready, fleet.rank()[0], slots)
        for task in ready[:slots]:
            t0 = time.perf_counter()
            with db.write():
                ok = store.claimable(task.id)
                if ok:
                    store.set_status(task.id, TaskStatus.IN_PROGRESS)
                    row = runs.start(task.id, Phase.DEV, task.patchset)
                    runs.update(row, agent_run_id=f"{task.id}-{row}")
            claims.append(time.perf_counter() - t0)
            lost += 0 if ok else 1
        cycles.append(time.perf_counter() - cycle_start)
    ended = time.time()
    db.close()
    return {"claims": claims, "cycles": cycles, "lost": lost, "started": started, "ended": ended}


def p(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def one(url: str, runners: int, tasks: int, slots: int, spread: bool) -> str:
    """Fill a database and race ``runners`` processes over it; the figures' line."""
    db = open_db(url)
    BuiltinTaskStore(db).import_tasks([NewTask(title=f"task {i}", id=f"t-{i}") for i in range(tasks)])
    db.close()
    go = time.time() + 2.0 + runners * 0.15  # every process started and joined before the race
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", url, str(i), str(slots), str(go), "1" if spread else "0"],
            stdout=subprocess.PIPE, text=True,
        )
        for i in range(runners)
    ]
    results = [json.loads(proc.communicate()[0]) for proc in procs]
    claims = [c for r in results for c in r["claims"]]
    cycles = [c for r in results for c in r["cycles"]]
    lost = sum(r["lost"] for r in results)
    wall = max(r["ended"] for r in results) - min(r["started"] for r in results)
    won = len(claims) - lost
    assert won == tasks, f"{won} claims for {tasks} tasks"
    return (
        f"{runners:>7}  {won / wall:>8.0f}/s  {statistics.median(claims) * 1000:>7.1f}  {p(claims, 0.99) * 1000:>7.1f}"
        f"  {p(cycles, 0.99) * 1000:>9.1f}  {lost / len(claims):>6.0%}"
    )


def main(argv: list[str] | None = None) -> int:
    """Start a server, race each number of runners, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runners", default="1,2,4,8,16,32")
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--same-order", action="store_true", help="every runner takes the queue's head (no share)")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        url, index, slots, go, spread = args.worker
        print(json.dumps(worker(url, int(index), int(slots), float(go), spread == "1")))
        return 0
    from tests.pg_server import server_binaries, start_server

    binaries = server_binaries()
    if binaries is None:
        raise SystemExit("no PostgreSQL server installed (Debian's postgresql)")
    server = start_server(binaries)
    try:
        print(f"{args.tasks} tasks, {args.slots} claims per cycle per runner, PostgreSQL on loopback")
        print("runners  claims/s  p50 ms  p99 ms  cycle p99  lost")
        for runners in (int(n) for n in args.runners.split(",")):
            print(one(server.database(), runners, args.tasks, args.slots, not args.same_order), flush=True)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
