"""A title, description or comment written to attack whoever reads the CLI's output: escape
sequences that recolour, retitle or rewrite the terminal, and newlines that forge lines."""

from __future__ import annotations

from pathlib import Path

from runner.notify import Event, EventKind
from runner.tasklist import first_line, printable
from tests.conftest import CLI, make_repo, write_config

ESC = "\x1b"
# An OSC that retitles the terminal, a colour, a carriage return that overwrites the line, a
# bidirectional override that reverses what follows.
HOSTILE = f"evil {ESC}]0;pwned\a{ESC}[31mRED{ESC}[0m\rDONE \u202etxt.exe"
FORGED = "harmless\n  t-99  done  P0  forged line"


def _no_control(text: str) -> None:
    for bad in (ESC, "\a", "\r", "\u202e"):
        assert bad not in text, repr(text)


def test_printable_keeps_text_and_drops_controls() -> None:
    assert printable("plain ünïcode title") == "plain ünïcode title"
    assert printable(f"a{ESC}[31mb") == "a?[31mb"
    assert printable("a\nb\tc") == "a?b?c"
    assert printable("a\nb\tc", keep_newlines=True) == "a\nb\tc"
    assert first_line(HOSTILE) == "evil ?]0;pwned??[31mRED?[0m ..."  # a CR ends the line
    assert first_line(f"a{ESC}[2J \u202eb") == "a?[2J ?b"
    assert first_line(FORGED) == "harmless ..."


def test_event_text_is_one_clean_line() -> None:
    for kind in (EventKind.NEEDS_HELP, EventKind.LANDED):
        text = Event(kind, f"5 failed{ESC}[2J\nsecond", task_id="t-1", title=FORGED + HOSTILE).text
        _no_control(text)
        assert "\n" not in text and "forged line" not in text


def test_task_add_list_show_status_print_no_escape(tmp_path: Path, cli: CLI) -> None:
    repo = make_repo(tmp_path / "repo")
    write_config(repo, 'base: live\nphases: {test: {run: ["true"]}}\n')
    added = cli("task", "add", HOSTILE, "--description", f"line one\n{ESC}]52;c;cGF5bG9hZA==\aline two",
                cwd=repo)  # fmt: skip
    assert added.code == 0, added.err
    _no_control(added.out)
    assert cli("task", "add", FORGED, cwd=repo).code == 0
    assert cli("task", "comment", "t-1", f"see {ESC}[8mhidden{ESC}[0m", cwd=repo).code == 0
    for args in (("task", "list"), ("task", "show", "t-1"), ("status",)):
        done = cli(*args, cwd=repo)
        assert done.code == 0, done.err
        _no_control(done.out)
        # A newline in a title does not become a line of its own (a forged task line).
        assert "forged line" not in done.out, (args, done.out)
        assert "evil" in done.out and "RED" in done.out
    shown = cli("task", "show", "t-1", cwd=repo).out
    assert "line one\n" in shown and "line two" in shown  # the description keeps its lines
