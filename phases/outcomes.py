"""How a check stage ends: the result statuses of verification and integration.

A module of its own, importing nothing, so that what only reads outcomes (the lifecycle's tables,
`status`) does not import what runs checks (and the configuration behind it).
"""

from __future__ import annotations

import enum

# How the summary of a phase that did not run begins; its row is cancelled, as one the runner
# stopped is, and reports tell the two apart by it.
NOT_RUN_MARK = "not run: "


class VerifyStatus(enum.StrEnum):
    """How verification ended."""

    PASS = "pass"  # every recipe that applied ran and exited 0, and at least one did
    # A recipe exited with one of skip_exit_codes after at least one had passed: the rest do not
    # apply. The run is a skip, not a success, but what ran did pass.
    SKIP = "skip"
    # Nothing failed, but no recipe ran and exited 0: none configured, none applied to the task
    # (it lacks a value such as {namespace}), or a skip code ended them before any passed.
    UNCHECKED = "unchecked"
    FAIL = "fail"
    # A recipe could not be started at all (its program is missing, the disk is full): a fault of
    # the machine, not of the commit under check.
    FAULT = "fault"


class IntegrateStatus(enum.StrEnum):
    """How an integration attempt ended."""

    INTEGRATED = "integrated"
    CONFLICT = "conflict"
    CHECKS_FAILED = "checks_failed"
    EMPTY = "empty"  # the commit changes nothing on the current base
    REFUSED = "refused"  # not the task's fault: base checked out and dirty, or base keeps moving
    STOPPED = "stopped"  # a person changed the task while it was being integrated
    FAULT = "fault"  # a check could not start (a missing program): the machine's fault
    UNCHECKED = "unchecked"  # no integrate recipe ran and passed, and the config does not allow that
    STALE = "stale"  # made on a base a person has since rewritten (reset, force-push): not the task's
