"""Base holds exactly what was checked: agents that break the rules on purpose, in real repositories.

Each agent here is a real process (tests/fakes/hostile-agent) that makes its commit and then tries a
trick; the assertions are made on git itself, whatever the task's status.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from runner.scheduler import BRING_IN_WAIT_SECONDS
from tests.conftest import clean_env, git, make_workspaces
from tests.loop_helpers import Sample, all_done, kill_leftovers, make_sample, stop, wait_for

TERMINAL = ("done", "needs_help")


def hostile(tmp_path: Path, mode: str, **config: Any) -> Sample:
    base: dict[str, Any] = {
        "limits": {"max_retries": 1},
        "agent": {"command": ["hostile-agent", mode, "{prompt_file}"]},
    }
    return make_sample(tmp_path, **{**base, **config})


def drive(s: Sample, task_id: str = "t-1") -> str:
    s.run_once_until(lambda d: s.task(task_id)["status"] in TERMINAL, limit=40)
    status: str = s.task(task_id)["status"]
    return status


def bad_on_base(s: Sample, start: str) -> bool:
    return any(line == "+BAD" for line in git(s.repo, "log", "-p", f"{start}..live").splitlines())


def plant_hooks(tmp_path: Path) -> tuple[Path, Path]:
    """Hook scripts that log where they ran and whether an agent (PIPELINE_RUN_ID) or the runner ran them."""
    hooks = tmp_path / "hooks"
    hooks.mkdir(parents=True)
    log = tmp_path / "hooks-ran.log"
    names = ["post-checkout", "post-commit", "pre-commit", "reference-transaction", "post-merge",
             "post-rewrite", "pre-auto-gc", "fsmonitor"]  # fmt: skip
    for name in names:
        script = hooks / name
        script.write_text(f'#!/bin/sh\necho "$(pwd) ${{PIPELINE_RUN_ID:-RUNNER}} {name}" >> {log}\n')
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return hooks, log


def test_checks_judge_the_commit_not_the_files_left_beside_it(tmp_path: Path) -> None:
    # The agent commits BAD and leaves good content uncommitted; no integration checks at all.
    s = hostile(tmp_path, "dirty", phases={"verify": {"run": [["python3", "check.py"]]}, "integrate": {"run": []}})
    start = git(s.repo, "rev-parse", "live")
    s.add("dirty")
    assert drive(s) == "needs_help"
    assert not bad_on_base(s, start)
    assert git(s.repo, "rev-parse", "live") == start
    (error,) = s.rows("SELECT error_summary FROM pipeline_runs WHERE phase='verify'")[0]
    assert "bad files: ['t-1.txt']" in error


def test_an_agent_cannot_move_base_with_update_ref(tmp_path: Path) -> None:
    s = hostile(tmp_path, "moveref")
    start = git(s.repo, "rev-parse", "live")
    s.add("moveref")
    assert drive(s) == "needs_help"  # its BAD commit fails the check; base never saw it
    assert git(s.repo, "rev-parse", "live") == start
    assert not bad_on_base(s, start)


def test_an_agent_cannot_push_to_base_checked_out_nowhere(tmp_path: Path) -> None:
    s = hostile(tmp_path, "pushbase")
    git(s.repo, "checkout", "-q", "--detach")
    start = git(s.repo, "rev-parse", "live")
    s.add("pushbase")
    assert drive(s) == "needs_help"
    assert git(s.repo, "rev-parse", "live") == start


def test_hooks_planted_by_an_agent_never_run_in_the_runner_nor_persist(tmp_path: Path) -> None:
    for mode in ("hooks", "gitconfigfile"):
        hooks, log = plant_hooks(tmp_path / mode)
        s = hostile(tmp_path / mode, mode)
        s.env["HOSTILE_HOOKS"] = str(hooks)
        s.add(mode)
        assert drive(s) == "done", s.task("t-1")
        assert s.trailers() == ["t-1"]
        ran = log.read_text().splitlines() if log.exists() else []
        assert [line for line in ran if "RUNNER" in line] == [], mode
        for key in ("core.hooksPath", "core.fsmonitor"):
            assert git(s.repo, "config", "--default", "", "--get", key) == "", (mode, key)


def test_the_persons_own_hooks_do_not_run_for_the_runners_git_commands(tmp_path: Path) -> None:
    # A person's hooks belong to their own commands; the runner's ref updates and checkout
    # moves must not trigger them (with the runner's environment and secrets).
    s = hostile(tmp_path, "amend")
    hooks, log = plant_hooks(tmp_path)
    for script in hooks.iterdir():
        (s.repo / ".git" / "hooks" / script.name).write_bytes(script.read_bytes())
        os.chmod(s.repo / ".git" / "hooks" / script.name, 0o755)
    s.add("x")
    assert drive(s) == "done"
    assert not log.exists() or "RUNNER" not in log.read_text()


def test_what_lands_is_the_sha_that_passed_verification(tmp_path: Path) -> None:
    # After verification, something (a daemon the agent left) moves the task branch in the
    # workspace to BAD content. With no integration checks, only the verified sha may land.
    s = make_sample(tmp_path, phases={"verify": {"run": [["python3", "check.py"]]}, "integrate": {"run": []}})
    s.add("x")
    s.run_once_until_verified()
    workspace = s.root / "worktrees" / "t-1"
    (workspace / "t-1.txt").write_text("BAD\n")
    git(workspace, "commit", "-q", "-a", "--amend", "-m", "swapped\n\nTask-Id: t-1")
    s.run_once_until(lambda d: d["done"] == 1)
    assert (s.repo / "t-1.txt").read_text() == "t-1 done\n"
    assert s.base_log()[0] == "t-1: attempt 0"


def test_a_persons_branch_named_like_the_task_is_never_taken(tmp_path: Path) -> None:
    s = hostile(tmp_path, "amend")
    git(s.repo, "checkout", "-q", "-b", "feature")
    (s.repo / "wip.md").write_text("work in progress\n")
    git(s.repo, "add", "wip.md")
    git(s.repo, "commit", "-q", "-m", "WIP")
    git(s.repo, "checkout", "-q", "live")
    feature = git(s.repo, "rev-parse", "feature")
    s.add("same name as a branch", "--id", "feature")
    assert drive(s, "feature") == "done"
    assert git(s.repo, "rev-parse", "refs/heads/feature") == feature
    assert "wip.md" not in git(s.repo, "ls-tree", "--name-only", "live").splitlines()
    assert (s.repo / "feature.txt").read_text() == "good\n"
    # Marking it done again (a person tidying up) leaves the branch alone too.
    assert s.cli("task", "set-status", "feature", "done").returncode == 0
    assert s.cli("run", "--once").returncode == 0
    assert git(s.repo, "rev-parse", "refs/heads/feature") == feature
    # The runner's own refs are gone once the task is done.
    assert git(s.repo, "for-each-ref", "refs/pipeline/") == ""


def test_a_task_named_like_the_base_branch_is_refused(tmp_path: Path) -> None:
    s = make_sample(tmp_path)
    done = s.cli("task", "add", "x", "--id", "live")
    assert done.returncode == 1
    assert "base branch" in done.stderr
    assert s.cli("task", "list").stdout.strip() in ("", "No tasks.")


def test_a_secret_handed_to_the_agent_never_lands(tmp_path: Path) -> None:
    token = "tok-SECRET-98765-zz"
    s = hostile(tmp_path, "secret", agent={"command": ["hostile-agent", "secret", "{prompt_file}"],
                                            "env": {"HOSTILE_TOKEN": "${RUNNER_TOKEN}"}})  # fmt: skip
    s.env["RUNNER_TOKEN"] = token
    start = git(s.repo, "rev-parse", "live")
    s.add("leaky")
    assert drive(s) == "needs_help"
    assert git(s.repo, "rev-parse", "live") == start
    (error,) = s.rows("SELECT error_summary FROM pipeline_runs WHERE phase='verify'")[0]
    assert "HOSTILE_TOKEN" in error and "settings.ini" in error and "commit message" in error
    assert token not in error
    assert token not in (s.root / "state.db").read_bytes().decode("utf-8", "replace")


def _agent_alive(s: Sample) -> bool:
    return any(str(s.root) in " ".join(c.split()) for c in _cmdlines())


def _cmdlines() -> list[str]:
    out = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return out


def test_a_persons_status_change_stops_the_agent_and_stands(tmp_path: Path) -> None:
    for status in ("needs_help", "done"):
        s = make_sample(tmp_path / status)
        s.plan({"t-1": [{"sleep": 30}]})
        s.add("slow")
        assert s.cli("run", "--once").returncode == 0  # the agent starts and outlives the runner
        assert s.task("t-1")["status"] == "in_progress"
        assert s.cli("task", "set-status", "t-1", status).returncode == 0
        s.run_once_until(lambda d: d["active_dev_runs"] == 0, limit=40)
        for _ in range(3):
            assert s.cli("run", "--once").returncode == 0
        task = s.task("t-1")
        assert task["status"] == status
        assert [(r["phase"], r["status"]) for r in task["runs"]] == [("dev", "cancelled")]
        assert s.base_log() == ["initial"]
        assert not _agent_alive(s)
        if status == "done":
            assert s.leftover_worktrees() == []


def test_a_person_reopening_a_running_task_gets_a_fresh_agent_never_two(tmp_path: Path) -> None:
    s = make_sample(tmp_path)
    s.plan({"t-1": [{"sleep": 30}, {}]})
    s.add("slow")
    assert s.cli("run", "--once").returncode == 0
    assert s.cli("task", "set-status", "t-1", "open").returncode == 0
    s.run_once_until(all_done(1), limit=60)
    runs = [(r["phase"], r["status"]) for r in s.task("t-1")["runs"]]
    assert runs[0] == ("dev", "cancelled") and runs[-1] == ("integrate", "success")
    assert s.trailers() == ["t-1"]
    from tests.test_killpoints import shared_workspaces

    assert shared_workspaces(s) == []


def test_a_verified_task_a_person_reopens_is_not_integrated(tmp_path: Path) -> None:
    s = make_sample(tmp_path, phases={"verify": {"run": [["python3", "check.py"]]}})
    s.plan({"t-1": [{}, {"files": {"t-1.txt": "second take\n"}}]})
    s.add("x")
    s.run_once_until_verified()
    assert s.cli("task", "set-status", "t-1", "needs_help").returncode == 0
    for _ in range(3):
        assert s.cli("run", "--once").returncode == 0
    assert s.base_log() == ["initial"]
    assert s.task("t-1")["status"] == "needs_help"


def _base_moved_while_its_checkout_was_locked(tmp_path: Path) -> tuple[Sample, Path]:
    """A task lands while something (an editor, a person's long git command) holds the index of
    base's checkout; the lock is returned, still held."""
    s = make_sample(tmp_path, concurrency=1)
    s.add("first")
    s.run_once_until_verified()
    lock = s.repo / ".git" / "index.lock"
    lock.write_text("")
    assert s.cli("run", "--once").returncode == 3  # landed, and the checkout's lag is a fault
    return s, lock


def test_a_checkout_of_base_that_cannot_follow_is_brought_along_and_never_misleads(tmp_path: Path) -> None:
    s, lock = _base_moved_while_its_checkout_was_locked(tmp_path)
    # Base moved; the checkout could not follow, and says so instead of asking for a commit.
    assert s.trailers() == ["t-1"]
    doc = s.status()
    (fault,) = doc["faults"]
    assert fault["area"] == "checkout" and "Do not commit there" in fault["message"]
    assert "read-tree -m -u" in fault["message"]
    shown = s.cli("status").stdout
    assert "Do not commit there" in shown
    # A second task is held meanwhile, uncharged, with no check re-run.
    s.add("second")
    s.run_once_until_verified()
    assert s.cli("run", "--once").returncode == 3  # the lagging checkout holds integration
    assert s.trailers() == ["t-1"]
    assert s.rows("SELECT COUNT(*) FROM pipeline_runs WHERE status='failure'") == [(0,)]
    # Once the lock is gone, the checkout catches up (no phantom changes) and the second lands.
    lock.unlink()
    s.run_once_until(all_done(2), limit=60)
    assert sorted(s.trailers()) == ["t-1", "t-2"]
    assert git(s.repo, "status", "--porcelain", "--untracked-files=no") == ""
    assert s.status()["faults"] == []


def test_a_stale_lock_on_base_pauses_integration_without_rerunning_checks(tmp_path: Path) -> None:
    s = make_sample(tmp_path)
    s.add("x")
    s.run_once_until_verified()
    lock = s.repo / ".git" / "refs" / "heads" / "live.lock"
    lock.write_text("")
    for _ in range(4):
        assert s.cli("run", "--once").returncode == 3  # integration is paused
    assert s.base_log() == ["initial"]
    assert s.task("t-1")["status"] == "verified"
    # Not one integration ran its checks, and nothing was charged to the task.
    assert list((s.root / "logs" / "tasks" / "t-1").glob("integrate-*.log")) == []
    assert s.rows("SELECT COUNT(*) FROM pipeline_runs WHERE phase='integrate'") == [(0,)]
    (fault,) = s.status()["faults"]
    assert fault["area"] == "integrate" and "live.lock" in fault["message"]
    lock.unlink()
    s.run_once_until(all_done(1))
    assert s.trailers() == ["t-1"] and s.status()["faults"] == []


def test_base_moved_by_an_agent_through_its_path_is_reported_and_blames_no_task(tmp_path: Path) -> None:
    # No git isolation stops a process that writes the person's repository by its path; the
    # runner must notice, hold integration, and not charge the next task for what it finds.
    s = make_sample(tmp_path, concurrency=1, limits={"max_retries": 1},
                    agent={"command": ["hostile-agent", "{namespace}", "{prompt_file}"]})  # fmt: skip
    git(s.repo, "checkout", "-q", "--detach")
    start = git(s.repo, "rev-parse", "live")
    s.add("honest first", "--namespace", "amend")
    s.run_once_until(lambda d: d["done"] == 1)
    landed = git(s.repo, "rev-parse", "live")
    s.add("reaches out", "--namespace", "bypath")
    s.add("honest second", "--namespace", "amend")
    s.run_once_until(lambda d: any(f["area"] == "base" for f in d["faults"]), limit=40)
    assert git(s.repo, "rev-parse", "live") != landed  # the agent did move it
    (fault,) = [f for f in s.status()["faults"] if f["area"] == "base"]
    assert "Task-Id t-2" in fault["message"] and "pipeline-runner resume" in fault["message"]
    for _ in range(3):  # nothing starts on that base meanwhile, and nobody is charged
        assert s.cli("run", "--once").returncode == 3  # all work is paused
    assert s.task("t-3")["status"] == "open" and s.task("t-3")["runs"] == []
    # A person puts base back and resumes: the honest task lands on the good base.
    git(s.repo, "update-ref", "refs/heads/live", landed)
    done = s.cli("resume")
    assert done.returncode == 0 and "resumed base" in done.stdout
    s.run_once_until(lambda d: s.task("t-3")["status"] == "done", limit=40)
    assert git(s.repo, "log", "--format=%(trailers:key=Task-Id,valueonly)", f"{start}..live").split() == ["t-3", "t-1"]


def test_a_check_that_cannot_start_is_a_fault_not_the_tasks_and_resumes(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    s = make_sample(tmp_path, phases={"verify": {"run": [["site-checker"]]}})
    s.env["PATH"] = f"{bin_dir}{os.pathsep}{clean_env()['PATH']}"
    s.add("x")
    codes = [s.cli("run", "--once").returncode for _ in range(4)]
    assert codes[-1] == 3 and set(codes) <= {0, 3}, codes  # verification is paused
    task = s.task("t-1")
    # Found before any agent started (runner.preflight): no attempt at all, nothing charged.
    assert task["status"] == "open" and task["runs"] == []
    (fault,) = s.status()["faults"]
    assert fault["area"] == "environment" and "site-checker" in fault["message"]
    checker = bin_dir / "site-checker"
    checker.write_text("#!/bin/sh\nexit 0\n")
    checker.chmod(0o755)
    s.run_once_until(all_done(1), limit=60)
    assert s.trailers() == ["t-1"] and s.status()["faults"] == []


def test_until_idle_stops_on_a_fault_that_persists_and_says_so(tmp_path: Path) -> None:
    s = make_sample(tmp_path, phases={"verify": {"run": [["site-checker"]]}})
    s.add("x")
    done = s.cli("run", "--until-idle", timeout=60)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "paused by faults" in done.stdout and "site-checker" in done.stdout
    assert s.rows("SELECT COUNT(*) FROM pipeline_runs WHERE status='failure'") == [(0,)]


def test_a_lagging_checkout_a_person_edited_is_left_to_them_and_the_advice_works(tmp_path: Path) -> None:
    s, lock = _base_moved_while_its_checkout_was_locked(tmp_path)
    lock.unlink()
    # The person edits a file there before the runner brings the checkout along.
    (s.repo / "README.md").write_text("my own edit\n")
    for _ in range(3):
        assert s.cli("run", "--once").returncode == 3  # the checkout still lags
    (fault,) = s.status()["faults"]
    assert "files there were changed since" in fault["message"]
    assert (s.repo / "README.md").read_text() == "my own edit\n"  # never overwritten
    # The command the message gives catches up and keeps the person's edit.
    command = fault["message"].rpartition("to do it by hand: ")[2].split()
    assert command[:2] == ["git", "-C"]
    git(Path(command[2]), *command[3:])
    assert (s.repo / "t-1.txt").read_text() == "t-1 done\n"
    assert (s.repo / "README.md").read_text() == "my own edit\n"
    assert s.cli("run", "--once").returncode == 0
    assert s.status()["faults"] == []


def test_an_agent_that_makes_git_hang_in_its_workspace_fails_its_own_task_and_holds_up_no_other(
    tmp_path: Path,
) -> None:
    # t-1's agent swaps its commit's object for a named pipe: fetching that commit waits forever.
    # The runner's git there stops after agent.git_timeout; t-2 lands meanwhile, and no git
    # process of the runner's is left waiting on the pipe.
    s = hostile(tmp_path, "fifo", concurrency=2,
                agent={"command": ["hostile-agent", "fifo", "{prompt_file}"], "git_timeout": 15})  # fmt: skip
    s.env["HOSTILE_TASK"] = "t-1"
    s.add("hangs git")
    s.add("fine")
    s.run_until(lambda d: d["done"] == 1 and d["needs_help"] == 1, timeout=120)
    assert s.task("t-1")["status"] == "needs_help"
    assert s.trailers() == ["t-2"]
    ((error, hung_until),) = s.rows(
        "SELECT error_summary, finished_at FROM pipeline_runs WHERE task_id = 't-1' AND phase = 'dev'"
    )
    assert "could not bring in the agent's commit" in error and "timed out after 15s" in error, error
    ((landed,),) = s.rows("SELECT finished_at FROM pipeline_runs WHERE task_id = 't-2' AND phase = 'integrate'")
    assert landed < hung_until  # t-2 did not wait for t-1's git to give up
    waiting = [pid for pid in os.listdir("/proc") if pid.isdigit() and _cmdline_has(pid, str(s.root / "worktrees" / "t-1"))]
    assert waiting == []


def _cmdline_has(pid: str, text: str) -> bool:
    try:
        return text.encode() in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False


def test_named_pipes_an_agent_leaves_in_its_git_directory_stop_nothing(tmp_path: Path) -> None:
    # Files the runner itself reads or writes in a workspace, not through git: the alternates file
    # (read to tell the workspace is still the runner's) and the config (rewritten before any git
    # command there). Opening either as a named pipe would wait forever, on the loop or a worker.
    for which, expected in (("alternates", "needs_help"), ("config", "done")):
        s = hostile(tmp_path / which, "fifo", agent={"command": ["hostile-agent", "fifo", "{prompt_file}"], "git_timeout": 30})
        s.env["HOSTILE_FIFO"] = which
        s.add(which)
        s.run_until(lambda d: d["done"] + d["needs_help"] == 1, timeout=60)
        assert s.task("t-1")["status"] == expected, (which, s.task("t-1"))
        assert s.trailers() == (["t-1"] if expected == "done" else [])
        ((error,),) = s.rows("SELECT coalesce(error_summary, '') FROM pipeline_runs WHERE phase = 'dev'")
        assert "timed out" not in error, (which, error)  # told at once, not after git_timeout


def test_a_workspace_info_linked_elsewhere_never_has_the_runner_delete_there(tmp_path: Path) -> None:
    # An agent points its workspace's .git/info at another repository's: the runner drops the
    # workspace's attributes before each git command there, and must not drop that one's.
    repo, ws = make_workspaces(tmp_path)
    path, _ = ws.prepare("t-1", "live")
    elsewhere = tmp_path / "elsewhere-info"
    elsewhere.mkdir()
    (elsewhere / "attributes").write_text("*.txt filter=evil\n")
    shutil.rmtree(path / ".git" / "info", ignore_errors=True)
    (path / ".git" / "info").symlink_to(elsewhere)
    ws.checkouts.refresh(path)
    assert (elsewhere / "attributes").read_text() == "*.txt filter=evil\n"
    assert not (path / ".git" / "info").exists()
    again, _ = ws.prepare("t-1", "live")  # and the workspace still works
    assert git(again, "rev-parse", "HEAD") == git(repo, "rev-parse", "live")


def _hanging_fetch(root: Path, task_id: str) -> int | None:
    """The pid of a git process of the runner's reading the named pipe in ``task_id``'s workspace."""
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        if _cmdline_has(pid, str(root / "worktrees" / task_id)) and _cmdline_has(pid, "fetch"):
            return int(pid)
    return None


@contextmanager
def _hung_fetch(tmp_path: Path, git_timeout: int) -> Iterator[tuple[Sample, subprocess.Popen[str], int]]:
    """A daemon whose one task's agent made the fetch of its commit hang (hostile-agent fifo): the
    sample, the daemon and the hanging git's pid; the daemon and what it left killed afterwards."""
    s = hostile(tmp_path, "fifo", concurrency=1,
                agent={"command": ["hostile-agent", "fifo", "{prompt_file}"], "git_timeout": git_timeout})  # fmt: skip
    s.add("hangs git")
    proc = s.start()
    try:
        yield s, proc, wait_for(lambda: _hanging_fetch(s.root, "t-1"), 60, proc)
    finally:
        stop(proc, signal.SIGKILL)
        kill_leftovers(s.root)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_bring_in_that_outlasts_the_harvests_wait_does_not_make_the_loop_spin(tmp_path: Path) -> None:
    # t-1's fetch hangs on the pipe past BRING_IN_WAIT_SECONDS: the loop goes on without it, and
    # while nothing else happens it sleeps (its ended supervisor is no reason to wake at once).
    with _hung_fetch(tmp_path, 40) as (_s, proc, _pid):
        time.sleep(BRING_IN_WAIT_SECONDS + 1)
        before = _cpu_seconds(proc.pid)
        time.sleep(4)
        used = _cpu_seconds(proc.pid) - before
        assert used < 1.0, f"the runner used {used:.1f} s of CPU in 4 s while waiting for one fetch"


def test_sigterm_stops_the_runner_soon_though_a_bring_in_hangs_and_leaves_no_git_behind(tmp_path: Path) -> None:
    # The daemon's stop does not wait for agent.git_timeout: the hanging fetch is ended, and the
    # next start brings the commit in again (here: it times out, charged to the task).
    with _hung_fetch(tmp_path, 300) as (s, proc, _pid):
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        took = time.monotonic() - started
        assert proc.returncode == 0
        assert took < 15, f"SIGTERM took {took:.0f} s"
        assert _hanging_fetch(s.root, "t-1") is None
        ((status,),) = s.rows("SELECT status FROM pipeline_runs WHERE task_id = 't-1' AND phase = 'dev'")
        assert status == "running"  # not recorded: the next start brings it in again


def test_a_task_cancelled_while_its_commit_is_brought_in_is_recorded_once_and_its_workspace_removed(
    tmp_path: Path,
) -> None:
    with _hung_fetch(tmp_path, 12) as (s, proc, _pid):
        assert s.cli("task", "cancel", "t-1").returncode == 0
        wait_for(lambda: s.rows("SELECT 1 FROM pipeline_runs WHERE task_id = 't-1' AND status != 'running'"), 60, proc)
        wait_for(lambda: "t-1" not in s.leftover_worktrees(), 10, proc)
    assert s.task("t-1")["status"] == "cancelled"
    ((status, error),) = s.rows("SELECT status, error_summary FROM pipeline_runs WHERE task_id = 't-1'")
    assert status == "cancelled" and "cancelled" in error, error
    assert s.leftover_worktrees() == []


def test_a_git_a_killed_runner_left_hanging_in_a_workspace_is_ended_by_the_next_start(tmp_path: Path) -> None:
    # SIGKILL leaves the runner no moment to end its git: the fetch waiting on the agent's pipe has
    # a session of its own and outlives it. The next start ends it (then fetches again, and that
    # one times out, charged to the task).
    with _hung_fetch(tmp_path, 300) as (s, proc, left):
        proc.kill()
        proc.wait(timeout=30)
        assert _alive_pid(left)  # what the next start must end
        again = s.start()
        try:
            wait_for(lambda: not _alive_pid(left), 30, again)
        finally:
            stop(again, signal.SIGKILL)


def _alive_pid(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False
