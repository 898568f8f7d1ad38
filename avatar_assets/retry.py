"""Retry from a stage: Dagster re-execution from failure against the same instance."""

import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.storage.tags import TAGS_TO_MAYBE_OMIT_ON_RETRY


def retry_from_failure(instance: dg.DagsterInstance, run_id: str) -> dg.JobExecutionResult:
    """Finished steps are reused; the failed step and what it blocked run again, in this process."""
    run = instance.get_run_by_id(run_id)
    if run is None:
        raise ValueError(f"run {run_id} does not exist")
    if run.status != dg.DagsterRunStatus.FAILURE:
        raise ValueError(f"run {run_id} is {run.status.value}, only failed runs are retried")
    repository = ReconstructableRepository.for_module("avatar_assets.definitions", "defs")
    job = repository.get_reconstructable_job(run.job_name)
    # execute_job does not inherit the parent's tags; without `dagster/partition` (and the seed, avatar,
    # request tags) the re-executed steps would run unpartitioned. Keep them as Dagster's own retries do.
    inherited = {key: value for key, value in run.tags.items() if key not in TAGS_TO_MAYBE_OMIT_ON_RETRY}
    return dg.execute_job(
        job, instance=instance, reexecution_options=dg.ReexecutionOptions.from_failure(run_id, instance),
        tags={**inherited, "avatarops/retry_of": run_id},
    )
