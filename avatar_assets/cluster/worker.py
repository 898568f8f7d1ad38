"""The Celery app the cluster's workers run (`dagster-celery worker start -A avatar_assets.cluster.worker`):
dagster-celery's app and tasks, plus the run tag that says which worker executed a run."""

from __future__ import annotations

import dagster as dg
from celery.signals import task_prerun
from dagster_celery.app import app, execute_job, resume_job
from dagster_shared.serdes import unpack_value

from avatar_assets.cluster.launcher import WORKER_TAG

__all__ = ["app", "execute_job", "resume_job"]


@task_prerun.connect
def record_worker(task=None, kwargs=None, **_) -> None:
    """Tag the run with this worker's node name before it executes, so a person sees which box ran it."""
    packed = (kwargs or {}).get("execute_job_args_packed")
    if packed is None or task is None:
        return
    run_id = unpack_value(packed).run_id
    with dg.DagsterInstance.get() as instance:
        instance.add_run_tags(run_id, {WORKER_TAG: task.request.hostname})
