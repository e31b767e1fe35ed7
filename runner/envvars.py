"""The ``PIPELINE_*`` variables: read as a layer of the config, with errors and warnings that name
the variable.

pydantic-settings reports bad JSON in ``PIPELINE_AGENT__ENV`` as a traceback naming the section
("agent"), and ignores a variable that sets no key; a person needs the variable's name in both cases.
The model is handed in, so that this module does not import the config that imports it.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsError

from runner.errors import ConfigError

# PIPELINE_* variables that are not config keys: what the runner hands the processes it starts,
# and what Azure Pipelines sets on its build machines.
OTHER_VARIABLES = frozenset(
    {"PIPELINE_RUN_ID", "PIPELINE_RUN_MARK", "PIPELINE_PATCHSET", "PIPELINE_PROMPT_FILE", "PIPELINE_KILL_AT",
     "PIPELINE_WORKSPACE", "PIPELINE_GIT_MARK"}
)


class _EnvSource(EnvSettingsSource):
    """The variables' layer read from a given set of them (all, or one on its own)."""

    def __init__(self, model: type[BaseSettings], environ: Mapping[str, str], prefix: str, delimiter: str) -> None:
        self._environ = {name.lower(): value for name, value in environ.items()}
        super().__init__(model, env_prefix=prefix, env_nested_delimiter=delimiter, case_sensitive=False)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return self._environ


def read_env(model: type[BaseSettings], environ: Mapping[str, str], prefix: str, delimiter: str) -> dict[str, Any]:
    """The values the variables set, nested like the model; a ConfigError naming a variable whose
    value cannot be read (bad JSON for a list, a mapping or a section)."""
    try:
        return _EnvSource(model, environ, prefix, delimiter)()
    except SettingsError as exc:
        # Its message names the section ("agent"), not the variable: find the variable by reading
        # each on its own. The value is not shown: it may be an agent's secret.
        for name, value in environ.items():
            if not name.upper().startswith(prefix):
                continue
            try:
                _EnvSource(model, {name: value}, prefix, delimiter)()
            except SettingsError as alone:
                why = alone.__cause__ or exc.__cause__ or alone
                raise ConfigError(
                    f"Invalid configuration:\n  env {name}: not valid JSON ({why}); a list is "
                    """written ["a", "b"], a mapping {"NAME": "value"}"""
                ) from None
        raise ConfigError(f"Invalid configuration: the {prefix}* environment variables: {exc}") from None


def _env_names(model: type[BaseModel], prefix: str, delimiter: str) -> tuple[set[str], set[str]]:
    """The variable names that set a key of ``model``, and the prefixes under which any name does
    (the entries of a mapping: ``PIPELINE_AGENT__ENV__NAME``, ``PIPELINE_PHASES__LINT__RUN``)."""
    names: set[str] = set()
    open_ended: set[str] = set()
    for key, info in model.model_fields.items():
        name = prefix + key.upper()
        names.add(name)
        # `X | None` is its members; a model's keys are names of their own, a mapping's are any.
        union = typing.get_origin(info.annotation) in (typing.Union, types.UnionType)
        for member in typing.get_args(info.annotation) if union else (info.annotation,):
            if isinstance(member, type) and issubclass(member, BaseModel):
                inner, more = _env_names(member, name + delimiter, delimiter)
                names |= inner
                open_ended |= more
            elif typing.get_origin(member) is dict:
                open_ended.add(name + delimiter)
    return names, open_ended


def unknown_env_variables(
    model: type[BaseModel], environ: Mapping[str, str], prefix: str, delimiter: str
) -> list[str]:
    """A warning for each variable with the prefix that sets no key (a misspelling is otherwise ignored)."""
    names, open_ended = _env_names(model, prefix, delimiter)
    warnings = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(prefix) or upper in names or upper in OTHER_VARIABLES:
            continue
        if any(upper.startswith(p) for p in open_ended):
            continue
        close = difflib.get_close_matches(upper, sorted(names), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        warnings.append(f"environment variable {name} is not a configuration key and is ignored{hint}")
    return warnings
