"""Retry from a stage: Dagster re-execution from failure against the same instance."""

import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableRepository


def retry_from_failure(instance: dg.DagsterInstance, run_id: str) -> dg.ExecuteJobResult:
    """Finished steps are reused; the failed step and what it blocked run again, in this process."""
    run = instance.get_run_by_id(run_id)
    if run is None:
        raise ValueError(f"run {run_id} does not exist")
    if run.status != dg.DagsterRunStatus.FAILURE:
        raise ValueError(f"run {run_id} is {run.status.value}, only failed runs are retried")
    repository = ReconstructableRepository.for_module("avatar_assets.definitions", "defs")
    job = repository.get_reconstructable_job(run.job_name)
    return dg.execute_job(
        job, instance=instance, reexecution_options=dg.ReexecutionOptions.from_failure(run_id, instance),
        tags={"avatarops/retry_of": run_id},
    )
