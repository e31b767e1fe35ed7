"""Fake agent CLIs that print what the real ones print (formats and exit-code quirks included).

Each executable next to this file (claude, codex, aider, opencode, gemini) calls main(NAME). What an
attempt does (commit or not, cost, error) comes from the plan, as for the other fakes; an attempt
with `error` fails the way that CLI fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import fakelib


def claude(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="claude")
    p.add_argument("-p", "--print", dest="prompt", required=True)
    p.add_argument("--output-format", choices=["text", "json", "stream-json"], required=True)
    p.add_argument("--max-turns", type=int)
    p.add_argument("--max-budget-usd", type=float)
    p.add_argument("--permission-mode")
    p.add_argument("--model")
    args, _extra = p.parse_known_args(argv)
    _code, attempt = fakelib.perform(prompt_text=args.prompt)
    cost = float(attempt.get("cost", 12)) / 100
    result: dict[str, Any] = {
        "type": "result", "subtype": "success", "is_error": False, "duration_ms": 2310,
        "duration_api_ms": 2100, "num_turns": 4, "result": "Implemented the task and committed.",
        "session_id": "0b6c1c84-5c2e-4a8b-9d0e-3f7c2a9d1e55", "total_cost_usd": cost,
        "usage": {"input_tokens": 1840, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 9120,
                  "output_tokens": 412},
    }  # fmt: skip
    if attempt.get("error"):
        # The quirk: an API error still ends in a result object and exit status 0.
        result.update(is_error=True, result=f"API Error: {attempt['error']}", num_turns=1)
    print(json.dumps(result))
    return 0


def codex(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="codex")
    p.add_argument("command", choices=["exec"])
    p.add_argument("--json", action="store_true", required=True)
    p.add_argument("--sandbox", choices=["read-only", "workspace-write", "danger-full-access"])
    p.add_argument("--model")
    p.add_argument("prompt")
    args, _extra = p.parse_known_args(argv)
    print(json.dumps({"type": "thread.started", "thread_id": "0199a213-81c0-7800-8aa1-bbab2a035a53"}))
    print(json.dumps({"type": "turn.started"}))
    if _peek_error():
        _code, attempt = fakelib.perform(prompt_text=args.prompt)
        print(json.dumps({"type": "error", "message": attempt["error"]}))
        print(json.dumps({"type": "turn.failed", "error": {"message": attempt["error"]}}))
        return 1
    _code, attempt = fakelib.perform(prompt_text=args.prompt)
    print(
        json.dumps(
            {"type": "item.completed", "item": {"id": "item_0", "type": "agent_message", "text": "Done."}}
        )
    )
    print(json.dumps({"type": "turn.completed", "usage": {"input_tokens": 24763, "cached_input_tokens": 24448,
                                                          "output_tokens": 122}}))  # fmt: skip
    return 0


def aider(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="aider")
    p.add_argument("--message-file", required=True)
    p.add_argument("--yes-always", action="store_true", required=True)
    p.add_argument("--analytics-log")
    p.add_argument("--model")
    args, _extra = p.parse_known_args(argv)
    print("Aider v0.86.1\nMain model: sonnet with diff edit format\nGit repo: .git")
    if _peek_error():
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
    p = argparse.ArgumentParser(prog="opencode")
    p.add_argument("command", choices=["run"])
    p.add_argument("--format", choices=["default", "json"], required=True)
    p.add_argument("--model")
    p.add_argument("message")
    args, _extra = p.parse_known_args(argv)
    session = "ses_494719016ffe85dkDMj0FPRbHK"
    now = int(time.time() * 1000)
    print(json.dumps({"type": "step_start", "timestamp": now, "sessionID": session,
                      "part": {"id": "prt_1", "sessionID": session, "type": "step-start"}}))  # fmt: skip
    if _peek_error():
        _code, attempt = fakelib.perform(prompt_text=args.message)
        print(json.dumps({"type": "error", "timestamp": now, "sessionID": session,
                          "error": {"name": "APIError", "data": {"message": attempt["error"]}}}))  # fmt: skip
        return 0
    _code, attempt = fakelib.perform(prompt_text=args.message)
    cost = float(attempt.get("cost", 7)) / 100
    for index, share in enumerate((0.25, 0.75)):
        print(json.dumps({"type": "step_finish", "timestamp": now + index, "sessionID": session,
                          "part": {"id": f"prt_f{index}", "type": "step-finish", "reason": "tool-calls" if index == 0 else "stop",
                                   "cost": cost * share,
                                   "tokens": {"input": 1000, "output": 200, "reasoning": 0, "cache": {"read": 0, "write": 0}}}}))  # fmt: skip
    return 0


def gemini(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="gemini")
    p.add_argument("-p", "--prompt", required=True)
    p.add_argument("--output-format", choices=["text", "json"], required=True)
    p.add_argument("--approval-mode")
    p.add_argument("--model", "-m")
    args, _extra = p.parse_known_args(argv)
    if _peek_error():
        _code, attempt = fakelib.perform(prompt_text=args.prompt)
        print(
            json.dumps(
                {"error": {"type": "FatalTurnLimitedError", "message": attempt["error"], "code": 53}},
                indent=2,
            )
        )
        return 53
    _code, attempt = fakelib.perform(prompt_text=args.prompt)
    doc = {
        "response": "Done.",
        "stats": {"models": {args.model or "gemini-2.5-pro": {
            "api": {"totalRequests": 2, "totalErrors": 0, "totalLatencyMs": 5000},
            "tokens": {"prompt": 3000, "candidates": 500, "total": 3500, "cached": 0, "thoughts": 0, "tool": 0}}},
            "tools": {"totalCalls": 3}, "files": {"totalLinesAdded": 4, "totalLinesRemoved": 0}},
    }  # fmt: skip
    print(json.dumps(doc, indent=2))  # pretty-printed over many lines, as the real CLI does
    return 0


def _peek_error() -> bool:
    import os

    _number, attempt = fakelib.peek(os.environ["PIPELINE_TASK_ID"])
    return bool(attempt.get("error"))


CLIS = {"claude": claude, "codex": codex, "aider": aider, "opencode": opencode, "gemini": gemini}


def main(name: str) -> int:
    return CLIS[name](sys.argv[1:])
