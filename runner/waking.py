"""Waiting for the loop's next reason to act: a worker thread's signal or a process's exit.

The loop sleeps on file descriptors rather than polling: a pipe the verify and integrate workers
write to, and a pidfd per running agent supervisor, which the kernel makes readable the moment the
process exits, whichever runner started it. Where pidfds are missing (not Linux, or a kernel older
than 5.3) the caller's polling takes over.

Another process wakes a daemon through a named pipe in the root (``nudge``): `task add` writes a
byte into it, so a new task starts at once rather than after up to ``interval`` seconds. Nobody
listening (no daemon, or one that died) makes the nudge a no-op; it never blocks and never fails.
"""

from __future__ import annotations

import contextlib
import os
import select
import stat
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

HAS_PIDFD = hasattr(os, "pidfd_open")


class Exits:
    """Which of the processes the loop watches have exited, told by a pidfd held for each while
    it runs: one poll over all of them, instead of reading every one's /proc entry each time the
    loop looks (about half a millisecond a process, many times a second).

    Each process is watched under a key of the caller's (a run's row): a pid is not one process
    for good, and an ended run not recorded yet may share its pid with a newer run's process.
    """

    def __init__(self) -> None:
        self._fds: dict[int, int] = {}  # key -> the pidfd of its process
        self._gone: set[int] = set()  # keys whose processes were seen exited (their pidfds are closed)
        self.usable = HAS_PIDFD

    def fd_of(self, key: int, pid: int, alive: Callable[[int], bool]) -> int | None:
        """The pidfd watching ``pid`` for ``key`` (opened now if need be, once ``alive(key)`` says
        the pid is still the process meant), or None when it has exited already or cannot be
        watched."""
        if key in self._fds:
            return self._fds[key]
        if key in self._gone or not self.usable:
            return None
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._gone.add(key)
            return None
        except OSError:
            self.usable = False  # a kernel without pidfds, or a sandbox refusing them
            return None
        # Looked at after the pidfd exists: the process it names now is the one the fd follows.
        if not alive(key):
            os.close(fd)
            self._gone.add(key)
            return None
        self._fds[key] = fd
        return fd

    def exited(self, wanted: Mapping[int, int], alive: Callable[[int], bool]) -> set[int]:
        """The keys of ``wanted`` (key -> pid) whose processes are no longer running.

        ``alive(key)`` tells whether the key's pid is still the process meant: asked once, when a
        key is first watched, since a pid read back from the state may have been reused since;
        from then on the pidfd follows that process and no other. A key whose pidfd cannot be had
        (no pidfd on this system, a process that cannot be seen) is asked ``alive`` every time."""
        fds = {fd: key for key, pid in wanted.items() if (fd := self.fd_of(key, pid, alive)) is not None}
        gone = {key for key in wanted if key in self._gone}
        if fds:
            poller = select.poll()
            for fd in fds:
                poller.register(fd, select.POLLIN)
            for fd, _event in poller.poll(0):
                gone.add(fds[fd])
                self._forget(fds[fd], gone=True)
        watched = set(fds.values())
        return gone | {key for key in wanted if key not in gone and key not in watched and not alive(key)}

    def keep_only(self, keys: Iterable[int]) -> None:
        """Stop watching every key but ``keys`` (the runs that ended were recorded)."""
        keep = set(keys)
        for key in [k for k in self._fds if k not in keep]:
            self._forget(key)
        self._gone &= keep

    def _forget(self, key: int, gone: bool = False) -> None:
        fd = self._fds.pop(key, None)
        if fd is not None:
            os.close(fd)
        if gone:
            self._gone.add(key)

    def close(self) -> None:
        """Release every pidfd."""
        for key in list(self._fds):
            self._forget(key)


class Waker:
    """A wake-up other threads raise with ``set()`` and the loop waits on with ``wait()``."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        # Held while writing and closing, so a worker finishing after close() never writes into
        # a descriptor number the process has since reused.
        self._lock = threading.Lock()
        self._closed = False
        # False once pidfd_open has failed (a kernel without it, or a sandbox refusing it): the
        # caller then polls for exits itself, often.
        self.watches_pids = HAS_PIDFD
        self._nudges: int | None = None  # the named pipe other processes nudge, once listened to

    def listen(self, path: Path) -> bool:
        """Also wake when another process calls ``nudge(path)``; False if the pipe cannot be made."""
        try:
            with contextlib.suppress(FileNotFoundError):
                if not stat.S_ISFIFO(os.lstat(path).st_mode):
                    path.unlink()  # not a pipe (a stray file): made again as one
            with contextlib.suppress(FileExistsError):
                os.mkfifo(path, 0o600)
        except OSError:
            return False  # a file system without named pipes: the interval still applies
        try:
            # Read and write: with a writer always present (this one) the pipe never reports
            # end-of-file, which select would otherwise return at once, forever.
            self._nudges = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        except OSError:
            return False
        return True

    def set(self) -> None:
        """Wake the waiting loop (safe from any thread; a full pipe already means "wake")."""
        with self._lock, contextlib.suppress(BlockingIOError):
            if not self._closed:
                os.write(self._write, b"!")

    def wait(self, timeout: float, pids: Iterable[int] = ()) -> bool:
        """Block until ``set()``, the exit of one of ``pids``, or ``timeout`` seconds.

        True when woken by ``set()`` or an exit (or a pid already gone), False on timeout.
        """
        fds: list[int] = []
        try:
            if self.watches_pids:
                for pid in pids:
                    try:
                        fds.append(os.pidfd_open(pid))
                    except ProcessLookupError:
                        return True
                    except OSError:
                        self.watches_pids = False
                        return True  # let the caller look at its processes and poll from now on
            own = [self._read] if self._nudges is None else [self._read, self._nudges]
            ready, _, _ = select.select([*own, *fds], [], [], max(0.0, timeout))
        finally:
            for fd in fds:
                os.close(fd)
        for fd in own:
            if fd in ready:
                self._drain(fd)
        return bool(ready)

    def _drain(self, fd: int) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(fd, 4096):
                pass

    def close(self) -> None:
        """Release the pipe."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.close(self._read)
            os.close(self._write)
            if self._nudges is not None:
                os.close(self._nudges)


def nudge(path: Path) -> bool:
    """Wake the daemon listening on ``path``, if one is; True if one was told."""
    try:
        # Non-blocking: with no reader the open fails at once (ENXIO) instead of waiting for one.
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return False  # nobody listening (ENXIO), no daemon ever started here (ENOENT), or no access
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False  # something else sits there: never write into a file
        os.write(fd, b"!")
    except BlockingIOError:
        pass  # the pipe is full of earlier nudges: the daemon will wake anyway
    except OSError:
        return False
    finally:
        os.close(fd)
    return True
