"""Benchmark: how long the read-only commands take to start, end to end, as a person runs them.

    .venv/bin/python benchmarks/startup.py [--repeat 12] [--tasks 100] [--against REV]

Builds a pipeline of ``--tasks`` tasks with history (benchmarks/store.py's store), then runs each
command as its own process (``python -m runner``, as the console script does) ``--repeat`` times,
the variants interleaved so that a busy machine weighs on each alike, and prints the best and
the median wall time of each:

- ``kept``: the usual case, the config unchanged since the last command (read from the snapshot
  runner.configsnap keeps);
- ``full``: the first command after the config changed (no snapshot: validated in full);
- ``REV``: the same command in the code of an earlier commit (``--against``; its files are taken
  from git into a temporary directory and put first on the import path);
- ``python -c pass`` beside them: the interpreter's own start-up.

Bytecode caches are allowed, as on any machine (PYTHONDONTWRITEBYTECODE is dropped), and warmed
by one unmeasured run of each. Prints its figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import command_env
from benchmarks.store import build

PROJECT = Path(__file__).resolve().parents[1]
COMMANDS = {"status": ["status"], "task list": ["task", "list"], "task show": ["task", "show", "d-1"]}


def environment(cache: Path, code: Path | None = None) -> dict[str, str]:
    """The environment of a measured command: caches allowed, snapshots in ``cache``."""
    env = command_env(XDG_CACHE_HOME=str(cache))
    if code is not None:
        env["PYTHONPATH"] = str(code)
    return env


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Seconds one process takes; it must exit 0."""
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{argv} exited {done.returncode}: {done.stderr[-2000:]}")
    return took


def export(rev: str, where: Path) -> Path:
    """The files of ``rev`` of this project, under ``where``."""
    tar = subprocess.run(["git", "archive", "--format=tar", rev], cwd=PROJECT, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(where, filter="data")
    return where


def measure(repeat: int, tasks: int, against: str | None = None) -> dict[tuple[str, str], list[float]]:
    """Seconds of each (command, variant) and of ("python -c pass", ""): ``repeat`` samples each."""
    runner = [sys.executable, "-m", "runner", "-c", "pipeline.yaml"]
    samples: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        where = Path(tmp)
        repo = build(where, tasks)
        kept_cache = where / "cache-kept"
        # Each variant: the code it runs (None: this one) and where its snapshots go.
        variants: dict[str, tuple[Path | None, Path]] = {"kept": (None, kept_cache), "full": (None, where)}
        if against:
            variants[against] = (export(against, where / "old"), where / "cache-old")
        for round_ in range(repeat + 1):  # the first round warms the caches and is not counted
            for name, command in COMMANDS.items():
                for variant, (code, cache) in variants.items():
                    if variant == "full":
                        cache = Path(tempfile.mkdtemp(dir=where))  # nothing kept: a fresh cache each time
                    took = timed([*runner, *command], repo, environment(cache, code))
                    if round_:
                        samples.setdefault((name, variant), []).append(took)
            took = timed([sys.executable, "-c", "pass"], repo, environment(kept_cache))
            if round_:
                samples.setdefault(("python -c pass", ""), []).append(took)
    return samples


def main(argv: list[str] | None = None) -> int:
    """Time every command in every variant, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=12)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--against", metavar="REV", help="also time the code of this earlier commit")
    args = parser.parse_args(argv)
    samples = measure(args.repeat, args.tasks, args.against)
    variants = ["kept", "full", *([args.against] if args.against else [])]
    print(f"start-up, best / median of {args.repeat} (ms), {args.tasks} tasks; load average {os.getloadavg()[0]:.2f}")
    print("  ".join(f"{h:<16}" for h in ["command", *variants]))
    for name in COMMANDS:
        cells = [f"{min(r) * 1000:.0f} / {statistics.median(r) * 1000:.0f}" for r in (samples[(name, v)] for v in variants)]
        print("  ".join(f"{c:<16}" for c in [name, *cells]))
    bare = samples[("python -c pass", "")]
    print(f"{'python -c pass':<16}  {min(bare) * 1000:.0f} / {statistics.median(bare) * 1000:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
