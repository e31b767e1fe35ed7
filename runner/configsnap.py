"""The few configuration values that read-only commands need, kept from the last full load.

Validating the configuration (YAML, pydantic, pydantic-settings) is most of a command's start-up:
~200 of ~300 ms. `status`, `top`, `task list`, `task show`, `logs` and `report` only read the state,
and need a handful of values from the configuration (where the state is, the base branch, the
limits the status weighs tasks against). So every full load writes those values to a snapshot, and
these commands take them from it for as long as it is provably what a full load would give: the
same config files with the same contents (every file of the ``extends`` chain, compared whole), the
same ``PIPELINE_*`` variables, the same enclosing repository (it gives the default repo and root),
the same working directory where it matters, and the same code. Anything else (the first command,
an edited file, a new variable, an upgrade, a snapshot that cannot be read) loads and validates the
configuration as every other command does, and writes the snapshot again. A load that warned writes none, so that
its warnings are printed on every command.

Snapshots live in the user's cache directory (``$XDG_CACHE_HOME``, default ``~/.cache``), under
``pipeline-runner/config/``, one per config file, readable by their owner only. Failing to write
one costs nothing but the next command's start-up.

This module must stay cheap to import: no pydantic, no YAML.
"""

from __future__ import annotations

import contextlib
import json
import os
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner import __version__
from runner.configfile import ENV_PREFIX, git_toplevel
from runner.lifecycle import Limits

if TYPE_CHECKING:
    from runner.config import LoadedConfig

# Bump when a field of ReadConfig changes meaning: older snapshots are then ignored.
SNAPSHOT_VERSION = 2
# The code whose change can change what a load gives (the models, the registries' names).
_CODE = (
    Path(__file__).with_name("config.py"),
    Path(__file__).with_name("registries.py"),
    Path(__file__),
    Path(__file__).parent.parent / "phases" / "backends.py",
)


@dataclass(frozen=True)
class ReadConfig:
    """What the read-only commands take from the configuration."""

    root: Path
    state_db: Path
    base: str
    task_source: str
    max_retries: int
    max_task_cost: float
    interval: float
    max_waiting: int
    # agent.env as configured (values may hold ${NAME}): the secrets it names are masked in output.
    agent_env: dict[str, str] = field(default_factory=dict)
    state_url: str | None = None  # state.url: the state on PostgreSQL

    @property
    def state_target(self) -> Path | str:
        """Where the state is: the PostgreSQL URL, else the SQLite file."""
        return self.state_url or self.state_db

    @property
    def limits(self) -> Limits:
        """What `status` weighs tasks against (as runner.status.limits_of gives the loop)."""
        return Limits(self.max_retries, self.max_task_cost, self.interval)

    @classmethod
    def of(cls, loaded: LoadedConfig) -> ReadConfig:
        """The values of a fully loaded configuration."""
        config = loaded.config
        return cls(
            root=config.root, state_db=config.state_db, base=config.base, task_source=config.tasks.source,
            max_retries=config.limits.max_retries, max_task_cost=config.limits.max_task_cost,
            interval=config.interval, max_waiting=config.max_waiting, agent_env=dict(config.agent.env),
            state_url=config.state.url,
        )  # fmt: skip


def cache_dir(environ: os._Environ[str] | dict[str, str] | None = None) -> Path:
    """Where snapshots are kept: ``$XDG_CACHE_HOME/pipeline-runner/config`` (default ``~/.cache``)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pipeline-runner" / "config"


def snapshot_path(config_file: Path | None) -> Path:
    """The snapshot for ``config_file`` (for no file: for the working directory, whose defaults apply)."""
    subject = _subject(config_file).encode()
    # A name, not a proof: the snapshot holds its config file's path, which is compared on reading.
    return cache_dir() / f"{zlib.crc32(subject):08x}-{zlib.adler32(subject):08x}.json"


def _subject(config_file: Path | None) -> str:
    return str(config_file.resolve()) if config_file is not None else "no file: " + os.getcwd()


def _content(path: Path) -> str | None:
    # The text itself rather than a digest: config files are small, and hashlib alone (OpenSSL)
    # would cost more start-up than reading them.
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _surroundings(config_file: Path | None) -> dict[str, Any]:
    """What a load depends on besides the files: variables, working directory, the repository
    the config sits in (the default repo and root), code."""
    code: list[list[int] | None] = []
    for path in _CODE:
        try:
            st = path.stat()
        except OSError:
            code.append(None)
            continue
        code.append([st.st_mtime_ns, st.st_size])
    return {
        "version": [SNAPSHOT_VERSION, __version__, code],
        # Only where the working directory can change what a load gives: no config file (the
        # defaults are those of the current repository) or a repo given in the environment, which
        # a relative path makes relative to it. A file's own paths are relative to the file.
        "cwd": os.getcwd() if config_file is None or ENV_PREFIX + "REPO" in os.environ else None,
        "repository": str(git_toplevel(config_file.parent if config_file is not None else Path.cwd())),
        "env": sorted([k, v] for k, v in os.environ.items() if k.startswith(ENV_PREFIX)),
    }


def write_snapshot(loaded: LoadedConfig) -> None:
    """Keep what the read-only commands need of ``loaded`` (a load that warned is not kept)."""
    if loaded.warnings:
        return
    files = [Path(f).resolve() for f in loaded.files]
    contents = [_content(f) for f in files]
    if any(d is None for d in contents):
        return
    values = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(ReadConfig.of(loaded)).items()}
    document = {
        "key": {
            **_surroundings(loaded.config_file),
            "config_file": _subject(loaded.config_file),
            "files": [[str(f), d] for f, d in zip(files, contents, strict=True)],
        },
        "values": values,
    }
    target = snapshot_path(loaded.config_file)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Owner only: agent.env may hold a literal credential (masked in output, never shared).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(document, fh)
        os.replace(tmp, target)
    except OSError:
        # Only a speed-up: without it the next read-only command loads the config in full.
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def read_snapshot(config_file: Path | None) -> ReadConfig | None:
    """The values kept for ``config_file`` when a full load would give them now; else None."""
    try:
        with open(snapshot_path(config_file), encoding="utf-8") as fh:
            document = json.load(fh)
        key, values = document["key"], document["values"]
        files: Sequence[list[str]] = key["files"]
        if key["config_file"] != _subject(config_file):
            return None
        if {k: v for k, v in key.items() if k not in ("files", "config_file")} != _surroundings(config_file):
            return None
        if any(_content(Path(path)) != content for path, content in files):
            return None
        return ReadConfig(
            **{**values, "root": Path(values["root"]), "state_db": Path(values["state_db"])}
        )
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
