"""The one place that runs processes. Failures become typed errors or result values.

Commands are argv lists and never pass through a shell. Every child sees ``PWD`` equal to its
working directory (many tools read ``PWD`` before asking the kernel). Short foreground commands
(git, agent CLIs that answer at once) are waited for with their output in memory; recipes run
under the supervisor with their output streamed to a log, capped, and their whole process tree
ended with them (``run_logged``); agents that must outlive the runner start detached in their own
session (``spawn_detached``). ``kill_marked`` finds what is left of a run whose supervisor was
killed outright.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from runner.errors import ProcessError
from runner.forkserver import ForkServer, Spawned
from runner.supervise import read_status

# Output kept of one run, per log file: the first half and the last half of it, the cut marked.
MAX_OUTPUT_BYTES = 10 * 1024 * 1024
# What a LoggedResult quotes of the end of the output.
TAIL_BYTES = 8192
SUPERVISOR_SCRIPT = str(Path(__file__).resolve().with_name("supervise.py"))
# Supervisors are forked from here (one server per runner process, started on first use).
FORK_SERVER = ForkServer(SUPERVISOR_SCRIPT)


@dataclass(frozen=True)
class ProcResult:
    """What a finished foreground command did."""

    argv: list[str]
    exit_code: int
    output: str  # stdout and stderr interleaved, as a person would have seen them
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        """True when the command exited 0."""
        return self.exit_code == 0 and not self.timed_out


def child_env(env: Mapping[str, str] | None, cwd: Path | str | None) -> dict[str, str]:
    """The environment for a child run in ``cwd``: ``env`` (else the runner's) with ``PWD`` set to it."""
    result = dict(os.environ if env is None else env)
    # Should the runner's own directory be gone, the child fails on its own terms.
    with contextlib.suppress(OSError):
        result["PWD"] = os.path.abspath(cwd if cwd is not None else os.getcwd())
    return result


def run(
    argv: Sequence[str],
    cwd: Path | str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    timeout: float | None = None,
    stdin: str | None = None,
    error_type: type[ProcessError] = ProcessError,
    stop: threading.Event | None = None,
) -> ProcResult:
    """Run ``argv`` to completion and capture its output.

    With ``check`` (the default) a non-zero exit raises ``error_type``; without it the exit code is
    returned in the result. A program that cannot be found always raises. On timeout the whole
    process group is killed, so a recipe's children do not outlive it. Once ``stop`` is set (by
    another thread: the runner is stopping) the command is ended the same way, at most
    STOP_LOOK_SECONDS later, and raises ``error_type`` whatever ``check`` says.
    """
    args = [str(a) for a in argv]
    if stop is not None and stop.is_set():
        raise error_type(args, None, "", f"{args[0]!r} not run: the runner is stopping")
    try:
        proc = subprocess.Popen(
            args,
            cwd=cwd,
            env=child_env(env, cwd),
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=timeout is not None or stop is not None,
        )
    except FileNotFoundError:
        raise error_type(args, None, "", f"{args[0]!r} was not found on PATH") from None
    except OSError as exc:
        raise error_type(args, None, "", f"{args[0]!r} could not be started: {exc}") from None
    try:
        raw = _communicate(proc, stdin.encode() if stdin is not None else None, timeout, stop)
    except _Stopped:
        kill_group(proc.pid)
        raw, _ = proc.communicate()
        raise error_type(args, None, raw.decode("utf-8", "replace"), f"{args[0]!r} stopped: the runner is stopping") from None
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        raw, _ = proc.communicate()
        output = raw.decode("utf-8", "replace")
        if check:
            raise error_type(args, None, output, f"{args[0]!r} timed out after {timeout}s") from None
        return ProcResult(args, -int(signal.SIGKILL), output, timed_out=True)
    output = raw.decode("utf-8", "replace")
    done = ProcResult(args, proc.returncode, output)
    if check and done.exit_code != 0:
        raise error_type(args, done.exit_code, output)
    return done


# How often a command run with a ``stop`` event looks whether it was set.
STOP_LOOK_SECONDS = 0.2


class _Stopped(Exception):
    """The ``stop`` event of a running command was set."""


def _communicate(
    proc: subprocess.Popen[bytes], data: bytes | None, timeout: float | None, stop: threading.Event | None
) -> bytes:
    """``proc.communicate``, raising _Stopped once ``stop`` is set (looked at every STOP_LOOK_SECONDS)."""
    if stop is None:
        return proc.communicate(data, timeout=timeout)[0]
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        step = STOP_LOOK_SECONDS if deadline is None else max(0.0, min(STOP_LOOK_SECONDS, deadline - time.monotonic()))
        try:
            return proc.communicate(data, timeout=step)[0]
        except subprocess.TimeoutExpired:
            data = None  # handed over already: communicate again goes on with what is left of it
            if stop.is_set():
                raise _Stopped from None
            if deadline is not None and time.monotonic() >= deadline:
                raise


def run_fed(
    argv: Sequence[str],
    cwd: Path | str | None,
    *,
    stdin: str,
    log_path: Path,
    timeout: float,
    env: Mapping[str, str] | None = None,
    max_bytes: int = 1024 * 1024,
) -> ProcResult:
    """Run ``argv`` with ``stdin`` as its input and at most ``max_bytes`` of its output appended to
    ``log_path``; wait for it.

    For short commands of the user's own (notifications). Past ``timeout`` its whole process group
    is killed. Its input is written and its output read by threads of their own, so a command
    that reads nothing, writes without end, or leaves a child holding its output open (one that
    slipped out of the group) keeps this call waiting no longer than ``timeout`` and a second.
    A program that cannot start raises ProcessError.
    """
    args = [str(a) for a in argv]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.Popen(
            args, cwd=cwd, env=child_env(env, cwd), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
        )  # fmt: skip
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte, or a bad environment name
        raise ProcessError(args, None, "", f"{args[0]!r} could not be started: {exc}") from None
    assert proc.stdin is not None and proc.stdout is not None
    feeder = threading.Thread(target=_feed, args=(proc.stdin, stdin.encode()), daemon=True)
    reader = threading.Thread(target=_drain_to, args=(proc.stdout, log_path, max_bytes), daemon=True)
    feeder.start()
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        # What it left running in its group ends with it, as every process a run starts does.
        kill_group(proc.pid)
        proc.wait()
    reader.join(1.0)
    return ProcResult(args, -int(signal.SIGKILL) if timed_out else proc.returncode, "", timed_out)


def _feed(pipe: IO[bytes], data: bytes) -> None:
    with contextlib.suppress(OSError):  # a command that exits without reading its input
        pipe.write(data)
    with contextlib.suppress(OSError):
        pipe.close()


def _drain_to(pipe: IO[bytes], log_path: Path, max_bytes: int) -> None:
    kept = 0
    with pipe, open(log_path, "ab") as log:
        while chunk := os.read(pipe.fileno(), 65536):
            if kept < max_bytes:
                log.write(chunk[: max_bytes - kept])
                log.flush()
                kept += len(chunk)
                if kept >= max_bytes:
                    log.write(b"\n[output cut: more than %d bytes]\n" % max_bytes)


def spawn_detached(
    argv: Sequence[str],
    cwd: Path,
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
) -> int:
    """Start ``argv`` in its own session, output appended to ``log_path``; return its pid.

    The process outlives the runner: a later invocation finds it by its pid and its status file.
    """
    args = [str(a) for a in argv]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        try:
            proc = subprocess.Popen(
                args,
                cwd=cwd,
                env=child_env(env, cwd),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise ProcessError(args, None, "", f"{args[0]!r} could not be started: {exc}") from None
    # Kept so that a long-running daemon reaps the children it started; a later invocation
    # finds them by pid instead, after init has adopted them.
    _DETACHED.append(proc)
    return proc.pid


_DETACHED: list[subprocess.Popen[bytes]] = []


def reap_children() -> None:
    """Collect exit statuses of finished detached children so they leave no zombies."""
    for proc in list(_DETACHED):
        if proc.poll() is not None:
            _DETACHED.remove(proc)


def pid_alive(pid: int | None, marker: str | None = None) -> bool:
    """True if ``pid`` is a live process (not a zombie) whose command line holds ``marker``."""
    if not pid or pid <= 0:
        return False
    reap_children()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc_dir = Path(f"/proc/{pid}")
    if proc_dir.exists():
        try:
            stat = (proc_dir / "stat").read_text()
            if stat.rpartition(")")[2].split()[0] == "Z":
                return False
            if marker is not None:
                raw = (proc_dir / "cmdline").read_bytes()
                # A child caught between closing its exec pipe (so Popen has returned) and the
                # kernel setting up its new argument area shows an empty command line: it is
                # alive, just not yet itself.
                if not raw:
                    return True
                return marker in raw.replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            return False
    return True


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> bool:
    """Send ``sig`` to a whole process group; False if it no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def python_script_argv(script: str, *args: str) -> list[str]:
    """argv that runs a stdlib-only script with the current interpreter, isolated and fast."""
    return [sys.executable, "-I", "-S", script, *args]


@dataclass(frozen=True)
class LoggedResult:
    """How a command run by ``run_logged`` ended; its output is in the log."""

    argv: list[str]
    exit_code: int | None  # None when it never ran (see ``error``)
    timed_out: bool = False
    tail: str = ""  # the end of its output (already masked), for feedback
    error: str | None = None  # why it could not start, or what stopped it before it ended

    @property
    def ok(self) -> bool:
        """True when the command ran to its end and exited 0."""
        return self.exit_code == 0 and not self.timed_out and self.error is None


def run_logged(
    argv: Sequence[str],
    cwd: Path | str,
    *,
    log_path: Path,
    timeout: float,
    env: Mapping[str, str] | None = None,
    max_bytes: int = MAX_OUTPUT_BYTES,
    tail_bytes: int = TAIL_BYTES,
    stop: threading.Event | None = None,
) -> LoggedResult:
    """Run ``argv`` in ``cwd`` under the supervisor, its output appended to ``log_path``; wait for it.

    Once ``stop`` is set (the task was cancelled), the supervisor is told to end the command and
    every process it started, as at a timeout; the result then has the exit code it ended with.

    The output (stdout and stderr interleaved, secrets masked) goes straight to the log, never
    through this process's memory, and at most ``max_bytes`` of it is kept (its first and last
    halves, the cut marked). When the command exits or times out, every process it started ends
    with it, ``setsid`` daemons included. If this process dies, even by SIGKILL, the supervisor
    notices within a fraction of a second and ends the command's tree. Nothing raises: a command
    that cannot start is a result with ``error`` set.
    """
    args = [str(a) for a in argv]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    fd, status_name = tempfile.mkstemp(prefix=f".{log_path.name}.", suffix=".status", dir=log_path.parent)
    os.close(fd)
    status_file = Path(status_name)
    status_file.unlink()
    options = ["--status-file", status_name, "--timeout", str(timeout), "--max-bytes", str(max_bytes), "--", *args]
    try:
        with open(log_path, "ab") as log:
            start = log.tell()
            supervisor = _start_foreground(options, cwd, child_env(env, cwd), log)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte, or a bad environment name
        return LoggedResult(args, None, error=f"{args[0]!r} could not be started: {exc}")
    try:
        returncode = supervisor.wait(stop)
    except BaseException:
        # Interrupted while waiting (Ctrl-C in the main thread): end the command before going on.
        supervisor.terminate()
        supervisor.wait(None)
        raise
    finally:
        supervisor.close()
    status = read_status(status_file)
    with contextlib.suppress(OSError):
        status_file.unlink()
    tail = _file_tail(log_path, start, tail_bytes)
    if status is None or status.get("state") != "finished":
        how = "" if returncode is None else f" (exit {returncode})"
        return LoggedResult(args, None, tail=tail, error=f"its supervisor ended without a verdict{how}")
    exit_code = status.get("exit_code")
    error = status.get("error")
    if status.get("started") is False:
        return LoggedResult(args, None, tail=tail, error=str(error))
    timed_out = bool(status.get("timed_out"))
    return LoggedResult(
        args,
        exit_code if isinstance(exit_code, int) else None,
        timed_out,
        tail,
        None if timed_out or not error else str(error),
    )


STOP_POLL_SECONDS = 0.2


class _Supervisor:
    """A foreground supervisor, however it was started: waited for, told to stop."""

    def __init__(self, proc: subprocess.Popen[bytes] | None = None, forked: Spawned | None = None) -> None:
        self._proc = proc
        self._forked = forked

    def _exited(self, timeout: float | None) -> tuple[bool, int | None]:
        if self._forked is not None:
            return self._forked.wait(timeout), None  # not this process's child: no exit code
        assert self._proc is not None
        try:
            return True, self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False, None

    def wait(self, stop: threading.Event | None) -> int | None:
        """The supervisor's exit code (None when it is not known); TERM is sent to it (it then ends
        its tree) once ``stop`` is set."""
        told = False
        while True:
            exited, code = self._exited(None if stop is None else STOP_POLL_SECONDS)
            if exited:
                return code
            if stop is not None and stop.is_set() and not told:
                self.terminate()
                told = True

    def terminate(self) -> None:
        """Send TERM to the supervisor."""
        if self._forked is not None:
            self._forked.terminate()
        elif self._proc is not None:
            self._proc.terminate()

    def close(self) -> None:
        """Release what names the supervisor."""
        if self._forked is not None:
            self._forked.close()


def _start_foreground(options: list[str], cwd: Path | str, env: Mapping[str, str], log: IO[bytes]) -> _Supervisor:
    """A supervisor with ``options``, its output to ``log``, in this process's group (Ctrl-C in a
    terminal reaches it too), ending its run should this process die."""
    forked = FORK_SERVER.spawn(options, os.fspath(cwd), env, log.fileno(), session=False, watch_parent=True)
    if forked is not None:
        return _Supervisor(forked=forked)
    argv = python_script_argv(SUPERVISOR_SCRIPT, "--parent", str(os.getpid()), *options)
    proc = subprocess.Popen(
        argv, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, close_fds=True
    )
    return _Supervisor(proc=proc)


def spawn_supervisor(options: Sequence[str], cwd: Path, *, log_path: Path, env: Mapping[str, str] | None = None) -> int:
    """Start a supervisor with ``options`` detached in its own session, its output appended to
    ``log_path``; its pid. Forked from the fork server where it can be, else started.

    It outlives the runner: a later invocation finds it by its pid and its status file.
    """
    opts = [str(o) for o in options]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        try:
            forked = FORK_SERVER.spawn(opts, os.fspath(cwd), child_env(env, cwd), log.fileno(), session=True, watch_parent=False)
        except (OSError, ValueError) as exc:
            raise ProcessError([SUPERVISOR_SCRIPT, *opts], None, "", f"the supervisor could not be started: {exc}") from None
    if forked is None:
        return spawn_detached(python_script_argv(SUPERVISOR_SCRIPT, *opts), cwd, log_path=log_path, env=env)
    forked.close()  # the fork server reaps it; a pid is what a later invocation has to go on
    return forked.pid


def _file_tail(path: Path, start: int, limit: int) -> str:
    """The last ``limit`` bytes of ``path`` past offset ``start``."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(start, size - limit))
            return fh.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""


def kill_marked(name: str, value: str) -> int:
    """SIGKILL every live process whose environment holds ``NAME=VALUE``; return how many there were.

    Every process of a run inherits the run's marker variable, so this finds what is left of a run
    whose supervisor was itself killed outright (its descendants then belong to init). The calling
    process is skipped, and so are processes of other users, whose environment cannot be read.
    """
    entry = os.fsencode(f"{name}={value}")
    me = os.getpid()
    killed: set[int] = set()
    deadline = time.monotonic() + 5
    while True:
        # Again until none is found: a process may fork between the look and the kill.
        found = [pid for pid in _marked(entry) if pid != me]
        for pid in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        killed.update(found)
        if not found or time.monotonic() > deadline:
            return len(killed)
        time.sleep(0.02)


def _marked(entry: bytes) -> list[int]:
    """Live processes whose environment has ``entry`` (``NAME=VALUE``) among its variables."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as fh:
                environ = fh.read()
            with open(f"/proc/{name}/stat", "rb") as fh:
                state = fh.read().rpartition(b")")[2].split()[:1]
        except OSError:
            continue
        if state != [b"Z"] and entry in environ.split(b"\0"):
            found.append(int(name))
    return found
