"""`init`: write a commented pipeline.yaml for the repository at hand."""

from __future__ import annotations

import difflib
import json
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from runner.config import AgentConfig, PipelineConfig
from runner.configfile import DEFAULT_CONFIG_NAME
from runner.errors import ConfigError
from runner.git import Git


@dataclass(frozen=True)
class TestCommand:
    """A detected way to run the repository's tests."""

    kind: str
    argv: list[str]


# A rule line whose targets include `test` (`test:`, `test::`, `check test: build`), but not a
# variable assignment (`test := x`, `test ::= x`) or a recipe line (those start with a tab).
_TEST_RULE = re.compile(r"^(?:[^\s:#=]+[ \t]+)*test(?:[ \t]+[^\s:#=]+)*[ \t]*::?(?![:=])", re.M)


def _has_make_test(repo: Path) -> bool:
    # The makefile `make` itself reads: the first of these names that exists.
    for name in ("GNUmakefile", "makefile", "Makefile"):
        path = repo / name
        if path.is_file():
            return _TEST_RULE.search(path.read_text(errors="replace")) is not None
    return False


def _has_npm_test(repo: Path) -> bool:
    try:
        scripts = json.loads((repo / "package.json").read_text()).get("scripts", {})
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(scripts, dict) and "test" in scripts


def _has_pytest(repo: Path) -> bool:
    if any((repo / name).is_file() for name in ("pytest.ini", "conftest.py", "tox.ini")):
        return True
    for name in ("pyproject.toml", "setup.cfg"):
        path = repo / name
        if path.is_file() and "pytest" in path.read_text(errors="replace"):
            return True
    tests = repo / "tests"
    return tests.is_dir() and any(tests.glob("test_*.py"))


# In order: an explicit `make test` is the project's own word on how it tests itself.
DETECTORS: list[tuple[str, Callable[[Path], bool], list[str]]] = [
    ("make test", _has_make_test, ["make", "test"]),
    ("cargo test", lambda r: (r / "Cargo.toml").is_file(), ["cargo", "test"]),
    ("go test", lambda r: (r / "go.mod").is_file(), ["go", "test", "./..."]),
    ("npm test", _has_npm_test, ["npm", "test"]),
    ("pytest", _has_pytest, ["python", "-m", "pytest", "-q"]),
]


def detect_test_command(repo: Path) -> TestCommand | None:
    """The first test command the repository's files point to."""
    for kind, present, argv in DETECTORS:
        if present(repo):
            return TestCommand(kind, argv)
    return None


TEMPLATE = """\
# pipeline-runner configuration for {repo_name}, written by `pipeline-runner init`.
# Precedence: flag > PIPELINE_* environment variable > this file > default.
# `pipeline-runner config show` prints every effective value and where it came from.

base: {base}              # the branch tasks land on, only ever by compare-and-swap
# root: .pipeline-runner       # worktrees, state.db and logs; the default, a dot directory ignored
#                              # by git (its own .gitignore) and skipped by test runners
concurrency: 2            # agents at once
interval: 10              # seconds between cycles when idle; unit of the retry backoff

limits:
  max_retries: 5          # failed attempts (any phase) before a task goes to needs_help
  max_task_cost: 0        # cents per task across attempts; 0 = no cap
  max_daily_cost: 0       # cents per local day, all tasks; past it no agent starts until midnight

agent:
  preset: {preset}{preset_note}
  timeout: 1800           # seconds per attempt; the agent's whole process group is killed after
  max_iter: 80            # turn / iteration cap, where the agent has one
  max_cost: 300           # cents per attempt, where the agent takes a budget
{agent_extra}
# The check graph: each phase runs its recipes (argv lists, or strings split like a shell would,
# never given to one) after the phases it `needs` passed; independent phases run side by side.
# `on`: verify (the task's own commit), integrate (the candidate on base's tip), default both; a
# pass on the same tree is reused, so a phase on both runs once when base did not move.
# More per phase: timeout, env, optional, cache, skip codes (README). `pipeline-runner phases`.
{verify_run}

# A task on which no check ran (no recipe applied to it) goes to needs_help instead of landing.
allow_unchecked: false
"""

PRESET_EXTRAS = {
    "command": '  command: ["my-agent", "{prompt_file}"]   # argv template; placeholders stay inside one argument\n',
    "claude-code": "  model: null              # claude --model\n  env: {}                  # e.g. ANTHROPIC_API_KEY: ${ANTHROPIC_API_KEY}\n",
    "codex": "  model: null\n  price_per_mtok: null     # {input: 1.25, cached_input: 0.125, output: 10.0} to record a cost from tokens\n",
    "aider": "  model: null\n  args: []                 # extra aider flags\n",
    "opencode": "  model: null              # provider/model\n",
    "gemini": "  model: null\n",
    "agentd": "  provider: null\n",
}


@dataclass(frozen=True)
class InitAnswers:
    """What init was told or asked."""

    preset: str | None
    base: str | None
    yes: bool
    force: bool


@dataclass(frozen=True)
class Place:
    """The repository init writes for, and what it holds."""

    repo: Path  # the top of the git repository holding the current directory
    target: Path  # the file to write: -c FILE, else pipeline.yaml at the repository's top
    current_branch: str | None  # None on a detached HEAD
    branches: list[str]  # local branches (none before the first commit)


def locate(cwd: Path, explicit: str | None) -> Place:
    """Where init writes: the repository holding ``cwd``, at its top (a subdirectory is no place
    for it: the config is found from anywhere in the repository). Outside a repository, an error."""
    git = Git(cwd)
    top = git.run("rev-parse", "--show-toplevel", check=False)
    if not top.ok or not top.output.strip():
        raise ConfigError(
            f"{cwd} is not inside a git repository: pipeline-runner lands tasks on a branch of one. "
            "Run `pipeline-runner init` in your repository (or `git init` here first)."
        )
    repo = Path(top.output.strip().splitlines()[-1])
    head = git.run("symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    branch = head.output.strip() if head.ok and head.output.strip() else None
    listed = git.run("for-each-ref", "--format=%(refname:short)", "refs/heads", check=False)
    branches = listed.output.split() if listed.ok else []
    # Named as short as it can be: "pipeline.yaml" when init runs at the top, as it usually does.
    at_top = repo.resolve() == cwd.resolve()
    target = Path(explicit) if explicit else Path(DEFAULT_CONFIG_NAME) if at_top else repo / DEFAULT_CONFIG_NAME
    return Place(repo, target, branch, branches)


# Which preset init proposes: the first of these whose CLI is installed.
PRESET_PREFERENCE = ["claude-code", "codex", "gemini", "opencode", "aider", "agentd"]


def installed_presets(which: Callable[[str], str | None] = shutil.which) -> list[str]:
    """The presets whose agent CLI is on PATH, in the order of PRESET_PREFERENCE."""
    from phases.backends import BACKENDS

    found = []
    for name in PRESET_PREFERENCE:
        program = BACKENDS[name](AgentConfig(preset=name)).executable_name()
        if program and which(program):
            found.append(name)
    return found


def default_preset(installed: list[str]) -> str:
    """The preset init proposes: an installed one, else the first preference (it says so)."""
    return installed[0] if installed else PRESET_PREFERENCE[0]


def answer_problem(what: str, value: str, valid: list[str]) -> str | None:
    """Why ``value`` is not one of ``valid`` (with the closest one as a suggestion), or None."""
    if value in valid:
        return None
    close = difflib.get_close_matches(value, valid, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"no {what} {value!r}; valid: {', '.join(valid) or '(none)'}.{hint}"


def _ask(question: str, default: str, what: str, valid: list[str]) -> str:
    # A typo is asked again, with the closest valid answer: one slip never ends the whole init.
    while True:
        print(f"{question} [{default}]: ", end="", flush=True)
        line = sys.stdin.readline()
        if not line:
            raise ConfigError(
                "No answer on standard input: give --preset and --base, or --yes to take the defaults."
            )
        answer = line.strip() or default
        problem = answer_problem(what, answer, valid)
        if problem is None:
            return answer
        print(problem[0].upper() + problem[1:], flush=True)


def _valid_bases(place: Place) -> list[str]:
    # Before the first commit there is no branch yet: the one HEAD will create is the only choice.
    if not place.branches and place.current_branch:
        return [place.current_branch]
    return place.branches


def write_config(place: Place, answers: InitAnswers) -> str:
    """Write the config; returns a one-line summary. Refuses to overwrite unless forced."""
    from phases.backends import BACKENDS

    target, repo = place.target, place.repo
    if target.exists() and not answers.force:
        raise ConfigError(f"{target} exists already; pass --force to overwrite it.")
    detected = detect_test_command(repo)
    installed = installed_presets()
    presets = sorted(BACKENDS)
    proposed = default_preset(installed)
    if answers.preset:
        preset = answers.preset
        problem = answer_problem("preset", preset, presets)
        if problem:
            raise ConfigError(f"--preset: {problem}")
    elif answers.yes:
        preset = proposed
    else:
        found = f"; installed: {', '.join(installed)}" if installed else "; no agent CLI found on PATH"
        preset = _ask(f"Agent preset ({', '.join(presets)}{found})", proposed, "preset", presets)
    bases = _valid_bases(place)
    default_base = place.current_branch or ("main" if "main" in bases else bases[0] if bases else "main")
    if answers.base:
        base = answers.base
        problem = answer_problem("branch", base, bases)
        if problem:
            raise ConfigError(f"--base: {repo} has {problem} A task lands on an existing branch.")
    elif answers.yes:
        base = default_base
        problem = answer_problem("branch", base, bases)
        if problem:
            raise ConfigError(f"HEAD is not on a branch and {problem}: give --base.")
    else:
        base = _ask("Base branch", default_base, "branch", bases)
    if detected:
        verify_run = f"phases:\n  test:\n    run:\n      - {json.dumps(detected.argv)}   # detected: {detected.kind}"
    else:
        # Guessing a command would fail every task, or pass them all with nothing checked.
        verify_run = (
            "phases: {}               # no test command detected: add yours, e.g.\n"
            '                          #   test: {run: ["make", "test"]}\n'
            "                          # `run` refuses to start while there is none"
        )
    text = TEMPLATE.format(
        repo_name=repo.name,
        base=base,
        preset=preset,
        preset_note="   # " + ", ".join(sorted(BACKENDS)),
        agent_extra=PRESET_EXTRAS.get(preset, ""),
        verify_run=verify_run,
    )
    target.write_text(text, encoding="utf-8")
    program = BACKENDS[preset](AgentConfig(preset=preset)).executable_name()
    missing = "" if preset in installed or preset == "command" else (
        f" Its agent CLI `{program}` is not on PATH: install it, or set agent.executable, before `run`."
    )  # fmt: skip
    if detected:
        return f"Wrote {target} (preset {preset}, base {base}, tests: {detected.kind}).{missing}"
    return (
        f"Wrote {target} (preset {preset}, base {base}). No test command detected: declare phases "
        f"in {target} with the commands that check this repository before `pipeline-runner run`.{missing}"
    )


# Lines of a failing check's output that init shows (the whole of it is in the phase's log).
BASE_CHECK_TAIL_LINES = 20


@dataclass(frozen=True)
class BaseCheck:
    """How the written config's checks went on base's tip, and what to tell a person."""

    ok: bool  # passed, or could not be checked yet: nothing to warn of
    message: str


def check_base(config: PipelineConfig, out: TextIO = sys.stdout) -> BaseCheck | None:
    """Run the config's check graph on base's tip the way `pipeline-runner check` does (a pristine
    checkout of it, the pipeline's cache), progress to ``out``; None when it has no phase.

    Every task is checked with base's files under it: while the checks fail on base itself, every
    task is rejected, whatever its agent did."""
    from phases.checks import PhaseState
    from phases.outcomes import VerifyStatus
    from runner.checkcmd import CheckRun, check
    from runner.git import Git

    if not config.phases:
        return None
    base = config.base
    if Git(config.repo_path).branch_sha(base) is None:
        return BaseCheck(True, f"Not checked on {base}: the branch has no commit yet.")
    result = check(config, CheckRun(f"refs/heads/{base}", [], None, use_cache=True), out)
    if result.status in (VerifyStatus.PASS, VerifyStatus.SKIP):
        return BaseCheck(True, f"The checks pass on {base}.")
    why = {
        VerifyStatus.FAIL: f"the checks fail on {base}, so every task would be rejected until {base} is fixed "
        "(or the failing phase is changed in the config)",
        VerifyStatus.FAULT: f"the checks could not run on {base}, so verification would pause until they can "
        "(install what they need, or change the phase in the config)",
        VerifyStatus.UNCHECKED: f"no check ran on {base}, so tasks would go to needs_help instead of landing",
    }[result.status]
    lines = result.summary.strip().splitlines()
    if len(lines) > BASE_CHECK_TAIL_LINES + 1:
        # The headline names the phase and command; the end of the output says why.
        lines = [lines[0], "...", *lines[-BASE_CHECK_TAIL_LINES:]]
    lines += [f"(the whole output of {o.name}: {o.log_path})" for o in result.phases
              if o.state is PhaseState.FAILED and o.log_path]  # fmt: skip
    text = "\n".join(f"    {line}" for line in lines)
    return BaseCheck(False, f"{why}:\n{text}\n`pipeline-runner check --rev {base}` runs them again.")
