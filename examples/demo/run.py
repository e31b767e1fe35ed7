"""The bundled example: a throwaway copy of a tiny project, its tasks, and pipeline-runner over it.

Never touches the repository you run it from: everything happens in a temporary directory.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def sh(*argv: str, cwd: Path) -> None:
    print("$", " ".join(argv), flush=True)
    subprocess.run(argv, cwd=cwd, check=True)


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="pipeline-demo-"))
    project = work / "project"
    shutil.copytree(HERE / "project", project)
    git = ["git", "-c", "user.name=demo", "-c", "user.email=demo@example.com"]
    sh(*git, "init", "-q", "-b", "live", cwd=project)
    sh(*git, "add", "-A", cwd=project)
    sh(*git, "commit", "-q", "-m", "Sample project", cwd=project)
    runner = [sys.executable, "-m", "runner"]
    sh(*runner, "task", "import", str(HERE / "tasks.yaml"), cwd=project)
    sh(*runner, "task", "list", cwd=project)
    sh(*runner, "status", cwd=project)
    print(f"\nDemo project left in {project}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
