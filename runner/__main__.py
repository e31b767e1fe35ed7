"""`python -m runner` is the same as `pipeline-runner`."""

from runner.cli import entry

entry()
