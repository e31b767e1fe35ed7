"""Typed errors. Each carries a one-paragraph message meant for the user, not a traceback."""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error the CLI turns into exit code 1 with its message."""


class ConfigError(PipelineError):
    """The configuration is missing, malformed, or names an unknown key or a bad value."""


class TaskError(PipelineError):
    """A task command was refused: unknown id, invalid id, bad field value."""


class StateError(PipelineError):
    """The state database is missing, locked, or of a schema this version cannot read."""


class ProcessError(PipelineError):
    """A command run by the runner could not start or exited with an unexpected status."""

    def __init__(self, argv: list[str], exit_code: int | None, output: str, message: str = "") -> None:
        self.argv = argv
        self.exit_code = exit_code
        self.output = output
        summary = message or (
            f"command {argv[0]!r} exited with status {exit_code}"
            if exit_code is not None
            else f"command {argv[0]!r} could not be started"
        )
        tail = output.strip()[-2000:]
        super().__init__(f"{summary}: {tail}" if tail else summary)


class GitError(ProcessError):
    """A git command failed."""
