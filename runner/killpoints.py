"""Named points where the runner writes state, at which a test can kill it (SIGKILL) on purpose.

Recovery is only as good as its worst moment: the suite kills the runner at each of these points
and checks that the next start finishes every task, each at most once on base, with every base
commit checked, no run orphaned and no workspace shared. Outside tests the variable is unset and
each point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "PIPELINE_KILL_AT"
# STOP there instead of KILL: the process freezes where it stands and goes on when sent SIGCONT
# (a runner frozen past its lease, then woken).
SIGNAL_ENV = "PIPELINE_KILL_SIGNAL"

POINTS = (
    "workspace-made",  # in a worker thread: a task's workspace made (ahead, while slots are taken); task still open
    "claimed",  # task in progress and its dev run recorded; no workspace or agent yet
    "agent-spawned",  # the agent's supervisor started; its pid not yet recorded
    "agent-recorded",  # the pid recorded
    "brought-in",  # the agent's commit fetched into the runner's ref; the run not yet finished
    "dev-recorded",  # the dev run recorded as a success; verification not yet started
    "verify-started",  # the verify run recorded and handed to its worker
    "verify-checked-out",  # in the worker: the pristine checkout made, recipes not yet run
    "verified",  # the task verified
    "integrate-started",  # the integrate run recorded and handed to its worker
    "before-swap",  # the candidate recorded; base not yet moved
    "receipt-attached",  # the candidate's receipt attached; base not yet moved
    "swapped",  # base moved; its checkout not yet brought along, nothing recorded
    "integrated",  # the task recorded done; its workspace not yet removed
    "parking",  # a released workspace's saved index moved to the warm pool; its directory not yet
)

# Reached only when a task starts in a warm workspace (runner.warm): tests/test_warm.py kills there.
WARM_POINTS = (
    "recycling",  # a warm workspace moved to the task's path, its git directory gone, files not yet cleaned
)


# Reached only when base lives on a remote too (`remote:`): tests/test_basesync.py kills there.
REMOTE_POINTS = (
    "pushed",  # the candidate pushed to the remote's base with its receipt; the local base not yet moved
)


_seen: dict[str, int] = {}


def reached(name: str) -> None:
    """Die here if a test asked for it: ``PIPELINE_KILL_AT=name``, or ``name@N`` for the Nth time
    this process reaches it (the second landing of a stack, say)."""
    wanted = os.environ.get(ENV)
    if wanted is None:
        return
    point, _, nth = wanted.partition("@")
    if point != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGSTOP if os.environ.get(SIGNAL_ENV) == "STOP" else signal.SIGKILL)
