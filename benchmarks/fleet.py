"""Benchmark: the makespan of a backlog worked by several runners sharing PostgreSQL and a remote.

    .venv/bin/python benchmarks/fleet.py [--runners 3] [--concurrency 4] [--tasks 96] [--seconds 1]

Starts a PostgreSQL server on loopback (tests/pg_server.py), makes a bare remote and one clone and
root per runner, adds ``--tasks`` tasks, and starts the runners (`pipeline-runner run`, `remote:
origin`, `state: {url}`), each with ``--concurrency`` agent slots; an agent sleeps ``--seconds``
and commits one file; the one check is `true`. The makespan runs from the start of the runners to
the last task on the remote's base. The ideal is tasks / (runners x concurrency) x seconds.
Then the same backlog with one runner on SQLite with runners x concurrency slots and no remote,
for comparison. Prints both with their ratio to the ideal, and the CPU time the runners, their
agents, git and the checks took (PostgreSQL's server not included) next to what the machine's
cores offer over the ideal makespan (PostgreSQL's server apart): when the work needs more than that, no design reaches the
ideal on this machine.
"""

from __future__ import annotations

import argparse
import os
import resource
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


def children_cpu() -> float:
    """CPU seconds (user and system) of the processes this one has waited for, and theirs."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def server_cpu(data: Path) -> float:
    """CPU seconds of the PostgreSQL server whose data directory is ``data``: its postmaster's and
    its ended backends' (a backend's own time is added when its connection closes)."""
    pid = (data / "postmaster.pid").read_text().split()[0]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(n) for n in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def fleet(
    where: Path, runners: int, concurrency: int, tasks: int, seconds: float, url: str | None,
    integrate: dict[str, int] | None = None,
) -> tuple[float, float]:
    """Seconds from the runners' start to the last task landed, and the CPU seconds it took."""
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
    cpu = children_cpu()
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
        makespan = time.perf_counter() - started
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=60)
    return makespan, children_cpu() - cpu


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
            url = server.database()
            before = server_cpu(server.dir / "data")
            shared, shared_cpu = fleet(
                Path(tmp), args.runners, args.concurrency, args.tasks, args.seconds, url, integrate
            )
            time.sleep(1)  # the backends of the runners' connections end
            database_cpu = server_cpu(server.dir / "data") - before
    finally:
        server.stop()
    cores = os.cpu_count() or 1
    print(f"{args.tasks} tasks, agents of {args.seconds:g} s, ideal {ideal:.1f} s; integrate: {integrate or 'defaults'}")
    print(f"{cores} cores offer {cores * ideal:.1f} CPU-s over the ideal makespan")
    print(f"{args.runners} runners x {args.concurrency} on PostgreSQL + remote: {shared:.1f} s ({shared / ideal:.2f}x), "
          f"{shared_cpu:.1f} CPU-s and PostgreSQL's {database_cpu:.1f}")  # fmt: skip
    if not args.fleet_only:
        with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
            single, single_cpu = fleet(Path(tmp), 1, slots, args.tasks, args.seconds, None, integrate)
        print(f"1 runner x {slots} on SQLite, no remote: {single:.1f} s ({single / ideal:.2f}x), {single_cpu:.1f} CPU-s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
