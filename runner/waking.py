"""Waiting for the loop's next reason to act: a worker thread's signal or a process's exit.

The loop sleeps on file descriptors rather than polling: a pipe the verify and integrate workers
write to, and a pidfd per running agent supervisor, which the kernel makes readable the moment the
process exits, whichever runner started it. Where pidfds are missing (not Linux, or a kernel older
than 5.3) the caller's polling takes over.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
from collections.abc import Iterable

HAS_PIDFD = hasattr(os, "pidfd_open")


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
            ready, _, _ = select.select([self._read, *fds], [], [], max(0.0, timeout))
        finally:
            for fd in fds:
                os.close(fd)
        if self._read in ready:
            self._drain()
        return bool(ready)

    def _drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read, 4096):
                pass

    def close(self) -> None:
        """Release the pipe."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.close(self._read)
            os.close(self._write)
