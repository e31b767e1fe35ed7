"""Command-line interface. ``main(argv) -> int``; exit codes are decided here and only here."""

from __future__ import annotations

import argparse
import enum
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner import __version__
from runner.configfile import find_config_file
from runner.configsnap import ReadConfig, read_snapshot, write_snapshot
from runner.crash import CRASH_LOG, report_bug, silence_stdout, stdout_closed
from runner.errors import PipelineError, TaskError
from runner.faults import read_faults, write_faults
from runner.globalopts import add_global_options, global_options_after_command, merge_global_options
from runner.layout import Layout
from runner.logs import add_file_sink, logger, setup_stderr
from runner.redact import agent_secrets, register_values
from runner.state import COMMAND_LOCK_WAIT_SECONDS, open_db, state_exists
from runner.tasklist import first_line, printable
from runner.tasks import (
    Author,
    BuiltinTaskStore,
    NewTask,
    Task,
    TaskStatus,
    TaskType,
    open_task_source,
    parse_priority,
    parse_status,
    read_task_file,
    tasks_from_records,
)
from runner.waking import nudge

if TYPE_CHECKING:
    from runner.config import LoadedConfig


class Exit(enum.IntEnum):
    """Process exit codes."""

    OK = 0
    ERROR = 1
    USAGE = 2
    # `run --until-idle` stopped with tasks that need a person: needing help, verified with
    # their integration held back (base's checkout dirty, say), or blocked by a cancelled one;
    # `run --once` sent a task to needs_help; or either ended with work paused.
    NEEDS_ATTENTION = 3
    # A bug in pipeline-runner: an exception no command expected (EX_SOFTWARE in sysexits.h).
    BUG = 70
    INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so main() decides the exit code.

    Every command parser made under it also takes the global options after the command's name
    (``pipeline-runner status -q``), as well as before it.
    """

    def add_subparsers(self, **kwargs: Any) -> Any:
        """Subcommands whose parsers all take the global options."""
        action = super().add_subparsers(**kwargs)
        add_parser = action.add_parser

        def with_global_options(name: str, **options: Any) -> argparse.ArgumentParser:
            options["parents"] = [*options.get("parents", []), global_options_after_command()]
            # A command's own option of the same name (say its own -q) takes precedence.
            options.setdefault("conflict_handler", "resolve")
            parser: argparse.ArgumentParser = add_parser(name, **options)
            return parser

        action.add_parser = with_global_options  # type: ignore[method-assign]
        return action

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(Exit.USAGE)


def _seconds(value: str) -> float:
    """A positive number of seconds, for argparse."""
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not 0 < seconds <= 3600:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 3600 seconds, not {value}")
    return seconds


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("configuration overrides (flag > env > file > default)")
    group.add_argument("--root", help="workspaces, state.db and logs (key: root)")
    group.add_argument("--base", help="base branch tasks land on (key: base)")
    group.add_argument("--concurrency", type=int, help="dev agents at once (key: concurrency)")
    group.add_argument("--interval", type=float, help="seconds between cycles (key: interval)")
    group.add_argument(
        "--max-retries", type=int, help="failed attempts before needs_help (limits.max_retries)"
    )
    group.add_argument("--max-task-cost", type=int, help="cents per task, 0 = no cap (limits.max_task_cost)")
    group.add_argument("--timeout", type=int, help="agent timeout, seconds (agent.timeout)")
    group.add_argument("--max-iter", type=int, help="agent iteration cap (agent.max_iter)")
    group.add_argument("--max-cost", type=int, help="agent cost cap per run, cents (agent.max_cost)")
    group.add_argument("--provider", help="agent provider (agent.provider)")
    group.add_argument("--parent", help="only tasks under this epic (parent)")
    group.add_argument("--task-id", help="only this task (task_id)")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    parser = _Parser(
        prog="pipeline-runner",
        description="Take coding tasks from a queue and ship them: dev (a coding agent in its own "
        "worktree), verify (your recipes), integrate (onto base, only after it passed).",
    )
    add_global_options(parser)
    parser.add_argument("--version", action="version", version=f"pipeline-runner {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser("run", help="drive tasks through dev, verify and integrate")
    run.add_argument("--once", action="store_true", help="run one cycle, then exit (for cron)")
    run.add_argument("--dry-run", action="store_true", help="print what would happen; change nothing")
    run.add_argument(
        "--until-idle", action="store_true",
        help="exit once every eligible task is done or needs help (for batch jobs and CI)",
    )  # fmt: skip
    run.add_argument("--no-cache", action="store_true", help="run every phase, reusing no earlier pass")
    _add_config_flags(run)
    run.set_defaults(handler=cmd_run)

    phases = sub.add_parser("phases", help="the check graph, in the order it runs")
    phases.add_argument("--json", action="store_true")
    phases.set_defaults(handler=cmd_phases)

    check = sub.add_parser("check", help="run the check graph on a rev yourself (exit 0 pass, 1 fail)")
    check.add_argument("--rev", default="HEAD", help="the commit to check (default: HEAD)")
    check.add_argument(
        "--phase", action="append", default=[], metavar="NAME", help="only this phase and what it needs"
    )
    check.add_argument("--on", choices=["verify", "integrate"], help="only the phases that run there")
    check.add_argument("--no-cache", action="store_true", help="run every phase, reusing no earlier pass")
    check.set_defaults(handler=cmd_check)

    receipt = sub.add_parser("receipt", help="what a landed commit passed (its git note)")
    receipt.add_argument("rev", nargs="?", help="the commit (default: base's tip)")
    receipt.add_argument("--json", action="store_true")
    receipt.set_defaults(handler=cmd_receipt)

    status = sub.add_parser(
        "status", aliases=["top"], help="active runs, the queue and why it waits, cost (`top`: status --watch)"
    )
    status.add_argument("--json", action="store_true", help="machine-readable output (see README)")
    status.add_argument("--watch", action="store_true", help="refresh as things change, until Ctrl-C")
    status.add_argument(
        "--interval", type=_seconds, default=1.0, metavar="S", help="seconds between refreshes (default 1)"
    )
    status.add_argument("--no-color", action="store_true", help="plain text even on a terminal (or NO_COLOR)")
    status.set_defaults(handler=cmd_status)

    report = sub.add_parser("report", help="throughput, lead time, cost, phase durations, flaky checks, timeline")
    report.add_argument("--since", type=_since, metavar="DATE", help="only from this ISO date or datetime (UTC)")
    report.add_argument("--html", type=Path, metavar="FILE", help="also write a self-contained HTML report")
    report.add_argument("--json", action="store_true")
    report.set_defaults(handler=cmd_report)

    logs = sub.add_parser("logs", help="a task's agent and check output (-f follows it)")
    logs.add_argument("task", metavar="TASK")
    logs.add_argument("-f", "--follow", action="store_true", help="follow until the attempt ends, or Ctrl-C")
    logs.add_argument("--run", type=int, metavar="ID", help="only this run (an id from `task show`)")
    logs.set_defaults(handler=cmd_logs)

    resume = sub.add_parser("resume", help="clear the faults that pause work, after a person has looked")
    resume.add_argument("area", nargs="?", help="only this one (dev, verify, integrate, checkout, base, red-base, environment)")
    resume.set_defaults(handler=cmd_resume)

    config = sub.add_parser("config", help="show or validate the effective configuration")
    config_sub = config.add_subparsers(
        dest="config_command", required=True, metavar="ACTION", parser_class=_Parser
    )
    show = config_sub.add_parser("show", help="every effective value and where it came from")
    show.add_argument("--json", action="store_true")
    _add_config_flags(show)
    show.set_defaults(handler=cmd_config_show)
    validate = config_sub.add_parser("validate", help="exit 0 if the configuration is valid, else 1")
    validate.add_argument(
        "--schema-only", action="store_true", help="only the keys and values, not this repository and machine"
    )
    validate.set_defaults(handler=cmd_config_validate)

    state = sub.add_parser("state", help="the state database")
    state_sub = state.add_subparsers(dest="state_command", required=True, metavar="ACTION", parser_class=_Parser)
    migrate = state_sub.add_parser("migrate", help="copy the SQLite state under the root into PostgreSQL")
    migrate.add_argument("--to", required=True, metavar="URL", help="postgresql://USER@HOST[:PORT]/DATABASE")
    migrate.set_defaults(handler=cmd_state_migrate)

    doctor = sub.add_parser("doctor", help="check the repository, the agent CLI, the tools and base's checks")
    doctor.add_argument("--json", action="store_true")
    doctor.add_argument("--no-agent-call", action="store_true", help="skip the one cheap call to the agent's model")
    doctor.set_defaults(handler=cmd_doctor)

    init = sub.add_parser("init", help="write a commented pipeline.yaml for this repository")
    init.add_argument("--preset", help="agent preset (asked for unless given or --yes)")
    init.add_argument("--base", help="base branch (default: the current branch)")
    init.add_argument("--yes", action="store_true", help="take the defaults instead of asking")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.add_argument(
        "--no-check", action="store_true", help="do not run the detected tests on base's tip once written"
    )
    init.set_defaults(handler=cmd_init)

    task = sub.add_parser("task", help="the built-in task store")
    task_sub = task.add_subparsers(dest="task_command", required=True, metavar="ACTION", parser_class=_Parser)
    add = task_sub.add_parser("add", help="add a task")
    add.add_argument("title")
    add.add_argument("--id", help="task id (default: generated t-N)")
    add.add_argument("--description", default="")
    add.add_argument("--namespace")
    add.add_argument("--parent", help="epic this task belongs to")
    add.add_argument("--priority", default=2, type=_priority, help="P0 (most urgent) .. P4; default P2")
    add.add_argument("--depends-on", action="append", default=[], metavar="ID")
    add.add_argument("--type", choices=[t.value for t in TaskType], default="work")
    add.add_argument("--json", action="store_true")
    add.set_defaults(handler=cmd_task_add)
    lst = task_sub.add_parser("list", help="list tasks")
    lst.add_argument(
        "--status", action="append", type=_statuses, metavar="STATUS[,STATUS]",
        help="only tasks in these statuses (repeatable)",
    )  # fmt: skip
    lst.add_argument("--parent", help="only tasks under this epic")
    lst.add_argument("--json", action="store_true", help="every matching task unless --limit is given")
    paging = lst.add_mutually_exclusive_group()
    paging.add_argument("--limit", type=_count(1), metavar="N", help="at most N tasks (default 200; --json: all)")
    paging.add_argument("--all", action="store_true", help="every matching task")
    lst.add_argument("--offset", type=_count(0), default=0, metavar="N", help="skip the first N matching tasks")
    lst.set_defaults(handler=cmd_task_list)
    tshow = task_sub.add_parser("show", help="one task with its comments and runs")
    tshow.add_argument("id")
    tshow.add_argument("--json", action="store_true")
    tshow.set_defaults(handler=cmd_task_show)
    comment = task_sub.add_parser("comment", help="add a comment")
    comment.add_argument("id")
    comment.add_argument("text")
    comment.set_defaults(handler=cmd_task_comment)
    set_status = task_sub.add_parser("set-status", help="move a task (open resumes a needs_help task)")
    set_status.add_argument("id")
    set_status.add_argument("status")
    set_status.set_defaults(handler=cmd_task_set_status)
    imp = task_sub.add_parser(
        "import", help="import tasks from YAML or JSON Lines; by id: adds new ones, updates open ones"
    )
    imp.add_argument("file", type=Path)
    imp.set_defaults(handler=cmd_task_import)
    edit = task_sub.add_parser("edit", help="change a task's fields (applies to its next attempt)")
    edit.add_argument("id")
    edit.add_argument("--title")
    edit.add_argument("--description")
    edit.add_argument("--priority", type=_priority, help="P0 (most urgent) .. P4")
    edit.add_argument(
        "--depends-on", nargs="*", action="extend", metavar="ID",
        help="replaces its dependencies (given alone: none)",
    )  # fmt: skip
    edit.add_argument("--namespace", help="'' clears it")
    edit.set_defaults(handler=cmd_task_edit)
    for name, text in (("cancel", "stop a task: its agent or check is stopped, nothing of it lands"),
                       ("retry", "reopen a needs_help or cancelled task with a fresh retry budget"),
                       ("delete", "remove a task that is not done, with its workspace")):  # fmt: skip
        steer = task_sub.add_parser(name, help=text)
        steer.add_argument("id")
        steer.set_defaults(handler=cmd_task_steer)
    return parser


def _priority(value: str) -> int:
    """--priority: a bad value is a usage error naming it."""
    try:
        return parse_priority(value)
    except TaskError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(least: int) -> Callable[[str], int]:
    """A whole number of at least ``least`` (--limit, --offset); anything else is a usage error."""

    def parse(value: str) -> int:
        if not value.strip().isdigit() or int(value) < least:
            raise argparse.ArgumentTypeError(f"expected a whole number of at least {least}, not {value!r}")
        return int(value)

    return parse


def _since(value: str) -> str:
    """--since of `report`; its module is imported by `report` only (every command pays for what
    the CLI module imports)."""
    from runner.report import parse_since

    return parse_since(value)


def _statuses(value: str) -> list[TaskStatus]:
    """--status: one or more comma-separated statuses; a bad one is a usage error naming it."""
    try:
        return [parse_status(v.strip()) for v in value.split(",") if v.strip()]
    except TaskError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# -- helpers ---------------------------------------------------------------------------------------


def _load(args: argparse.Namespace, *, with_flags: bool = False) -> LoadedConfig:
    """The configuration, loaded and validated in full (and kept for read-only commands)."""
    from runner import registries
    from runner.config import FLAG_KEYS, load_config

    flags = {name: getattr(args, name, None) for name in FLAG_KEYS} if with_flags else None
    loaded = load_config(find_config_file(args.config), flags, registries.names())
    CRASH_LOG.root = loaded.config.root
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    # Secrets configured only in agent.env are masked in whatever this command writes, too.
    register_values(agent_secrets(loaded.config.agent.env, os.environ).values())
    if not with_flags:
        write_snapshot(loaded)
    return loaded


def _read(args: argparse.Namespace) -> ReadConfig:
    """What a command that only reads the state needs of the configuration: from the snapshot of
    the last full load while it still holds (runner.configsnap), else from a full load."""
    kept = read_snapshot(find_config_file(args.config))
    if kept is None:
        return ReadConfig.of(_load(args))
    CRASH_LOG.root = kept.root
    register_values(agent_secrets(kept.agent_env, os.environ).values())
    return kept


def _store(config: ReadConfig | LoadedConfig, *, create: bool) -> BuiltinTaskStore | None:
    read = config if isinstance(config, ReadConfig) else ReadConfig.of(config)
    path = read.state_target
    if not create and not state_exists(path):
        return None
    if create:
        Layout(read.root).ensure()  # ignored by git from the first file it holds
        add_file_sink(read.root)
    return open_task_source(read.task_source, open_db(path, create=create, lock_wait=COMMAND_LOCK_WAIT_SECONDS))


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False, default=str))


def _task_line(task: Task) -> str:
    deps = f"  after {','.join(task.dependencies)}" if task.dependencies else ""
    kind = " [epic]" if task.type is TaskType.EPIC else ""
    return f"{task.id:<10} {task.status.value:<12} {task.priority_name}  {first_line(task.title)}{kind}{deps}"


# -- commands --------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    """`run`: the dev -> verify -> integrate loop; a batch run ends with its summary."""
    from runner.basesync import remote_problem
    from runner.scheduler import run_loop
    from runner.scope import scope_problem
    from runner.summary import Invocation, Mode, report

    loaded = _load(args, with_flags=True)
    problem = scope_problem(loaded) or remote_problem(loaded)
    if problem:
        raise PipelineError(problem)
    quiet = args.quiet > 0
    if quiet:
        setup_stderr(args.verbose - args.quiet, silent=True)  # stdout carries the events, and only them
    invocation = Invocation()
    code = run_loop(
        loaded.config, once=args.once, dry_run=args.dry_run, until_idle=args.until_idle,
        use_cache=not args.no_cache, quiet=quiet, invocation=invocation,
    )  # fmt: skip
    if code != Exit.OK or args.dry_run or not (args.once or args.until_idle):
        return code
    mode = Mode.UNTIL_IDLE if args.until_idle else Mode.ONCE
    # Done, or stopped short of it: cron and CI must be able to tell.
    return Exit.NEEDS_ATTENTION if report(loaded.config, invocation, mode, quiet=quiet) else Exit.OK


def cmd_resume(args: argparse.Namespace) -> int:
    """`resume`: clear recorded faults; those still present are found again on the next cycle."""

    path = Layout(_load(args).config.root).faults_file
    faults = read_faults(path)
    cleared = [f for f in faults if args.area in (None, f.area)]
    if args.area is not None and not cleared:
        known = ", ".join(f.area for f in faults) or "none"
        raise PipelineError(f"No fault in area {args.area!r} (recorded: {known}).")
    write_faults(path, [f for f in faults if f not in cleared])
    for fault in cleared:
        print(f"resumed {fault.area}: {fault.message.splitlines()[0][:200]}")
    if not cleared:
        print("Nothing is paused.")
    return Exit.OK


def cmd_status(args: argparse.Namespace) -> int:
    """`status`, `status --watch`, `top`."""
    from runner.status import build_status
    from runner.watch import status_command

    config = _read(args)
    return status_command(
        lambda: build_status(
            config.root, config.base, config.limits, max_waiting=config.max_waiting, state=config.state_target
        ),
        as_json=args.json,
        watching=args.watch or args.command == "top", interval=args.interval, no_color=args.no_color,
        out=sys.stdout, env=dict(os.environ),
    )  # fmt: skip


def cmd_logs(args: argparse.Namespace) -> int:
    """`logs TASK [-f] [--run ID]`."""
    from runner.ids import check_task_id
    from runner.tasklogs import show_logs

    check_task_id(args.task)  # refused before any file is read or made
    read = _read(args)
    return show_logs(read.root, args.task, run_id=args.run, follow=args.follow, state=read.state_target)


def cmd_report(args: argparse.Namespace) -> int:
    """`report`: figures over the state; --html writes them as one file."""
    from runner.report import load_report, render_text, report_json
    from runner.report_html import write_html

    read = _read(args)
    report = load_report(read.root, args.since, state=read.state_target)
    if args.html is not None:
        write_html(report, args.html)
    if args.json:
        _print_json(report_json(report))
    elif args.html is not None:
        # On stderr: with --html /dev/stdout, stdout is the page and must hold nothing else.
        print(f"Wrote {args.html}: {report.summary.tasks} task(s), {len(report.timeline.runs)} run(s) drawn.",
              file=sys.stderr)  # fmt: skip
    else:
        print(render_text(report), end="")
    return Exit.OK


def cmd_phases(args: argparse.Namespace) -> int:
    """`phases`: the graph in running order."""
    from runner.checkcmd import graph_document, render_graph

    doc = graph_document(_load(args).config)
    if args.json:
        _print_json(doc)
    else:
        print(render_graph(doc), end="")
    return Exit.OK


def cmd_check(args: argparse.Namespace) -> int:
    """`check`: the graph on a rev, in a pristine checkout, with the pipeline's cache."""
    from phases.outcomes import VerifyStatus
    from runner.checkcmd import CheckRun, check

    config = _load(args).config
    result = check(config, CheckRun(args.rev, args.phase, args.on, not args.no_cache))
    print(result.summary)
    if result.status in (VerifyStatus.PASS, VerifyStatus.SKIP):
        return Exit.OK
    return Exit.ERROR


def cmd_receipt(args: argparse.Namespace) -> int:
    """`receipt`: the note a landed commit carries."""
    from runner.checkcmd import receipt_of

    sha, text, data = receipt_of(_load(args).config, args.rev)
    if args.json:
        if data is None:
            raise PipelineError(f"the note on {sha[:12]} is not a pipeline-runner receipt")
        _print_json({"commit": sha, **data})
    else:
        print(text, end="")
    return Exit.OK


def cmd_config_show(args: argparse.Namespace) -> int:
    """`config show`: every effective value and its origin."""
    from runner.pgstate import safe_url

    loaded = _load(args, with_flags=True)
    values = loaded.effective()
    if isinstance(values.get("state.url"), str):
        values["state.url"] = safe_url(values["state.url"])  # printed, perhaps into a log or a ticket
    if args.json:
        _print_json(
            {
                "config_file": str(loaded.config_file) if loaded.config_file else None,
                "values": {
                    key: {"value": value, "source": loaded.origin_of(key).describe()}
                    for key, value in values.items()
                },
            }
        )
        return Exit.OK
    print(f"# config file: {loaded.config_file or '(none: defaults)'}")
    width = max(len(k) for k in values)
    for key, value in values.items():
        print(f"{key:<{width}}  {json.dumps(value):<40}  # {loaded.origin_of(key).describe()}")
    return Exit.OK


def cmd_config_validate(args: argparse.Namespace) -> int:
    """`config validate`."""
    from phases.backends import make_backend
    from phases.verify import coverage_problem
    from runner.doctor import config_problems, static_findings, where_of

    loaded = _load(args)
    problem = make_backend(loaded.config.agent).check()
    if problem:
        raise PipelineError(f"{loaded.config_file or 'config'}: {problem}")
    config = loaded.config
    if not args.schema_only:
        errors, warnings = config_problems(
            static_findings(config, where=where_of(loaded)), str(loaded.config_file or "default configuration")
        )
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if errors:
            raise PipelineError("\n".join(errors))
    gap = coverage_problem(config.phases)
    if gap:
        # Valid, but a task no check runs on cannot land: say so before a run finds out.
        origin = loaded.origin_of("phases")
        where = (
            origin.describe() if origin.kind != "default" else loaded.config_file or "default configuration"
        )
        if config.allow_unchecked:
            then = "such a task lands with no check, since allow_unchecked is true"
        elif config.phases:
            then = "such a task goes to needs_help instead of landing (or set allow_unchecked: true)"
        else:
            then = "`run` refuses to start until recipes are set (or allow_unchecked: true)"
        print(f"warning: {where}: key 'phases': {gap}; {then}", file=sys.stderr)
    print(f"{loaded.config_file or 'default configuration'}: valid")
    return Exit.OK


def cmd_state_migrate(args: argparse.Namespace) -> int:
    """`state migrate --to URL`."""
    from runner.statemigrate import migrate_state, render_result

    result = migrate_state(_read(args).state_db, args.to)
    print(render_result(result, args.to))
    return Exit.OK


def cmd_doctor(args: argparse.Namespace) -> int:
    """`doctor`: every item with its verdict and fix; exit 1 when one fails."""
    from runner.doctor import healthy, render, run_doctor, to_json

    findings = run_doctor(_load(args), agent_call=not args.no_agent_call)
    if args.json:
        _print_json(to_json(findings))
    else:
        print(render(findings), end="")
    return Exit.OK if healthy(findings) else Exit.ERROR


def cmd_init(args: argparse.Namespace) -> int:
    """`init`: write a commented config for the repository holding the current directory."""
    from runner.init_config import InitAnswers, check_base, locate, write_config

    place = locate(Path.cwd(), args.config)
    print(write_config(place, InitAnswers(args.preset, args.base, args.yes, args.force)), flush=True)
    if args.no_check:
        return Exit.OK
    target = place.target
    # The config stays written either way: a person fixes base, or the phase, and runs again.
    args.config = str(target)
    checked = check_base(_load(args).config)
    if checked is not None and checked.ok:
        print(checked.message)
    elif checked is not None:
        print(f"warning: {target}: {checked.message}", file=sys.stderr)
    return Exit.OK


def cmd_task_add(args: argparse.Namespace) -> int:
    """`task add`."""
    new = NewTask(
        title=args.title,
        id=args.id,
        type=TaskType(args.type),
        parent=args.parent,
        namespace=args.namespace,
        priority=args.priority,
        dependencies=list(args.depends_on),
        description=args.description,
    )
    new.check()  # refuse a bad id before the database (or the root) is even created
    loaded = _load(args)
    if new.id is not None and new.id == loaded.config.base:
        # The task's workspace has both a branch for the task and one for base, under their names.
        raise TaskError(f"Invalid task id {new.id!r}: it is the name of the base branch.")
    store = _store(loaded, create=True)
    assert store is not None
    task = store.add(new)
    nudge(Layout(loaded.config.root).nudge_file)
    if args.json:
        _print_json(task.to_json())
    else:
        print(f"Added {task.id}: {first_line(task.title)}")
    return Exit.OK


def cmd_task_list(args: argparse.Namespace) -> int:
    """`task list`: one page of tasks (runner.tasklist)."""
    from runner.tasklist import DEFAULT_LIMIT, Listing, list_tasks

    limit = None if args.all or (args.json and args.limit is None) else (args.limit or DEFAULT_LIMIT)
    statuses = {s for group in args.status or [] for s in group}
    listing = Listing(statuses, args.parent, limit, args.offset, args.json)
    list_tasks(_store(_read(args), create=False), listing, sys.stdout, sys.stderr)
    return Exit.OK


def cmd_task_show(args: argparse.Namespace) -> int:
    """`task show`."""
    from runner.ids import check_task_id
    from runner.phaseview import attempt_json, phase_lines, phase_views
    from runner.state import Runs

    check_task_id(args.id)
    store = _store(_read(args), create=False)
    if store is None:
        raise PipelineError(f"No task with id {args.id!r} (no pipeline state yet).")
    task = store.get(args.id)
    runs = Runs(store.db).for_task(task.id)
    phases = phase_views(Runs(store.db), runs)
    if args.json:
        data = task.to_json()
        data["runs"] = [attempt_json(r, phases[r.id]) for r in runs]
        _print_json(data)
        return Exit.OK
    print(_task_line(task))
    for label, value in (("namespace", task.namespace), ("parent", task.parent),
                         ("patchset", task.patchset), ("created", task.created_at)):  # fmt: skip
        if value is not None:
            print(f"  {label}: {value}")
    if task.description:
        print("\n" + printable(task.description, keep_newlines=True))
    if runs:
        print("\nRuns:")
        for r in runs:
            err = f"  {r.error_summary.splitlines()[0][:100]}" if r.error_summary else ""
            print(f"  #{r.id} {r.phase.value:<9} ps{r.patchset} {r.status.value:<8} {r.cost_cents:.0f}c{err}")
            for line in phase_lines(phases[r.id]):
                print(line)
    if task.comments:
        print("\nComments:")
        for c in task.comments:
            print(f"  [{c.created_at[:19]}] {c.author.value}: {printable(c.body, keep_newlines=True)}")
    return Exit.OK


def cmd_task_comment(args: argparse.Namespace) -> int:
    """`task comment`."""
    from runner.ids import check_task_id

    check_task_id(args.id)
    store = _store(_load(args), create=True)
    assert store is not None
    store.comment(args.id, args.text, Author.HUMAN)
    print(f"Commented on {args.id}")
    return Exit.OK


def cmd_task_set_status(args: argparse.Namespace) -> int:
    """`task set-status`: a person moving a task; reopening restarts its retry count."""
    from runner.ids import check_task_id

    check_task_id(args.id)
    status = parse_status(args.status)
    loaded = _load(args)
    store = _store(loaded, create=True)
    assert store is not None
    if status is TaskStatus.CANCELLED:  # with cancel's guards: it must not land meanwhile
        from runner.steering import Steering

        print(Steering(_load(args).config, store).cancel(args.id).message)
        return Exit.OK
    before = store.get(args.id)
    store.set_status(args.id, status, by_person=True)
    nudge(Layout(loaded.config.root).nudge_file)
    # Said by the runner for the person: a person's own comments are what reaches the prompt.
    store.comment(args.id, f"status {before.status.value} -> {status.value} (set by a person)", Author.SYSTEM)
    print(f"{args.id}: {before.status.value} -> {status.value}")
    return Exit.OK


def cmd_task_import(args: argparse.Namespace) -> int:
    """`task import`: idempotent by id."""
    news = tasks_from_records(read_task_file(args.file), str(args.file))
    loaded = _load(args)
    store = _store(loaded, create=True)
    assert store is not None
    result = store.import_tasks(news)
    nudge(Layout(loaded.config.root).nudge_file)
    print(
        f"Imported {len(result.added)} task(s) from {args.file}; updated {len(result.updated)}; "
        f"{len(result.unchanged)} already present and unchanged."
    )
    for task_id, why in result.not_updated:
        print(f"  not updated: {task_id} ({why}): an import changes only open or needs_help tasks")
    return Exit.OK


def cmd_task_edit(args: argparse.Namespace) -> int:
    """`task edit`: the given fields only (runner.steering)."""
    from runner.ids import check_task_id
    from runner.steering import Steering
    from runner.tasks import TaskChanges

    check_task_id(args.id)
    changes = TaskChanges(
        title=args.title, description=args.description, priority=args.priority,
        dependencies=None if args.depends_on is None else tuple(args.depends_on), namespace=args.namespace,
    )  # fmt: skip
    changes.check(args.id)  # before the database is even opened
    loaded = _load(args)
    store = _store(loaded, create=False)
    if store is None:
        raise TaskError(f"No task with id {args.id!r} (no pipeline state yet).")
    print(Steering(loaded.config, store).edit(args.id, changes).message)
    nudge(Layout(loaded.config.root).nudge_file)
    return Exit.OK


def cmd_task_steer(args: argparse.Namespace) -> int:
    """`task cancel`, `task retry`, `task delete` (runner.steering)."""
    from runner.ids import check_task_id
    from runner.steering import Steering

    check_task_id(args.id)
    loaded = _load(args)
    store = _store(loaded, create=False)
    if store is None:
        raise TaskError(f"No task with id {args.id!r} (no pipeline state yet).")
    steering = Steering(loaded.config, store)
    action = {"cancel": steering.cancel, "retry": steering.retry, "delete": steering.delete}[args.task_command]
    print(action(args.id).message)
    nudge(Layout(loaded.config.root).nudge_file)  # a cancel stops, a retry starts, at once
    return Exit.OK


# -- entry points ----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the command, and map its outcome to an exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:  # --help, --version, or a usage error
        return int(exc.code) if isinstance(exc.code, int) else Exit.USAGE
    merge_global_options(args)
    setup_stderr(args.verbose - args.quiet)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return int(handler(args))
    except PipelineError as exc:
        logger.debug("error: {}", exc)
        print(f"pipeline-runner: {exc}", file=sys.stderr)
        return Exit.ERROR
    except KeyboardInterrupt:
        print("pipeline-runner: interrupted", file=sys.stderr)
        return Exit.INTERRUPTED
    except BrokenPipeError as exc:
        if stdout_closed():
            # The reader took what it wanted (`| head -1`): not an error, as `status` and `logs` say.
            silence_stdout()
            return Exit.OK
        report_bug(exc, argv)
        return Exit.BUG
    except OSError as exc:
        if exc.filename is None:
            report_bug(exc, argv)
            return Exit.BUG
        # A path the machine refuses (a file where a directory should be, no space, no access):
        # the person's to fix, not a bug.
        logger.opt(exception=exc).debug("error")
        print(f"pipeline-runner: cannot use {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return Exit.ERROR
    except Exception as exc:
        report_bug(exc, argv)
        return Exit.BUG


def entry() -> None:
    """Console-script entry point."""
    code = main()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader left after the last write, before the interpreter's own flush at exit.
        silence_stdout()
    sys.exit(code)
