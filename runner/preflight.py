"""The runner's preflight: before agents start, the environment they need and a green base.

Two faults that are no task's pause the queue here (runner.faults), so that no agent is paid for
work every task would fail the same way, and nothing is charged to a task:

- ``environment``: the agent CLI or a recipe's program is not installed. Looked at again each
  cycle, but only when what it depends on changed (PATH's directories and the absolute paths
  named), which costs a few ``stat`` calls; it clears as soon as the program is there.
- ``red-base``: base's own checks fail on base's tip. They run as `pipeline-runner check` runs
  them (a pristine checkout, the check cache, so an unchanged tree costs nothing), again only when
  base's tip moves or the fault's delay is up; it clears when a tip passes.

While either holds, no agent starts and nothing integrates (a candidate on a red base would fail
and be charged to its task); verification of commits already made goes on, since it checks the
task's own commit, which was developed on a base that had passed.
"""

from __future__ import annotations

import enum
import hashlib
import io
import json
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from phases.outcomes import VerifyStatus
from phases.verify import VerifyResult
from runner.checkcmd import CheckRun, check
from runner.config import PipelineConfig
from runner.doctor import Finding, Verdict, check_agent_cli, check_recipe_programs, recipe_programs
from runner.faults import FaultBoard
from runner.logs import logger

ENVIRONMENT = "environment"
# Where, under the root, base's checks get their checkout (apart from `pipeline-runner check`'s).
BASE_CHECKS_DIR = "base-check"
RED_BASE = "red-base"
# Shown lines of a failing check's output in the fault's message.
TAIL_LINES = 12


class BaseAction(enum.StrEnum):
    """What to do about base's checks this cycle."""

    GO = "go"  # they passed on this tip
    WAIT = "wait"  # they failed on this tip and the fault's delay is not up: stay paused
    CHECK = "check"  # not known for this tip (or the delay is up): run them


def base_action(tip: str, green_tip: str | None, red_tip: str | None, red_due: bool) -> BaseAction:
    """The decision, from base's tip, the last tip that passed, the tip a red-base fault was
    recorded on, and whether that fault's delay is up (pure)."""
    if tip == green_tip:
        return BaseAction.GO
    if tip == red_tip and not red_due:
        return BaseAction.WAIT
    return BaseAction.CHECK


def path_stamp(config: PipelineConfig, environ: dict[str, str]) -> tuple[tuple[str, int], ...]:
    """What the environment's findings depend on: the modification time of every directory on the
    PATHs programs are looked up on, and of every absolute program path (installing a program
    changes one of them). -1 for one that does not exist."""
    lookups = {environ.get("PATH", ""), config.agent.env.get("PATH", "")}
    lookups |= {path or "" for _key, _program, path in recipe_programs(config)}
    paths = [d for path in lookups for d in path.split(os.pathsep) if d]
    programs = [p for _k, p, _path in recipe_programs(config) if os.path.isabs(p)]
    if config.agent.executable and os.path.isabs(config.agent.executable):
        programs.append(config.agent.executable)
    if config.agent.command and os.path.isabs(config.agent.command[0]):
        programs.append(config.agent.command[0])
    stamp = []
    for name in sorted({*paths, *programs, *(os.path.dirname(p) for p in programs)}):
        try:
            stamp.append((name, os.stat(name).st_mtime_ns))
        except OSError:
            stamp.append((name, -1))
    return tuple(stamp)


def environment_findings(config: PipelineConfig) -> list[Finding]:
    """The failing items of what agents and recipes need installed."""
    found = [check_agent_cli(config), *check_recipe_programs(config)]
    return [f for f in found if f.verdict is Verdict.FAIL]


def environment_message(failures: Sequence[Finding]) -> str:
    """The fault's message: every missing program with its fix."""
    parts = [f"{f.message} (fix: {f.fix})" for f in failures]
    return "queue paused, no agent starts: " + "; ".join(parts) + ". It resumes by itself once installed."


def red_message(base: str, tip: str, result: VerifyResult) -> str:
    """The fault's message for checks that fail (or cannot run) on base's tip."""
    lines = result.summary.strip().splitlines()
    if len(lines) > TAIL_LINES:
        lines = [lines[0], "...", *lines[-TAIL_LINES + 2 :]]
    what = "could not run" if result.status is VerifyStatus.FAULT else "fail"
    return (
        f"base is red: queue paused, no agent starts and nothing integrates, because the checks {what} on "
        f"{base}'s tip {tip[:12]}, so every task would be rejected. Fix {base}; the queue resumes by itself "
        f"once a new tip passes (`pipeline-runner check --rev {base}` runs them by hand).\n" + "\n".join(lines)
    )


def checks_fingerprint(config: PipelineConfig) -> str:
    """What base's checks are (pure): the phases as configured. A tip green or red under other
    checks is not known under these (a phase added, a recipe fixed): it is checked again."""
    material = json.dumps({name: phase.model_dump(mode="json") for name, phase in config.phases.items()},
                          sort_keys=True, default=str)  # fmt: skip
    return hashlib.sha256(material.encode()).hexdigest()[:16]


class Preflight:
    """The environment and base's health, looked at before agents start each cycle."""

    def __init__(
        self,
        config: PipelineConfig,
        faults: FaultBoard,
        green_file: Path,
        tip: Callable[[], str | None],
        wake: Callable[[], None],
        *,
        use_cache: bool = True,
        slots: threading.Semaphore | None = None,
    ) -> None:
        self.config = config
        self.faults = faults
        self.green_file = green_file
        self.tip = tip
        self.wake = wake
        self.use_cache = use_cache
        self.slots = slots  # shared with verifications and integrations: check_concurrency holds for all
        self.stamp: tuple[tuple[str, int], ...] | None = None
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="base-check")
        self.checking: tuple[str, Future[VerifyResult]] | None = None
        self.lock = threading.Lock()
        self.fingerprint = checks_fingerprint(config)

    def close(self) -> None:
        """Stop the worker (a check in flight is simply run again by the next start)."""
        self.pool.shutdown(wait=False, cancel_futures=True)

    # -- the environment --------------------------------------------------------------------------

    def environment_ok(self) -> bool:
        """Whether what agents and recipes need is installed; records or clears the fault."""
        stamp = path_stamp(self.config, dict(os.environ))
        if stamp == self.stamp:
            return ENVIRONMENT not in self.faults
        self.stamp = stamp
        failures = environment_findings(self.config)
        current = self.faults.get(ENVIRONMENT)
        if not failures:
            self.faults.clear(ENVIRONMENT)
            return True
        message = environment_message(failures)
        if current is None or current.message != message:
            self.faults.record(ENVIRONMENT, message)
        return False

    # -- base -------------------------------------------------------------------------------------

    def green_tip(self) -> str | None:
        """The last tip of base whose checks passed, under the checks configured now."""
        try:
            tip, _, fingerprint = self.green_file.read_text(encoding="ascii").strip().partition(" ")
        except (OSError, UnicodeDecodeError):
            return None
        return tip if tip and fingerprint == self.fingerprint else None

    def _mark_green(self, tip: str) -> None:
        self.green_file.write_text(f"{tip} {self.fingerprint}\n", encoding="ascii")

    def base_green(self, *, wait: bool) -> bool:
        """Whether base's checks pass on its tip. Unknown for this tip: they are started (and, with
        ``wait``, waited for); meanwhile it is not green."""
        if not self.config.phases or not self.config.check_base:
            return True
        tip = self.tip()
        if tip is None:
            return False  # no base: `run` refused to start, or it was deleted since
        fault = self.faults.get(RED_BASE)
        # A red tip recorded under other checks is not known to be red under these.
        known = fault is not None and fault.data.get("checks") == self.fingerprint
        red_tip = fault.data.get("tip") if fault is not None and known else None
        action = base_action(tip, self.green_tip(), red_tip, self.faults.retry_at(RED_BASE) is None)
        if action is BaseAction.GO:
            self.faults.clear(RED_BASE)
            return True
        if action is BaseAction.WAIT:
            return False
        if self.checking is not None and self.checking[0] != tip:
            if not self.checking[1].done():
                return False  # an older tip's check is still running: one at a time
            self.checking = None
        if self.checking is None:
            future = self.pool.submit(self._check, tip)
            future.add_done_callback(lambda _f: self.wake())
            self.checking = (tip, future)
        _, future = self.checking
        if not wait and not future.done():
            return False
        self.checking = None
        try:
            result = future.result()
        except Exception as exc:  # a git or I/O failure is the machine's, like a recipe that cannot start
            result = VerifyResult(VerifyStatus.FAULT, f"base's checks could not run: {exc}")
        return self._settle(tip, result)

    def _check(self, tip: str) -> VerifyResult:
        return check(self.config, CheckRun(tip, [], None, self.use_cache), io.StringIO(), BASE_CHECKS_DIR, self.slots)

    def landed(self, sha: str) -> None:
        """The runner moved base to ``sha``: its tree passed the phases that gate a landing, so that
        tip needs no check of its own (only tips the runner did not make are checked)."""
        if self.faults.writable and self.config.phases:
            self._mark_green(sha)

    def _settle(self, tip: str, result: VerifyResult) -> bool:
        if result.status in (VerifyStatus.FAIL, VerifyStatus.FAULT):
            message = red_message(self.config.base, tip, result)
            self.faults.record(RED_BASE, message, data={"tip": tip, "checks": self.fingerprint})
            return False
        if self.faults.writable:
            self._mark_green(tip)
        if RED_BASE in self.faults:
            logger.info("base's checks pass on {} {}: the queue resumes", self.config.base, tip[:12])
        self.faults.clear(RED_BASE)
        return True
