"""Supervisors forked from one pre-loaded process instead of each starting an interpreter.

A supervisor started as ``python -I -S supervise.py ...`` spends ~25 ms of CPU on the interpreter and
its imports before it starts its command; a task starts three (its agent's, and its checks' twice),
and on a busy machine each of those milliseconds waits for a core while a slot stands empty. The
fork server is one supervisor interpreter, started once per runner process as ``supervise.py
--serve FD``, that forks a child per request: the child runs the supervisor's ``main`` with the
options, working directory, environment and standard descriptors asked for, exactly as a started
supervisor would, in ~1 ms.

The children are the same program as a started supervisor and carry the server's command line,
which names supervise.py, so a pid is still recognised as a supervisor. Two differences are
handled where they matter: a child's parent is the server, not the runner, so a supervisor that
watches for its runner's death watches the runner's pid through a pidfd (a server that dies, killed
by a hostile command say, takes no run with it; the server itself exits when the runner's end of
the socket closes, however the runner died); and the command line does not name the run's status
file, so the server writes each child's first status, naming its pid, before it answers.

A request carries a fourth descriptor, the read end of a pipe on which the client writes one byte
once it has the answer. The supervisor starts its command only then: when the answer is lost (the
server or the runner died in between, or the client gave up waiting), the client starts an
interpreter instead or nobody knows of the run, and the forked supervisor exits without running
its command, so a command never runs twice and never runs unknown.

The server side (``serve``) is stdlib only and runs under ``-I -S``; the client (``ForkServer``)
is used by ``runner.procs``. Where the server cannot be used (no pidfds, a request too large for
one message, a server that died), the client says so and the caller starts an interpreter as before.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

# Largest request sent as one message; a larger one (an agent given its whole prompt as an argument)
# starts an interpreter instead.
MAX_REQUEST_BYTES = 128 * 1024
# How often the server reaps children that exited while no request came.
REAP_SECONDS = 0.2
# How long a client waits for an answer before it gives the server up.
ANSWER_SECONDS = 30.0
HAS_PIDFD = hasattr(os, "pidfd_open") and hasattr(socket, "send_fds")


def _reap() -> None:
    """Collect every child that has exited, so none stays a zombie."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def serve(
    fd: int,
    run: Callable[[list[str]], int],
    write_status: Callable[[str, dict[str, object]], None],
    write_not_started: Callable[[str, float, str, BaseException], None],
) -> None:
    """Answer spawn requests on socket ``fd`` until its other end closes.

    A request is a JSON object (``options``, ``status_file``, ``cwd``, ``env``, ``session``) with
    four descriptors (stdin, stdout, stderr, and the read end of the go pipe). The answer is ``{"pid": N}`` with a pidfd of the
    child, or ``{"error": "..."}`` when no child could be made for it (a missing working directory).
    ``run(options)`` is the supervisor's main; ``write_status`` writes its status file, and
    ``write_not_started`` the verdict of a child that could not be set up.

    The answer does not wait for the child to be scheduled: the server writes the child's first
    status (naming its pid) itself, then answers; the child starts once the client, holding the
    answer, writes to the go pipe. A later runner finds the run by that file, and the child writes
    nothing before it.
    """
    # Ctrl-C reaches the runner's whole group: the server ends with the runner, not before it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    # poll, not select: a runner holding over 1024 descriptors hands the server a socket numbered
    # above what select can watch.
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    while True:
        ready = poller.poll(REAP_SECONDS * 1000)
        _reap()
        if not ready:
            continue
        try:
            message, fds, _flags, _addr = socket.recv_fds(sock, MAX_REQUEST_BYTES, 4)
        except OSError:
            return
        if not message:
            return  # the runner closed its end or died
        answer, pidfds = _spawn(sock, message, fds, run, write_status, write_not_started)
        try:
            socket.send_fds(sock, answer, pidfds)
        except OSError:
            return  # the runner died waiting: the child it asked for hears no go and exits
        finally:
            for pidfd in pidfds:
                os.close(pidfd)


def _error(text: str) -> tuple[list[bytes], list[int]]:
    return [json.dumps({"error": text}).encode()], []


def _request(message: bytes) -> dict[str, Any]:
    """The request, checked: what the child would fail on is refused before anything is forked."""
    request = json.loads(message)
    if not isinstance(request, dict):
        raise ValueError("a request is an object")
    options, env = request.get("options"), request.get("env")
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise ValueError("options must be a list of strings")
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise ValueError("env must map strings to strings")
    if not isinstance(request.get("status_file"), str) or not isinstance(request.get("cwd"), str):
        raise ValueError("status_file and cwd must be strings")
    if not os.path.isdir(request["cwd"]) or not os.access(request["cwd"], os.X_OK):
        raise FileNotFoundError(errno.ENOENT, "no such directory", request["cwd"])
    return request


def _spawn(
    sock: socket.socket,
    message: bytes,
    fds: list[int],
    run: Callable[[list[str]], int],
    write_status: Callable[[str, dict[str, object]], None],
    write_not_started: Callable[[str, float, str, BaseException], None],
) -> tuple[list[bytes], list[int]]:
    """Fork the child for one request; the answer and the descriptors to send with it."""
    try:
        if len(fds) != 4:
            raise ValueError("four descriptors expected")
        request = _request(message)
    except (ValueError, OSError) as exc:
        for fd in fds:
            os.close(fd)
        return _error(f"could not be started: {exc}")
    pid = os.fork()
    if pid == 0:
        _child(sock, request, fds, run, write_not_started)
    for fd in fds:
        os.close(fd)
    try:
        write_status(request["status_file"], {"state": "starting", "supervisor": pid, "started_at": time.time()})
    except OSError as exc:
        return _error(f"could not be started: {exc}")  # the client writes no go: the child exits
    return [json.dumps({"pid": pid}).encode()], [os.pidfd_open(pid)]


def _child(
    sock: socket.socket,
    request: dict[str, Any],
    fds: list[int],
    run: Callable[[list[str]], int],
    write_not_started: Callable[[str, float, str, BaseException], None],
) -> None:
    """In the forked child: become the requested supervisor, then exit with its code. Never returns."""
    code = 70
    try:
        sock.close()
        go = fds[3]
        # The answer was lost (the server or the runner died, the client gave up, or the server
        # could not write the status file): another supervisor may run in this one's place.
        if os.read(go, 1) != b"g":
            os._exit(0)
        os.close(go)
        try:
            if request.get("session"):
                os.setsid()
            for target, fd in enumerate(fds[:3]):
                os.dup2(fd, target)
            for fd in fds[:3]:
                os.close(fd)
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["env"])
        except (OSError, ValueError) as exc:  # the directory went since the server looked
            options = request["options"]
            command = options[options.index("--") + 1] if "--" in options[:-1] else "?"
            write_not_started(request["status_file"], time.time(), command, exc)
            os._exit(127)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        code = run(request["options"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
        if not isinstance(exc.code, int) and exc.code is not None:
            with contextlib.suppress(OSError):
                os.write(2, f"{exc.code}\n".encode())
    except BaseException:  # whatever happens, this process must not return to the server's loop
        with contextlib.suppress(Exception):
            import traceback

            os.write(2, traceback.format_exc().encode())
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _option(options: list[str], name: str) -> str | None:
    """The value of option ``name`` in a supervisor's command line (before ``--``)."""
    end = options.index("--") if "--" in options else len(options)
    for i in range(0, end - 1):
        if options[i] == name:
            return options[i + 1]
    return None


class Spawned:
    """A supervisor the fork server started: its pid and a pidfd that names exactly it."""

    def __init__(self, pid: int, pidfd: int) -> None:
        self.pid = pid
        self.pidfd = pidfd

    def wait(self, timeout: float | None = None) -> bool:
        """True once the supervisor has exited (within ``timeout`` seconds, if given)."""
        poller = select.poll()  # a pidfd may be numbered above what select can watch
        poller.register(self.pidfd, select.POLLIN)
        return bool(poller.poll(None if timeout is None else timeout * 1000))

    def terminate(self) -> None:
        """Send TERM to the supervisor (it ends its command's tree); nothing if it has exited."""
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(self.pidfd, signal.SIGTERM)

    def close(self) -> None:
        """Release the pidfd."""
        os.close(self.pidfd)


class ForkServer:
    """The client: starts the server on first use and asks it for supervisors, one at a time."""

    def __init__(self, script: str, *, enabled: bool = True) -> None:
        """``enabled=False``: a client that never forks (every caller starts an interpreter)."""
        self._script = script
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._usable = enabled and HAS_PIDFD

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs (a supervisor's parent)."""
        return self._proc.pid if self._proc is not None else None

    def spawn(
        self,
        options: list[str],
        cwd: str,
        env: Mapping[str, str],
        stdout: int,
        *,
        session: bool,
        watch_parent: bool,
    ) -> Spawned | None:
        """Fork a supervisor with ``options`` (``--parent`` added when ``watch_parent``), or None
        when the server cannot be used (the caller then starts an interpreter).

        Raises OSError when the supervisor could not be set up (a missing working directory), as
        starting a process would.
        """
        if not self._usable:
            return None
        # The server's working directory is /, a started supervisor's the runner's.
        cwd = os.path.abspath(cwd)
        # What exec would refuse is refused here, before a child is forked.
        for text in (*options, cwd, *env.keys(), *env.values()):
            if "\0" in text:
                raise ValueError("embedded null byte")
        if any("=" in name or not name for name in env):
            raise ValueError("illegal environment variable name")
        with self._lock:
            # Checked again here: another thread may have given the server up meanwhile.
            if not self._usable or (self._sock is None and not self._start()):
                return None
            assert self._sock is not None and self._proc is not None
            if watch_parent:
                options = ["--parent", str(os.getpid()), *options]
            status_file = _option(options, "--status-file")
            if status_file is None:
                return None  # a started supervisor says what is wrong with its command line
            request = {"options": options, "status_file": status_file, "cwd": cwd, "env": dict(env), "session": session}
            message = json.dumps(request).encode()
            if len(message) > MAX_REQUEST_BYTES:
                return None
            stdin = os.open(os.devnull, os.O_RDONLY)
            go_read, go_write = os.pipe()
            try:
                try:
                    socket.send_fds(self._sock, [message], [stdin, stdout, stdout, go_read])
                    answer, fds, _flags, _addr = socket.recv_fds(self._sock, 64 * 1024, 1)
                except OSError:
                    self._give_up()
                    return None
                except BaseException:
                    # Interrupted (a signal handler raised): the answer would go to the next caller.
                    # The supervisor asked for hears no go; the next spawn starts a fresh server.
                    self._stop_now()
                    raise
                finally:
                    os.close(stdin)
                    os.close(go_read)
                try:
                    reply = json.loads(answer) if answer else None
                except ValueError:
                    reply = None
                if not isinstance(reply, dict) or ("error" not in reply and len(fds) != 1):
                    for fd in fds:
                        os.close(fd)
                    self._give_up()
                    return None
                if "error" in reply:
                    for fd in fds:
                        os.close(fd)
                    raise OSError(str(reply["error"]))
                # A supervisor that died already has no reader: its run ends without a verdict.
                with contextlib.suppress(OSError):
                    os.write(go_write, b"g")
                return Spawned(int(reply["pid"]), fds[0])
            finally:
                os.close(go_write)

    def warm(self) -> None:
        """Start the server now, so that the first supervisor does not wait for it (a runner
        about to start agents calls this before its first cycle)."""
        if self._usable:
            with self._lock:
                if self._sock is None:
                    self._start()

    def _start(self) -> bool:
        """Start the server; False (and never again) when it cannot be."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            ours.settimeout(ANSWER_SECONDS)
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", self._script, "--serve", str(theirs.fileno())],
                pass_fds=[theirs.fileno()], cwd="/", stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        except OSError:
            ours.close()
            self._usable = False
            return False
        finally:
            theirs.close()
        self._sock = ours
        return True

    def _give_up(self) -> None:
        """The server misbehaved or died: kill it (a stopped one would not end on its own) and start
        interpreters from now on."""
        self._usable = False
        self._stop_now()

    def _stop_now(self) -> None:
        """Kill the server and forget it."""
        if self._proc is not None:
            self._proc.kill()
        self.close()

    def close(self) -> None:
        """Stop the server (its children, the supervisors, run on); the next spawn starts another."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

