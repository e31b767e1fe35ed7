"""Supervisor of a command: enforces its timeout, ends every process it started, bounds its output
and records how it ended.

Started as ``python -I -S .../supervise.py --status-file F --timeout S [--stdout FILE]
[--max-bytes N] [--parent PID] -- ARGV...`` (stdlib only, so it starts fast and needs no installed
package), or forked with the same options from a fork server (``supervise.py --serve FD``, see
runner/forkserver.py): detached by the command backend for agents, in the foreground by
``procs.run_logged`` for recipes. It starts ARGV in a process group of its own, writes the group id to the status file,
waits, and finally writes the exit code atomically, so that any later runner process can harvest
the result.

Nothing the command starts outlives the run. The supervisor is a child subreaper (Linux), so a
process that leaves the command's tree (a double fork, a ``setsid`` daemon) is reparented to it
rather than to init. When the command exits, times out, or the supervisor is told to stop (TERM,
INT, HUP, or with ``--parent`` the death of that process), every descendant gets TERM, then KILL
after a grace period, and is reaped before the final status is written.

The command's leader is reaped last: while it is an unreaped zombie its pid, and so the group id,
cannot be reused, so a group kill can never hit an unrelated process.

Output (the merged log on this process's stdout, and the ``--stdout`` file some presets parse) is
copied in chunks, secrets masked, each capped at ``--max-bytes``: the first half and the last half
are kept with a line ``[... N bytes cut ...]`` between them, so the end of a run (where CLIs print
their result) is always intact.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import stat
import subprocess
import sys
import threading
import time

# Run as a script under -I -S: make the package next to this file importable for redaction.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from runner.redact import redact, register, secret_values

# Not `from typing import TYPE_CHECKING`: importing typing costs ~2 ms of the start-up of every
# agent run; type checkers honour a module-level TYPE_CHECKING = False just the same.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path
    from typing import Any, BinaryIO

GRACE_SECONDS = 5.0
# How often a --parent is checked and orphans that exited meanwhile are reaped.
WATCH_SECONDS = 0.2
# The runner passes procs.MAX_OUTPUT_BYTES explicitly; this is the same figure for a bare start.
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
CHUNK_BYTES = 64 * 1024
# A line longer than this is passed on in pieces, each masked on its own, so that one endless line
# cannot fill this process's memory.
LONG_LINE_BYTES = 1024 * 1024
# Room kept under the cap for the cut marker.
MARKER_RESERVE = 64
PR_SET_CHILD_SUBREAPER = 36
USAGE = (
    "usage: supervise.py --status-file FILE --timeout SECONDS [--stdout FILE] [--max-bytes N]"
    " [--parent PID] -- COMMAND..."
)
_OPTIONS = ("--status-file", "--timeout", "--stdout", "--max-bytes", "--parent")


def write_status(path: str | Path, data: dict[str, Any]) -> None:
    """Write the status file atomically (rename over the old one)."""
    tmp = os.fspath(path) + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(data))
    os.replace(tmp, path)


def read_status(path: str | Path) -> dict[str, Any] | None:
    """The status file's content, or None when absent or half-written."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.loads(fh.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class Options:
    """The command line, parsed by hand: argparse would double the start-up time."""

    def __init__(self, argv: list[str]) -> None:
        values: dict[str, str] = {}
        i = 0
        while i < len(argv) and argv[i] != "--":
            if argv[i] not in _OPTIONS or i + 1 >= len(argv):
                raise SystemExit(USAGE)
            values[argv[i]] = argv[i + 1]
            i += 2
        self.command = argv[i + 1 :]
        if not self.command or "--status-file" not in values or "--timeout" not in values:
            raise SystemExit(USAGE)
        self.status_file = values["--status-file"]
        self.stdout = values.get("--stdout")
        try:
            self.timeout = float(values["--timeout"])
            self.max_bytes = int(values.get("--max-bytes", DEFAULT_MAX_BYTES))
            self.parent = int(values["--parent"]) if "--parent" in values else None
        except ValueError:
            raise SystemExit(USAGE) from None


def _libc() -> Any:
    """The C library (for prctl), loaded once: a fork server loads it before forking supervisors."""
    global _LIBC
    if _LIBC is None:
        import ctypes  # only here: it costs a few ms of start-up, and only Linux has the call

        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


_LIBC: Any = None


def become_subreaper() -> bool:
    """Adopt this process's orphaned descendants instead of init (Linux); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(_libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _processes() -> dict[int, tuple[int, str]]:
    """Every process: its parent's pid and its state letter."""
    table: dict[int, tuple[int, str]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:  # no procfs: only the group kill is left
        return table
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rpartition(b")")[2].split()
        except OSError:
            continue
        if len(fields) > 1:
            table[int(entry)] = (int(fields[1]), fields[0].decode())
    return table


class Tree:
    """The supervised command's processes: everything descended from this supervisor."""

    def __init__(self, leader: int) -> None:
        self.leader = leader
        self.me = os.getpid()
        self.lock = threading.Lock()
        self.leader_reaped = False

    def live(self) -> list[int]:
        """Descendants that have not exited; exited children (bar the leader) are reaped on the way."""
        table = _processes()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _state) in table.items():
            children.setdefault(ppid, []).append(pid)
        live: list[int] = []
        todo = list(children.get(self.me, []))
        while todo:
            pid = todo.pop()
            todo.extend(children.get(pid, []))
            ppid, state = table[pid]
            if state not in ("Z", "X"):
                live.append(pid)
            elif ppid == self.me and pid != self.leader:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
        return live

    def signal(self, pids: Iterable[int], sig: int) -> None:
        """Send ``sig`` to the leader's group and to each of ``pids``."""
        with self.lock:
            if not self.leader_reaped:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.leader, sig)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)

    def end(self, grace: float) -> None:
        """TERM every live descendant, KILL what is left after ``grace``, until none is left."""
        live = self.live()
        termed: set[int] = set()
        deadline = time.monotonic() + grace
        while live and time.monotonic() < deadline:
            # Also what was forked meanwhile, so that every process gets its chance to clean up.
            self.signal([pid for pid in live if pid not in termed], signal.SIGTERM)
            termed.update(live)
            time.sleep(0.05)
            live = self.live()
        deadline = time.monotonic() + grace
        while live and time.monotonic() < deadline:
            # Again and again: a process may fork until the kill reaches it.
            self.signal(live, signal.SIGKILL)
            time.sleep(0.02)
            live = self.live()

    def reap_orphans(self) -> None:
        """Reap adopted processes that exited, so a long run does not collect zombies."""
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            # The leader stays unreaped until the end (see the module's docstring).
            if info is None or info.si_pid == self.leader:
                return
            with contextlib.suppress(ChildProcessError):
                os.waitpid(info.si_pid, os.WNOHANG)


def _stop(tree: Tree, leader_exited: threading.Event) -> None:
    """Before the leader exited: TERM the whole tree, KILL it if the leader outlives the grace period."""
    tree.signal(tree.live(), signal.SIGTERM)
    if not leader_exited.wait(GRACE_SECONDS):
        tree.signal(tree.live(), signal.SIGKILL)


def parent_watch(parent: int | None, forked: bool) -> Callable[[], bool] | None:
    """A test that ``parent`` has died, or None without a parent to watch.

    A started supervisor is its parent's child: a dead parent's children are reparented, so the
    parent pid changes (polled, because PR_SET_PDEATHSIG fires when the parent's thread ends, and
    runners call from worker threads). A forked one is the fork server's child and watches its runner
    through a pidfd, opened before its command starts (the runner holds the answer by then, so the
    pid is the runner's): the death of the server is not the runner's.
    """
    if parent is None:
        return None
    if not forked:
        return lambda: os.getppid() != parent
    try:
        pidfd = os.pidfd_open(parent)
    except OSError:  # gone already
        return lambda: True
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return lambda: bool(poller.poll(0))


def _watch(
    tree: Tree, parent_gone: Callable[[], bool] | None, leader_exited: threading.Event, orphaned: Callable[[], None]
) -> None:
    """Until the leader exits: reap adopted orphans, and stop the run once ``parent_gone()``."""
    while not leader_exited.wait(WATCH_SECONDS):
        if parent_gone is not None and parent_gone():
            parent_gone = None
            orphaned()
        tree.reap_orphans()


# The signals that stop a run. Python runs their handlers in the main thread, and only once it
# comes back from a blocking call; the kernel may hand a process's signal to any thread that does
# not block it, and one taken by a helper thread would leave the main thread waiting for the
# command as if no signal had come. So helper threads block them.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _start_helper(thread: threading.Thread) -> None:
    """Start ``thread`` with the stop signals blocked in it (a new thread inherits the mask)."""
    # Restored as it was: the timer and the watcher start stoppers too.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


class CappedOutput:
    """Writes one stream of a run to a file descriptor, at most ``max_bytes`` of it.

    The first half goes straight through. Past it, output is still written as it comes (a person
    can follow the log) and also kept in memory; whenever that tail is twice its share, the file is
    cut back to the head, a marker, and the latest share. A descriptor that is not a regular file
    (a pipe) gets the kept tail once, at the end.
    """

    def __init__(self, fd: int, max_bytes: int) -> None:
        self.fd = fd
        self.head_left = max(max_bytes // 2, 0)
        self.tail_limit = max(max_bytes - self.head_left - MARKER_RESERVE, 0)
        self.head_end = -1  # the file's size when the head was complete
        self.head_ends_line = True
        self.tail = bytearray()
        self.cut = 0
        self.broken = False
        try:
            self.in_file = stat.S_ISREG(os.fstat(fd).st_mode)
        except OSError:
            self.in_file, self.broken = False, True

    def write(self, data: bytes) -> None:
        """Pass on ``data``, cutting the middle of the run's output as needed."""
        if self.head_end < 0:
            if len(data) <= self.head_left:
                self._put(data)
                self.head_left -= len(data)
                if data:
                    self.head_ends_line = data.endswith(b"\n")
                return
            # End the head at a line's end, so the marker stands on a line of its own.
            end = data.rfind(b"\n", 0, self.head_left) + 1 or self.head_left
            self._put(data[:end])
            if end:
                self.head_ends_line = data[end - 1] == 10
            self.head_end = self._size()
            data = data[end:]
        self.tail += data
        if self.in_file:
            self._put(data)
        if len(self.tail) > max(2 * self.tail_limit, self.tail_limit + CHUNK_BYTES) and self._trim():
            self._rewrite()

    def close(self) -> None:
        """Leave the kept tail under the cap (a pipe gets it now), and close the descriptor."""
        if self.head_end >= 0:
            if self._trim() and self.in_file:
                self._rewrite()
            elif not self.in_file:
                self._put((self._marker() if self.cut else b"") + bytes(self.tail))
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def _trim(self) -> bool:
        drop = len(self.tail) - self.tail_limit
        if drop <= 0:
            return False
        # Keep whole lines where they are of a reasonable length: parsers read the tail line by line.
        newline = self.tail.find(b"\n", drop - 1, drop + LONG_LINE_BYTES)
        if newline != -1:
            drop = newline + 1
        del self.tail[:drop]
        self.cut += drop
        return True

    def _rewrite(self) -> None:
        if self.broken:
            return
        try:
            os.ftruncate(self.fd, self.head_end)
            os.lseek(self.fd, self.head_end, os.SEEK_SET)
        except OSError:
            self.broken = True
            return
        self._put(self._marker())
        self._put(self.tail)

    def _marker(self) -> bytes:
        start = b"" if self.head_ends_line else b"\n"
        return start + f"[... {self.cut} bytes cut ...]\n".encode()

    def _size(self) -> int:
        if not self.in_file:
            return 0
        try:
            return os.fstat(self.fd).st_size
        except OSError:
            self.broken = True
            return 0

    def _put(self, data: bytes | bytearray) -> None:
        # A full disk or a closed reader loses output, never the run: the command must not block.
        if self.broken:
            return
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError:
            self.broken = True


def _masked(block: bytes, secrets: list[bytes]) -> bytes:
    """``block`` with secrets masked, as runner.redact does for text."""
    # Almost all output holds neither a secret nor a URL; decoding and matching it would cost about
    # 25 ns a byte (redact's patterns need a secret's value or "://" to match at all).
    if b"://" not in block and not any(secret in block for secret in secrets):
        return block
    return redact(block.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")


def copy_output(source: BinaryIO, out: CappedOutput, secrets: list[bytes]) -> None:
    """Copy ``source`` to ``out`` in chunks, masking secrets in whole lines, until end of file."""
    fd = source.fileno()
    pending = bytearray()
    try:
        while True:
            data = os.read(fd, CHUNK_BYTES)
            if not data:
                break
            pending += data
            newline = data.rfind(b"\n")
            if newline != -1:
                end = len(pending) - len(data) + newline + 1
            elif len(pending) >= LONG_LINE_BYTES:
                end = len(pending)
            else:
                continue
            out.write(_masked(bytes(pending[:end]), secrets))
            del pending[:end]
        if pending:
            out.write(_masked(bytes(pending), secrets))
    finally:
        out.close()
        source.close()


def _dup(fd: int) -> int:
    try:
        return os.dup(fd)
    except OSError:  # closed: the output is lost, the command still runs and is judged
        return -1


def _finished(started_at: float, **fields: Any) -> dict[str, Any]:
    return {"state": "finished", **fields, "started_at": started_at, "finished_at": time.time()}


def write_not_started(status_file: str, started_at: float, command: str, exc: BaseException) -> None:
    """The verdict of a run whose command could not be started (this process supervised it)."""
    write_status(status_file, _finished(started_at, supervisor=os.getpid(), exit_code=127, timed_out=False,
                                        started=False, error=f"{command!r} could not be started: {exc}"))  # fmt: skip


def main(argv: list[str] | None = None, *, forked: bool = False) -> int:
    """Run the supervised command; the exit code mirrors the command's. ``forked``: this process
    was forked from a fork server (its parent is the server, not the runner)."""
    opts = Options(sys.argv[1:] if argv is None else argv)
    started = time.time()
    me = os.getpid()
    parent_gone = parent_watch(opts.parent, forked)
    register(os.environ)
    secrets = [value.encode("utf-8", "surrogateescape") for value in secret_values(os.environ)]
    name = os.path.basename(opts.command[0])
    become_subreaper()
    try:
        stdout_fd = os.open(opts.stdout, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if opts.stdout else -1
        child = subprocess.Popen(
            opts.command, start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if opts.stdout else subprocess.STDOUT,
        )  # fmt: skip
    except OSError as exc:
        write_not_started(opts.status_file, started, opts.command[0], exc)
        return 127
    tree = Tree(child.pid)
    # The merged log is this process's stdout (a copy of it: each output closes its descriptor).
    log_fd = _dup(1)
    streams = [(child.stdout, CappedOutput(log_fd, opts.max_bytes))]
    if opts.stdout:
        streams = [(child.stdout, CappedOutput(stdout_fd, opts.max_bytes)),
                   (child.stderr, CappedOutput(log_fd, opts.max_bytes))]  # fmt: skip
    copiers = []
    for source, target in streams:
        copier = threading.Thread(target=copy_output, args=(source, target, secrets), daemon=True)
        _start_helper(copier)
        copiers.append(copier)
    write_status(opts.status_file, {"state": "running", "supervisor": me, "pid": child.pid, "pgid": child.pid,
                                    "started_at": started})  # fmt: skip

    leader_exited = threading.Event()
    timed_out = threading.Event()
    orphaned = threading.Event()
    stopped_by: list[int] = []
    stoppers: list[threading.Thread] = []

    def stop(reason: threading.Event | None, signum: int = 0) -> None:
        if reason is not None:
            reason.set()
        if signum:
            stopped_by.append(signum)
        stopper = threading.Thread(target=_stop, args=(tree, leader_exited), daemon=True)
        _start_helper(stopper)
        stoppers.append(stopper)

    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda signum, _frame: stop(None, signum))
    timer = threading.Timer(opts.timeout, stop, args=(timed_out,))
    timer.daemon = True
    _start_helper(timer)
    watcher = threading.Thread(
        target=_watch, args=(tree, parent_gone, leader_exited, lambda: stop(orphaned)), daemon=True
    )
    _start_helper(watcher)
    # Wait for the leader to exit without reaping it (the wait blocks, so the exit is seen at once).
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    leader_exited.set()
    timer.cancel()
    watcher.join()
    for stopper in list(stoppers):
        stopper.join()
    tree.end(GRACE_SECONDS)  # whatever the command left behind, however detached, ends with it
    for copier in copiers:
        copier.join(timeout=GRACE_SECONDS)
    with tree.lock:
        exit_code = child.wait()
        tree.leader_reaped = True
    error: str | None = None
    if timed_out.is_set():
        error = f"{name} timed out after {opts.timeout:g}s and was stopped with every process it started"
    elif stopped_by:
        error = f"{name} stopped by signal {stopped_by[0]} sent to its supervisor"
    elif orphaned.is_set():
        error = f"{name} stopped: the process that started it (pid {opts.parent}) is gone"
    write_status(opts.status_file, _finished(started, supervisor=me, pid=child.pid, pgid=child.pid, exit_code=exit_code,
                                             timed_out=timed_out.is_set(), error=error))  # fmt: skip
    return 0 if exit_code == 0 else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        # A fork server (runner/forkserver.py): supervisors are forked from this loaded process.
        from runner.forkserver import serve

        with contextlib.suppress(OSError, AttributeError):
            _libc()
        serve(int(sys.argv[2]), lambda options: main(options, forked=True), write_status, write_not_started)
        sys.exit(0)
    sys.exit(main())
