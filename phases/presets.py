"""Presets for the coding-agent CLIs people use: how to start each headless, capped, and how to
read its machine-readable output into a result.

Each runs under the same supervisor as the command backend (detached, timeout enforced on its whole
process group, output redacted). Success is judged from what the CLI reports, never from its exit
code alone: several exit 0 after a failed model call.
"""

from __future__ import annotations

import abc
import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from phases.agents import (
    AgentHandle,
    AgentOutcome,
    AgentRequest,
    AgentState,
    CommandBackend,
    log_tail,
    number,
    stdout_file,
)
from runner.templates import fill_argv


def _json_lines(text: str) -> Iterator[dict[str, Any]]:
    """The JSON objects among ``text``'s lines; other lines (warnings, banners) are skipped."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                yield value


def _mapping(value: object) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one (CLIs leave fields out)."""
    return value if isinstance(value, dict) else {}


def _json_document(text: str) -> dict[str, Any] | None:
    """A JSON object printed whole (possibly over several lines) after any leading noise."""
    start = text.find("{")
    while start != -1:
        try:
            value, _ = json.JSONDecoder().raw_decode(text[start:])
        except ValueError:
            start = text.find("{", start + 1)
            continue
        return value if isinstance(value, dict) else None
    return None


def _json_documents(text: str) -> Iterator[dict[str, Any]]:
    """Every JSON object printed whole in ``text`` (over one line or many), amid other output."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            start = text.find("{", start + 1)
            continue
        if isinstance(value, dict):
            yield value
        start = text.find("{", end)


def _clip(text: str, limit: int = 300) -> str:
    """One line of at most ``limit`` characters, for a failure message."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


class CliPreset(CommandBackend):
    """A known agent CLI: argv built from the config, stdout parsed into an outcome."""

    separate_stdout = True
    default_executable = ""

    def check(self) -> str | None:
        """Presets need no command; they build their own."""
        return None

    def executable_name(self) -> str | None:
        """The CLI's program (``agent.executable`` overrides it)."""
        return self.config.executable or self.default_executable

    def argv(self, request: AgentRequest) -> list[str]:
        """Program, the preset's options, ``agent.args``, then the prompt.

        The prompt comes last, after whatever marks the end of the options for that CLI, so that a
        prompt starting with ``-`` is never read as an option (and ``agent.args`` still are options).
        """
        return [
            self.executable_name() or "",
            *self.arguments(request),
            *fill_argv(self.config.args, request.values),
            *self.prompt_arguments(request),
        ]

    @abc.abstractmethod
    def arguments(self, request: AgentRequest) -> list[str]:
        """The preset's own options."""

    def prompt_arguments(self, request: AgentRequest) -> list[str]:
        """How the prompt is passed, after every option (none: the CLI reads it from a file)."""
        return []

    def environment(self, env: dict[str, str]) -> dict[str, str]:
        """The agent's environment, with what the CLI needs to run headless in the runner's workspace."""
        return env

    def start(self, request: AgentRequest) -> AgentHandle:
        """Start the CLI with its environment completed."""
        return super().start(replace(request, env=self.environment(dict(request.env))))

    @abc.abstractmethod
    def parse(self, stdout: str, exit_code: int, handle: AgentHandle) -> AgentOutcome:
        """The outcome from the CLI's stdout and exit code."""

    def judge_exit(self, exit_code: int, handle: AgentHandle) -> AgentOutcome:
        """Read what the CLI reported."""
        try:
            stdout = stdout_file(handle.status_file).read_text(encoding="utf-8", errors="replace")
        except OSError:
            stdout = ""
        return self.parse(stdout, exit_code, handle)

    def stalled(self, handle: AgentHandle) -> str | None:
        """Why a run that is still going can do nothing useful (its endpoint is unreachable), or None."""
        return None

    def poll(self, handle: AgentHandle) -> AgentOutcome:
        """As for any command, and a run that is stalled is stopped, as a fault of its environment."""
        outcome = super().poll(handle)
        if outcome.state is AgentState.RUNNING:
            self.stop_if_stalled(handle)
        return outcome

    def poll_running(self, handle: AgentHandle) -> AgentOutcome:
        """Running; stopped first if it is stalled."""
        self.stop_if_stalled(handle)
        return AgentOutcome(AgentState.RUNNING)

    def stop_if_stalled(self, handle: AgentHandle) -> None:
        """Stop a running run that is stalled (``stalled``), the reason kept for its verdict."""
        marker = stalled_file(handle.status_file)
        if not marker.exists():
            reason = self.stalled(handle)
            if reason is None:
                return
            marker.write_text(reason, encoding="utf-8")
        # Asked again at every look until it has ended: a runner killed right after the first
        # ask leaves the next one to finish the job.
        self.cancel(handle)

    def verdict(self, handle: AgentHandle) -> AgentOutcome | None:
        """The outcome once the run has ended; a run stopped as stalled fails with the reason."""
        outcome = super().verdict(handle)
        if outcome is None:
            return None
        try:
            reason = stalled_file(handle.status_file).read_text(encoding="utf-8")
        except OSError:
            return outcome
        spent = self.judge_exit(-1, handle)
        return AgentOutcome(AgentState.FAILED, reason, spent.cost_cents, spent.tokens, environment=True)

    def tokens_cost(self, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0) -> float:
        """Cents for a token count, where the config gives prices (else 0).

        ``cached_input_tokens`` are part of ``input_tokens``, priced at ``cached_input`` (default:
        the input price).
        """
        prices = self.config.price_per_mtok
        if prices is None:
            return 0.0
        cached = min(cached_input_tokens, input_tokens)
        cached_price = prices.input if prices.cached_input is None else prices.cached_input
        dollars = (
            (input_tokens - cached) * prices.input + cached * cached_price + output_tokens * prices.output
        )
        return dollars / 1_000_000 * 100

    def failed(
        self,
        message: str,
        handle: AgentHandle,
        cost: float = 0.0,
        tokens: int | None = None,
        *,
        environment: bool = False,
        work_counts: bool = False,
        detail: str | None = None,
    ) -> AgentOutcome:
        """A failure, with what kind it is."""
        return AgentOutcome(
            AgentState.FAILED,
            message,
            cost,
            tokens,
            environment=environment,
            work_counts=work_counts,
            detail=detail,
        )

    def silent(self, exit_code: int, handle: AgentHandle) -> AgentOutcome:
        """No machine-readable result at all."""
        return AgentOutcome(
            AgentState.FAILED,
            f"{self.name} printed no result (exit {exit_code}): {log_tail(handle.log_path, 800)}",
        )


def stalled_file(status_file: Path) -> Path:
    """Where the reason a stalled run was stopped is kept, for whichever runner harvests it."""
    return status_file.with_suffix(".stalled")


def _is_root() -> bool:
    return os.geteuid() == 0


# What claude prints on stderr, with an empty stdout and exit 1, when told to skip permission
# checks as root outside a declared sandbox.
CLAUDE_ROOT_REFUSAL = "cannot be used with root/sudo privileges"
# API statuses that no task can fix: the key or the account.
AUTH_STATUSES = frozenset({401, 403})


class ClaudeCode(CliPreset):
    """Claude Code: ``claude -p --output-format json ... -- PROMPT``; one result object on stdout."""

    name = "claude-code"
    default_executable = "claude"
    # acceptEdits lets it edit files but denies the Bash calls that would commit them.
    runner_commits = True

    def permission_mode(self) -> str:
        """``agent.permissions``, or bypassPermissions: the workspace is the runner's to lose."""
        return self.config.permissions or "bypassPermissions"

    def arguments(self, request: AgentRequest) -> list[str]:
        """Print mode, JSON, turn cap, budget cap, permissions."""
        args = [
            "-p", "--output-format", "json",
            "--max-turns", str(self.config.max_iter),
            "--permission-mode", self.permission_mode(),
        ]  # fmt: skip
        if self.config.max_cost:
            args += ["--max-budget-usd", f"{self.config.max_cost / 100:.2f}"]
        if self.config.model:
            args += ["--model", self.config.model]
        return args

    def prompt_arguments(self, request: AgentRequest) -> list[str]:
        """The prompt as the operand after ``--``."""
        return ["--", _prompt(request)]

    def environment(self, env: dict[str, str]) -> dict[str, str]:
        """As root, IS_SANDBOX=1 with bypassPermissions, unless ``agent.env`` sets IS_SANDBOX.

        Claude refuses to skip permission checks as root unless told it runs in a sandbox; the
        agent's sandbox is the workspace the runner made for it (see the README on containment).
        A value inherited from the runner's environment is replaced: only "1" lets claude start.
        """
        if self.permission_mode() == "bypassPermissions" and _is_root() and "IS_SANDBOX" not in self.config.env:
            env["IS_SANDBOX"] = "1"
        return env

    def parse(self, stdout: str, exit_code: int, handle: AgentHandle) -> AgentOutcome:
        """Success is ``subtype == "success"`` and not ``is_error``; an API error, a cap or a refusal
        to start each get a message that says which, and what to change."""
        results = [o for o in _json_lines(stdout) if o.get("type") == "result"]
        result = results[-1] if results else _json_document(stdout)
        if not result:
            if CLAUDE_ROOT_REFUSAL in log_tail(handle.log_path, 4000):
                return self.failed(self.root_refusal(), handle, environment=True)
            return self.silent(exit_code, handle)
        cost = number(result.get("total_cost_usd")) * 100
        tokens = _claude_tokens(result)
        denied = _claude_denials(result, self.permission_mode())
        subtype = str(result.get("subtype") or "")
        if subtype == "success" and not result.get("is_error"):
            return AgentOutcome(AgentState.SUCCEEDED, None, cost, tokens, detail=denied)
        suffix = f"; {denied}" if denied else ""
        status = result.get("api_error_status")
        if status is not None or (subtype == "success" and result.get("is_error")):
            message = _claude_api_message(str(result.get("result") or ""))
            return self.failed(
                f"claude: API error {status if status is not None else '(no status)'}: {message}{suffix}",
                handle, cost, tokens, environment=isinstance(status, int) and status in AUTH_STATUSES,
            )  # fmt: skip
        errors = result.get("errors")
        listed = "; ".join(str(e) for e in errors) if isinstance(errors, list) else ""
        detail = listed or str(result.get("result") or result.get("error") or "")
        if subtype in ("error_max_turns", "error_max_budget_usd"):
            return self.failed(
                f"claude stopped on its cap ({subtype}): {_clip(detail) or 'no detail'}{suffix}",
                handle, cost, tokens, work_counts=True,
            )  # fmt: skip
        return self.failed(
            f"claude reported {subtype or 'an error'}: {_clip(detail)}{suffix}", handle, cost, tokens
        )

    def root_refusal(self) -> str:
        """The fix for claude's refusal to skip permission checks as root."""
        return (
            "claude refused to start: as root, --permission-mode bypassPermissions needs IS_SANDBOX=1 in "
            "its environment. The runner sets IS_SANDBOX=1 itself as root unless agent.env sets "
            "IS_SANDBOX: remove it from agent.env or set it to '1'; or run the "
            "runner as a user other than root; or set agent.permissions: acceptEdits (the runner then "
            "commits the agent's edits)"
        )


def _claude_tokens(result: dict[str, Any]) -> int | None:
    """Tokens from ``modelUsage`` (every model, side requests included, cache reads and writes
    counted), else from ``usage``, which leaves those out."""
    per_model = _mapping(result.get("modelUsage"))
    if per_model:
        keys = ("inputTokens", "outputTokens", "cacheReadInputTokens", "cacheCreationInputTokens")
        return int(sum(number(_mapping(m).get(k)) for m in per_model.values() for k in keys))
    usage = _mapping(result.get("usage"))
    if not usage:
        return None
    keys = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    return int(sum(number(usage.get(k)) for k in keys))


def _claude_denials(result: dict[str, Any], mode: str) -> str | None:
    """The tool calls claude's permission mode denied, as a person reads them."""
    denials = result.get("permission_denials")
    if not isinstance(denials, list) or not denials:
        return None
    shown = []
    for denial in denials[:5]:
        entry = _mapping(denial)
        tool_input = _mapping(entry.get("tool_input"))
        path = str(tool_input.get("file_path") or tool_input.get("path") or "")
        # A path's end says which file; a command's start says what it does.
        what = _clip(str(tool_input["command"]), 80) if tool_input.get("command") else _clip(path[-80:], 80)
        shown.append(f"{entry.get('tool_name', 'a tool')}({what})")
    more = f" and {len(denials) - 5} more" if len(denials) > 5 else ""
    return f"permission mode {mode} denied {len(denials)} tool call(s): {', '.join(shown)}{more}"


def _claude_api_message(text: str) -> str:
    """Claude's ``API Error: 400 {json}`` as ``invalid_request_error: the message``."""
    rest = text.removeprefix("API Error:").strip()
    head, _, body = rest.partition(" ")
    if head.isdigit():
        rest = body.strip()
    document = next(_json_documents(rest), None)
    error = _mapping(document.get("error")) if document else {}
    if error.get("message"):
        kind = f"{error['type']}: " if error.get("type") else ""
        return _clip(f"{kind}{error['message']}")
    return _clip(rest or text or "no message")


# codex prints these as `error` events while it retries its connection; a run that then completes
# is fine, one that only ever prints them cannot reach its endpoint.
CODEX_RECONNECTING = "Reconnecting..."


class Codex(CliPreset):
    """Codex: ``codex exec --json ... -- PROMPT``; JSON-lines events, tokens but no dollar figure."""

    name = "codex"
    default_executable = "codex"
    # workspace-write keeps .git read-only: codex edits files but its `git commit` fails.
    runner_commits = True

    def arguments(self, request: AgentRequest) -> list[str]:
        """Exec mode, JSON events, a workspace-write sandbox."""
        args = ["exec", "--json", "--sandbox", self.config.permissions or "workspace-write"]
        if self.config.model:
            args += ["--model", self.config.model]
        return args

    def prompt_arguments(self, request: AgentRequest) -> list[str]:
        """The prompt as the positional argument after ``--``."""
        return ["--", _prompt(request)]

    def parse(self, stdout: str, exit_code: int, handle: AgentHandle) -> AgentOutcome:
        """Judged by ``turn.failed``, a missing ``turn.completed`` and the exit status; ``error``
        events alone (codex reconnecting) are not failures. Tokens summed over ``turn.completed``."""
        input_tokens = cached_tokens = output_tokens = turns = 0
        failures: list[str] = []
        errors: list[str] = []
        for event in _json_lines(stdout):
            kind = event.get("type")
            if kind == "turn.completed":
                turns += 1
                usage = _mapping(event.get("usage"))
                # input_tokens include cached_input_tokens; output_tokens include the reasoning
                # tokens codex may list apart, so neither is added twice.
                input_tokens += int(number(usage.get("input_tokens")))
                cached_tokens += int(number(usage.get("cached_input_tokens")))
                output_tokens += int(number(usage.get("output_tokens")))
            elif kind == "turn.failed":
                failures.append(str(_mapping(event.get("error")).get("message") or "turn failed"))
            elif kind == "error":
                errors.append(str(event.get("message") or "error"))
        cost = self.tokens_cost(input_tokens, output_tokens, cached_tokens)
        tokens = input_tokens + output_tokens if turns else None
        if failures:
            return self.failed(f"codex: {_clip(failures[-1])}", handle, cost, tokens)
        last_error = f": {_clip(errors[-1])}" if errors else ""
        if not turns:
            if errors:
                return self.failed(
                    f"codex completed no turn (exit {exit_code}){last_error}", handle, cost, tokens
                )
            return self.silent(exit_code, handle)
        if exit_code != 0:
            return self.failed(f"codex exited {exit_code}{last_error}", handle, cost, tokens)
        return AgentOutcome(AgentState.SUCCEEDED, None, cost, tokens)

    def stalled(self, handle: AgentHandle) -> str | None:
        """A run that, ``agent.offline_timeout`` seconds after it started, has printed nothing but
        attempts to reconnect: codex retries forever without network, and never fails by itself."""
        limit = self.config.offline_timeout
        if not limit or time.time() - handle.started_at < limit:
            return None
        attempts = 0
        last = ""
        try:
            with open(stdout_file(handle.status_file), encoding="utf-8", errors="replace") as events:
                for event in _json_lines_of(events):
                    kind = event.get("type")
                    if kind in ("thread.started", "turn.started"):
                        continue
                    message = str(event.get("message") or "")
                    if kind != "error" or not message.startswith(CODEX_RECONNECTING):
                        return None  # it got somewhere
                    attempts += 1
                    last = message
        except OSError:
            return None
        if not attempts:
            return None
        return (
            f"codex cannot reach its model endpoint: after {limit}s it had done nothing but try to "
            f"reconnect ({attempts} attempts, the last: {_clip(last, 160)!r}). The network or the "
            "endpoint is unreachable from this machine: check the connection, and the provider's "
            "base_url in $CODEX_HOME/config.toml for a custom endpoint"
        )


def _json_lines_of(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The JSON objects among ``lines``, read one at a time (a stream may be long)."""
    for line in lines:
        yield from _json_lines(line)


class OpenCode(CliPreset):
    """opencode: ``opencode run --format json --dir WORKSPACE ... -- PROMPT``; NDJSON parts,
    ``step_finish`` carries tokens and cost."""

    name = "opencode"
    default_executable = "opencode"

    def arguments(self, request: AgentRequest) -> list[str]:
        """Run mode with JSON events, in the workspace.

        opencode takes its project directory from ``$PWD`` before its working directory; ``--dir``
        overrides both, so it works in the workspace whatever ``PWD`` it inherited.
        """
        args = ["run", "--format", "json", "--dir", str(request.workspace)]
        # Its warnings and errors on stderr (the run's log): the only sign of a model call it retries.
        args += ["--print-logs", "--log-level", "WARN"]
        if self.config.model:
            args += ["--model", self.config.model]
        return args

    def stalled(self, handle: AgentHandle) -> str | None:
        """A run with no event for ``agent.offline_timeout`` seconds while its log shows only model
        calls failing: opencode retries a persistent server error (an HTTP 500, an endpoint that
        refuses) with a growing delay and no cap, printing nothing on stdout, so it would last until
        agent.timeout. A quiet run without such errors (a long tool call) is left alone."""
        limit = self.config.offline_timeout
        now = time.time()
        if not limit or now - handle.started_at < limit:
            return None
        progress = handle.started_at
        try:
            with open(stdout_file(handle.status_file), encoding="utf-8", errors="replace") as events:
                for event in _json_lines_of(events):
                    progress = max(progress, number(event.get("timestamp")) / 1000)
        except OSError:
            pass
        if now - progress < limit:
            return None
        errors = [
            line for line in log_tail(handle.log_path, 64_000).splitlines()
            if OPENCODE_STREAM_ERROR in line and _log_time(line) >= progress - 1
        ]  # fmt: skip
        if len(errors) < 2:
            return None
        return (
            f"opencode's model calls keep failing: no step for {limit}s, only retries ({len(errors)} "
            f"failed calls, the last ending: {_clip(errors[-1][-160:], 200)!r}). opencode retries a server error (HTTP 5xx) "
            "or an unreachable endpoint for ever: check the provider's status, its baseURL in opencode.json, "
            "and agent.model"
        )

    def prompt_arguments(self, request: AgentRequest) -> list[str]:
        """The message after ``--``."""
        return ["--", _prompt(request)]

    def parse(self, stdout: str, exit_code: int, handle: AgentHandle) -> AgentOutcome:
        """Sum ``step_finish`` cost and tokens; an ``error`` event is a failure, a rejected
        credential a fault of the environment."""
        cost_usd = 0.0
        tokens = steps = 0
        errors: list[tuple[str, bool]] = []
        for event in _json_lines(stdout):
            part = _mapping(event.get("part"))
            if event.get("type") == "step_finish":
                steps += 1
                cost_usd += number(part.get("cost"))
                counts = _mapping(part.get("tokens"))
                tokens += int(sum([number(counts.get(k)) for k in ("input", "output", "reasoning")]))
            elif event.get("type") == "error":
                errors.append(_opencode_error(event))
        if errors:
            message, environment = errors[-1]
            if not steps and message.endswith("(UnknownError)"):
                # What opencode reports for a model its provider does not know, before any step:
                # nothing the task did, and nothing another attempt would change.
                environment = True
                model = self.config.model or "(the provider's default)"
                message += (
                    f", before its first step: opencode reports an unknown model so; check agent.model "
                    f"({model}) against `opencode models`"
                )
            return self.failed(
                f"opencode: {message}", handle, cost_usd * 100, tokens or None, environment=environment
            )
        if not steps:
            return self.silent(exit_code, handle)
        if exit_code != 0:
            return self.failed(f"opencode exited {exit_code}", handle, cost_usd * 100, tokens)
        return AgentOutcome(AgentState.SUCCEEDED, None, cost_usd * 100, tokens)


# What opencode logs (`--print-logs`) for each failed model call it is about to retry.
OPENCODE_STREAM_ERROR = "stream error"


def _log_time(line: str) -> float:
    """The time of an opencode log line (``LEVEL 2026-01-01T10:00:00 +2ms ...``, UTC); 0 without one."""
    parts = line.split(maxsplit=2)
    if len(parts) < 2:
        return 0.0
    try:
        return datetime.fromisoformat(parts[1]).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return 0.0


def _opencode_error(event: dict[str, Any]) -> tuple[str, bool]:
    """An ``error`` event's message, and whether it is the environment's (a rejected credential)."""
    error = event.get("error")
    if not isinstance(error, dict):
        return _clip(str(event.get("message") or error or "error")), False
    data = _mapping(error.get("data"))
    name = str(error.get("name") or "")
    message = _clip(str(data.get("message") or error.get("message") or name or error))
    status = data.get("statusCode")
    environment = name == "ProviderAuthError" or (isinstance(status, int) and status in AUTH_STATUSES)
    return (f"{message} ({name})" if name else message), environment


GEMINI_EXIT_CODES = {
    1: "error",
    41: "authentication failed",
    42: "bad input",
    44: "sandbox error",
    52: "configuration error",
    53: "turn limit reached",
    54: "tool execution failed",
    55: "untrusted workspace",
    130: "cancelled",
}
# Exits no task can fix: the credentials, the settings, the sandbox, the folder's trust.
GEMINI_ENVIRONMENT_EXITS = frozenset({41, 44, 52, 55})


class Gemini(CliPreset):
    """Gemini CLI: ``gemini --output-format json ... --prompt=PROMPT``; ``stats`` and ``error`` in
    one object on stdout, fatal errors as a JSON object on stderr."""

    name = "gemini"
    default_executable = "gemini"

    def arguments(self, request: AgentRequest) -> list[str]:
        """JSON output, approval mode, model."""
        args = ["--output-format", "json", "--approval-mode", self.config.permissions or "yolo"]
        if self.config.model:
            args += ["--model", self.config.model]
        return args

    def prompt_arguments(self, request: AgentRequest) -> list[str]:
        """``--prompt=TEXT``, one argument: a text starting with ``-`` stays the option's value."""
        return [f"--prompt={_prompt(request)}"]

    def environment(self, env: dict[str, str]) -> dict[str, str]:
        """The workspace trusted: the runner made it for this agent. In an untrusted folder gemini
        overrides the approval mode and exits 55 at once."""
        env.setdefault("GEMINI_CLI_TRUST_WORKSPACE", "true")
        return env

    def parse(self, stdout: str, exit_code: int, handle: AgentHandle) -> AgentOutcome:
        """Tokens from ``stats.models`` wherever printed; the error from stdout's document, else
        from the JSON gemini prints on stderr for a fatal error; every exit code named."""
        doc = _json_document(stdout) or {}
        documents = [doc] if doc else []
        if not _mapping(doc.get("error")) and (exit_code != 0 or not doc):
            # Fatal errors go to stderr (sometimes after an "[ERROR]" prefix), stdout empty.
            documents += [
                d for d in _json_documents(log_tail(handle.log_path, 64_000)) if "error" in d or "stats" in d
            ]
        stats = next((_mapping(d.get("stats")) for d in reversed(documents) if _mapping(d.get("stats"))), {})
        input_tokens = output_tokens = 0
        models = _mapping(stats.get("models"))
        for model in models.values():
            counts = _mapping(_mapping(model).get("tokens"))
            input_tokens += int(number(counts.get("prompt")))
            output_tokens += int(number(counts.get("candidates")))
        tokens = input_tokens + output_tokens if models else None
        cost = self.tokens_cost(input_tokens, output_tokens)
        error = next((d["error"] for d in reversed(documents) if d.get("error")), None)
        if error or exit_code != 0:
            details = _mapping(error)
            message = details.get("message") if details else error
            code = details.get("code")
            meaning, http = _gemini_exit(exit_code, code if isinstance(code, int) else None)
            if not message and not doc:
                message = _clip(log_tail(handle.log_path, 300)) or None
            environment = exit_code in GEMINI_ENVIRONMENT_EXITS or http in AUTH_STATUSES
            return self.failed(
                f"gemini: {_clip(str(message or meaning))} ({meaning})",
                handle,
                cost,
                tokens,
                environment=environment,
            )
        if not doc:
            return self.silent(exit_code, handle)
        return AgentOutcome(AgentState.SUCCEEDED, None, cost, tokens)


def _gemini_exit(exit_code: int, code: int | None) -> tuple[str, int | None]:
    """What gemini's exit code means, and the HTTP status behind it if there is one.

    An API error can end the process with its HTTP status as exit code, which the system
    truncates to 8 bits: a 400 exits 144.
    """
    if code is not None and 400 <= code <= 599 and code % 256 == exit_code:
        return f"HTTP {code}; exit {exit_code} is the status truncated to 8 bits", code
    if exit_code in GEMINI_EXIT_CODES:
        return f"exit {exit_code}: {GEMINI_EXIT_CODES[exit_code]}", None
    if 144 <= exit_code <= 255:
        return f"exit {exit_code}: likely HTTP {exit_code + 256}, truncated to 8 bits", exit_code + 256
    return f"exit {exit_code}", None


class Aider(CliPreset):
    """Aider: ``aider --message-file PROMPT --yes-always`` with an analytics log to read cost from.

    It exits 0 even when the model call failed and commits by itself, so the outcome comes from the
    analytics log (and the commit check that follows every preset), not the exit code.
    """

    name = "aider"
    default_executable = "aider"
    separate_stdout = False
    commits_per_edit = True

    def arguments(self, request: AgentRequest) -> list[str]:
        """Message file, no questions, analytics to a file next to the run's status."""
        args = [
            "--message-file", str(request.prompt_file), "--yes-always",
            "--analytics-log", str(analytics_file(request.status_file)),
        ]  # fmt: skip
        if self.config.model:
            args += ["--model", self.config.model]
        return args

    def parse(self, stdout: str, exit_code: int, handle: AgentHandle) -> AgentOutcome:
        """Cost from ``message_send`` events; none at all means the model was never reached."""
        try:
            log = analytics_file(handle.status_file).read_text(encoding="utf-8", errors="replace")
        except OSError:
            log = ""
        sends = [e.get("properties") or {} for e in _json_lines(log) if e.get("event") == "message_send"]
        if not sends:
            return self.failed(
                f"aider sent no message to the model (exit {exit_code}): {log_tail(handle.log_path, 800)}",
                handle,
            )
        last_total = number(sends[-1].get("total_cost"))
        cost = (last_total or sum(number(s.get("cost")) for s in sends)) * 100
        tokens = int(sum(number(s.get("total_tokens")) for s in sends))
        return AgentOutcome(AgentState.SUCCEEDED, None, cost, tokens)


def analytics_file(status_file: Path) -> Path:
    """Where aider writes its analytics events for one run."""
    return status_file.with_suffix(".aider-analytics.jsonl")


def _prompt(request: AgentRequest) -> str:
    # One argv element, never through a shell; prompts are a few KB, far under the 128 KiB limit.
    return request.prompt_file.read_text(encoding="utf-8")


PRESETS: tuple[type[CliPreset], ...] = (ClaudeCode, Codex, Aider, OpenCode, Gemini)
