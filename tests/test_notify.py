"""Notifications: the `notify:` config, events from the task store and the FaultBoard, and the
commands (real processes) that tell them, including ones that hang, fail or cannot start."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.config import NotifyRule, load_config
from runner.errors import ConfigError
from runner.faults import FaultBoard, write_faults
from runner.logs import logger
from runner.notify import Announcer, Event, EventKind, Notifier, deliveries
from runner.state import open_db
from runner.tasks import Author, BuiltinTaskStore, NewTask, TaskStatus
from tests.loop_helpers import kill_leftovers

RECORDER = """\
import json, sys
data = sys.stdin.read()
with open(sys.argv[1], "a") as out:
    out.write(json.dumps({"argv": sys.argv[2:], "stdin": json.loads(data)}) + "\\n")
"""


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    seen: list[str] = []
    sink = logger.add(lambda m: seen.append(str(m)), level="WARNING", format="{message}")
    yield seen
    logger.remove(sink)


def load(tmp_path: Path, text: str) -> NotifyRule:
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    return load_config(path).config.notify[0]


def config_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return str(caught.value)


# -- config ----------------------------------------------------------------------------------------


def test_unquoted_on_is_read_as_on_and_a_string_is_split(tmp_path: Path) -> None:
    # YAML 1.1 reads a bare `on:` as the key True.
    rule = load(tmp_path, "notify:\n  - on: [needs_help, paused, needs_help]\n    run: notify-send 'pipeline runner' '{text}'\n")
    assert rule.on == ["needs_help", "paused"]
    assert rule.run == ["notify-send", "pipeline runner", "{text}"]
    assert rule.timeout == 10


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("on: [landed]\n    run: [echo, '{task}']", "key 'notify.0.run': unknown placeholder {task}"),
        ("on: [merged]\n    run: [echo]", "key 'notify.0.on.0'"),
        ("on: []\n    run: [echo]", "key 'notify.0.on'"),
        ("on: [landed]\n    run: [echo]\n    timeout: 3600", "key 'notify.0.timeout'"),
        ("on: [landed]\n    run: []", "key 'notify.0.run'"),
        ("on: [landed]\n    run: \"echo 'unclosed\"", "cannot be split into words"),
        ("on: [landed]\n    run: [echo]\n    shell: true", "unknown key 'notify.0.shell'"),
    ],
)
def test_bad_notify_entries_name_the_file_and_key(tmp_path: Path, entry: str, expected: str) -> None:
    message = config_error(tmp_path, f"notify:\n  - {entry}\n")
    assert expected in message
    assert str(tmp_path / "pipeline.yaml") in message


def test_max_daily_cost_is_cents_and_not_negative(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text("limits: {max_daily_cost: 250}\n")
    assert load_config(path).config.limits.max_daily_cost == 250
    assert "key 'limits.max_daily_cost'" in config_error(tmp_path, "limits: {max_daily_cost: -1}\n")


# -- what is sent ----------------------------------------------------------------------------------


def test_placeholders_fill_single_arguments_and_only_matching_rules_run(tmp_path: Path) -> None:
    rules = [
        NotifyRule(on=["needs_help"], run=["say", "{task_id}: {title}", "--area={area}"]),
        NotifyRule(on=["landed"], run=["never"]),
    ]
    event = Event(EventKind.NEEDS_HELP, "why\nmore", task_id="t-9", title='x"; rm -rf / $(id)')
    [sent] = deliveries(rules, event, "live", tmp_path)
    assert sent.argv == ["say", 't-9: x"; rm -rf / $(id)', "--area="]
    doc = json.loads(sent.stdin)
    assert doc["event"] == "needs_help" and doc["message"] == "why\nmore" and doc["base"] == "live"
    assert doc["text"] == 'needs help: t-9 x"; rm -rf / $(id): why'


@pytest.mark.parametrize(
    ("event", "text"),
    [
        (Event(EventKind.NEEDS_HELP, "3 failed attempts", task_id="t-1", title="A"), "needs help: t-1 A: 3 failed attempts"),
        (Event(EventKind.LANDED, "integrated into live at abc", task_id="t-1", title="A"), "landed: t-1 A: integrated into live at abc"),
        (Event(EventKind.PAUSED, "git is missing\ndetails", area="dev"), "paused: dev: git is missing"),
        (Event(EventKind.RESUMED, "was paused: git is missing", area="dev"), "resumed: dev"),
    ],
)
def test_each_event_has_one_line_for_a_person(event: Event, text: str) -> None:
    assert event.text == text


# -- where events come from ------------------------------------------------------------------------


def test_faults_tell_paused_once_and_resumed_also_when_another_process_clears(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    board = FaultBoard(path, lambda n: 60.0)
    told: list[tuple[str, str]] = []
    board.listeners.append(lambda change, fault: told.append((change, fault.area)))
    board.record("dev", "no agent")
    board.record("dev", "no agent, again")  # a recurrence is not news
    board.clear("dev")
    board.clear("dev")
    board.record("verify", "disk full")
    write_faults(path, [])  # `pipeline-runner resume` from another process
    board.reload()
    assert told == [("paused", "dev"), ("resumed", "dev"), ("paused", "verify"), ("resumed", "verify")]


def test_task_moves_are_told_after_the_reason_is_written_and_only_if_they_stand(tmp_path: Path) -> None:
    db = open_db(tmp_path / "state.db")
    store = BuiltinTaskStore(db)
    notifier = Notifier([], base="live", root=tmp_path)
    announcer = Announcer(notifier, store, FaultBoard(tmp_path / "faults.json", lambda n: 1.0))
    for title in ("a", "b", "c"):
        store.add(NewTask(title=title))
    store.set_status("t-1", TaskStatus.NEEDS_HELP)
    store.comment("t-1", "Pipeline: needs help: 5 failed attempts", Author.SYSTEM)
    store.set_status("t-2", TaskStatus.NEEDS_HELP)
    store.set_status("t-2", TaskStatus.OPEN, by_person=True)  # undone before it was told
    store.set_status("t-3", TaskStatus.IN_PROGRESS)  # not an event
    with pytest.raises(RuntimeError), db.write():
        store.set_status("t-3", TaskStatus.DONE)
        raise RuntimeError("rolled back")
    announcer.flush()
    announcer.flush()
    assert [(e.kind, e.task_id, e.message) for e in notifier.events] == [
        (EventKind.NEEDS_HELP, "t-1", "5 failed attempts")
    ]
    assert announcer.needs_help == ["t-1"]
    db.close()


# -- running the commands --------------------------------------------------------------------------


def test_a_real_command_gets_its_argv_and_the_event_on_stdin(tmp_path: Path) -> None:
    script = tmp_path / "record.py"
    script.write_text(RECORDER)
    out = tmp_path / "out.jsonl"
    rule = NotifyRule(on=["paused"], run=[sys.executable, str(script), str(out), "{event}", "{area}", "{message}"])
    notifier = Notifier([rule], base="live", root=tmp_path, cwd=tmp_path)
    notifier.emit(Event(EventKind.PAUSED, "tool 'make' is missing", area="verify"))
    notifier.close()
    [call] = [json.loads(line) for line in out.read_text().splitlines()]
    assert call["argv"] == ["paused", "verify", "tool 'make' is missing"]
    assert call["stdin"]["event"] == "paused" and call["stdin"]["area"] == "verify"
    assert call["stdin"]["task_id"] is None and call["stdin"]["root"] == str(tmp_path)


def test_hanging_failing_and_missing_commands_are_logged_and_the_next_still_runs(
    tmp_path: Path, warnings: list[str]
) -> None:
    script = tmp_path / "record.py"
    script.write_text(RECORDER)
    out = tmp_path / "out.jsonl"
    rules = [
        # Its child holds the output open past the kill of the group it started in: still bounded.
        NotifyRule(on=["landed"], run=["sh", "-c", f"setsid sh -c 'sleep 8 # {tmp_path}' & sleep 30"], timeout=1),
        NotifyRule(on=["landed"], run=["sh", "-c", "echo webhook said 500; exit 22"]),
        NotifyRule(on=["landed"], run=["no-such-notifier-xyz", "{task_id}"]),
        NotifyRule(on=["landed"], run=[sys.executable, str(script), str(out), "{task_id}"]),
    ]
    notifier = Notifier(rules, base="live", root=tmp_path, cwd=tmp_path)
    started = time.monotonic()
    notifier.emit(Event(EventKind.LANDED, "ok", task_id="t-1", title="a"))
    notifier.emit(Event(EventKind.LANDED, "ok", task_id="t-2", title="b"))
    assert time.monotonic() - started < 0.5  # the caller (the loop) never waits for a command
    notifier.close()
    assert time.monotonic() - started < 10
    assert [json.loads(line)["argv"] for line in out.read_text().splitlines()] == [["t-1"], ["t-2"]]
    assert sum("'sh' for landed was stopped after its timeout of 1s" in w for w in warnings) == 2
    assert sum("'sh' for landed exited 22" in w for w in warnings) == 2
    assert sum("no-such-notifier-xyz" in w and "could not run" in w for w in warnings) == 2
    assert "webhook said 500" in (tmp_path / "logs" / "notify.log").read_text()
    assert len(kill_leftovers(tmp_path)) == 2  # what slipped out of the group, ended here


def test_quiet_echo_prints_only_needs_help_and_paused(tmp_path: Path) -> None:
    lines: list[str] = []
    notifier = Notifier([], base="live", root=tmp_path, echo=lines.append)
    for kind in EventKind:
        notifier.emit(Event(kind, "m", task_id="t-1", title="a", area="dev"))
    assert lines == ["needs help: t-1 a: m", "paused: dev: m"]


def test_a_command_writing_without_end_fills_no_disk(tmp_path: Path, warnings: list[str]) -> None:
    rule = NotifyRule(on=["landed"], run=["yes", "{task_id}"], timeout=1)
    notifier = Notifier([rule], base="live", root=tmp_path, cwd=tmp_path)
    notifier.emit(Event(EventKind.LANDED, "ok", task_id="t-1", title="a"))
    notifier.close()
    log = tmp_path / "logs" / "notify.log"
    assert log.stat().st_size < 1024 * 1024 + 4096
    assert log.read_text().endswith("[output cut: more than 1048576 bytes]\n")
    assert any("'yes' for landed was stopped after its timeout of 1s" in w for w in warnings)
