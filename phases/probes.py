"""The agent CLIs' own probes, for `doctor`: what each needs to run headless here, asked of the CLI
itself where it can answer cheaply (its version, its login), and one small call where only a call
tells (a rejected key, claude's refusal as root).

Every probe runs the CLI with the environment a run would get (the runner's, ``agent.env``, and
what the preset adds), in an empty temporary directory, never in the repository.
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path

from phases.agents import AgentBackend
from phases.backends import make_backend
from phases.presets import (
    AUTH_STATUSES,
    CLAUDE_ROOT_REFUSAL,
    GEMINI_ENVIRONMENT_EXITS,
    GEMINI_EXIT_CODES,
    ClaudeCode,
    CliPreset,
    _json_lines,
)
from runner import procs
from runner.config import PipelineConfig
from runner.doctor import Finding, Kind, Verdict
from runner.errors import ProcessError
from runner.redact import resolve_agent_env

VERSION_TIMEOUT = 30.0
# A call that gets no answer in this long is itself the finding: claude retries a rejected key for
# minutes, and codex and opencode retry an unreachable endpoint for ever.
CALL_TIMEOUT = 90.0
PROBE_PROMPT = "Reply with the single word ok. Do not use any tool."

Runner = Callable[[list[str], dict[str, str], float], procs.ProcResult]


def _run(argv: list[str], env: dict[str, str], timeout: float) -> procs.ProcResult:
    with tempfile.TemporaryDirectory(prefix="pipeline-doctor-") as place:
        return procs.run(argv, cwd=place, env={**env, "PWD": place}, check=False, timeout=timeout)


def agent_environment(config: PipelineConfig, backend: AgentBackend, environ: dict[str, str]) -> dict[str, str]:
    """The environment a run of this agent gets (less what names the task)."""
    env = dict(environ)
    env.update(resolve_agent_env(config.agent.env, environ))
    if isinstance(backend, CliPreset):
        env = backend.environment(env)
    return env


def _fail(item: str, message: str, fix: str, key: str | None = None) -> Finding:
    return Finding(item, Verdict.FAIL, message, fix, key=key, kind=Kind.AGENT)


def probe_version(backend: CliPreset, env: dict[str, str], run: Runner) -> Finding:
    """``CLI --version`` answers: the program starts here at all."""
    program = backend.executable_name() or ""
    try:
        done = run([program, "--version"], env, VERSION_TIMEOUT)
    except ProcessError as exc:
        return _fail("agent version", f"{program} --version could not run: {exc}", "reinstall the agent CLI")
    first = (done.output.strip().splitlines() or [""])[0][:120]
    if done.timed_out or done.exit_code != 0:
        return _fail(
            "agent version", f"{program} --version exited {done.exit_code}: {first}",
            "reinstall the agent CLI or check its installation",
        )  # fmt: skip
    return Finding("agent version", Verdict.OK, f"{program}: {first}", kind=Kind.AGENT)


def probe_claude(backend: ClaudeCode, env: dict[str, str], run: Runner, *, call: bool, euid: int) -> list[Finding]:
    """Root without IS_SANDBOX=1 under bypassPermissions, then one cheap call (one turn): a
    rejected key, or the same refusal as root, shows in seconds instead of minutes of retries."""
    findings: list[Finding] = []
    mode = backend.permission_mode()
    if mode == "bypassPermissions" and euid == 0 and env.get("IS_SANDBOX") != "1":
        message = (
            f"as root, with IS_SANDBOX={env.get('IS_SANDBOX', '(unset)')}, claude exits 1 at once under "
            f"--permission-mode bypassPermissions: '--dangerously-skip-permissions {CLAUDE_ROOT_REFUSAL}'"
        )
        findings.append(_fail("claude as root", message, backend.root_refusal(), "agent.env"))
        return findings
    if not call:
        return findings
    program = backend.executable_name() or ""
    argv = [program, "-p", "--output-format", "json", "--max-turns", "1", "--permission-mode", mode]
    if backend.config.model:
        argv += ["--model", backend.config.model]
    done = run([*argv, "--", PROBE_PROMPT], env, CALL_TIMEOUT)
    if CLAUDE_ROOT_REFUSAL in done.output:
        said = next((line for line in done.output.splitlines() if CLAUDE_ROOT_REFUSAL in line), "")
        findings.append(_fail("claude call", f"claude refused to start: {said.strip()}", backend.root_refusal(), "agent.env"))
        return findings
    if done.timed_out:
        findings.append(_fail(
            "claude call", f"no answer in {CALL_TIMEOUT:.0f}s to a one-turn call: claude retries a rejected key "
            "or an unreachable endpoint for minutes before it exits",
            "check the key (ANTHROPIC_API_KEY, passed with agent.env: {ANTHROPIC_API_KEY: ${ANTHROPIC_API_KEY}}) "
            "or `claude /login`, and the network",
        ))  # fmt: skip
        return findings
    results = [o for o in _json_lines(done.output) if o.get("type") == "result"]
    if not results:
        tail = " ".join(done.output.split())[-300:]
        findings.append(_fail("claude call", f"claude printed no result (exit {done.exit_code}): {tail}",
                              "run the command by hand to see why"))  # fmt: skip
        return findings
    result = results[-1]
    status = result.get("api_error_status")
    if isinstance(status, int) and status in AUTH_STATUSES:
        findings.append(_fail(
            "claude call", f"the API rejected the credentials (HTTP {status}): {str(result.get('result'))[:200]}",
            "set a valid ANTHROPIC_API_KEY (agent.env: {ANTHROPIC_API_KEY: ${ANTHROPIC_API_KEY}}) or `claude /login`",
            "agent.env",
        ))  # fmt: skip
    elif result.get("is_error") and status is not None:
        findings.append(Finding("claude call", Verdict.WARN, f"API error {status}: {str(result.get('result'))[:200]}",
                                "try again later; check the model name (agent.model)", kind=Kind.AGENT))  # fmt: skip
    else:
        cost = float(result.get("total_cost_usd") or 0)
        findings.append(Finding("claude call", Verdict.OK, f"a one-turn call answered (${cost:.4f})", kind=Kind.AGENT))
    return findings


def probe_codex(backend: CliPreset, env: dict[str, str], run: Runner) -> list[Finding]:
    """A custom endpoint needs CODEX_HOME with a provider (OPENAI_BASE_URL is ignored); then its
    login, which codex reports without a call."""
    findings: list[Finding] = []
    home = env.get("CODEX_HOME")
    provider_key: str | None = None
    if home:
        config_file = Path(home) / "config.toml"
        try:
            data = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            return [_fail("codex endpoint", f"CODEX_HOME={home}, but {config_file} cannot be read: {exc}",
                          "write config.toml there with model_provider and [model_providers.NAME] base_url",
                          "agent.env")]  # fmt: skip
        name = data.get("model_provider")
        providers = data.get("model_providers") or {}
        provider = providers.get(name) if isinstance(name, str) and isinstance(providers, dict) else None
        if name and not (isinstance(provider, dict) and provider.get("base_url")):
            return [_fail("codex endpoint", f"{config_file}: model_provider {name!r} has no [model_providers.{name}] "
                          "with a base_url", f"add base_url (and wire_api = \"responses\") under [model_providers.{name}]",
                          "agent.env")]  # fmt: skip
        if isinstance(provider, dict) and isinstance(provider.get("env_key"), str):
            provider_key = provider["env_key"]
    elif env.get("OPENAI_BASE_URL"):
        findings.append(_fail(
            "codex endpoint", "OPENAI_BASE_URL is set, but codex ignores it: it would try the default endpoint",
            "give codex a CODEX_HOME (agent.env) whose config.toml sets model_provider and "
            "[model_providers.NAME] base_url = ..., env_key = ..., wire_api = \"responses\"",
            "agent.env",
        ))  # fmt: skip
    if provider_key is not None:
        if not env.get(provider_key):
            findings.append(_fail("codex login", f"the provider's key {provider_key} is empty in the agent's environment",
                                  f"pass it with agent.env: {{{provider_key}: ${{{provider_key}}}}}", "agent.env"))  # fmt: skip
        return findings
    program = backend.executable_name() or ""
    done = run([program, "login", "status"], env, VERSION_TIMEOUT)
    said = " ".join(done.output.split())[:200]
    if done.exit_code != 0:
        findings.append(_fail("codex login", f"codex is not logged in: {said}",
                              "`codex login`, or `codex login --with-api-key` (reading OPENAI_API_KEY)"))  # fmt: skip
    else:
        findings.append(Finding("codex login", Verdict.OK, said, kind=Kind.AGENT))
    return findings


def probe_gemini(backend: CliPreset, env: dict[str, str], run: Runner, *, call: bool) -> list[Finding]:
    """Trust (an untrusted folder exits 55 at once), then one call whose exit code says which of
    auth, settings or sandbox is wrong."""
    if env.get("GEMINI_CLI_TRUST_WORKSPACE") != "true":
        return [_fail("gemini trust", "GEMINI_CLI_TRUST_WORKSPACE is not 'true': gemini exits 55 in the workspace",
                      "remove GEMINI_CLI_TRUST_WORKSPACE from agent.env (the runner sets it) or set it to 'true'",
                      "agent.env")]  # fmt: skip
    if not call:
        return []
    program = backend.executable_name() or ""
    argv = [program, "--output-format", "json", "--approval-mode", "default"]
    if backend.config.model:
        argv += ["--model", backend.config.model]
    done = run([*argv, f"--prompt={PROBE_PROMPT}"], env, CALL_TIMEOUT)
    if done.timed_out:
        return [_fail("gemini call", f"no answer in {CALL_TIMEOUT:.0f}s", "check the network and the endpoint")]
    if done.exit_code in GEMINI_ENVIRONMENT_EXITS:
        meaning = GEMINI_EXIT_CODES[done.exit_code]
        tail = " ".join(done.output.split())[-300:]
        fixes = {
            41: "set GEMINI_API_KEY (agent.env: {GEMINI_API_KEY: ${GEMINI_API_KEY}}) or log in with `gemini`",
            44: "fix the sandbox (GEMINI_SANDBOX) or turn it off",
            52: "fix ~/.gemini/settings.json (or the project's .gemini/settings.json)",
            55: "set GEMINI_CLI_TRUST_WORKSPACE=true",
        }
        return [_fail("gemini call", f"exit {done.exit_code} ({meaning}): {tail}", fixes[done.exit_code], "agent.env")]
    if done.exit_code != 0:
        return [Finding("gemini call", Verdict.WARN, f"exit {done.exit_code}: {done.output.strip()[-200:]}",
                        kind=Kind.AGENT)]  # fmt: skip
    return [Finding("gemini call", Verdict.OK, "a one-prompt call answered", kind=Kind.AGENT)]


def probe_opencode(backend: CliPreset, env: dict[str, str], run: Runner) -> list[Finding]:
    """The model is one its providers know (opencode says only `UnknownError` at run time)."""
    model = backend.config.model
    if not model:
        return []
    program = backend.executable_name() or ""
    done = run([program, "models"], env, VERSION_TIMEOUT)
    known = {line.strip() for line in done.output.splitlines() if line.strip()}
    if done.exit_code == 0 and model not in known:
        return [_fail("opencode model", f"agent.model {model!r} is not among `opencode models` ({len(known)} listed)",
                      "set agent.model to a name `opencode models` lists (provider/model)", "agent.model")]  # fmt: skip
    if done.exit_code != 0:
        return [Finding("opencode model", Verdict.WARN, f"`opencode models` exited {done.exit_code}", kind=Kind.AGENT)]
    return [Finding("opencode model", Verdict.OK, model, kind=Kind.AGENT)]


def probe_agent(
    config: PipelineConfig, *, call: bool = True, run: Runner = _run, environ: dict[str, str] | None = None,
    euid: int | None = None,
) -> list[Finding]:  # fmt: skip
    """The findings of the preset's own probe (none for presets without one)."""
    backend = make_backend(config.agent)
    if not isinstance(backend, CliPreset):
        return []
    env = agent_environment(config, backend, dict(os.environ if environ is None else environ))
    version = probe_version(backend, env, run)
    if version.verdict is Verdict.FAIL:
        return [version]
    findings = [version]
    if isinstance(backend, ClaudeCode):
        findings += probe_claude(backend, env, run, call=call, euid=os.geteuid() if euid is None else euid)
    elif backend.name == "codex":
        findings += probe_codex(backend, env, run)
    elif backend.name == "gemini":
        findings += probe_gemini(backend, env, run, call=call)
    elif backend.name == "opencode":
        findings += probe_opencode(backend, env, run)
    return findings
