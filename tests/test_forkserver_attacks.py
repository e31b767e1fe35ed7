"""The fork server under attack: runners killed at the worst moments, hostile commands that go after
the server, many threads at once, and everything a command sees compared with a started supervisor."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from phases.agents import AgentHandle, CommandBackend
from runner import forkserver, procs, supervise
from runner.config import AgentConfig
from runner.supervise import read_status
from tests.proc_helpers import (
    DAEMONS,
    PYTHON,
    alive,
    cleanup,
    marked,
    read_pids,
    script,
    start_ticks,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[forkserver.ForkServer]:
    """A fork server of the test's own as the one procs uses, stopped at the end."""
    fresh = forkserver.ForkServer(procs.SUPERVISOR_SCRIPT)
    monkeypatch.setattr(procs, "FORK_SERVER", fresh)
    try:
        yield fresh
    finally:
        fresh.close()
        procs.reap_children()


def started_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on supervisors are started as interpreters, as where no fork server can be used."""
    monkeypatch.setattr(procs, "FORK_SERVER", forkserver.ForkServer(procs.SUPERVISOR_SCRIPT, enabled=False))


def children_of(pid: int) -> list[int]:
    """The live children of ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_bytes().rpartition(b")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] not in (b"Z", b"X"):
            found.append(int(entry))
    return found


def zombie_children_of(pid: int) -> list[int]:
    """The children of ``pid`` that exited and were not reaped."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_bytes().rpartition(b")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] == b"Z":
            found.append(int(entry))
    return found


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def regular_status(path: Path) -> dict[str, object] | None:
    """The status file once it is a regular file (never opens a FIFO a test put in its place)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
    except OSError:
        return None
    return read_status(path)


APPEND = "import sys\nwith open(sys.argv[1], 'a') as fh:\n    fh.write('ran\\n')\n"
# Prints a line, then waits for the file named by its argument (or 20 s) and prints another.
WAIT_FOR_FILE = (
    "import os, sys, time\nprint('started', flush=True)\ndeadline = time.time() + 20\n"
    "while not os.path.exists(sys.argv[1]) and time.time() < deadline:\n    time.sleep(0.02)\nprint('done')\n"
)


# -- a server that dies -------------------------------------------------------------------------


def test_a_check_runs_to_its_end_when_a_hostile_check_kills_the_server(
    tmp_path: Path, server: forkserver.ForkServer
) -> None:
    waiting = script(tmp_path, "waiting.py", WAIT_FOR_FILE)
    # A check that kills its supervisor's parent: under a fork server, the server.
    hostile = script(
        tmp_path,
        "hostile.py",
        "import os, signal\nppid = int(open(f'/proc/{os.getppid()}/stat').read().rpartition(')')[2].split()[1])\n"
        "os.kill(ppid, signal.SIGKILL)\nprint('killed', ppid)\n",
    )
    go = tmp_path / "go"
    results: dict[str, procs.LoggedResult] = {}

    def innocent() -> None:
        results["innocent"] = procs.run_logged([PYTHON, waiting, str(go)], tmp_path, log_path=tmp_path / "a.log", timeout=60)

    worker = threading.Thread(target=innocent)
    worker.start()
    wait_for(lambda: "started" in (tmp_path / "a.log").read_text() if (tmp_path / "a.log").exists() else False)
    server_pid = server.pid
    assert server_pid is not None
    hit = procs.run_logged([PYTHON, hostile], tmp_path, log_path=tmp_path / "h.log", timeout=60)
    assert hit.ok and f"killed {server_pid}" in (tmp_path / "h.log").read_text()
    wait_for(lambda: not alive(server_pid), 5, "the server killed")
    time.sleep(3 * supervise.WATCH_SECONDS)  # time enough for the check's supervisor to look at its parent
    go.touch()
    worker.join(30)
    # The check that was running when its server died was stopped as if its runner had died.
    assert results["innocent"].ok, results["innocent"]
    assert (tmp_path / "a.log").read_text() == "started\ndone\n"
    # Later runs still run, once each.
    ran = tmp_path / "ran"
    count = script(tmp_path, "count.py", APPEND)
    assert procs.run_logged([PYTHON, count, str(ran)], tmp_path, log_path=tmp_path / "c.log", timeout=60).ok
    assert lines(ran) == ["ran"]


def test_a_server_killed_before_it_answers_does_not_run_the_agent_twice(
    tmp_path: Path, server: forkserver.ForkServer
) -> None:
    status_file = tmp_path / "run.json"
    # The forked supervisor blocks naming itself in its status file, so the server has forked it
    # and not answered yet when it is killed.
    fifo = str(status_file) + ".tmp"
    os.mkfifo(fifo)
    ran = tmp_path / "ran"
    count = script(tmp_path, "count.py", APPEND)
    options = ["--status-file", str(status_file), "--timeout", "60", "--", PYTHON, count, str(ran)]
    pids: list[int] = []
    spawner = threading.Thread(
        target=lambda: pids.append(procs.spawn_supervisor(options, tmp_path, log_path=tmp_path / "run.log"))
    )
    spawner.start()
    wait_for(lambda: server.pid is not None and children_of(server.pid), 10, "a supervisor forked")
    assert server.pid is not None
    (forked,) = children_of(server.pid)
    os.kill(server.pid, signal.SIGKILL)
    spawner.join(30)
    keep = os.open(fifo, os.O_RDWR)  # let every writer of the status file on
    try:
        wait_for(lambda: (regular_status(status_file) or {}).get("state") == "finished", 20, "the run finished")
        wait_for(lambda: not alive(forked), 10, "the forked supervisor gone")
    finally:
        os.close(keep)
    # The caller started a supervisor of its own after the server failed it: the agent ran once.
    assert pids and pids[0] != forked
    assert lines(ran) == ["ran"]


class Interrupted(Exception):
    """What a signal handler of the runner raises (Terminated for SIGTERM, KeyboardInterrupt)."""


def test_a_request_interrupted_in_the_runner_hands_its_answer_to_no_later_caller(
    tmp_path: Path, server: forkserver.ForkServer
) -> None:
    status_file = tmp_path / "run.json"
    fifo = str(status_file) + ".tmp"
    os.mkfifo(fifo)  # holds the forked supervisor before the answer, as in the tests above
    ran = tmp_path / "ran"
    count = script(tmp_path, "count.py", APPEND)

    def interrupt(_signum: int, _frame: object) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        with pytest.raises(Interrupted):
            procs.spawn_supervisor(
                ["--status-file", str(status_file), "--timeout", "60", "--", PYTHON, count, str(ran)], tmp_path,
                log_path=tmp_path / "run.log",
            )  # fmt: skip
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    keep = os.open(fifo, os.O_RDWR)
    try:
        # The next caller gets its own answer, not the one left unread.
        for word in ("second", "third"):
            result = procs.run_logged(["echo", word], tmp_path, log_path=tmp_path / f"{word}.log", timeout=60)
            assert result.ok and result.tail == f"{word}\n", result
        time.sleep(0.3)
    finally:
        os.close(keep)
    assert lines(ran) == []  # the interrupted request's command never ran


RUNNER_MID_REQUEST = """\
import sys
from pathlib import Path
from runner import procs
work = Path(sys.argv[1])
procs.spawn_supervisor(
    ["--status-file", str(work / "run.json"), "--timeout", "60", "--", sys.executable, sys.argv[2], str(work / "ran")],
    work, log_path=work / "run.log")
print("spawned", flush=True)
"""


def test_a_runner_killed_mid_request_leaves_no_agent_running_unknown_and_no_server(tmp_path: Path) -> None:
    status_file = tmp_path / "run.json"
    fifo = str(status_file) + ".tmp"
    os.mkfifo(fifo)
    count = script(tmp_path, "count.py", APPEND)
    runner = script(tmp_path, "fake_runner.py", RUNNER_MID_REQUEST)
    proc = subprocess.Popen([PYTHON, runner, str(tmp_path), count], env={**os.environ, "PYTHONPATH": str(ROOT)})
    with cleanup([proc.pid]) as pids:
        wait_for(lambda: any(children_of(c) for c in children_of(proc.pid)), 10, "a supervisor forked")
        (server,) = children_of(proc.pid)
        (forked,) = children_of(server)
        pids += [server, forked]
        proc.kill()
        proc.wait()
        keep = os.open(fifo, os.O_RDWR)
        try:
            wait_for(lambda: not alive(server) and not alive(forked), 10, "the server and the supervisor gone")
            os.set_blocking(keep, False)
            written = os.read(keep, 65536)
        finally:
            os.close(keep)
        # The status file as the supervisor wrote it (into the FIFO, renamed into its place).
        status_file.unlink()
        status_file.write_bytes(written)
        assert (read_status(status_file) or {}).get("supervisor") == forked
        time.sleep(0.3)
        # Either the agent runs and a restarted runner adopts it, or it never starts and is not
        # found: never an agent running that recovery cannot see.
        handle = AgentHandle("r-1", None, tmp_path / "run.log", status_file, time.time())
        found = CommandBackend(AgentConfig(preset="command", command=["true"], timeout=60)).find_started(handle)
        assert found is None and lines(tmp_path / "ran") == []


RUNNER_AFTER_ANSWER = """\
import sys, time
from pathlib import Path
from phases.agents import AgentRequest, CommandBackend
from runner.config import AgentConfig
work = Path(sys.argv[1])
backend = CommandBackend(AgentConfig(preset="command", command=[sys.executable, sys.argv[2], sys.argv[3]], timeout=60))
handle = backend.start(AgentRequest(
    run_id="r-1", workspace=work, prompt_file=work / "prompt.md", log_path=work / "agent.log",
    status_file=work / "run.json", values={}, env={"PATH": "/usr/bin:/bin"}))
print(handle.pid, flush=True)
time.sleep(600)
"""


def test_an_agent_whose_runner_was_killed_right_after_the_answer_is_found_again(tmp_path: Path) -> None:
    waiting = script(tmp_path, "waiting.py", WAIT_FOR_FILE)
    runner = script(tmp_path, "fake_runner.py", RUNNER_AFTER_ANSWER)
    proc = subprocess.Popen(
        [PYTHON, runner, str(tmp_path), waiting, str(tmp_path / "go")],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.stdout is not None
    with cleanup([proc.pid]) as pids:
        pid = int(proc.stdout.readline())
        pids.append(pid)
        proc.kill()
        proc.wait()
        handle = AgentHandle("r-1", None, tmp_path / "agent.log", tmp_path / "run.json", time.time())
        backend = CommandBackend(AgentConfig(preset="command", command=["true"], timeout=60))
        assert backend.find_started(handle) == pid
        adopted = AgentHandle("r-1", pid, handle.log_path, handle.status_file, handle.started_at)
        assert not backend.finished(adopted)
        (tmp_path / "go").touch()
        wait_for(lambda: backend.finished(adopted), 20, "the agent finished")
        assert (read_status(tmp_path / "run.json") or {}).get("exit_code") == 0


def test_a_stopped_server_is_given_up_and_runs_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: forkserver.ForkServer
) -> None:
    monkeypatch.setattr(forkserver, "ANSWER_SECONDS", 1.0)
    assert procs.run_logged(["true"], tmp_path, log_path=tmp_path / "log", timeout=60).ok
    stopped = server.pid
    assert stopped is not None
    os.kill(stopped, signal.SIGSTOP)
    try:
        began = time.monotonic()
        ran = tmp_path / "ran"
        count = script(tmp_path, "count.py", APPEND)
        result = procs.run_logged([PYTHON, count, str(ran)], tmp_path, log_path=tmp_path / "log", timeout=60)
        assert result.ok and lines(ran) == ["ran"]
        # Waited for the answer, then killed the server at once rather than waiting for it to end.
        assert time.monotonic() - began < 4
        assert not alive(stopped) and server.pid is None
    finally:
        if alive(stopped):
            os.kill(stopped, signal.SIGKILL)


def test_a_forked_supervisor_watches_its_runner_not_its_parent() -> None:
    assert supervise.parent_watch(None, forked=True) is None
    assert supervise.parent_watch(os.getppid(), forked=False)() is False  # type: ignore[misc]
    runner = subprocess.Popen(["sleep", "30"])
    try:
        # Not this process's parent, yet watched: its death is seen, whoever the parent is.
        gone = supervise.parent_watch(runner.pid, forked=True)
        assert gone is not None and gone() is False
        runner.kill()
        runner.wait()
        assert gone() is True
    finally:
        runner.kill()
        runner.wait()
    # A runner gone before the supervisor looked (its pid reaped) is gone, not watched for ever.
    assert supervise.parent_watch(runner.pid, forked=True)() is True  # type: ignore[misc]


# -- many at once -------------------------------------------------------------------------------


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_parallel_checks_each_get_their_own_answer_and_leak_no_descriptor(
    tmp_path: Path, server: forkserver.ForkServer
) -> None:
    assert procs.run_logged(["true"], tmp_path, log_path=tmp_path / "warm.log", timeout=60).ok
    before = open_fds()
    failures: list[str] = []

    def worker(n: int) -> None:
        for i in range(25):
            name = f"w{n}-{i}"
            log = tmp_path / f"{name}.log"
            # Half fail, so that a result handed to the wrong caller shows.
            code = (n + i) % 2
            result = procs.run_logged(
                [PYTHON, "-S", "-c", f"print({name!r}); raise SystemExit({code})"], tmp_path, log_path=log, timeout=60
            )
            if result.exit_code != code or log.read_text() != f"{name}\n" or result.tail != f"{name}\n":
                failures.append(f"{name}: {result}")

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(120)
    assert failures == []
    # None is left open; one of the test process's own may have closed meanwhile (a connection an
    # earlier test dropped, collected): fewer is no leak.
    assert open_fds() <= before


def test_many_detached_runs_leave_no_zombie_behind(tmp_path: Path, server: forkserver.ForkServer) -> None:
    for i in range(60):
        procs.spawn_supervisor(
            ["--status-file", str(tmp_path / f"{i}.json"), "--timeout", "60", "--", "true"], tmp_path,
            log_path=tmp_path / "log",
        )  # fmt: skip
    wait_for(
        lambda: all((read_status(tmp_path / f"{i}.json") or {}).get("state") == "finished" for i in range(60)),
        30, "every run finished",
    )  # fmt: skip
    assert server.pid is not None
    wait_for(lambda: not zombie_children_of(server.pid or 0), 3, "the server reaped them")
    assert zombie_children_of(os.getpid()) == []


def test_a_check_works_when_the_runner_holds_more_than_1024_descriptors(
    tmp_path: Path, server: forkserver.ForkServer
) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if max(soft, hard) < 1200:
        pytest.skip("the descriptor limit is too low")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        result = procs.run_logged(["echo", "fine"], tmp_path, log_path=tmp_path / "log", timeout=60)
        assert result.ok and result.tail == "fine\n"
        # Forked: the server did not die of a socket numbered above what select can watch.
        assert server.pid is not None
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- what a command sees ------------------------------------------------------------------------

SHOW_FDS = (
    "import json, os, sys, time\nfds = {}\nfor fd in os.listdir('/proc/self/fd'):\n"
    "    try:\n        fds[fd] = os.readlink(f'/proc/self/fd/{fd}')\n    except OSError:\n        pass\n"
    "print(json.dumps(fds), flush=True)\ntime.sleep(float(sys.argv[1]))\n"
)


def test_neither_a_command_nor_its_supervisor_holds_the_server_socket(
    tmp_path: Path, server: forkserver.ForkServer
) -> None:
    show = script(tmp_path, "show.py", SHOW_FDS)
    result = procs.run_logged([PYTHON, show, "0"], tmp_path, log_path=tmp_path / "check.log", timeout=60)
    assert result.ok
    fds = json.loads((tmp_path / "check.log").read_text())
    # Its standard descriptors (and the one that listed the directory), nothing else.
    assert set(fds) <= {"0", "1", "2", "3"} and not any(t.startswith("socket:") for t in fds.values()), fds
    status_file = tmp_path / "agent.json"
    pid = procs.spawn_supervisor(
        ["--status-file", str(status_file), "--timeout", "60", "--", PYTHON, show, "2"], tmp_path,
        log_path=tmp_path / "agent.log",
    )  # fmt: skip
    wait_for(lambda: (tmp_path / "agent.log").exists() and (tmp_path / "agent.log").read_text(), 10, "the agent's fds")
    agent_fds = json.loads((tmp_path / "agent.log").read_text())
    assert set(agent_fds) <= {"0", "1", "2", "3"} and not any(t.startswith("socket:") for t in agent_fds.values())
    supervisor_fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    assert not any(target.startswith("socket:") for target in supervisor_fds), supervisor_fds
    wait_for(lambda: (read_status(status_file) or {}).get("state") == "finished", 10, "the agent finished")


CONTEXT = (
    "import json, os\nstatus = dict(line.split(':\\t', 1) for line in open('/proc/self/status').read().splitlines()"
    " if ':\\t' in line)\nprint(json.dumps({'env': dict(os.environ), 'cwd': os.getcwd(),"
    " 'mask': {k: status[k].strip() for k in ('Umask', 'SigBlk', 'SigIgn')}}))\n"
)


def seen(tmp_path: Path, name: str, *, detached: bool) -> dict[str, object]:
    """What a command run as a check (or as a detached agent) saw, as CONTEXT prints it."""
    show = script(tmp_path, "context.py", CONTEXT)
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    # A locale set: an interpreter in the C locale would add LC_CTYPE to its own environment.
    env = {"PATH": os.environ["PATH"], "LC_ALL": "C.UTF-8", "ONLY_THIS": "value", "PWD": "/stale"}
    log = tmp_path / f"{name}.log"
    # -I: the interpreter ignores no signal of its own beyond what it always does, and reads no
    # PYTHON* variable; the dispositions it inherited show in /proc/self/status.
    argv = [PYTHON, "-I", "-S", show]
    if detached:
        status_file = tmp_path / f"{name}.json"
        procs.spawn_supervisor(["--status-file", str(status_file), "--timeout", "60", "--", *argv], work, log_path=log, env=env)
        wait_for(lambda: (read_status(status_file) or {}).get("state") == "finished", 20, "the run finished")
    else:
        assert procs.run_logged(argv, work, log_path=log, timeout=60, env=env).ok
    data = json.loads(log.read_text())
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("detached", [False, True], ids=["check", "agent"])
def test_a_command_sees_what_it_would_under_a_started_supervisor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: forkserver.ForkServer, detached: bool
) -> None:
    forked = seen(tmp_path, "forked", detached=detached)
    assert server.pid is not None  # it was forked
    started_only(monkeypatch)
    started = seen(tmp_path, "started", detached=detached)
    work = str(tmp_path / "work")
    assert forked["env"] == {"PATH": os.environ["PATH"], "LC_ALL": "C.UTF-8", "ONLY_THIS": "value", "PWD": work}
    assert forked["cwd"] == work
    assert forked == started


def test_a_relative_working_directory_is_the_runner_s_not_the_server_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: forkserver.ForkServer
) -> None:
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    show = script(tmp_path, "show.py", "import os\nprint(os.environ['PWD'], os.getcwd())\n")
    result = procs.run_logged([PYTHON, show], Path("sub"), log_path=tmp_path / "log", timeout=60)
    assert result.ok, result
    assert (tmp_path / "log").read_text().split() == [str(tmp_path / "sub")] * 2
    assert server.pid is not None


def test_a_second_run_in_the_same_server_knows_only_its_own_secrets(
    tmp_path: Path, server: forkserver.ForkServer
) -> None:
    first, second = "tok-first-1a2b3c", "tok-second-4d5e6f"
    say = script(tmp_path, "say.py", "import sys\nprint(' '.join(sys.argv[1:]))\n")
    base = {"PATH": os.environ["PATH"]}
    one = procs.run_logged(
        [PYTHON, say, first, second], tmp_path, log_path=tmp_path / "1.log", timeout=60, env={**base, "API_TOKEN": first}
    )
    two = procs.run_logged(
        [PYTHON, say, first, second], tmp_path, log_path=tmp_path / "2.log", timeout=60, env={**base, "API_TOKEN": second}
    )
    assert one.ok and two.ok and server.pid is not None
    assert (tmp_path / "1.log").read_text() == f"*** {second}\n"
    assert (tmp_path / "2.log").read_text() == f"{first} ***\n"


# -- the runner stopped -------------------------------------------------------------------------

RUNNER_WITH_CHECKS = """\
import sys, threading
from pathlib import Path
from runner import procs
work, daemons = Path(sys.argv[1]), sys.argv[2]

def check(n):
    procs.run_logged([sys.executable, daemons, str(work / f"pids{n}"), "600"], work, log_path=work / f"{n}.log", timeout=600)

for n in (1, 2):
    threading.Thread(target=check, args=(n,), daemon=True).start()
check(0)
"""


def test_ctrl_c_ends_the_checks_the_runner_and_its_server(tmp_path: Path) -> None:
    daemons = script(tmp_path, "daemons.py", DAEMONS)
    runner = script(tmp_path, "fake_runner.py", RUNNER_WITH_CHECKS)
    mark = str(uuid.uuid4())
    proc = subprocess.Popen(
        [PYTHON, runner, str(tmp_path), daemons], start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TEST_CTRL_C_MARK": mark},
    )  # fmt: skip
    with cleanup([proc.pid]) as pids:
        for n in range(3):
            pids += read_pids(tmp_path / f"pids{n}")
        pids += marked("TEST_CTRL_C_MARK", mark)
        born = {pid: start_ticks(pid) for pid in pids}
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
        assert proc.wait(15) != 0
        wait_for(lambda: not marked("TEST_CTRL_C_MARK", mark), 10, "every process of the runner gone")
        # By pid and start time: a pid of ours that ended may have been given to another process
        # since (a clean-clone run found one reused by a kernel thread).
        left = {pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in pids
                if alive(pid) and born[pid] is not None and start_ticks(pid) == born[pid]}  # fmt: skip
        assert left == {}
