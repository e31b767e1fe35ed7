"""`phases`, `check` and `receipt`: the check graph as a person sees it and runs it by hand."""

from __future__ import annotations

import os
import shutil
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from phases.checks import GraphRun, PhaseOutcome, run_graph
from phases.integrate import RECEIPTS
from phases.outcomes import VerifyStatus
from phases.verify import VerifyResult
from runner import graph, receipts
from runner.checkcache import CheckCache
from runner.config import PipelineConfig, recipe_argv
from runner.errors import PipelineError
from runner.git import Git
from runner.layout import Layout
from runner.procs import pid_alive
from runner.state import open_db
from runner.workspace import Workspaces, remove_tree


def graph_document(config: PipelineConfig) -> dict[str, Any]:
    """The graph in the order it runs, with each phase's effective settings."""
    phases = []
    for name in config.phase_order():
        phase = config.phases[name]
        phases.append(
            {
                "name": name,
                "run": [" ".join(recipe_argv(r)) for r in phase.run],
                "needs": phase.needs,
                "on": phase.on,
                "timeout": phase.timeout,
                "env": phase.env,
                "skip_exit_codes": phase.skip_exit_codes,
                "optional": phase.optional,
                "cache": phase.cache,
            }
        )
    return {
        "order": [p["name"] for p in phases],
        "phases": phases,
        "check_concurrency": config.check_slots,
        "stages": {stage: list(config.stage_phases(stage)) for stage in graph.STAGES},
    }


def render_graph(doc: dict[str, Any]) -> str:
    """The graph as text: one block per phase, in running order."""
    if not doc["phases"]:
        return "No phases are configured (key 'phases'): no check would run.\n"
    lines = [f"{len(doc['phases'])} phase(s), up to {doc['check_concurrency']} recipe(s) at once:"]
    for p in doc["phases"]:
        flags = [f"on: {', '.join(p['on'])}"]
        if p["needs"]:
            flags.insert(0, f"needs: {', '.join(p['needs'])}")
        if p["optional"]:
            flags.append("optional")
        if not p["cache"]:
            flags.append("not cached")
        if p["skip_exit_codes"]:
            flags.append(f"skip codes: {p['skip_exit_codes']}")
        lines.append(f"  {p['name']}  ({'; '.join(flags)}; timeout {p['timeout']}s)")
        for recipe in p["run"]:
            lines.append(f"      $ {recipe}")
    return "\n".join(lines) + "\n"


class Progress:
    """Live progress of `check`, a line per phase as it starts and ends."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self.lock = threading.Lock()

    def started(self, name: str) -> int | None:
        """Say that a phase is being settled."""
        with self.lock:
            print(f"[{name}] ...", file=self.out, flush=True)
        return None

    def ended(self, row: int | None, outcome: PhaseOutcome) -> None:
        """Say how it ended."""
        with self.lock:
            print(f"[{outcome.name}] {outcome.describe()}", file=self.out, flush=True)


@dataclass(frozen=True)
class CheckRun:
    """What `check` was asked to do."""

    rev: str
    phases: list[str]  # only these and what they need; empty: all
    stage: str | None  # only the phases on this stage; None: all
    use_cache: bool


def check(
    config: PipelineConfig, request: CheckRun, out: TextIO = sys.stdout, where: str = "check",
    slots: threading.Semaphore | None = None,
) -> VerifyResult:  # fmt: skip
    """Run the graph on ``request.rev`` in a pristine checkout, exactly as the pipeline would,
    filling and using the same cache. ``where``: the directory under the root that holds the
    checkout (the runner's own checks of base use one of their own); ``slots``: the recipes that
    may run at once, when shared with other checks (default: check_concurrency of its own)."""
    git = Git(config.repo_path)
    sha = git.rev(request.rev)
    if sha is None:
        raise PipelineError(f"{request.rev!r} is not a commit in {config.repo_path} (given with --rev).")
    unknown = [p for p in request.phases if p not in config.phases]
    if unknown:
        raise PipelineError(
            f"unknown phase {unknown[0]!r} (given with --phase); valid names: {', '.join(config.phases) or '(none)'}"
        )
    chosen = config.stage_phases(request.stage) if request.stage else dict(config.phases)
    if request.phases:
        wanted = graph.closure({n: p.needs for n, p in config.phases.items()}, request.phases)
        chosen = {n: p for n, p in chosen.items() if n in wanted}
    if not chosen:
        return VerifyResult(VerifyStatus.UNCHECKED, "no phase to run")
    layout = Layout(config.root)
    layout.ensure()
    tree = git.tree_of(sha) or sha
    # Its own checkout, never shared with (nor removed by) another `check` running meanwhile: a
    # recipe whose checkout vanished under it can pass on no files at all, and that pass would be
    # kept for the tree. Those of checks that died are removed.
    place = layout.root / where / f"{tree[:12]}-{os.getpid()}-{threading.get_native_id()}"
    remove_abandoned(place.parent)
    workspaces = Workspaces(git, layout)

    def checkout() -> Path:
        workspaces.checkouts.create(place, sha)
        return place

    db = open_db(config.state_target)
    print(f"checking {request.rev} ({sha[:12]}, tree {tree[:12]}): {', '.join(chosen)}", file=out, flush=True)
    try:
        return run_graph(
            GraphRun(
                phases=chosen, stage=request.stage or "check", tree=tree,
                workdir=checkout,
                values={"namespace": None, "task_id": "", "workspace": str(place), "base": config.base,
                        "patchset": "0"},
                log_dir=layout.root / "logs" / "check" / tree[:12],
                slots=slots or threading.BoundedSemaphore(config.check_slots),
                cache=CheckCache(db) if request.use_cache else None,
                listener=Progress(out),
            )
        )  # fmt: skip
    finally:
        db.close()
        shutil.rmtree(place, ignore_errors=True)


def remove_abandoned(checks: Path) -> None:
    """Remove the checkouts under ``checks`` whose `check` process (``<tree>-<pid>-<thread>``) is gone."""
    if not checks.is_dir():
        return
    for other in checks.iterdir():
        parts = other.name.split("-")
        if len(parts) == 3 and parts[1].isdigit() and pid_alive(int(parts[1])):
            continue
        remove_tree(other)


def receipt_of(config: PipelineConfig, rev: str | None) -> tuple[str, str, dict[str, Any] | None]:
    """(sha, note text, its data) of the receipt on ``rev`` (default: base's tip)."""
    git = Git(config.repo_path)
    name = rev or config.base
    sha = git.rev(name)
    if sha is None:
        raise PipelineError(f"{name!r} is not a commit in {config.repo_path}.")
    text = git.note(RECEIPTS, sha)
    if text is None:
        raise PipelineError(
            f"{name} ({sha[:12]}) has no receipt under {RECEIPTS}: it was not landed by pipeline-runner "
            "(or the notes were not fetched: git fetch origin 'refs/notes/*:refs/notes/*')."
        )
    return sha, text, receipts.parse(text)

