"""The registry of dev backends, keyed by the preset name used in ``agent.preset``."""

from __future__ import annotations

from phases.agents import AgentBackend, AgentdBackend, CommandBackend
from phases.presets import PRESETS
from runner.config import AgentConfig
from runner.errors import ConfigError

BACKENDS: dict[str, type[AgentBackend]] = {
    AgentdBackend.name: AgentdBackend,
    CommandBackend.name: CommandBackend,
    **{preset.name: preset for preset in PRESETS},
}


def make_backend(config: AgentConfig) -> AgentBackend:
    """The backend named by ``config.preset`` (validated against BACKENDS when the config loads)."""
    backend = BACKENDS.get(config.preset)
    if backend is None:
        raise ConfigError(f"key 'agent.preset': unknown preset {config.preset!r}; valid names: {', '.join(sorted(BACKENDS))}")
    return backend(config)
