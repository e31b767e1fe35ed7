"""Fake agent CLIs that print what the real ones print (formats and exit-code quirks included).

Each executable next to this file (claude, codex, aider, opencode, gemini) calls main(NAME). What an
attempt does (commit or not, cost, error) comes from the plan, as for the other fakes; an attempt
with `error` fails the way that CLI fails.

The behaviour follows what the real CLIs did when tried (Claude Code 2.1.197 and 2.1.332, codex-cli
0.171.0, gemini-cli 0.61.0, opencode-ai 1.18.33), not only their documentation:

- claude: `-p` is a flag and the prompt its operand (after `--`, or an option-looking prompt is
  taken for an option). As root, bypassPermissions exits 1 with an empty stdout unless IS_SANDBOX=1
  (FAKE_EUID stands in for the real user id). acceptEdits writes files but denies the Bash calls
  that would commit them (`permission_denials`, exit 0); default denies the writes too. An API error
  exits 1 with `is_error` and `api_error_status`; a cap (`max_turns`, `max_budget` in the attempt)
  exits 1 with `error_max_turns` / `error_max_budget_usd` and the detail in `errors`, after the
  work (a commit) was made. Tokens per model in `modelUsage`; `usage` leaves out side requests.
- codex: `--sandbox workspace-write` keeps .git read-only: the files are written, `git commit`
  fails, the turn still completes, exit 0 (read-only, codex exec's own default, writes nothing). `reconnects: N` prints N `error` events
  "Reconnecting... i/5" before a normal run; `offline` prints "Reconnecting... waiting for network"
  forever and never fails.
- gemini: without `--skip-trust` or GEMINI_CLI_TRUST_WORKSPACE=true the folder is untrusted: exit
  55, nothing on stdout. Fatal errors are a JSON object on stderr (with an `[ERROR]` prefix when the
  attempt says `prefix`), stdout empty; an HTTP status (`status` in the attempt) exits truncated to 8
  bits.
- opencode: works in `--dir`, else in `$PWD`, else its working directory. The message is its
  positional words (after `--` too), joined with spaces, a word holding a space put in quotes.
  `error_name` in the attempt picks the error (ProviderAuthError, say). `server_error` in the attempt:
  a persistent HTTP 500, which opencode retries silently with a growing delay, for ever; only its
  log lines say so (on stderr with `--print-logs`).
- Every CLI answers `--version`; codex answers `login status`, opencode `models` (FAKE_MODELS, a
  comma-separated list, else two). A call outside a task (no PIPELINE_TASK_ID: `doctor`'s probe)
  answers without touching any file; FAKE_AUTH=bad makes claude's and gemini's calls fail on the
  key, and codex's `login status` say it is not logged in.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import fakelib

MISSING_PROMPT = "Error: Input must be provided either through stdin or as a prompt argument when using --print"
ROOT_REFUSAL = "--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons"


def _parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog)
    # What the tests pass through agent.args, to see it arrive among the options.
    p.add_argument("--extra-flag")
    return p


def _parse(p: argparse.ArgumentParser, argv: list[str], operand: str | None = None) -> argparse.Namespace:
    """Parse like the real CLIs' parsers: before `--`, every word starting with `-` is an option
    (argparse alone would take one holding a space for a positional); after it, every word is an
    operand, given to ``operand`` (one word, or all of them when it takes many)."""
    end = argv.index("--") if "--" in argv else len(argv)
    for arg in argv[:end]:
        if arg.startswith("-") and arg.split("=", 1)[0] not in p._option_string_actions:
            p.error(f"unknown option '{arg.splitlines()[0][:60]}'")
    args = p.parse_args(argv[:end])
    rest = argv[end + 1 :]
    if operand is not None and rest:
        current = getattr(args, operand)
        if isinstance(current, list):
            setattr(args, operand, current + rest)
        elif current is None and len(rest) == 1:
            setattr(args, operand, rest[0])
        else:
            p.error(f"unexpected argument '{rest[-1][:60]}'")
    return args


def _euid() -> int:
    return int(os.environ.get("FAKE_EUID", os.geteuid()))


def claude(argv: list[str]) -> int:
    p = _parser("claude")
    p.add_argument("-p", "--print", action="store_true")
    p.add_argument("--output-format", choices=["text", "json", "stream-json"], required=True)
    p.add_argument("--max-turns", type=int)
    p.add_argument("--max-budget-usd", type=float)
    p.add_argument("--permission-mode", choices=["acceptEdits", "bypassPermissions", "default", "dontAsk", "plan"])
    p.add_argument("--dangerously-skip-permissions", action="store_true")
    p.add_argument("--model")
    p.add_argument("prompt", nargs="?")
    args = _parse(p, argv, "prompt")
    skip = args.permission_mode == "bypassPermissions" or args.dangerously_skip_permissions
    if skip and _euid() == 0 and os.environ.get("IS_SANDBOX") != "1":
        print(ROOT_REFUSAL, file=sys.stderr)
        return 1
    if not args.prompt:
        print(MISSING_PROMPT, file=sys.stderr)
        return 1
    if "PIPELINE_TASK_ID" not in os.environ:
        return _claude_probe()
    mode = args.permission_mode or "default"
    # Headless nothing can be approved: in default mode the writes are denied with the rest; in
    # acceptEdits the edits are made and the Bash calls that would commit them denied.
    git = {"bypassPermissions": "allowed", "acceptEdits": "denied"}.get(mode, "nothing")
    _code, attempt = fakelib.perform(prompt_text=args.prompt, git=git)
    cost = float(attempt.get("cost", 12)) / 100
    main_model = args.model or "claude-sonnet-4-5-20250929"
    result: dict[str, Any] = {
        "type": "result", "subtype": "success", "is_error": False, "duration_ms": 2310,
        "duration_api_ms": 2100, "num_turns": 4, "result": "Implemented the task and committed.",
        "stop_reason": "end_turn", "session_id": "0b6c1c84-5c2e-4a8b-9d0e-3f7c2a9d1e55", "total_cost_usd": cost,
        "usage": {"input_tokens": 1840, "cache_creation_input_tokens": 2048, "cache_read_input_tokens": 9120,
                  "output_tokens": 412, "server_tool_use": {"web_search_requests": 0}, "service_tier": "standard"},
        "modelUsage": {
            main_model: {"inputTokens": 1840, "outputTokens": 412, "cacheReadInputTokens": 9120,
                         "cacheCreationInputTokens": 2048, "webSearchRequests": 0, "costUSD": cost * 0.97,
                         "contextWindow": 200000},
            # Side requests (titles, summaries) go to a small model; `usage` leaves them out.
            "claude-haiku-4-5-20251001": {"inputTokens": 610, "outputTokens": 45, "cacheReadInputTokens": 0,
                                          "cacheCreationInputTokens": 0, "webSearchRequests": 0,
                                          "costUSD": cost * 0.03, "contextWindow": 200000},
        },
        "permission_denials": [], "uuid": "5d0c3a2e-7f61-4d0e-9d6b-0f1f7b1b8c11",
    }  # fmt: skip
    denials = result["permission_denials"]
    if mode != "bypassPermissions" and not attempt.get("error"):
        denials.append(_denial("Bash", {"command": "git add -A && git commit -m 'Implement the task'",
                                        "description": "Commit the change"}))  # fmt: skip
    if git == "nothing" and not attempt.get("error"):
        denials.insert(0, _denial("Write", {"file_path": os.path.join(os.getcwd(), "notes.txt"), "content": "..."}))
        result["result"] = "I could not write the files: permission to use Write was denied."
    if attempt.get("error"):
        # An API error: a result object all the same, with is_error and the HTTP status; exit 1.
        status = int(attempt.get("status", 529))
        kind = {400: "invalid_request_error", 401: "authentication_error", 529: "overloaded_error"}.get(status, "api_error")
        body = json.dumps({"type": "error", "error": {"type": kind, "message": attempt["error"]},
                           "request_id": "req_011CUZ4p8k7n3Yq2s9XfGJxR"})  # fmt: skip
        result.update(is_error=True, api_error_status=status, result=f"API Error: {status} {body}", num_turns=1)
        print(json.dumps(result))
        return 1
    cap = "max_turns" if attempt.get("max_turns") else "max_budget" if attempt.get("max_budget") else None
    if cap is not None:
        # The cap is checked after a turn or a call: the work of that turn (the commit) is done.
        del result["result"]
        if cap == "max_turns":
            result.update(subtype="error_max_turns", is_error=True, num_turns=(args.max_turns or 1) + 1,
                          errors=[f"Reached maximum number of turns ({args.max_turns})"])  # fmt: skip
        else:
            # On a budget stop `usage` is all zeros while the cost is not.
            result.update(subtype="error_max_budget_usd", is_error=True,
                          errors=[f"Reached maximum budget (${args.max_budget_usd})"],
                          usage={k: 0 for k in ("input_tokens", "cache_creation_input_tokens",
                                                "cache_read_input_tokens", "output_tokens")})  # fmt: skip
        print(json.dumps(result))
        return 1
    print(json.dumps(result))
    return 0


def _claude_probe() -> int:
    """A call outside any task (a one-turn question): an answer, or the key rejected."""
    if os.environ.get("FAKE_AUTH") == "bad":
        body = json.dumps({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}})
        print(json.dumps({"type": "result", "subtype": "success", "is_error": True, "api_error_status": 401,
                          "result": f"API Error: 401 {body}", "total_cost_usd": 0}))  # fmt: skip
        return 1
    print(json.dumps({"type": "result", "subtype": "success", "is_error": False, "result": "ok",
                      "total_cost_usd": 0.0004}))  # fmt: skip
    return 0


def _denial(tool: str, tool_input: dict[str, str]) -> dict[str, Any]:
    return {"tool_name": tool, "tool_use_id": f"toolu_01{tool}A8b2Xq", "tool_input": tool_input}


def codex(argv: list[str]) -> int:
    if argv[:2] == ["login", "status"]:
        if os.environ.get("FAKE_AUTH") == "bad":
            print("Not logged in", file=sys.stderr)
            return 1
        print("Logged in using an API key - sk-proj-***ABCDE")
        return 0
    p = _parser("codex")
    p.add_argument("command", choices=["exec"])
    p.add_argument("--json", action="store_true", required=True)
    p.add_argument("--sandbox", "-s", choices=["read-only", "workspace-write", "danger-full-access"])
    p.add_argument("--model", "-m")
    p.add_argument("prompt", nargs="?")
    args = _parse(p, argv, "prompt")
    if not args.prompt:
        print("No prompt provided. Either specify one as an argument or pipe the prompt into stdin.", file=sys.stderr)
        return 1
    _event({"type": "thread.started", "thread_id": "0199a213-81c0-7800-8aa1-bbab2a035a53"})
    _event({"type": "turn.started"})
    peeked = _peek()
    if peeked.get("offline"):
        fakelib.attempt_for(os.environ["PIPELINE_TASK_ID"])
        while True:  # codex without network: it never gives up by itself
            _event({"type": "error", "message": "Reconnecting... waiting for network"})
            time.sleep(0.1)
    for attempt_number in range(1, int(peeked.get("reconnects", 0)) + 1):
        _event({"type": "error", "message": f"Reconnecting... {attempt_number}/5 (stream disconnected before "
                "completion: error sending request for url (http://127.0.0.1:8089/v1/responses))"})  # fmt: skip
    if peeked.get("error"):
        _code, attempt = fakelib.perform(prompt_text=args.prompt)
        _event({"type": "error", "message": attempt["error"]})
        _event({"type": "turn.failed", "error": {"message": attempt["error"]}})
        return 1
    sandbox = args.sandbox or "read-only"  # codex exec's own default
    git = {"danger-full-access": "allowed", "workspace-write": "read-only"}.get(sandbox, "nothing")
    _code, attempt = fakelib.perform(prompt_text=args.prompt, git=git)
    command = "bash -lc 'git add -A && git commit -m \"Implement the task\"'"
    _event({"type": "item.started", "item": {"id": "item_1", "type": "command_execution", "command": command,
                                             "aggregated_output": "", "exit_code": None, "status": "in_progress"}})  # fmt: skip
    failed = bool(attempt.get("git_output"))
    _event({"type": "item.completed", "item": {"id": "item_1", "type": "command_execution", "command": command,
                                               "aggregated_output": attempt.get("git_output", ""),
                                               "exit_code": 128 if failed else 0,
                                               "status": "failed" if failed else "completed"}})  # fmt: skip
    text = "The sandbox keeps .git read-only, so I could not commit; the changes are in the working tree." if failed else "Done."
    _event({"type": "item.completed", "item": {"id": "item_2", "type": "agent_message", "text": text}})
    _event({"type": "turn.completed", "usage": {"input_tokens": 24763, "cached_input_tokens": 24448,
                                                "output_tokens": 122}})  # fmt: skip
    return 0


def aider(argv: list[str]) -> int:
    p = _parser("aider")
    p.add_argument("--message-file", required=True)
    p.add_argument("--yes-always", action="store_true", required=True)
    p.add_argument("--analytics-log")
    p.add_argument("--model")
    args = _parse(p, argv)
    print("Aider v0.86.1\nMain model: sonnet with diff edit format\nGit repo: .git")
    if _peek().get("error"):
        _code, attempt = fakelib.perform(prompt_file=args.message_file)
        # The quirk: the model call failed, yet aider exits 0.
        print(f"litellm.APIError: {attempt['error']}\nRetrying in 0.2 seconds...", flush=True)
        return 0
    # Aider commits each edit by itself, with messages of its own.
    _code, attempt = fakelib.perform(prompt_file=args.message_file, per_edit_commits=True)
    cost = float(attempt.get("cost", 9)) / 100
    if args.analytics_log:
        with open(args.analytics_log, "a") as log:
            for event, props in (
                ("launched", {}),
                ("message_send", {"main_model": args.model or "sonnet", "edit_format": "diff", "prompt_tokens": 5200,
                                  "completion_tokens": 310, "total_tokens": 5510, "cost": cost / 2,
                                  "total_cost": cost / 2}),
                ("message_send", {"main_model": args.model or "sonnet", "edit_format": "diff", "prompt_tokens": 900,
                                  "completion_tokens": 90, "total_tokens": 990, "cost": cost / 2, "total_cost": cost}),
            ):  # fmt: skip
                log.write(
                    json.dumps(
                        {"event": event, "properties": props, "user_id": "u1", "time": int(time.time())}
                    )
                    + "\n"
                )
    print(f"Tokens: 6.1k sent, 400 received. Cost: ${cost / 2:.2f} message, ${cost:.2f} session.")
    return 0


def opencode(argv: list[str]) -> int:
    if argv == ["models"]:
        print("\n".join(os.environ.get("FAKE_MODELS", "anthropic/claude-sonnet-4-5,m-1").split(",")))
        return 0
    p = _parser("opencode")
    p.add_argument("command", choices=["run"])
    p.add_argument("--format", choices=["default", "json"], required=True)
    p.add_argument("--model", "-m")
    p.add_argument("--dir")
    p.add_argument("--print-logs", action="store_true")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARN", "ERROR"])
    p.add_argument("message", nargs="*")
    args = _parse(p, argv, "message")
    message = " ".join(f'"{w.replace(chr(34), chr(92) + chr(34))}"' if " " in w else w for w in args.message)
    # As `opencode run` does: the project is $PWD before the working directory; --dir overrides.
    root = os.path.abspath(os.environ.get("PWD") or os.getcwd())
    os.chdir(os.path.join(root, args.dir) if args.dir else root)
    session = "ses_494719016ffe85dkDMj0FPRbHK"
    now = int(time.time() * 1000)
    _event({"type": "step_start", "timestamp": now, "sessionID": session,
            "part": {"id": "prt_1", "sessionID": session, "type": "step-start"}})  # fmt: skip
    if not message:
        print("Error: You must provide a message or a command", file=sys.stderr)
        return 1
    peeked = _peek()
    if peeked.get("server_error"):
        fakelib.attempt_for(os.environ["PIPELINE_TASK_ID"])
        delay = 0.05
        while True:  # a persistent 500: retried with a growing delay and no cap, printing nothing
            if args.print_logs:
                print(f"ERROR {time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime())} +{int(delay * 1000)}ms service=llm "
                      f"providerID=anthropic modelID={args.model or 'm'} sessionID={session} "
                      "error={\"error\":{\"name\":\"AI_APICallError\",\"statusCode\":500,"
                      "\"message\":\"Internal server error\"}} stream error", file=sys.stderr, flush=True)  # fmt: skip
            time.sleep(delay)
            delay = min(delay * 2, 0.4)
    if peeked.get("error"):
        _code, attempt = fakelib.perform(prompt_text=message)
        name = str(attempt.get("error_name", "APIError"))
        data: dict[str, Any] = {"message": attempt["error"]}
        if name == "ProviderAuthError":
            data["providerID"] = "anthropic"
        else:
            data.update(statusCode=int(attempt.get("status", 529)), isRetryable=False)
        _event({"type": "error", "timestamp": now, "sessionID": session, "error": {"name": name, "data": data}})
        return 0
    _code, attempt = fakelib.perform(prompt_text=message)
    cost = float(attempt.get("cost", 7)) / 100
    for index, share in enumerate((0.25, 0.75)):
        _event({"type": "step_finish", "timestamp": now + index, "sessionID": session,
                "part": {"id": f"prt_f{index}", "type": "step-finish", "reason": "tool-calls" if index == 0 else "stop",
                         "cost": cost * share,
                         "tokens": {"input": 1000, "output": 200, "reasoning": 0, "cache": {"read": 0, "write": 0}}}})  # fmt: skip
    return 0


GEMINI_ERRORS = {
    41: "FatalAuthenticationError", 42: "FatalInputError", 44: "FatalSandboxError", 52: "FatalConfigError",
    53: "FatalTurnLimitedError", 54: "FatalToolExecutionError", 55: "FatalUntrustedWorkspaceError",
}  # fmt: skip
GEMINI_SESSION = "7a1f0c52-3a8e-4c8e-b0f4-2d9f5e6c1b27"


def gemini(argv: list[str]) -> int:
    p = _parser("gemini")
    p.add_argument("-p", "--prompt")
    p.add_argument("--output-format", "-o", choices=["text", "json", "stream-json"], required=True)
    p.add_argument("--approval-mode", choices=["default", "auto_edit", "yolo", "plan"])
    p.add_argument("--model", "-m")
    p.add_argument("--skip-trust", action="store_true")
    args = _parse(p, argv)
    trusted = args.skip_trust or os.environ.get("GEMINI_CLI_TRUST_WORKSPACE") == "true"
    if not trusted:
        _gemini_fatal(
            55,
            f"Approval mode \"{args.approval_mode}\" is overridden in an untrusted folder ({os.getcwd()}). "
            "To run here, use `--skip-trust`, or set `GEMINI_CLI_TRUST_WORKSPACE=true`.",
            prefix=True,
        )
        return 55
    if not args.prompt:
        print("No input provided via stdin.", file=sys.stderr)
        return 42
    if "PIPELINE_TASK_ID" not in os.environ:
        if os.environ.get("FAKE_AUTH") == "bad":
            _gemini_fatal(41, "API key not valid. Please pass a valid API key.", prefix=False)
            return 41
        print(json.dumps({"session_id": GEMINI_SESSION, "response": "ok"}))
        return 0
    peeked = _peek()
    if peeked.get("error"):
        _code, attempt = fakelib.perform(prompt_text=args.prompt)
        status = attempt.get("status")
        code = int(status) if status is not None else int(attempt.get("exit", 53))
        _gemini_fatal(code, str(attempt["error"]), prefix=bool(attempt.get("prefix")))
        return code % 256
    _code, attempt = fakelib.perform(prompt_text=args.prompt)
    doc = {
        "session_id": GEMINI_SESSION,
        "response": "Done.",
        "stats": {"models": {args.model or "gemini-2.5-pro": {
            "api": {"totalRequests": 2, "totalErrors": 0, "totalLatencyMs": 5000},
            "tokens": {"prompt": 3000, "candidates": 500, "total": 3500, "cached": 0, "thoughts": 0, "tool": 0}}},
            "tools": {"totalCalls": 3}, "files": {"totalLinesAdded": 4, "totalLinesRemoved": 0}},
    }  # fmt: skip
    print(json.dumps(doc, indent=2))  # pretty-printed over many lines, as the real CLI does
    return 0


def _gemini_fatal(code: int, message: str, *, prefix: bool) -> None:
    """A fatal error as gemini prints it with --output-format json: on stderr, stdout empty."""
    kind = GEMINI_ERRORS.get(code, "ApiError")
    text = json.dumps({"session_id": GEMINI_SESSION, "error": {"type": kind, "message": message, "code": code}},
                      indent=2)  # fmt: skip
    print(("[ERROR] " if prefix else "") + text, file=sys.stderr)


def _event(event: dict[str, Any]) -> None:
    print(json.dumps(event), flush=True)


def _peek() -> dict[str, Any]:
    _number, attempt = fakelib.peek(os.environ["PIPELINE_TASK_ID"])
    return attempt


CLIS = {"claude": claude, "codex": codex, "aider": aider, "opencode": opencode, "gemini": gemini}


VERSIONS = {"claude": "2.1.332 (Claude Code)", "codex": "codex-cli 0.171.0", "aider": "aider 0.86.1",
            "opencode": "1.18.33", "gemini": "0.61.0"}  # fmt: skip


def main(name: str) -> int:
    if sys.argv[1:] == ["--version"]:
        print(VERSIONS[name])
        return 0
    return CLIS[name](sys.argv[1:])
