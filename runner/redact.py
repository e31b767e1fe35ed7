"""Redaction of secrets from everything the runner writes: logs, the database, comments, prompts.

A secret is the value of an environment variable whose name contains KEY, TOKEN, SECRET or
PASSWORD (the runner's own environment and the agent's configured one), and the credentials part of
any URL (``https://user:token@host``). Stdlib only: the agent supervisor uses it too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD", re.IGNORECASE)
URL_CREDENTIALS = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@:]+(?::[^/\s@]*)?@")
MASK = "***"
# Shorter values ("1", "true") would mask ordinary text and protect nothing.
MIN_SECRET_LENGTH = 6

_secrets: set[str] = set()


def secret_values(env: Mapping[str, str]) -> set[str]:
    """Values of the variables in ``env`` whose names mark them as secrets."""
    return {v for k, v in env.items() if SECRET_NAME.search(k) and len(v) >= MIN_SECRET_LENGTH}


def register(env: Mapping[str, str]) -> None:
    """Remember the secrets of ``env`` (the runner's environment is registered on first use)."""
    _secrets.update(secret_values(env))


def redact(text: str) -> str:
    """``text`` with every known secret and URL credential masked."""
    if not _secrets:
        register(os.environ)
    for value in sorted(_secrets, key=len, reverse=True):
        if value in text:
            text = text.replace(value, MASK)
    return URL_CREDENTIALS.sub(rf"\1{MASK}@", text)
