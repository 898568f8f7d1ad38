"""CeleryRunLauncher, plus the two things the stock one cannot know: which queue a run belongs on, and
whether the worker that took it is still alive.

Loaded by every process that launches or monitors runs (daemon, webserver), so it stays light: Celery
and dagster-celery only, never the code location.
"""

from __future__ import annotations

import logging

import dagster as dg
from dagster_celery.launcher import CeleryRunLauncher
from dagster_celery.tags import DAGSTER_CELERY_QUEUE_TAG, DAGSTER_CELERY_TASK_ID_TAG

from avatar_assets.cluster import WORKER_TAG
from avatar_assets.dagster_compat import CheckRunHealthResult, WorkerStatus

CPU_QUEUE = "cpu"
GPU_QUEUE = "gpu"
GPU_POOL = "gpu"  # the concurrency pool the model stages declare (`pool="gpu"` on their @dg.asset)
PING_TIMEOUT_SECONDS = 2.0

_log = logging.getLogger("avatarops")


def run_queue(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str:
    """`gpu` when any step the run executes is in the `gpu` pool, else `cpu`: read from the run's own
    execution plan, so a sensor, automation, UI, retry or backfill launch of the same selection routes alike."""
    if run.execution_plan_snapshot_id is None:
        return CPU_QUEUE
    plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
    executed = set(plan.step_keys_to_execute or [step.key for step in plan.steps])
    return GPU_QUEUE if any(step.pool == GPU_POOL for step in plan.steps if step.key in executed) else CPU_QUEUE


class AvatarCeleryRunLauncher(CeleryRunLauncher):
    """Routes each run to its queue at launch and fails runs whose worker died (run monitoring asks)."""

    def launch_run(self, context) -> None:
        super().launch_run(context._replace(dagster_run=self._routed(context.dagster_run)))

    def resume_run(self, context) -> None:
        super().resume_run(context._replace(dagster_run=self._routed(context.dagster_run)))

    def _routed(self, run: dg.DagsterRun) -> dg.DagsterRun:
        """The run with its queue tag set, the one place a queue is chosen (the stock launcher reads the tag)."""
        self._instance.add_run_tags(run.run_id, {DAGSTER_CELERY_QUEUE_TAG: run_queue(self._instance, run)})
        return self._instance.get_run_by_id(run.run_id) or run

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        """The stock check reads the task state from the result backend, where the task of a SIGKILLed
        worker stays STARTED forever. A STARTED task names its worker (Celery stores the node name with the
        state, the same name worker.py writes into `avatar/worker`); a worker that does not answer a ping
        is gone, and the run with it."""
        health = super().check_run_worker_health(run)
        if health.status != WorkerStatus.RUNNING:
            return health
        started = self.celery.AsyncResult(run.tags[DAGSTER_CELERY_TASK_ID_TAG]).info
        worker = started.get("hostname") if isinstance(started, dict) else None
        if not worker:
            return health
        try:
            answered = self.celery.control.ping(destination=[worker], timeout=PING_TIMEOUT_SECONDS)
        except Exception as error:  # the broker is unreachable: no evidence the worker is gone
            _log.warning("could not ping Celery worker %s: %s", worker, error)
            return health
        if not answered:
            return CheckRunHealthResult(
                WorkerStatus.FAILED,
                f"Celery worker {worker} did not answer a ping within {PING_TIMEOUT_SECONDS:g} s: it is gone.",
            )
        return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=worker)

