"""Retry from a stage: Dagster re-execution from failure against the same instance."""

import dagster as dg

from avatar_assets.dagster_compat import TAGS_TO_MAYBE_OMIT_ON_RETRY, reconstructable_job
from avatar_assets.ops import run_health

RETRY_OF_TAG = "avatarops/retry_of"


def failed_run(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRun:
    """The run to retry, once runs whose process died have been failed; refused unless it failed."""
    run_health.reap(instance)
    run = instance.get_run_by_id(run_id)
    if run is None:
        raise ValueError(f"run {run_id} does not exist")
    if run.status != dg.DagsterRunStatus.FAILURE:
        raise ValueError(f"run {run_id} is {run.status.value}, only failed runs are retried")
    return run


def inherited_tags(run: dg.DagsterRun) -> dict[str, str]:
    """What a re-execution keeps of its parent's tags. Without `dagster/partition` (and the seed, avatar,
    request tags) the re-executed steps would run unpartitioned; the executing process's identity is not
    kept (the retry names its own)."""
    inherited = {key: value for key, value in run.tags.items()
                 if key not in TAGS_TO_MAYBE_OMIT_ON_RETRY and not key.startswith("avatar/")}
    return {**inherited, RETRY_OF_TAG: run.run_id}


def queue_retry(instance: dg.DagsterInstance, run_id: str) -> str:
    """Hand the re-execution to the daemon's queue (a daemon runs on the instance); the new run's id."""
    from avatar_assets.ops.daemon_handoff import submit_retry

    run = failed_run(instance, run_id)
    return submit_retry(instance, run, inherited_tags(run))


def retry_from_failure(instance: dg.DagsterInstance, run_id: str) -> dg.JobExecutionResult:
    """Finished steps are reused; the failed step and what it blocked run again, in this process."""
    run = failed_run(instance, run_id)
    job = reconstructable_job("avatar_assets.definitions", run.job_name)
    result = dg.execute_job(
        job, instance=instance, reexecution_options=dg.ReexecutionOptions.from_failure(run_id, instance),
        tags={**inherited_tags(run), **run_health.this_process_tags()},
    )
    run_health.remove_scratch(result.run_id)
    return result
