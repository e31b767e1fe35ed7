"""`report --html` opened in real headless Chromium: every task has its row, the timeline is drawn,
and a hostile title stays text. `.ci/run` installs Debian's chromium when it is missing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.loop_helpers import all_done, make_sample
from tests.test_report import HOSTILE, _Elements

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def _browser() -> str:
    found = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if found is None:
        pytest.skip(
            "no headless Chromium here (looked for chromium, chromium-browser, google-chrome): "
            "`bash .ci/run` installs it as root with `apt-get install -y chromium`"
        )
    return found


def dump_dom(browser: str, page: Path, profile: Path) -> str:
    """The DOM Chromium built from ``page``, serialized once it loaded."""
    argv = [browser, "--headless", "--disable-gpu", "--no-first-run", "--disable-extensions",
            f"--user-data-dir={profile}", "--dump-dom", page.resolve().as_uri()]  # fmt: skip
    if os.geteuid() == 0:
        argv.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        # Chromium's helpers share its process group: none outlives the test.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0 and "<html" in out, err[-2000:]
    return out


def test_html_report_in_headless_chromium(tmp_path: Path) -> None:
    browser = _browser()
    s = make_sample(tmp_path, concurrency=2)
    s.plan({"t-1": [{"files": {"x.txt": "BAD value\n"}}, {"files": {"x.txt": "good\n"}}]})
    tasks = [s.add("fix x"), s.add(HOSTILE)]
    s.run_until(all_done(2))
    runs = s.rows("SELECT id, task_id FROM pipeline_runs WHERE parent_id IS NULL")
    page = tmp_path / "report.html"
    done = s.cli("report", "--html", str(page))
    assert done.returncode == 0, done.stderr

    raw = dump_dom(browser, page, tmp_path / "profile")
    dom = _Elements()
    dom.feed(raw)
    rows = [attrs["data-task"] for tag, attrs in dom.tags if tag == "tr" and attrs.get("class") == "task"]
    assert rows == tasks
    titles = [dom.cells[7 * row + 1] for row in range(len(tasks))]  # the task table comes first
    assert titles == ["fix x", HOSTILE.replace("\x1b", "\ufffd")]
    # The hostile title stayed text: the page holds no script or image, and nothing renamed it.
    assert not {tag for tag, _ in dom.tags} & {"script", "img", "iframe"}
    assert "<title>pipeline-runner report</title>" in raw and "pwned</title>" not in raw
    drawn = [attrs for tag, attrs in dom.tags if tag == "rect" and "run" in (attrs.get("class") or "").split()]
    assert sorted(int(str(a["data-run"])) for a in drawn) == sorted(run_id for run_id, _ in runs)
    assert {a["data-task"] for a in drawn} == set(tasks)
    assert all(float(str(a["width"])) >= 1 for a in drawn)
    lanes = {attrs["data-lane"] for tag, attrs in dom.tags if tag == "g" and attrs.get("class") == "lane"}
    assert {a["data-lane"] for a in drawn} == lanes and {"dev 1", "verify 1", "integrate 1"} <= lanes
    assert any(tag == "svg" and attrs.get("id") == "timeline" for tag, attrs in dom.tags)
