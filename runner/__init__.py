"""pipeline-runner: ships coding-agent work onto a base branch through dev, verify and integrate."""

__version__ = "0.1.0"
