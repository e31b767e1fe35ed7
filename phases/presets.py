"""Presets for the coding-agent CLIs people use: how to start each headless, capped, and how to
read its machine-readable output into a result.

Each runs under the same supervisor as the command backend (detached, timeout enforced on its whole
process group, output redacted). Success is judged from what the CLI reports, never from its exit
code alone: several exit 0 after a failed model call.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Iterator
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
        """Program, the preset's arguments, then ``agent.args``."""
        return [self.executable_name() or "", *self.arguments(request), *self.config.args]

    @abc.abstractmethod
    def arguments(self, request: AgentRequest) -> list[str]:
        """The preset's own arguments."""

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

    def tokens_cost(self, input_tokens: int, output_tokens: int) -> float:
        """Cents for a token count, where the config gives prices (else 0)."""
        prices = self.config.price_per_mtok
        if prices is None:
            return 0.0
        return (input_tokens * prices.input + output_tokens * prices.output) / 1_000_000 * 100

    def failed(
        self, message: str, handle: AgentHandle, cost: float = 0.0, tokens: int | None = None
    ) -> AgentOutcome:
        """A failure that quotes the end of the agent's log when it says little itself."""
        return AgentOutcome(AgentState.FAILED, message, cost, tokens)

    def silent(self, exit_code: int, handle: AgentHandle) -> AgentOutcome:
        """No machine-readable result at all."""
        return AgentOutcome(
            AgentState.FAILED,
            f"{self.name} printed no result (exit {exit_code}): {log_tail(handle.log_path, 800)}",
        )


class ClaudeCode(CliPreset):
    """Claude Code: ``claude -p PROMPT --output-format json``; one result object on stdout."""

    name = "claude-code"
    default_executable = "claude"

    def arguments(self, request: AgentRequest) -> list[str]:
        """Print mode, JSON, turn cap, budget cap, permissions."""
        args = [
            "-p", _prompt(request), "--output-format", "json",
            "--max-turns", str(self.config.max_iter),
            "--permission-mode", self.config.permissions or "bypassPermissions",
        ]  # fmt: skip
        if self.config.max_cost:
            args += ["--max-budget-usd", f"{self.config.max_cost / 100:.2f}"]
        if self.config.model:
            args += ["--model", self.config.model]
        return args

    def parse(self, stdout: str, exit_code: int, handle: AgentHandle) -> AgentOutcome:
        """Success is ``subtype == "success"`` and not ``is_error``; claude can exit 0 after an API error."""
        results = [o for o in _json_lines(stdout) if o.get("type") == "result"]
        result = results[-1] if results else _json_document(stdout)
        if not result:
            return self.silent(exit_code, handle)
        cost = number(result.get("total_cost_usd")) * 100
        usage = _mapping(result.get("usage"))
        tokens = (
            int(number(usage.get("input_tokens")) + number(usage.get("output_tokens"))) if usage else None
        )
        if result.get("subtype") == "success" and not result.get("is_error"):
            return AgentOutcome(AgentState.SUCCEEDED, None, cost, tokens)
        detail = result.get("result") or result.get("error") or ""
        return self.failed(
            f"claude reported {result.get('subtype', 'an error')}: {detail}".strip(": "), handle, cost, tokens
        )


class Codex(CliPreset):
    """Codex: ``codex exec --json``; JSON-lines events, tokens but no dollar figure."""

    name = "codex"
    default_executable = "codex"

    def arguments(self, request: AgentRequest) -> list[str]:
        """Exec mode, JSON events, a workspace-write sandbox."""
        args = ["exec", "--json", "--sandbox", self.config.permissions or "workspace-write"]
        if self.config.model:
            args += ["--model", self.config.model]
        return [*args, _prompt(request)]

    def parse(self, stdout: str, exit_code: int, handle: AgentHandle) -> AgentOutcome:
        """Sum ``turn.completed`` usage; ``turn.failed`` or ``error`` events are failures."""
        input_tokens = output_tokens = turns = 0
        errors: list[str] = []
        for event in _json_lines(stdout):
            kind = event.get("type")
            if kind == "turn.completed":
                turns += 1
                usage = event.get("usage") or {}
                input_tokens += int(number(usage.get("input_tokens")))
                output_tokens += int(number(usage.get("output_tokens")))
            elif kind == "turn.failed":
                errors.append(str((event.get("error") or {}).get("message") or "turn failed"))
            elif kind == "error":
                errors.append(str(event.get("message") or "error"))
        cost = self.tokens_cost(input_tokens, output_tokens)
        tokens = input_tokens + output_tokens if turns else None
        if errors:
            return self.failed(f"codex: {errors[-1]}", handle, cost, tokens)
        if exit_code != 0 or not turns:
            return (
                self.silent(exit_code, handle)
                if not turns
                else self.failed(f"codex exited {exit_code}", handle, cost, tokens)
            )
        return AgentOutcome(AgentState.SUCCEEDED, None, cost, tokens)


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


class OpenCode(CliPreset):
    """opencode: ``opencode run --format json``; NDJSON parts, ``step_finish`` carries tokens and cost."""

    name = "opencode"
    default_executable = "opencode"

    def arguments(self, request: AgentRequest) -> list[str]:
        """Run mode with JSON events."""
        args = ["run", "--format", "json"]
        if self.config.model:
            args += ["--model", self.config.model]
        return [*args, _prompt(request)]

    def parse(self, stdout: str, exit_code: int, handle: AgentHandle) -> AgentOutcome:
        """Sum ``step_finish`` cost and tokens; an ``error`` event is a failure."""
        cost_usd = 0.0
        tokens = steps = 0
        errors: list[str] = []
        for event in _json_lines(stdout):
            part = _mapping(event.get("part"))
            if event.get("type") == "step_finish":
                steps += 1
                cost_usd += number(part.get("cost"))
                counts = _mapping(part.get("tokens"))
                tokens += int(sum([number(counts.get(k)) for k in ("input", "output", "reasoning")]))
            elif event.get("type") == "error":
                error = event.get("error")
                if isinstance(error, dict):
                    data = _mapping(error.get("data"))
                    errors.append(
                        str(data.get("message") or error.get("message") or error.get("name") or error)
                    )
                else:
                    errors.append(str(event.get("message") or error or "error"))
        if errors:
            return self.failed(f"opencode: {errors[-1]}", handle, cost_usd * 100, tokens or None)
        if not steps:
            return self.silent(exit_code, handle)
        if exit_code != 0:
            return self.failed(f"opencode exited {exit_code}", handle, cost_usd * 100, tokens)
        return AgentOutcome(AgentState.SUCCEEDED, None, cost_usd * 100, tokens)


GEMINI_EXIT_CODES = {42: "bad input", 53: "turn limit reached"}


class Gemini(CliPreset):
    """Gemini CLI: ``gemini -p PROMPT --output-format json``; ``stats`` and ``error`` in one object."""

    name = "gemini"
    default_executable = "gemini"

    def arguments(self, request: AgentRequest) -> list[str]:
        """Prompt mode, JSON, approval mode."""
        args = [
            "-p",
            _prompt(request),
            "--output-format",
            "json",
            "--approval-mode",
            self.config.permissions or "yolo",
        ]
        if self.config.model:
            args += ["--model", self.config.model]
        return args

    def parse(self, stdout: str, exit_code: int, handle: AgentHandle) -> AgentOutcome:
        """Tokens from ``stats.models``; ``error`` or exit codes 42 and 53 are failures."""
        doc = _json_document(stdout) or {}
        input_tokens = output_tokens = 0
        models = (doc.get("stats") or {}).get("models") or {}
        for model in models.values() if isinstance(models, dict) else []:
            counts = model.get("tokens") or {}
            input_tokens += int(number(counts.get("prompt")))
            output_tokens += int(number(counts.get("candidates")))
        tokens = input_tokens + output_tokens if models else None
        cost = self.tokens_cost(input_tokens, output_tokens)
        error = doc.get("error")
        if error or exit_code != 0:
            message = error.get("message") if isinstance(error, dict) else error
            meaning = GEMINI_EXIT_CODES.get(exit_code, f"exit {exit_code}")
            return self.failed(f"gemini: {message or meaning} ({meaning})", handle, cost, tokens)
        if not doc:
            return self.silent(exit_code, handle)
        return AgentOutcome(AgentState.SUCCEEDED, None, cost, tokens)


def analytics_file(status_file: Path) -> Path:
    """Where aider writes its analytics events for one run."""
    return status_file.with_suffix(".aider-analytics.jsonl")


def _prompt(request: AgentRequest) -> str:
    # One argv element, never through a shell; prompts are a few KB, far under the 128 KiB limit.
    return request.prompt_file.read_text(encoding="utf-8")


PRESETS: tuple[type[CliPreset], ...] = (ClaudeCode, Codex, Aider, OpenCode, Gemini)
