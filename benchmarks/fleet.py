"""Benchmark: the makespan of a backlog worked by several runners sharing PostgreSQL and a remote.

    .venv/bin/python benchmarks/fleet.py [--runners 3] [--concurrency 4] [--tasks 96] [--seconds 1]

Starts a PostgreSQL server on loopback (tests/pg_server.py), makes a bare remote and one clone and
root per runner, adds ``--tasks`` tasks, and starts the runners (`pipeline-runner run`, `remote:
origin`, `state: {url}`), each with ``--concurrency`` agent slots; an agent sleeps ``--seconds``
and commits one file; the one check is `true`. The makespan runs from the start of the runners to
the last task on the remote's base. The ideal is tasks / (runners x concurrency) x seconds.
Then the same backlog with one runner on SQLite with runners x concurrency slots and no remote,
for comparison. Prints both with their ratio to the ideal.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import GIT_ENV, command_env

AGENT = textwrap.dedent(
    """\
    import os, subprocess, time
    time.sleep(float(os.environ["BENCH_AGENT_SECONDS"]))
    tid = os.environ["PIPELINE_TASK_ID"]
    open(f"{tid}.txt", "w").write("done\\n")
    subprocess.run(["git", "add", f"{tid}.txt"], check=True)
    subprocess.run(["git", "commit", "-q", "-m", f"Do {tid}\\n\\nTask-Id: {tid}\\n"], check=True)
    """
)


def git(cwd: Path, *args: str) -> str:
    """Run git; its output."""
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def landed(git_dir: Path) -> int:
    """Task commits on base in ``git_dir``."""
    return git(git_dir, "log", "--format=%B", "live").count("Task-Id: ")


def fleet(
    where: Path, runners: int, concurrency: int, tasks: int, seconds: float, url: str | None,
    integrate: dict[str, int] | None = None,
) -> float:
    """Seconds from the runners' start to the last task landed."""
    seed = where / "seed"
    seed.mkdir()
    git(seed, "init", "-q", "-b", "live")
    (seed / "README.md").write_text("# sample\n")
    git(seed, "add", ".")
    git(seed, "commit", "-qm", "init")
    agent = where / "agent.py"
    agent.write_text(AGENT)
    remote = where / "remote.git"
    if url is not None:
        git(where, "clone", "-q", "--bare", str(seed), str(remote))
    clones = []
    for n in range(runners):
        clone = where / f"h{n}"
        if url is not None:
            git(where, "clone", "-q", str(remote), str(clone))
        else:
            clone = seed
        config: dict[str, object] = {
            "base": "live", "root": str(where / f"h{n}.root"), "concurrency": concurrency, "interval": 1,
            "agent": {"preset": "command", "command": [sys.executable, str(agent), "{prompt_file}"], "timeout": 120},
            "phases": {"verify": {"run": ["true"]}},
        }  # fmt: skip
        if url is not None:
            config.update(state={"url": url}, remote="origin")
        if integrate:
            config["integrate"] = integrate
        (clone / "pipeline.yaml").write_text(yaml.safe_dump(config))
        (clone / ".git" / "info" / "exclude").write_text("pipeline.yaml\n")
        clones.append(clone)
    env = command_env(BENCH_AGENT_SECONDS=str(seconds))
    lines = "\n".join(f'{{"id": "t-{i}", "title": "task {i}"}}' for i in range(tasks)) + "\n"
    (where / "tasks.jsonl").write_text(lines)
    subprocess.run([sys.executable, "-m", "runner", "task", "import", str(where / "tasks.jsonl")], cwd=clones[0],
                   env=env, check=True, capture_output=True)  # fmt: skip
    started = time.perf_counter()
    procs = []
    for n, clone in enumerate(clones):
        with open(where / f"h{n}.log", "wb") as log:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "runner", "run"], cwd=clone, env=env, stdout=subprocess.DEVNULL, stderr=log,
                start_new_session=True,
            ))  # fmt: skip
    target = remote if url is not None else seed
    try:
        while landed(target) < tasks:
            if time.perf_counter() - started > 600:
                raise SystemExit(f"not done after 600 s: see {where}")
            time.sleep(0.1)
        return time.perf_counter() - started
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    """Run the fleet on PostgreSQL, then one runner on SQLite; print the makespans."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runners", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=96)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--window", type=int, help="integrate.window of every runner (default: its concurrency)")
    parser.add_argument("--max-waiting", type=int, help="integrate.max_waiting of every runner")
    parser.add_argument("--fleet-only", action="store_true", help="skip the one runner on SQLite")
    args = parser.parse_args(argv)
    integrate = {k: v for k, v in (("window", args.window), ("max_waiting", args.max_waiting)) if v}
    from tests.pg_server import server_binaries, start_server

    binaries = server_binaries()
    if binaries is None:
        raise SystemExit("no PostgreSQL server installed (Debian's postgresql)")
    slots = args.runners * args.concurrency
    ideal = args.tasks / slots * args.seconds
    server = start_server(binaries)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
            shared = fleet(
                Path(tmp), args.runners, args.concurrency, args.tasks, args.seconds, server.database(), integrate
            )
    finally:
        server.stop()
    print(f"{args.tasks} tasks, agents of {args.seconds:g} s, ideal {ideal:.1f} s; integrate: {integrate or 'defaults'}")
    print(f"{args.runners} runners x {args.concurrency} on PostgreSQL + remote: {shared:.1f} s ({shared / ideal:.2f}x)")
    if not args.fleet_only:
        with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
            single = fleet(Path(tmp), 1, slots, args.tasks, args.seconds, None, integrate)
        print(f"1 runner x {slots} on SQLite, no remote: {single:.1f} s ({single / ideal:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
