"""Keep the batch jobs of a dask-jobqueue cluster: resubmit a job that died (``scancel``, node failure).

When a job's worker leaves, the scheduler hands its tasks to the remaining workers, and after
``distributed.deploy.lost-worker-timeout`` (15 s) the cluster drops the job from its running set
while keeping it in its spec; :func:`keep_jobs` then asks the cluster to restore its spec,
which submits a replacement job. So a run never loses its last worker for good.
"""
from __future__ import annotations

import logging
import threading

__all__ = ["keep_jobs"]

log = logging.getLogger("otpipe.cluster")


class _Keeper:
    def __init__(self, cluster, jobs: int, every: float):
        self.cluster, self.jobs, self.every = cluster, jobs, every
        self._stop = threading.Event()
        self.resubmitted = 0
        self._thread = threading.Thread(target=self._run, name="otpipe-keep-jobs", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                lost = sorted(set(self.cluster.worker_spec) - set(self.cluster.workers))
            except RuntimeError:  # a dict changed size while read: next round
                continue
            if lost and not self._stop.is_set():
                self.resubmitted += len(lost)
                log.warning("batch job(s) %s lost: submitting replacements (its tasks go to the other workers)",
                            ", ".join(map(str, lost)))
                self.cluster.loop.add_callback(self.cluster._correct_state)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.every + 1)


def keep_jobs(cluster, jobs: int, every: float = 5.0) -> _Keeper:
    """Keep a batch cluster at ``jobs`` jobs: resubmit lost jobs from a watcher thread.

    Call ``.stop()`` on the returned watcher before closing the cluster.

    Parameters
    ----------
    cluster : dask_jobqueue.JobQueueCluster
        A dask-jobqueue cluster scaled to ``jobs`` jobs.
    jobs : int
        The number of jobs to keep.
    every : float, default 5.0
        Seconds between checks.

    Returns
    -------
    object
        The running watcher (its ``stop()`` ends it).
    """
    return _Keeper(cluster, jobs, every)
