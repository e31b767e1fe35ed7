"""Which config file a command reads: found without reading it, so without the config's models.

Kept apart from ``runner.config`` (pydantic, YAML) because every command needs it first, and the
commands that only read the state must start without importing those.
"""

from __future__ import annotations

from pathlib import Path

from runner.errors import ConfigError

DEFAULT_CONFIG_NAME = "pipeline.yaml"
# Environment variables that set config keys start with it (PIPELINE_BASE, PIPELINE_AGENT__TIMEOUT).
ENV_PREFIX = "PIPELINE_"


def git_toplevel(start: Path) -> Path | None:
    """The nearest directory from ``start`` up that holds a ``.git``; None outside a repository."""
    probe = start.resolve()
    for candidate in (probe, *probe.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


def find_config_file(explicit: str | None, start: Path | None = None) -> Path | None:
    """The config file to read: the one given with -c (which must exist), else the nearest
    pipeline.yaml from ``start`` (default: the current directory) up to the top of its git
    repository, as git, tox and pre-commit find theirs; None when there is none."""
    if explicit is not None:
        path = Path(explicit)
        if path.is_dir():
            raise ConfigError(f"{path} (given with -c) is a directory: give the YAML file, such as {path / DEFAULT_CONFIG_NAME}.")
        if not path.is_file():
            raise ConfigError(f"Config file {path} does not exist (given with -c).")
        return path
    here = (start or Path.cwd()).resolve()
    top = git_toplevel(here)
    for folder in (here, *here.parents):
        candidate = folder / DEFAULT_CONFIG_NAME
        if candidate.is_file():
            # Relative when it is the current directory's own, as before, so messages stay short.
            return Path(DEFAULT_CONFIG_NAME) if folder == here and start is None else candidate
        if top is None or folder == top:
            break
    return None
