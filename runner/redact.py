"""Redaction of secrets from everything the runner writes: logs, the database, comments, prompts.

A secret is the value of an environment variable whose name contains KEY, TOKEN, SECRET or
PASSWORD (the runner's own environment and the agent's configured one), and the credentials part of
any URL (``https://user:token@host``). Stdlib only: the agent supervisor uses it too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD", re.IGNORECASE)
URL_CREDENTIALS = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@:]+(?::[^/\s@]*)?@")
# The same shape as URL_CREDENTIALS, with the user and the password apart.
_URL_USERINFO = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://([^/\s@:]+)(?::([^/\s@]*))?@")
# `${NAME}` in an `agent.env` value passes the runner's NAME through.
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
MASK = "***"
# Shorter values ("1", "true") would mask ordinary text and protect nothing.
MIN_SECRET_LENGTH = 6
# A user name without a password is a credential only when it is a token used as one
# (`https://ghp_...@github.com`); ordinary user names (`https://alice@host`) are shorter, and
# treating them as secrets would refuse every task that mentions the person.
MIN_TOKEN_USER_LENGTH = 20

_secrets: set[str] = set()
_environ_registered = False


def url_credentials(text: str) -> list[str]:
    """The secret part of each URL's credentials in ``text``: its password, or a token-like user name
    when it has none. Values shorter than MIN_SECRET_LENGTH are left out."""
    found: list[str] = []
    for match in _URL_USERINFO.finditer(text):
        user, password = match.group(1), match.group(2)
        if password:
            credential = password
        elif len(user) >= MIN_TOKEN_USER_LENGTH:
            credential = user
        else:
            continue
        if len(credential) >= MIN_SECRET_LENGTH and credential not in found:
            found.append(credential)
    return found


def secret_values(env: Mapping[str, str]) -> set[str]:
    """Values of the variables in ``env`` whose names mark them as secrets, and URL credentials in
    any value."""
    values = {v for k, v in env.items() if SECRET_NAME.search(k) and len(v) >= MIN_SECRET_LENGTH}
    for value in env.values():
        values.update(url_credentials(value))
    return values


def resolve_agent_env(spec: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """``agent.env`` with each ``${NAME}`` replaced by ``environ``'s NAME (empty when unset)."""
    return {
        key: ENV_REFERENCE.sub(lambda m: environ.get(m.group(1), ""), value) for key, value in spec.items()
    }


def agent_secrets(agent_env: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """The secret values an agent is handed, by the variable that holds them.

    ``agent_env`` is the configured ``agent.env`` (values may hold ``${NAME}``), ``environ`` the
    runner's environment, which the agent inherits. Secrets are the values of entries whose name, or
    a ``${NAME}`` they pass through, looks secret (SECRET_NAME), and the credentials of URLs in any
    of these values; the credentials of a URL in variable NAME are keyed ``NAME's URL credentials``.
    Values shorter than MIN_SECRET_LENGTH are left out, and a value held by several variables is
    listed once, under the first (``agent.env`` before the environment).
    """
    secrets: dict[str, str] = {}

    def add(name: str, value: str) -> None:
        if len(value) >= MIN_SECRET_LENGTH and value not in secrets.values():
            secrets[name] = value

    def add_url_credentials(name: str, value: str) -> None:
        for number, credential in enumerate(url_credentials(value), start=1):
            add(f"{name}'s URL credentials" + (f" ({number})" if number > 1 else ""), credential)

    resolved = resolve_agent_env(agent_env, environ)
    for name, spec in agent_env.items():
        passed = ENV_REFERENCE.findall(spec)
        if SECRET_NAME.search(name) or any(SECRET_NAME.search(ref) for ref in passed):
            add(name, resolved[name])
        add_url_credentials(name, resolved[name])
    for name, value in environ.items():
        if SECRET_NAME.search(name):
            add(name, value)
        add_url_credentials(name, value)
    return secrets


def register(env: Mapping[str, str]) -> None:
    """Remember the secrets of ``env`` (the runner's environment is registered on first use)."""
    _secrets.update(secret_values(env))


def register_values(values: Iterable[str]) -> None:
    """Remember secret values as they are (for example ``agent_secrets(...).values()``)."""
    _secrets.update(v for v in values if len(v) >= MIN_SECRET_LENGTH)


def redact(text: str) -> str:
    """``text`` with every known secret and URL credential masked."""
    global _environ_registered
    # A flag of its own: whatever was registered first, the runner's environment is still known.
    if not _environ_registered:
        register(os.environ)
        _environ_registered = True
    for value in sorted(_secrets, key=len, reverse=True):
        if value in text:
            text = text.replace(value, MASK)
    return URL_CREDENTIALS.sub(rf"\1{MASK}@", text)
