"""`doctor`: what would make every task fail the same way, found before any agent is paid for.

Each check returns a ``Finding`` (a verdict, what was found, and the fix). The static ones (the
repository, base, the agent CLI, the recipes' programs, the placeholders) read the config, git and
PATH only; the runner's preflight (runner.preflight) uses the same functions. `doctor` adds the
agent CLI's own probe (phases.probes) and base's checks on base's tip.
"""

from __future__ import annotations

import difflib
import enum
import io
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from runner.config import LoadedConfig, PipelineConfig, recipe_argv
from runner.errors import ConfigError, PipelineError
from runner.git import Git
from runner.redact import resolve_agent_env
from runner.tasklist import printable
from runner.templates import AGENT_PLACEHOLDERS, PROMPT_PLACEHOLDERS, RECIPE_PLACEHOLDERS, placeholders


class Verdict(enum.StrEnum):
    """How one item stands."""

    OK = "ok"
    WARN = "warn"  # worth knowing; nothing fails because of it
    FAIL = "fail"  # every task would fail (or no agent could start) until it is fixed


class Kind(enum.StrEnum):
    """What a failing item depends on, which decides what the runner does about it."""

    CONFIG = "config"  # the config or the repository: `run` refuses to start until it is changed
    MACHINE = "machine"  # what is installed: a fault that pauses agents and clears once installed
    AGENT = "agent"  # the agent CLI's own setup (probed by `doctor` only)
    BASE = "base"  # base's own checks


@dataclass(frozen=True)
class Finding:
    """One item's verdict, what was found, and what to change."""

    item: str
    verdict: Verdict
    message: str
    fix: str = ""
    key: str | None = None  # the config key it concerns
    kind: Kind = Kind.CONFIG

    def line(self) -> str:
        """The finding as `doctor` prints it: a line, and the fix under it when there is one."""
        text = f"[{self.verdict.value.upper():>4}] {self.item}: {self.message}"
        return text + (f"\n       fix: {self.fix}" if self.fix and self.verdict is not Verdict.OK else "")


Which = Callable[[str, str | None], str | None]


def _which(program: str, path: str | None) -> str | None:
    return shutil.which(program, path=path)


# -- the repository ---------------------------------------------------------------------------------


def check_repository(repo: Path) -> Finding:
    """The configured repository is a git repository."""
    if (repo / ".git").exists():
        return Finding("git repository", Verdict.OK, f"{repo}")
    return Finding(
        "git repository", Verdict.FAIL, f"{repo} is not a git repository",
        "run pipeline-runner in the repository, or set 'repo' to its path", key="repo",
    )  # fmt: skip


def check_base_branch(repo: Path, base: str) -> Finding:
    """The base branch exists (tasks start from it and land on it)."""
    sha = Git(repo).branch_sha(base)
    if sha is not None:
        return Finding("base branch", Verdict.OK, f"{base} at {sha[:12]}", key="base")
    return Finding(
        "base branch", Verdict.FAIL, f"branch {base!r} does not exist in {repo}",
        f"create it (git branch {base}) or set 'base' in the config (or --base) to an existing branch",
        key="base",
    )  # fmt: skip


# -- programs ---------------------------------------------------------------------------------------


def program_problem(program: str, path: str | None, which: Which = _which) -> str | None:
    """Why ``program`` (the first word of an argv) cannot be started, or None when it can or cannot
    be told here (a path relative to the checkout it runs in, a placeholder)."""
    if not program or placeholders(program):
        return None
    if "/" not in program:
        if which(program, path) is None:
            return f"{program!r} was not found on PATH"
        return None
    if not os.path.isabs(program):
        return None  # relative to the workspace or checkout: it exists only there
    if not os.path.exists(program):
        return f"{program} does not exist"
    if os.path.isdir(program) or not os.access(program, os.X_OK):
        return f"{program} is not an executable file"
    return None


def check_agent_cli(config: PipelineConfig, which: Which = _which) -> Finding:
    """The agent's program is installed: a bare name on PATH, or an executable absolute path."""
    from phases.backends import make_backend

    backend = make_backend(config.agent)
    problem = backend.check()
    if problem:
        return Finding("agent CLI", Verdict.FAIL, problem, "set it in the config", key="agent.command")
    program = backend.executable_name()
    key = "agent.command" if config.agent.preset == "command" else "agent.executable"
    if not program:
        return Finding("agent CLI", Verdict.OK, f"preset {config.agent.preset} starts no local program")
    # The agent is started with agent.env over the runner's environment: its PATH, if it sets one.
    path = resolve_agent_env(config.agent.env, os.environ).get("PATH") or os.environ.get("PATH")
    missing = program_problem(program, path, which)
    if missing is None:
        return Finding("agent CLI", Verdict.OK, f"{program} (preset {config.agent.preset})", key=key)
    return Finding(
        "agent CLI", Verdict.FAIL, f"{missing} (preset {config.agent.preset}, key {key!r})",
        f"install it, or set {key} to its absolute path, or choose another agent.preset",
        key=key, kind=Kind.MACHINE,
    )  # fmt: skip


def recipe_programs(config: PipelineConfig) -> list[tuple[str, str, str | None]]:
    """(key, program, the PATH it is looked up on) for the first word of every recipe, in order."""
    found: list[tuple[str, str, str | None]] = []
    for name, phase in config.phases.items():
        path = phase.env.get("PATH") or os.environ.get("PATH")
        for recipe in phase.run:
            argv = recipe_argv(recipe)
            if argv:
                found.append((f"phases.{name}.run", argv[0], path))
    return found


def check_recipe_programs(config: PipelineConfig, which: Which = _which) -> list[Finding]:
    """Every recipe's program can be started: a finding per missing one, else one that says so."""
    findings: list[Finding] = []
    seen: set[tuple[str, str]] = set()
    for key, program, path in recipe_programs(config):
        if (key, program) in seen:
            continue
        seen.add((key, program))
        missing = program_problem(program, path, which)
        if missing is not None:
            findings.append(
                Finding(
                    "recipe program", Verdict.FAIL, f"key {key!r}: {missing}",
                    f"install {program}, or change the recipe in {key}", key=key, kind=Kind.MACHINE,
                )
            )
    if not findings and config.phases:
        programs = sorted({p for _k, p, _path in recipe_programs(config)})
        findings.append(Finding("recipe programs", Verdict.OK, ", ".join(programs)))
    return findings


# -- placeholders -----------------------------------------------------------------------------------


def unknown_placeholders(texts: Iterable[str], valid: Sequence[str]) -> list[str]:
    """The ``{name}`` placeholders in ``texts`` that are not in ``valid``, in order of appearance."""
    unknown: list[str] = []
    for text in texts:
        for name in sorted(placeholders(text)):
            if name not in valid and name not in unknown:
                unknown.append(name)
    return unknown


def placeholder_finding(key: str, name: str, valid: Sequence[str], where: str) -> Finding:
    """An unknown placeholder: a failure when it is close to a valid name (a misspelling, which
    would reach the command or prompt as it is), else a warning (braces meant literally)."""
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.75)
    names = ", ".join("{" + v + "}" for v in valid)
    if close:
        return Finding(
            "placeholders", Verdict.FAIL,
            f"{where}: key {key!r}: unknown placeholder {{{name}}}; valid names: {names}",
            f"did you mean {{{close[0]}}}? Change {key}", key=key,
        )  # fmt: skip
    return Finding(
        "placeholders", Verdict.WARN,
        f"{where}: key {key!r}: {{{name}}} is not a placeholder and is left as it is; valid names: {names}",
        f"if it was meant as one, use one of the valid names in {key}", key=key,
    )  # fmt: skip


def check_placeholders(
    config: PipelineConfig, prompt_template: str | None, where: Callable[[str], str] = lambda _key: "config"
) -> list[Finding]:
    """Every ``{name}`` in the agent's command and args, the recipes and the prompt template is one
    the runner fills. ``where(key)`` names the file (or variable) that set a key."""
    sources: list[tuple[str, list[str], Sequence[str]]] = [
        ("agent.command", list(config.agent.command or []), AGENT_PLACEHOLDERS),
        ("agent.args", list(config.agent.args), AGENT_PLACEHOLDERS),
    ]
    for name, phase in config.phases.items():
        sources.append((f"phases.{name}.run", [w for r in phase.run for w in recipe_argv(r)], RECIPE_PLACEHOLDERS))
    if prompt_template is not None:
        sources.append(("agent.prompt_template", [prompt_template], PROMPT_PLACEHOLDERS))
    findings = [
        placeholder_finding(key, name, valid, where(key))
        for key, texts, valid in sources
        for name in unknown_placeholders(texts, valid)
    ]
    return findings or [Finding("placeholders", Verdict.OK, "every placeholder is known")]


# -- together ---------------------------------------------------------------------------------------


def static_findings(
    config: PipelineConfig,
    which: Which = _which,
    where: Callable[[str], str] = lambda _key: "config",
) -> list[Finding]:
    """The items that need no process beyond git: the repository, base, the agent CLI, the
    recipes' programs, the placeholders."""
    from phases.dev import prompt_template

    findings = [check_repository(config.repo_path)]
    if findings[0].verdict is Verdict.OK:
        findings.append(check_base_branch(config.repo_path, config.base))
    findings.append(check_agent_cli(config, which))
    findings += check_recipe_programs(config, which)
    try:
        template: str | None = prompt_template(config)
    except ConfigError as exc:
        findings.append(
            Finding("prompt template", Verdict.FAIL, str(exc), "fix agent.prompt_template", key="agent.prompt_template")
        )
        template = None
    findings += check_placeholders(config, template, where)
    return findings


def where_of(loaded: LoadedConfig) -> Callable[[str], str]:
    """For a key, the file, variable or flag that set it (or the config file)."""

    def where(key: str) -> str:
        origin = loaded.origin_of(key)
        if origin.kind == "default":
            return str(loaded.config_file or "default configuration")
        return origin.describe()

    return where


def check_base_health(config: PipelineConfig) -> Finding:
    """Base's checks on base's tip, the way `check` runs them (its pass is kept in the check cache,
    so this is cheap while base does not change)."""
    from phases.checks import PhaseState
    from phases.outcomes import VerifyStatus
    from runner.checkcmd import CheckRun, check

    if not config.phases:
        return Finding(
            "base checks", Verdict.FAIL if not config.allow_unchecked else Verdict.WARN,
            "no phases are configured: no check would run on any task",
            "declare the commands that build and test the repository under 'phases'", key="phases",
        )  # fmt: skip
    if Git(config.repo_path).branch_sha(config.base) is None:
        return Finding("base checks", Verdict.FAIL, f"not run: {config.base} does not exist", kind=Kind.BASE)
    progress = io.StringIO()
    result = check(config, CheckRun(f"refs/heads/{config.base}", [], None, use_cache=True), progress)
    if result.status in (VerifyStatus.PASS, VerifyStatus.SKIP):
        reused = sum(1 for o in result.phases if o.cached is not None)
        note = f" ({reused} reused from the check cache)" if reused else ""
        return Finding("base checks", Verdict.OK, f"pass on {config.base}'s tip{note}", kind=Kind.BASE)
    logs = [o.log_path for o in result.phases if o.state is PhaseState.FAILED and o.log_path]
    lines = [line for line in result.summary.strip().splitlines() if line.strip()]
    tail = "\n".join(f"         {line}" for line in lines[-8:])
    where = f" (whole output: {logs[0]})" if logs else ""
    if result.status is VerifyStatus.FAULT:
        return Finding(
            "base checks", Verdict.FAIL, f"could not run on {config.base}'s tip:\n{tail}",
            "install what the recipes need, or change the phase", kind=Kind.MACHINE,
        )  # fmt: skip
    if result.status is VerifyStatus.UNCHECKED:
        return Finding(
            "base checks", Verdict.WARN, f"no check ran on {config.base}'s tip: {result.summary}", kind=Kind.BASE
        )
    return Finding(
        "base checks", Verdict.FAIL, f"base is red: the checks fail on {config.base}'s tip{where}:\n{tail}",
        f"fix {config.base} (every task would be rejected, so the runner pauses agents until it passes); "
        f"`pipeline-runner check --rev {config.base}` runs them again",
        kind=Kind.BASE,
    )  # fmt: skip


def run_doctor(loaded: LoadedConfig, *, agent_call: bool = True) -> list[Finding]:
    """Every item: the static ones, the agent CLI's probe, then base's checks on base's tip."""
    from phases.probes import probe_agent

    config = loaded.config
    findings = static_findings(config, where=where_of(loaded))
    cli_found = all(f.verdict is not Verdict.FAIL for f in findings if f.item == "agent CLI")
    if cli_found:
        findings += probe_agent(config, call=agent_call)
    if all(f.verdict is Verdict.OK for f in findings if f.item in ("git repository", "base branch")):
        try:
            findings.append(check_base_health(config))
        except PipelineError as exc:
            findings.append(Finding("base checks", Verdict.FAIL, f"could not run: {exc}", kind=Kind.BASE))
    return findings


def healthy(findings: Iterable[Finding]) -> bool:
    """Whether nothing failed (warnings are fine)."""
    return all(f.verdict is not Verdict.FAIL for f in findings)


def render(findings: Sequence[Finding]) -> str:
    """The findings as text, with a last line that sums them up."""
    failed = sum(1 for f in findings if f.verdict is Verdict.FAIL)
    warned = sum(1 for f in findings if f.verdict is Verdict.WARN)
    # A probe's message quotes the agent CLI's own output: no escape sequence reaches the terminal.
    lines = [printable(f.line(), keep_newlines=True) for f in findings]
    lines.append(
        f"{failed} problem(s), {warned} warning(s): fix the problems above before running tasks"
        if failed
        else f"all good ({warned} warning(s))" if warned else "all good"
    )
    return "\n".join(lines) + "\n"


def to_json(findings: Sequence[Finding]) -> dict[str, Any]:
    """The findings as a document for a script."""
    return {"ok": healthy(findings), "items": [{**asdict(f), "verdict": f.verdict.value, "kind": f.kind.value} for f in findings]}


def config_problems(findings: Sequence[Finding], file: str) -> tuple[list[str], list[str]]:
    """(errors, warnings) of `config validate`, each naming the file and the key."""
    errors: list[str] = []
    warnings: list[str] = []
    for f in findings:
        if f.verdict is Verdict.OK:
            continue
        text = f.message if file in f.message else f"{file}: {f.message}"
        if f.key and f.key not in text:
            text += f" (key {f.key!r})"
        text += f"; fix: {f.fix}" if f.fix else ""
        (errors if f.verdict is Verdict.FAIL else warnings).append(text)
    return errors, warnings
