"""Time from a task's start to its agent process starting, on a large and a small repository, with
a cold workspace (a new checkout) and a warm one (a workspace a finished task released, moved to
base's tip, one commit further). Prints its figures; asserts nothing.

    .venv/bin/python benchmarks/task_start.py [--large 20000] [--small 10] [--repeat 3]

The start is the loop's develop step being called with one open task; the end is the first line
of the agent (a Python script that records time.time()), so both include the agent interpreter's
own start-up, which is printed on its own line.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import GIT_ENV, git
from runner import registries
from runner.config import load_config
from runner.layout import Layout
from runner.logs import setup_stderr
from runner.scheduler import Pipeline
from runner.state import open_db
from runner.tasks import BuiltinTaskStore, NewTask, TaskStatus

AGENT = """\
import os, sys, time
started = time.time()
open(os.path.join(sys.argv[1], os.environ["PIPELINE_TASK_ID"]), "w").write(repr(started))
"""


def make_repo(path: Path, files: int) -> Path:
    """A repository of ``files`` small files, 100 to a directory."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "live")
    for index in range(files):
        folder = path / "src" / f"d{index // 100:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{index:06d}.txt").write_text(f"file {index}\n" * 8)
    (path / ".git" / "info" / "exclude").write_text("_/\npipeline.yaml\nagent.py\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


def move_base(repo: Path, step: int) -> None:
    """One commit on base: a file changed, as other tasks land between two starts."""
    (repo / "src" / "d0000" / "f000000.txt").write_text(f"changed {step}\n")
    git(repo, "commit", "-q", "-am", f"step {step}")


def starts(work: Path, files: int, repeat: int) -> dict[str, float]:
    """Median seconds from the develop step to the agent's first line, cold and warm."""
    repo = make_repo(work / "repo", files)
    marks = work / "marks"
    marks.mkdir()
    (work / "agent.py").write_text(AGENT)
    (repo / "pipeline.yaml").write_text(
        f"base: live\nroot: {work / 'root'}\nconcurrency: 1\ninterval: 1\n"
        f"agent: {{preset: command, command: ['{sys.executable}', '-I', '-S', '{work / 'agent.py'}', '{marks}']}}\n"
        "phases: {test: {run: [['true']]}}\n"
    )
    config = load_config(repo / "pipeline.yaml", registries=registries.names()).config
    Layout(config.root).ensure()
    figures: dict[str, list[float]] = {"cold": [], "warm": []}
    for round_ in range(repeat):
        for kind in ("cold", "warm"):
            db = open_db(config.state_db)
            store = BuiltinTaskStore(db)
            pipeline = Pipeline(config, db)
            # None on a version without warm workspaces: both kinds are then cold starts.
            warm = getattr(pipeline.workspaces, "warm", None)
            if warm is not None:
                warm.tidy()
                for name in warm.entries():  # the cold start finds none
                    os.rename(warm.dir / name, work / f"gone-{name}")
            if kind == "warm" and warm is not None:
                # A workspace a task used and released, base a commit further since.
                pipeline.workspaces.acquire(f"w-{round_}", "live")
                pipeline.workspaces.release(f"w-{round_}")
                assert len(warm.entries()) == 1
            move_base(repo, len(figures["cold"]) * 2 + len(figures["warm"]))
            task = store.add(NewTask(title=f"{kind} {round_}"))
            began = time.time()
            pipeline.develop_step()
            mark = marks / task.id
            while not mark.exists() or not mark.read_text():
                time.sleep(0.001)
            figures[kind].append(float(mark.read_text()) - began)
            while pipeline.runs.running():
                pipeline.harvest_step()
                time.sleep(0.01)
            store.set_status(task.id, TaskStatus.CANCELLED)  # its agent made no commit: not again
            pipeline.close()
    return {kind: statistics.median(values) for kind, values in figures.items()}


def interpreter_start(repeat: int = 5) -> float:
    """Median seconds for the agent's interpreter to reach its first line."""
    values = []
    for _ in range(repeat):
        began = time.time()
        out = subprocess.run(
            [sys.executable, "-I", "-S", "-c", "import time; print(repr(time.time()))"],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        values.append(float(out) - began)
    return statistics.median(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large", type=int, default=20000, help="files in the large repository")
    parser.add_argument("--small", type=int, default=10, help="files in the small repository")
    parser.add_argument("--repeat", type=int, default=3, help="starts of each kind (the median is printed)")
    args = parser.parse_args(argv)
    os.environ.update(GIT_ENV)
    setup_stderr(-1)
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-", ignore_cleanup_errors=True) as tmp:
        small = starts(Path(tmp) / "small", args.small, args.repeat)
        large = starts(Path(tmp) / "large", args.large, args.repeat)
    print(f"task start to agent start (median of {args.repeat}):")
    print(f"  {args.small:>6} files: cold {1000 * small['cold']:8.1f} ms   warm {1000 * small['warm']:8.1f} ms")
    print(f"  {args.large:>6} files: cold {1000 * large['cold']:8.1f} ms   warm {1000 * large['warm']:8.1f} ms")
    print(f"  large / small:  cold {large['cold'] / small['cold']:6.1f}x      warm {large['warm'] / small['warm']:6.1f}x")
    print(f"  of which the agent interpreter's own start-up: {1000 * interpreter_start():.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
