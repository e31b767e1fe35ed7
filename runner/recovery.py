"""Recovery: after a crash or a kill at any point, bring SQLite, git and the processes back in line.

Runs once at start, under the runner lock, so no other runner is acting; agents may still be (they
are adopted, not started again). Every step here is safe to repeat: a kill during recovery is
recovered by the next start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from phases.integrate import RECEIPTS
from runner.lifecycle import Step, next_step
from runner.logs import logger
from runner.state import Phase, RunStatus, last_of, parse_iso
from runner.tasks import TaskStatus
from runner.workspace import TASK_REFS, remove_tree

if TYPE_CHECKING:
    from runner.scheduler import Pipeline


def reconcile(p: Pipeline) -> None:
    """Bring ``p``'s state back in line: landings a kill interrupted are finished, runs no process
    is behind any more are cancelled (uncharged), agents still alive are adopted, locks our killed
    git commands left are dropped, and what done, cancelled or deleted tasks held is released."""
    ended = p.workspaces.end_leftover_git()
    if ended:
        logger.warning("ended {} git command(s) a killed runner left running in its workspaces", ended)
    for rec in p.runs.running(Phase.INTEGRATE):
        p.watch.drop_own_locks(parse_iso(rec.started_at).timestamp())
    if p.basesync is not None:
        publish_again(p)
    # With base on a remote, a candidate pushed there before the kill is on the remote's base:
    # the local base is brought to it first, so that it is found below.
    synced = p.basesync is None or p.basesync.sync(now=True)
    if p.may_integrate():
        finish_landings(p)
    base_sha = p.git.branch_sha(p.config.base)
    for rec in p.runs.running(Phase.INTEGRATE):
        # Unread, the remote may hold the candidate: its receipt stays until a look can tell.
        if synced and rec.after_sha and not (base_sha and p.git.is_ancestor(rec.after_sha, base_sha)):
            # A candidate that never landed: a receipt attached before the kill claims it did.
            p.git.remove_note(RECEIPTS, rec.after_sha)
        p.runs.finish(rec.id, RunStatus.CANCELLED, error="runner stopped during integration")
    # Only the runner writes its own refs: a lock there is one a killed fetch of ours left.
    for lock in (p.watch.git_dir / TASK_REFS).glob("**/*.lock"):
        lock.unlink(missing_ok=True)
    for rec in p.runs.running(Phase.DEV):
        if rec.pid is None:
            # Stopped between claiming the task and recording its agent's pid: the agent may
            # have started all the same. Adopt it, so no second agent joins it in its workspace.
            pid = p.backend.find_started(p.handle_of(rec))
            if pid is not None:
                p.runs.update(rec.id, pid=pid)
                logger.info("{}: adopted agent run {} (pid {}) after a restart", rec.task_id, rec.agent_run_id, pid)
            else:
                p.runs.finish(rec.id, RunStatus.CANCELLED, error="runner stopped before the agent started")
    for rec in p.runs.running(Phase.VERIFY):
        p.runs.finish(rec.id, RunStatus.CANCELLED, error="runner stopped during verification")
    p.runs.cancel_running_checks("runner stopped while the phase ran")
    # The integration checkout is rebuilt at each integration; one an older version made is a
    # linked worktree, which must be unregistered too.
    p.git.remove_worktree(p.layout.integration)
    # The candidates' checkouts: a kill mid-stack leaves several; none is running now.
    remove_tree(p.layout.integration)
    running_dev = {r.task_id for r in p.runs.running(Phase.DEV)}
    for task in p.store.list_tasks(status=TaskStatus.IN_PROGRESS):
        if not p.mine(task.id):
            continue  # another runner's, sharing the state
        view = p.view(task, running=running_dev, latest=p.runs.latest(task.id))
        if next_step(view) is Step.REOPEN:
            p.store.set_status(task.id, TaskStatus.OPEN)
            p.note(task.id, "recovered an in-progress task with no live agent; back to open")
    for task_id in p.workspaces.existing():
        if task_id not in running_dev:
            # A git command of ours killed in this worktree leaves its locks behind.
            p.workspaces.drop_stale_locks(task_id)
    # What the runner keeps for tasks that are done (a kill between landing and cleaning up):
    # read once, not one git call per task of a long history.
    refs = p.git.refs(TASK_REFS)
    kept = set(p.workspaces.existing()) | {r.removeprefix(TASK_REFS) for r in refs}
    with_ref = {r.removeprefix(TASK_REFS) for r in refs}
    for task_id in sorted(kept - running_dev):
        if not p.store.exists(task_id):
            # Deleted (a delete racing a workspace being made): only what is surely the runner's,
            # never a directory a person put there under a name that could be an id.
            if task_id in with_ref or p.workspaces.checkouts.intact(p.layout.worktree(task_id)):
                p.workspaces.release(task_id)
        elif p.store.get(task_id).status in (TaskStatus.DONE, TaskStatus.CANCELLED):
            p.workspaces.release(task_id)  # a kill before the cleanup
    p.git.prune_worktrees()


def publish_again(p: Pipeline) -> None:
    """Queue again, for the remote, the commit of each of this runner's tasks that waits to be
    verified or integrated: commits are published at the end of a harvest, from memory, and one a
    kill lost would otherwise never reach the remote (its task would wait unverified, or another
    host would find nothing to integrate). Published again, a commit changes nothing."""
    assert p.basesync is not None
    for status, phase in ((TaskStatus.IN_PROGRESS, Phase.DEV), (TaskStatus.VERIFIED, Phase.VERIFY)):
        for task_id, attempts in p.runs.attempts_by_task(status.value).items():
            last = last_of(attempts, phase)
            if p.owns(attempts) and last is not None and last.status in (RunStatus.SUCCESS, RunStatus.SKIPPED) and last.after_sha:
                p.basesync.publish(task_id, last.after_sha)


def finish_landings(p: Pipeline) -> list[str]:
    """A task whose candidate is on base has landed, whatever its row says (a kill between the
    swap, or the push to the remote, and the bookkeeping, of this runner or of the one that held
    the integration lease before): it is marked done and never developed or integrated again.
    The tasks so marked."""
    base_sha = p.git.branch_sha(p.config.base)
    finished = []
    over: list[str] = []  # candidates of attempts that ended without landing
    for rec in p.runs.landing_candidates():
        if base_sha and p.git.is_ancestor(str(rec.after_sha), base_sha):
            p.watch.repair_after_restart(f"{rec.after_sha}^", base_sha)
            with p.db.write():
                p.runs.finish(rec.id, RunStatus.SUCCESS)
                p.finish_done(rec.task_id, str(rec.after_sha), recovered=True, release=False)
            p.workspaces.release(rec.task_id)
            finished.append(rec.task_id)
        elif rec.status is not RunStatus.RUNNING:
            over.append(str(rec.after_sha))
    # A receipt attached before a kill, to a candidate that never landed, was kept while the remote
    # could not tell whether it had (reconcile): looked at now that it did, it goes, before the
    # next landing would push it to the remote with the others.
    for sha in sorted(set(over) & p.git.noted(RECEIPTS)) if over else []:
        p.git.remove_note(RECEIPTS, sha)
        logger.info("removed the receipt of {}: that candidate never landed", sha[:12])
    return finished
