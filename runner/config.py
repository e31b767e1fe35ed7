"""Declarative configuration: models, the layered sources, and where each value came from.

Precedence, highest first: command-line flag > ``PIPELINE_*`` environment variable > YAML file
(and the files it ``extends``) > built-in default. Every effective value keeps its origin so that
``config show`` can print it and errors can name the file or variable that holds a bad value.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
import types
import typing
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from runner import graph
from runner.configfile import ENV_PREFIX, git_toplevel
from runner.envvars import read_env, unknown_env_variables
from runner.errors import ConfigError
from runner.sqldialect import is_postgresql_url
from runner.templates import placeholders

ENV_DELIMITER = "__"
# The default root, in the repository's top directory. Git never lists it (the root writes a `*`
# .gitignore into itself from the first command), test runners skip it (pytest skips dot
# directories, unittest discovery needs packages, `go test ./...` skips dot directories), and
# linters and editors' searches honour the .gitignore. Not inside .git: the agent CLIs guard every
# path under a .git directory (Claude Code asks before each edit there, which headless is a denial).
RUNNER_DIR_NAME = ".pipeline-runner"
OLD_DEFAULT_ROOT = "_/pipeline"
# Longer timeouts overflow the timers that enforce them; a week is past any sensible agent or build.
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600


def _at_most_a_week(value: int) -> int:
    if value > MAX_TIMEOUT_SECONDS:
        raise ValueError(f"must be at most {MAX_TIMEOUT_SECONDS} seconds (7 days)")
    return value


TimeoutSeconds = Annotated[int, AfterValidator(_at_most_a_week)]


def _split_words(value: str, what: str) -> list[str]:
    """``value`` split like a shell splits words (never run by one); a clear error if it cannot be."""
    try:
        return shlex.split(value)
    except ValueError as exc:
        raise ValueError(
            f"{what} {value!r} cannot be split into words ({exc}): close the quote, escape it, "
            "or write it as a list of arguments"
        ) from None


def _wants_number(annotation: Any) -> bool:
    """Whether a field's type is a number (int or float, maybe optional)."""
    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_wants_number(a) for a in typing.get_args(annotation) if a is not type(None))
    return False


def _no_boolean_numbers(model: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    """YAML's true/false is not a number: pydantic would read `concurrency: true` as 1."""
    if info.field_name is None:
        return value
    annotation = model.model_fields[info.field_name].annotation
    if typing.get_origin(annotation) is list and isinstance(value, list):
        annotation, items = typing.get_args(annotation)[0], value  # skip_exit_codes: [true]
    else:
        items = [value]
    if _wants_number(annotation) and any(isinstance(item, bool) for item in items):
        raise ValueError("must be a number, not true or false")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        return _no_boolean_numbers(cls, value, info)


class Limits(_Strict):
    """Bounds on how much one task may cost before a person is asked to look at it."""

    max_retries: int = Field(5, description="failed attempts of any phase before needs_help, at least 1")
    max_task_cost: int = Field(0, ge=0, description="cumulative cents per task, 0 = no cap")
    max_daily_cost: int = Field(
        0, ge=0, description="cents per local day across all tasks; once reached no agent starts until midnight; 0 = no cap"
    )

    @field_validator("max_retries")
    @classmethod
    def _positive_retries(cls, value: int) -> int:
        # Unlike max_task_cost, 0 has no "no cap" meaning here: a loop with no bound spends forever.
        if value < 1:
            raise ValueError(
                "must be a positive number of failed attempts before a task needs help "
                "(0 does not mean unlimited); use a larger number to allow more attempts"
            )
        return value


class TokenPrices(_Strict):
    """Prices for agents that report tokens but no money (codex, gemini)."""

    input: float = Field(ge=0, description="dollars per million input tokens")
    output: float = Field(ge=0, description="dollars per million output tokens")
    cached_input: float | None = Field(
        None, ge=0, description="dollars per million cached input tokens; default: the input price"
    )


class AgentConfig(_Strict):
    """Which coding agent the dev phase starts and with what caps."""

    preset: str = Field("agentd", description="dev backend: a name from the agent registry")
    timeout: TimeoutSeconds = Field(1800, gt=0, description="seconds an agent run may take, at most 7 days")
    max_iter: int = Field(80, gt=0, description="agent iteration cap")
    max_cost: int = Field(300, ge=0, description="agent cost cap per run, cents")
    provider: str | None = Field(None, description="agent provider, passed to the agent")
    command: list[str] | None = Field(None, description="argv template for the command preset")
    prompt_template: str | None = Field(None, description="path of a prompt template file")
    model: str | None = Field(None, description="model name passed to the agent CLI")
    args: list[str] = Field(default_factory=list, description="extra arguments for the agent CLI")
    env: dict[str, str] = Field(
        default_factory=dict, description="extra environment; a value ${NAME} passes the runner's NAME"
    )
    executable: str | None = Field(None, description="the agent CLI's program; default: the preset's")
    permissions: str | None = Field(
        None, description="claude --permission-mode, codex --sandbox, gemini --approval-mode"
    )
    price_per_mtok: TokenPrices | None = Field(None, description="dollars per million tokens, for cost")
    git_timeout: int = Field(
        600,
        gt=0,
        le=604800,
        description="seconds each git command of the runner's may take in an agent's workspace (bringing "
        "in its commit, committing what it left, making the workspace ready again); past it the run fails: "
        "a workspace an agent made hang git (a named pipe planted as an object) fails that task, and "
        "holds up nothing else",
    )
    offline_timeout: int = Field(
        180,
        ge=0,
        description="seconds a run may show nothing but attempts to reconnect (codex) or failed model "
        "calls it retries (opencode) before it is stopped as a fault of the network, not the task's; 0 = never",
    )

    @field_validator("command", mode="before")
    @classmethod
    def _split_command(cls, value: Any) -> Any:
        # A string is split like a shell would split words, but it never reaches a shell.
        if isinstance(value, str):
            return _split_words(value, "the command")
        return value


class IntegrateConfig(_Strict):
    """How verified tasks land: how many candidates are checked at once, how many may wait."""

    window: int | None = Field(
        None,
        ge=1,
        description="candidates checked side by side, each stacked on the one before (base + task 1, "
        "+ task 2, ...); 1 = one at a time; default: concurrency",
    )
    max_waiting: int | None = Field(
        None,
        ge=1,
        description="verified tasks that may wait for integration before no new agent starts; "
        "default: twice the window plus concurrency",
    )


class StateConfig(_Strict):
    """Where the state (tasks, attempts, the check cache) is kept."""

    url: str | None = Field(
        None,
        description="postgresql://USER@HOST[:PORT]/DATABASE to keep the state in PostgreSQL, shared by "
        "runners on several hosts; default: SQLite, ROOT/state.db",
    )

    @field_validator("url")
    @classmethod
    def _postgresql_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        text = value.strip()
        if not is_postgresql_url(text):
            raise ValueError(
                f"{value!r} is not a PostgreSQL URL: write postgresql://USER@HOST[:PORT]/DATABASE, or leave "
                "the key out to keep the state in SQLite under the root"
            )
        if not text.partition("://")[2].partition("/")[2].split("?", 1)[0]:
            raise ValueError(f"{value!r} names no database: end it with /DATABASE")
        return text


class TasksConfig(_Strict):
    """Where tasks come from."""

    source: str = Field("builtin", description="task source: a name from the task-source registry")


# What a notification may be sent on, and the placeholders its command may use.
NOTIFY_EVENTS = ("needs_help", "landed", "paused", "resumed")
NotifyEvent = Literal["needs_help", "landed", "paused", "resumed"]
NOTIFY_PLACEHOLDERS = ("event", "task_id", "title", "message", "area", "text", "base", "root")
MAX_NOTIFY_TIMEOUT_SECONDS = 600


class NotifyRule(_Strict):
    """A command run when one of the events happens (the event as JSON on its stdin)."""

    on: list[NotifyEvent] = Field(min_length=1, description="events: needs_help, landed, paused, resumed")
    run: list[str] = Field(
        min_length=1,
        description="argv; a string is split into words like a shell would (never run by one); "
        "placeholders {event} {task_id} {title} {message} {area} {text} {base} {root}",
    )
    timeout: int = Field(
        10, gt=0, le=MAX_NOTIFY_TIMEOUT_SECONDS, description="seconds the command may run before it is stopped"
    )

    @field_validator("run", mode="before")
    @classmethod
    def _split_run(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _split_words(value, "the command")
        return value

    @field_validator("run")
    @classmethod
    def _known_placeholders(cls, value: list[str]) -> list[str]:
        if not value[0]:
            raise ValueError("the program (first word) is empty")
        for word in value:
            if "\0" in word:
                raise ValueError("an argument holds a NUL byte, which no command line can")
            # A misspelt placeholder would be sent as it is, every time: refuse it here.
            unknown = sorted(placeholders(word) - set(NOTIFY_PLACEHOLDERS))
            if unknown:
                raise ValueError(
                    f"unknown placeholder {{{unknown[0]}}} in {word!r}; known: "
                    + ", ".join(f"{{{name}}}" for name in NOTIFY_PLACEHOLDERS)
                )
        return value

    @field_validator("on")
    @classmethod
    def _unique_events(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


Recipe = str | list[str]


def _check_recipes(recipes: list[Recipe]) -> list[Recipe]:
    """Every recipe must become a non-empty argv, so a bad one is refused here, not at each run."""
    for number, recipe in enumerate(recipes, 1):
        argv = _split_words(recipe, f"recipe {number}") if isinstance(recipe, str) else recipe
        if not argv or not argv[0]:
            raise ValueError(f"recipe {number} is empty: give a command to run")
        if any("\0" in word for word in argv):
            raise ValueError(f"recipe {number} holds a NUL byte, which no command line can")
    return recipes


Recipes = Annotated[list[Recipe], AfterValidator(_check_recipes)]


PHASE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# `dev` is the agent's phase. `verify` and `integrate` may name phases, but as the only keys of
# `phases`, with only the keys run/skip_exit_codes/timeout, they are the older form that still
# loads (phases.verify.run / phases.integrate.run), with the older meaning.
RESERVED_PHASE_NAMES = frozenset({"dev"})
_SHORTHAND_KEYS = {"verify": {"run", "skip_exit_codes", "timeout"}, "integrate": {"run", "timeout"}}
Stage = Literal["verify", "integrate"]


class PhaseConfig(_Strict):
    """One phase of the check graph: recipes, what it needs first, where it runs."""

    run: Recipes = Field(
        min_length=1, description="commands run in order; a string is split into argv, a list is argv"
    )
    needs: list[str] = Field(default_factory=list, description="phases that must pass before this one starts")
    on: list[Stage] = Field(
        default_factory=lambda: list[Stage](("verify", "integrate")),
        min_length=1,
        description="verify: the task's own commit; integrate: the candidate on base's tip before base moves",
    )
    timeout: TimeoutSeconds = Field(1800, gt=0, description="seconds each recipe may run, at most 7 days")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment for the recipes")
    skip_exit_codes: list[int] = Field(
        default_factory=list,
        description="exit codes that skip the phase's remaining recipes (opt-in; a skip is not a pass)",
    )
    optional: bool = Field(False, description="a failure is reported and never rejects the task")
    cache: bool = Field(True, description="reuse a pass on the same tree; false for checks not a function of the tree")

    @field_validator("on")
    @classmethod
    def _unique_stages(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    @field_validator("env")
    @classmethod
    def _valid_env(cls, value: dict[str, str]) -> dict[str, str]:
        # Refused here rather than when the first recipe starts (where no process could be made).
        for name, text in value.items():
            if not name or "=" in name or "\0" in name or "\0" in text:
                raise ValueError(f"{name!r} cannot be set in a process environment (empty, '=' or a NUL byte)")
        return value


def _from_shorthand(phases: dict[str, Any]) -> dict[str, Any]:
    """The older ``phases.verify`` / ``phases.integrate`` form as named phases of the same meaning.

    ``verify.run`` becomes the phase ``verify``; with ``integrate.run`` null (the old default) it
    runs at integration too (and is reused there when the tree is the same), otherwise
    ``integrate.run`` becomes a phase ``integrate`` of its own.
    """
    old_verify = phases.get("verify") or {}
    old_integrate = phases.get("integrate") or {}
    for name, old in (("verify", old_verify), ("integrate", old_integrate)):
        # Checked here too: a section without recipes becomes no phase, but a bad value is an error.
        timeout = old.get("timeout")
        if timeout is not None and (not isinstance(timeout, int) or not 0 < timeout <= MAX_TIMEOUT_SECONDS):
            raise ValueError(
                f"key 'phases.{name}.timeout': must be a whole number of seconds, more than 0 and at most "
                f"{MAX_TIMEOUT_SECONDS} (7 days) (got {timeout!r})"
            )
    verify_run = old_verify.get("run") or []
    integrate_run = old_integrate.get("run")
    skip = old_verify.get("skip_exit_codes", [])
    timeout = old_verify.get("timeout", 1800)
    converted: dict[str, Any] = {}
    if verify_run:
        stages = ["verify", "integrate"] if integrate_run is None else ["verify"]
        converted["verify"] = {"run": verify_run, "skip_exit_codes": skip, "timeout": timeout, "on": stages}
    if integrate_run:
        converted["integrate"] = {
            "run": integrate_run,
            "skip_exit_codes": skip,
            "timeout": old_integrate.get("timeout") or timeout,
            "on": ["integrate"],
        }
    return converted


def _is_shorthand(phases: Mapping[str, Any]) -> bool:
    return bool(phases) and all(
        name in _SHORTHAND_KEYS and isinstance(value, Mapping) and set(value) <= _SHORTHAND_KEYS[name]
        for name, value in phases.items()
    )


def check_graph(phases: Mapping[str, PhaseConfig]) -> str | None:
    """What is wrong with the graph of ``phases`` (names, needs, cycles, stages), or None."""
    for name in phases:
        if not PHASE_NAME.match(name):
            return (
                f"phases.{name}: {name!r} is not a valid phase name: use letters, digits, '.', '_' "
                "and '-' (at most 64, starting with a letter or digit)"
            )
    needs = {name: phase.needs for name, phase in phases.items()}
    for name, need in graph.unknown_needs(needs):
        return f"phases.{name}.needs: {need!r} is not a phase; valid names: {', '.join(phases) or '(none)'}"
    cycle = graph.find_cycle(needs)
    if cycle:
        return f"phases: the needs form a cycle: {' -> '.join(cycle)}; a phase cannot need itself"
    for name, phase in phases.items():
        for need in phase.needs:
            missing = [stage for stage in phase.on if stage not in phases[need].on]
            if missing:
                return (
                    f"phases.{name}.needs: {need!r} does not run at {', '.join(missing)}, where "
                    f"{name!r} runs (its on: {phases[need].on}); add {missing[0]} to phases.{need}.on "
                    f"or remove it from phases.{name}.on"
                )
    return None


class PipelineConfig(BaseSettings):
    """The whole effective configuration of one pipeline."""

    model_config = SettingsConfigDict(
        extra="forbid",
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        validate_default=True,
    )

    repo: Path | None = Field(None, description="repository worked on; default: the config's repo")
    root: Path = Field(
        Path(RUNNER_DIR_NAME),
        description="workspaces, state.db, logs; default: .pipeline-runner in the repository's top directory",
    )
    base: str = Field("live", min_length=1, description="base branch tasks land on")
    concurrency: int = Field(2, ge=1, description="dev agents at once")
    interval: float = Field(10, gt=0, description="seconds between cycles; backoff unit")
    parent: str | None = Field(None, description="only tasks under this epic")
    task_id: str | None = Field(None, description="only this task")
    limits: Limits = Field(default_factory=Limits)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    tasks: TasksConfig = Field(default_factory=TasksConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    integrate: IntegrateConfig = Field(default_factory=IntegrateConfig)
    phases: dict[str, PhaseConfig] = Field(
        default_factory=dict,
        description="the check graph: named phases with run, needs, on, timeout, env, skip_exit_codes, "
        "optional, cache (the older verify/integrate form still loads)",
    )
    check_concurrency: int | None = Field(
        None, ge=1, description="phase recipes running at once, across tasks; default: the machine's cores"
    )
    notify: list[NotifyRule] = Field(
        default_factory=list, description="commands run on events (needs_help, landed, paused, resumed)"
    )
    check_base: bool = Field(
        True,
        description="run the phases on base's tip before agents start, and pause the queue while they fail "
        "there; false: trust base",
    )
    remote: str | None = Field(
        None,
        description="the git remote (its name in the repository) that task commits are published to and "
        "base is moved on; default: none, base is local only",
    )
    lease: float = Field(
        30,
        # Under a second, renewing (a write transaction) competes with every runner's writes and one
        # slow turn hands the work over; past a year, the expiry is past any date a clock can write.
        ge=1,
        le=366 * 24 * 3600,
        description="seconds a runner's lease on the shared state lasts unrenewed before other runners take "
        "its work over (renewed three times per lease while it runs); from 1 s to 366 days",
    )
    allow_unchecked: bool = Field(
        False,
        description="promote a task no check ran on (no recipe applied, or a skip code ended them "
        "before any passed); false: such a task goes to needs_help",
    )

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        return _no_boolean_numbers(cls, value, info)

    @field_validator("phases", mode="before")
    @classmethod
    def _phases_shorthand(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        if _is_shorthand(value):
            return _from_shorthand(dict(value))
        # A phase set to null is removed: how a file that extends another drops one of its phases.
        value = {name: phase for name, phase in value.items() if phase is not None}
        for name in value:
            if name in RESERVED_PHASE_NAMES:
                raise ValueError(
                    f"phases.{name}: {name!r} is a reserved name (the agent's phase); give the phase another name"
                )
        return value

    @field_validator("phases")
    @classmethod
    def _valid_graph(cls, value: dict[str, PhaseConfig]) -> dict[str, PhaseConfig]:
        problem = check_graph(value)
        if problem:
            raise ValueError(problem)
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only the values given to the model: flags, env and files are layered by load_config."""
        # Layers are merged by load_config so that each value keeps its origin; the model then
        # only validates the merged result.
        return (init_settings,)

    @property
    def repo_path(self) -> Path:
        """The repository, absolute (resolved by load_config)."""
        assert self.repo is not None
        return self.repo

    def stage_phases(self, stage: str) -> dict[str, PhaseConfig]:
        """The phases that run at ``stage`` (verify or integrate), in declaration order."""
        return {name: phase for name, phase in self.phases.items() if stage in phase.on}

    def phase_order(self) -> list[str]:
        """Every phase after all it needs."""
        return graph.order({name: phase.needs for name, phase in self.phases.items()})

    @property
    def check_slots(self) -> int:
        """Phase recipes that may run at once (check_concurrency, default the machine's cores)."""
        return self.check_concurrency or os.cpu_count() or 1

    @property
    def integrate_window(self) -> int:
        """Candidates checked side by side (integrate.window, default concurrency)."""
        return self.integrate.window or self.concurrency

    @property
    def max_waiting(self) -> int:
        """Verified tasks that may wait for integration before development holds back."""
        return self.integrate.max_waiting or 2 * self.integrate_window + self.concurrency

    @property
    def state_db(self) -> Path:
        """Path of the SQLite state database."""
        return self.root / "state.db"

    @property
    def state_target(self) -> Path | str:
        """Where the state is: the PostgreSQL URL of ``state.url``, else the SQLite file."""
        return self.state.url or self.state_db


# Flags of `run` and `config show`, mapped to the config key each sets.
FLAG_KEYS: dict[str, str] = {
    "root": "root",
    "base": "base",
    "concurrency": "concurrency",
    "interval": "interval",
    "max_retries": "limits.max_retries",
    "max_task_cost": "limits.max_task_cost",
    "timeout": "agent.timeout",
    "max_iter": "agent.max_iter",
    "max_cost": "agent.max_cost",
    "provider": "agent.provider",
    "parent": "parent",
    "task_id": "task_id",
}


@dataclass(frozen=True)
class Origin:
    """Where one effective value came from."""

    kind: str  # "default", "file", "env" or "flag"
    where: str  # the file path, variable name or flag; empty for defaults

    def describe(self) -> str:
        """Human-readable origin, as `config show` prints it."""
        if self.kind == "default":
            return "default"
        if self.kind == "file":
            return self.where
        if self.kind == "env":
            return f"env {self.where}"
        return f"flag {self.where}"


@dataclass
class LoadedConfig:
    """A validated config together with the origin of every value and the file it came from."""

    config: PipelineConfig
    origins: dict[str, Origin]
    config_file: Path | None
    files: list[Path] = field(default_factory=list)
    # Said on stderr by the CLI: valid, but probably not what the person meant.
    warnings: list[str] = field(default_factory=list)

    def effective(self) -> dict[str, Any]:
        """Every leaf key (dotted) with its effective value as JSON-friendly data."""
        return _flatten(self.config.model_dump(mode="json"))

    def origin_of(self, key: str) -> Origin:
        """The origin of a dotted key, or of its nearest ancestor."""
        probe = key
        while probe:
            if probe in self.origins:
                return self.origins[probe]
            probe = probe.rpartition(".")[0]
        return Origin("default", "")


def _unknown_name(what: str, value: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(value, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown {what} {value!r}; valid names: {', '.join(valid)}.{hint}"


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _deep_merge(low: dict[str, Any], high: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(low)
    for key, value in high.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value


def _read_yaml_chain(
    path: Path, seen: tuple[Path, ...] = (), warnings: list[str] | None = None
) -> tuple[dict[str, Any], dict[str, Origin]]:
    """Read one YAML file and the files it extends; later files override the ones they extend."""
    path = path.resolve()
    if path.is_dir():
        what = f"{seen[-1]}: key 'extends'" if seen else "Config file"
        raise ConfigError(f"{what}: {path} is a directory, not a YAML file.")
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError(f"{path}: 'extends' forms a cycle: {chain}")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if seen:
            raise ConfigError(f"{seen[-1]}: key 'extends': file {path} does not exist") from None
        raise ConfigError(f"Config file {path} does not exist.") from None
    except OSError as exc:
        raise ConfigError(f"Config file {path} cannot be read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        if warnings is not None:
            warnings.append(f"{path} is empty (no key set): every key takes its default")
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not {type(data).__name__}")
    base_data: dict[str, Any] = {}
    base_origins: dict[str, Origin] = {}
    parent_ref = data.pop("extends", None)
    if parent_ref is not None:
        if not isinstance(parent_ref, str):
            raise ConfigError(f"{path}: key 'extends' must be a file path")
        base_data, base_origins = _read_yaml_chain(path.parent / parent_ref, (*seen, path), warnings)
    _unquoted_on(data)
    phases = data.get("phases")
    if isinstance(phases, dict) and _is_shorthand(phases):
        # Read as named phases file by file, so a file in the named form can extend one in the older.
        try:
            data["phases"] = _from_shorthand(phases)
        except ValueError as exc:
            raise ConfigError(f"Invalid configuration:\n  {path}: {exc}") from None
    own_origins = {key: Origin("file", str(path)) for key in _flatten(data)}
    # A relative repo or root in a file means relative to that file, not to the cwd.
    for key in ("repo",):
        if isinstance(data.get(key), str) and not Path(data[key]).is_absolute():
            data[key] = str((path.parent / data[key]).resolve())
    return _deep_merge(base_data, data), {**base_origins, **own_origins}


def _unquoted_on(data: dict[str, Any]) -> None:
    """YAML 1.1 reads an unquoted ``on:`` key as the boolean true; under a phase or a notify
    entry it means ``on``."""
    phases = data.get("phases")
    sections = list(phases.values()) if isinstance(phases, dict) else []
    notify = data.get("notify")
    sections += notify if isinstance(notify, list) else []
    for section in sections:
        if isinstance(section, dict) and True in section and "on" not in section:
            section["on"] = section.pop(True)


def _env_layer() -> tuple[dict[str, Any], dict[str, Origin]]:
    data = read_env(PipelineConfig, os.environ, ENV_PREFIX, ENV_DELIMITER)
    origins: dict[str, Origin] = {}
    for dotted in _flatten(data):
        parts = dotted.split(".")
        # A whole nested section can also be given as JSON in one variable.
        for cut in range(len(parts), 0, -1):
            name = ENV_PREFIX + ENV_DELIMITER.join(parts[:cut]).upper()
            if name in os.environ:
                origins[dotted] = Origin("env", name)
                break
        else:
            origins[dotted] = Origin("env", ENV_PREFIX + ENV_DELIMITER.join(parts).upper())
    return data, origins


def load_config(
    config_file: Path | None,
    flags: Mapping[str, Any] | None = None,
    registries: Mapping[str, Collection[str]] | None = None,
) -> LoadedConfig:
    """Merge defaults, the YAML chain, ``PIPELINE_*`` variables and flags, then validate.

    ``flags`` maps FLAG_KEYS names to values; None values mean "not given". ``registries`` maps
    "preset" and "task source" to the names registered (runner.registries.names()); a name
    not among them is an error naming its file and key.
    """
    file_data: dict[str, Any] = {}
    origins: dict[str, Origin] = {}
    files: list[Path] = []
    warnings: list[str] = []
    if config_file is not None:
        file_data, origins = _read_yaml_chain(config_file, (), warnings)
        files = sorted({Path(o.where) for o in origins.values() if o.kind == "file"})
    env_data, env_origins = _env_layer()
    flag_data: dict[str, Any] = {}
    flag_origins: dict[str, Origin] = {}
    for name, value in (flags or {}).items():
        if value is None or value is False:
            continue
        key = FLAG_KEYS[name]
        _set_dotted(flag_data, key, value)
        flag_origins[key] = Origin("flag", "--" + name.replace("_", "-"))
    merged = _deep_merge(_deep_merge(file_data, env_data), flag_data)
    origins = {**origins, **env_origins, **flag_origins}
    for key in list(origins):
        # A higher layer that replaced a whole section owns every key below it.
        for other, origin in list(origins.items()):
            if key.startswith(other + ".") and _outranks(origin, origins[key]):
                origins[key] = origin

    try:
        config = PipelineConfig(**merged)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, origins, config_file)) from None
    _check_registered(config, registries or {}, origins, config_file)

    config = _resolve_paths(config, origins, config_file, warnings)
    warnings += unknown_env_variables(PipelineConfig, os.environ, ENV_PREFIX, ENV_DELIMITER)
    return LoadedConfig(config=config, origins=origins, config_file=config_file, files=files, warnings=warnings)


# The config keys that name an entry of a registry, and what the registry calls its entries.
REGISTRY_KEYS = {"agent.preset": "preset", "tasks.source": "task source"}


def _check_registered(
    config: PipelineConfig,
    registries: Mapping[str, Collection[str]],
    origins: Mapping[str, Origin],
    config_file: Path | None,
) -> None:
    """Each key that names a registry entry names one the registry has (when its names are given:
    this module imports no registry, the caller hands their names in)."""
    values = {"agent.preset": config.agent.preset, "tasks.source": config.tasks.source}
    for key, what in REGISTRY_KEYS.items():
        names = registries.get(what)
        if names is not None and values[key] not in names:
            where = _where(key, origins, config_file)
            message = _unknown_name(what, values[key], sorted(names))
            raise ConfigError(f"Invalid configuration:\n  {where}: key {key!r}: {message}")


_RANK = {"default": 0, "file": 1, "env": 2, "flag": 3}


def _outranks(a: Origin, b: Origin) -> bool:
    return _RANK[a.kind] > _RANK[b.kind]


def _resolve_paths(
    config: PipelineConfig, origins: dict[str, Origin], config_file: Path | None, warnings: list[str]
) -> PipelineConfig:
    if config.repo is not None:
        repo = config.repo if config.repo.is_absolute() else Path.cwd() / config.repo
    else:
        start = config_file.parent if config_file is not None else Path.cwd()
        repo = git_toplevel(start) or start.resolve()
    repo = repo.resolve()
    git_dir = _git_dir(repo)
    if "root" not in origins:
        root = repo / RUNNER_DIR_NAME
        if (repo / OLD_DEFAULT_ROOT / "state.db").is_file() and not (root / "state.db").exists():
            warnings.append(
                f"the state of an earlier pipeline-runner is in {repo / OLD_DEFAULT_ROOT} (the old default "
                f"root), not in {root} (the default now): set root: {OLD_DEFAULT_ROOT} in the config to "
                f"keep using it, or move it to {root}"
            )
    else:
        root = (config.root if config.root.is_absolute() else repo / config.root).resolve()
    problem = _root_problem(root, repo, git_dir)
    if problem:
        where = _where("root", origins, config_file)
        raise ConfigError(f"Invalid configuration:\n  {where}: key 'root': {problem}")
    return config.model_copy(update={"repo": repo, "root": root})


def _git_dir(repo: Path) -> Path | None:
    """The git directory of the checkout at ``repo`` (``.git``, or where a ``.git`` file points:
    a linked worktree's or a submodule's), resolved; None outside a git repository."""
    dot = repo / ".git"
    if dot.is_dir():
        return dot.resolve()
    try:
        text = dot.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not text.startswith("gitdir:"):
        return None
    target = Path(text.removeprefix("gitdir:").strip())
    return (target if target.is_absolute() else repo / target).resolve()


def _root_problem(root: Path, repo: Path, git_dir: Path | None = None) -> str | None:
    """Why ``root`` cannot hold the runner's files for ``repo``, or None. All are resolved."""
    # The root writes a `*` .gitignore into itself, and it removes and rebuilds what it holds.
    hint = (
        f"leave root unset (its default, {RUNNER_DIR_NAME}, is ignored by git and your tools), "
        "or use a directory beside the repository"
    )
    if root == repo:
        return (
            f"{root} is the repository itself: the root's '*' .gitignore would hide every new file "
            f"from git status; {hint}"
        )
    in_git = (git_dir is not None and root.is_relative_to(git_dir)) or (
        root.is_relative_to(repo) and ".git" in root.relative_to(repo).parts
    )
    if in_git:
        # Besides belonging to git: agent CLIs refuse or ask before every edit under a .git path.
        return f"{root} is inside the repository's .git directory, which belongs to git; {hint}"
    if repo.is_relative_to(root):
        return (
            f"{root} contains the repository {repo}: the root is the runner's own directory "
            f"(worktrees, state, logs); {hint}"
        )
    return None


def _model_keys(loc: tuple[str | int, ...]) -> list[str]:
    """Valid keys of the section that ``loc`` (without its last element) points into."""
    model: Any = PipelineConfig
    for part in loc[:-1]:
        info = getattr(model, "model_fields", {}).get(part)
        if info is None:
            return []
        annotation = info.annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        if model is None:
            return []
    return sorted(getattr(model, "model_fields", {}))


def _where(dotted: str, origins: Mapping[str, Origin], config_file: Path | None) -> str:
    """The file, variable or flag that set a dotted key (or its nearest ancestor)."""
    probe = dotted
    while probe:
        if probe in origins:
            return origins[probe].describe()
        probe = probe.rpartition(".")[0]
    return str(config_file) if config_file else "default"


def _explain(exc: ValidationError, origins: dict[str, Origin], config_file: Path | None) -> str:
    lines = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        dotted = ".".join(str(p) for p in loc)
        where = _where(dotted, origins, config_file)
        if error["type"] == "extra_forbidden":
            valid = _model_keys(loc)
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
            hint = f" Did you mean {'.'.join([*map(str, loc[:-1]), close[0]])!r}?" if close else ""
            lines.append(f"{where}: unknown key {dotted!r}.{hint} Valid keys here: {', '.join(valid)}.")
        else:
            got = error.get("input")
            shown = f" (got {got!r})" if not isinstance(got, dict) else ""
            msg = error["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
            lines.append(f"{where}: key {dotted!r}: {msg}{shown}")
    return "Invalid configuration:\n  " + "\n  ".join(lines)


def recipe_argv(recipe: Recipe) -> list[str]:
    """A recipe as an argv template: strings are split into words, lists are already argv."""
    return shlex.split(recipe) if isinstance(recipe, str) else list(recipe)
