"""Cost of running one short git command, the loop's most frequent operation. Prints; asserts nothing.

    .venv/bin/python benchmarks/bench_spawn.py [--calls 300]

Compares the runner's own process layer (runner.procs, on subprocess) with the `sh` library, when
`sh` is importable (`.venv/bin/pip install sh` to include it). This is the measurement behind
running processes through subprocess: the loop runs a dozen git commands per task.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runner import procs


def per_call(fn: Callable[[], object], calls: int) -> float:
    """Mean milliseconds per call, after one warm-up call."""
    fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1000


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp:
        repo = Path(tmp)
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
        argv = ["git", "rev-parse", "--git-dir"]
        print(f"one `{' '.join(argv)}`, mean of {args.calls} calls:")
        print(
            f"  runner.procs.run (subprocess):  {per_call(lambda: procs.run(argv, cwd=repo), args.calls):.2f} ms"
        )
        try:
            import sh  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            print("  sh:                             not installed (pip install sh to compare)")
            return 0
        git = sh.Command("git").bake(_cwd=str(repo), _tty_out=False)
        print(
            f"  sh {sh.__version__}:                       {per_call(lambda: str(git(*argv[1:])), args.calls):.2f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
