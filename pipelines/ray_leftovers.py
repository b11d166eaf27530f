"""What a sweep must not leave behind: the placement groups and the trial, Train and Data actors it
created on the cluster.

Each Tune trial holds a placement group of its own, and its Ray Train controller makes another for
the DDP workers; the controller, the workers and Ray Data's coordinators are actors owned below the
trial. When a trial stops (ASHA, Ctrl+C, an error) Tune stops its actor gracefully and, only after
`TUNE_FORCE_TRIAL_CLEANUP_S` (600 s by default), kills it; until then a trial blocked in its trainer
keeps every CPU of its groups, and the next trial waits on a placement group that cannot be placed.
`released` bounds both: trials that do not stop are killed after `STOP_GRACE_S`, and whatever a sweep
created and left is removed when it returns (removing a group ends the actors placed in it, and the
actors they own go with them).

A plain `TorchTrainer.fit()` on a driver's main thread leaves something too: Ray Train installs a
SIGINT handler that holds the controller's handle, so the controller and the Data actors it owns
live as long as the process. `sigint_restored` puts the previous handler back when the fit returns.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time

log = logging.getLogger("pixelclip.tune")
TRIAL_CLASSES = ("ImplicitFunc", "TrainController", "RayTrainWorker", "DatasetManager", "SplitCoordinator")
STOP_GRACE_S = 30  # how long a stopped trial may take to end before Tune kills its actor
LIVE_GROUP_STATES = ("PENDING", "PREPARED", "CREATED", "RESCHEDULING")


def _address() -> str | None:
    """The cluster this process is connected to: the state API would otherwise look for one on the
    machine and fail when it finds two."""
    import ray

    return ray.get_runtime_context().gcs_address if ray.is_initialized() else None


def live_groups(job_id: str | None = None) -> set[str]:
    """Ids of the placement groups not removed (of one job, or all)."""
    from ray.util.state import list_placement_groups

    filters = [("creator_job_id", "=", job_id)] if job_id else None
    groups = list_placement_groups(address=_address(), filters=filters, limit=10_000, timeout=30)
    return {g.placement_group_id for g in groups if g.state in LIVE_GROUP_STATES}


def live_actors(job_id: str | None = None) -> dict[str, str]:
    """{actor id: class} of the live trial, Train and Data actors (of one job, or all)."""
    from ray.util.state import list_actors

    filters = [("state", "=", "ALIVE")] + ([("job_id", "=", job_id)] if job_id else [])
    actors = list_actors(address=_address(), filters=filters, limit=10_000, timeout=30)
    return {a.actor_id: a.class_name for a in actors if a.class_name in TRIAL_CLASSES}


def _remove_group(group_id: str) -> None:
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    remove_placement_group(PlacementGroup(PlacementGroupID.from_hex(group_id)))


def release(job_id: str, groups_before: set[str], actors_before: set[str], grace_s: float = STOP_GRACE_S) -> dict:
    """Wait up to `grace_s` for the groups and actors created since the snapshot to go, then remove
    the groups still there and wait for their actors. Returns what had to be removed."""
    deadline = time.monotonic() + grace_s
    while True:
        groups = live_groups(job_id) - groups_before
        actors = {k: v for k, v in live_actors(job_id).items() if k not in actors_before}
        if not groups and not actors:
            return {"groups": 0, "actors": 0}
        if time.monotonic() > deadline:
            break
        time.sleep(1.0)
    for g in groups:
        _remove_group(g)
    end = time.monotonic() + grace_s
    while time.monotonic() < end and (live_groups(job_id) - groups_before or set(live_actors(job_id)) - actors_before):
        time.sleep(1.0)
    left = {k: v for k, v in live_actors(job_id).items() if k not in actors_before}
    log.warning("the sweep left %d placement group(s) and %d actor(s) on the cluster; removed them%s", len(groups),
                len(actors), f" ({len(left)} actor(s) still alive: {sorted(set(left.values()))})" if left else "")
    return {"groups": len(groups), "actors": len(actors), "still_alive": left}


@contextlib.contextmanager
def sigint_restored():
    """Run a trainer's fit inside: the SIGINT handler it installs (and the controller handle that
    handler holds) is replaced by the one before it when the fit returns or raises."""
    if threading.current_thread() is not threading.main_thread():
        yield  # Ray Train installs no handler off the main thread
        return
    before = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before if before is not None else signal.SIG_DFL)


@contextlib.contextmanager
def released(grace_s: float = STOP_GRACE_S):
    """Run a sweep inside: trials that do not stop are killed after `grace_s` (unless
    TUNE_FORCE_TRIAL_CLEANUP_S is set), and the groups and actors the sweep leaves are removed."""
    import ray

    job_id = ray.get_runtime_context().get_job_id()
    try:
        groups_before, actors_before = live_groups(job_id), set(live_actors(job_id))
    except Exception as e:  # the state API needs the dashboard; without it there is nothing to check with
        log.warning("cannot list the cluster's placement groups (%s: %s); a stopped trial's resources are "
                    "left to Ray", type(e).__name__, e)
        groups_before = actors_before = None
    set_here = "TUNE_FORCE_TRIAL_CLEANUP_S" not in os.environ
    if set_here:
        os.environ["TUNE_FORCE_TRIAL_CLEANUP_S"] = str(int(grace_s))  # read when the Tuner starts
    try:
        yield
    finally:
        if set_here:
            os.environ.pop("TUNE_FORCE_TRIAL_CLEANUP_S", None)
        if groups_before is not None:
            release(job_id, groups_before, actors_before, grace_s)
