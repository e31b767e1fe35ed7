"""The bundled example, end to end: a throwaway copy of a tiny project, its task queue, the example
agent, and the real `pipeline-runner run` over it with the embedded SQLite state.

It never touches the repository you run it from: everything happens in a temporary directory,
which is left in place so that you can look around (its path is printed at the end).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

CONFIG = """\
# The demo's pipeline: the example agent develops; two phases check each task, on its own commit
# (verify) and again on the candidate on base's tip (integrate), where a pass on the same tree is
# reused. `unit` starts only once `compile` has passed.
base: live
concurrency: 2
interval: 0.5
limits:
  max_retries: 3
agent:
  preset: command
  command: [{python}, {agent}, "{{prompt_file}}"]
  timeout: 60
phases:
  compile:
    run:
      - [{python}, -m, compileall, -q, .]
  unit:
    needs: [compile]
    run:
      - [{python}, -m, unittest, discover, -q]
"""


def step(*argv: str, cwd: Path, env: dict[str, str]) -> None:
    shown = " ".join(
        "pipeline-runner" if a == "-m" else a for a in argv if a not in (sys.executable, "runner")
    )
    print(f"\n$ {shown}", flush=True)
    subprocess.run(argv, cwd=cwd, env=env, check=True)


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="pipeline-demo-"))
    project = work / "project"
    shutil.copytree(HERE / "project", project)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env.update(GIT_AUTHOR_NAME="Demo", GIT_AUTHOR_EMAIL="demo@localhost",
               GIT_COMMITTER_NAME="Demo", GIT_COMMITTER_EMAIL="demo@localhost")  # fmt: skip
    for args in (["init", "-q", "-b", "live"], ["add", "-A"], ["commit", "-q", "-m", "Sample project"]):
        subprocess.run(["git", *args], cwd=project, env=env, check=True)
    (project / "pipeline.yaml").write_text(
        CONFIG.format(python=sys.executable, agent=HERE / "example_agent.py")
    )
    # The config stays out of the sample project's history (the runner's state is in .git).
    (project / ".git" / "info" / "exclude").write_text("pipeline.yaml\n")
    runner = [sys.executable, "-m", "runner"]
    step(*runner, "phases", cwd=project, env=env)
    step(*runner, "task", "import", str(HERE / "tasks.yaml"), cwd=project, env=env)
    step(*runner, "run", "--until-idle", cwd=project, env=env)
    step(*runner, "status", cwd=project, env=env)
    print(f"\n$ git log --oneline live   (in {project})", flush=True)
    subprocess.run(["git", "log", "--oneline", "live"], cwd=project, env=env, check=True)
    # Every landed commit carries a receipt, a git note under refs/notes/pipeline: what each phase
    # did on it, or reused. The note ends with the same facts as JSON (`receipt --json`), left out here.
    print("\n$ pipeline-runner receipt live", flush=True)
    receipt = subprocess.run([*runner, "receipt", "live"], cwd=project, env=env, check=True,
                             capture_output=True, text=True).stdout  # fmt: skip
    print(receipt.split("\n\n{", 1)[0])
    print("(then the same as JSON: `pipeline-runner receipt --json`; `git log --notes=pipeline` shows it too)")
    print(f"\nThe demo project is in {project}; `pipeline-runner task show add-mul` there shows the")
    print("failed first attempt and the feedback that fixed it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
