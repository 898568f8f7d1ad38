"""The decorator every QA gate uses: a blocking, partitioned asset check that also judges ranged runs.

dagster 1.13 runs a partitioned check once per ranged (multi-partition) run and records its
`AssetCheckResult` with partition=None, so a gate on a `BackfillPolicy.multi_run` asset would never
pass or fail for any avatar of the range (pinned by tests/test_ranged_runs.py). In a ranged run the
gate therefore judges each partition on its own inputs and records one `AssetCheckEvaluation` per
partition, aimed at that partition's latest materialization. A failed ERROR gate still fails the
check step, which stops the rest of the run; automation then refreshes the passed avatars only.
"""

import functools
import warnings
from collections.abc import Iterator

import dagster as dg

from avatar_assets.dagster_compat import check_evaluation_target
from avatar_assets.pipeline.lifecycle import accepts_partition_ranges


def partitioned_gate(asset, description: str, partitions_def: dg.PartitionsDefinition, **check_kwargs):
    """Partitioned checks are a 1.13 preview feature; the design relies on them, so the notice is muted."""

    def decorate(fn):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dg.PreviewWarning)
            return dg.asset_check(
                asset=asset, blocking=True, partitions_def=partitions_def, description=description, **check_kwargs
            )(fn if asset.backfill_policy is None else _per_partition_in_ranged_runs(fn))

    return decorate


def _per_partition_in_ranged_runs(fn):
    @functools.wraps(fn)
    def gate(*args, **kwargs):
        context = _current_context()
        if context is None or not context.has_partition_key_range:
            return fn(*args, **kwargs)
        return _ranged(context, fn, args, kwargs)

    return accepts_partition_ranges(gate)


def _current_context() -> dg.OpExecutionContext | None:
    try:
        return dg.OpExecutionContext.get()
    except dg.DagsterInvariantViolationError:  # invoked directly, outside a run
        return None


def _ranged(context: dg.OpExecutionContext, fn, args: tuple, inputs: dict) -> Iterator:
    """One evaluation per partition, then the check's own (empty) output, which downstream steps wait on."""
    (check_key,) = context.selected_asset_check_keys
    for partition in context.partition_keys:
        # Ranged inputs arrive as {partition: record} (resources/records.py); resources pass through.
        own = {name: value[partition] if isinstance(value, dict) else value for name, value in inputs.items()}
        result: dg.AssetCheckResult = fn(*args, **own)
        yield dg.AssetCheckEvaluation(
            asset_key=check_key.asset_key,
            check_name=check_key.name,
            passed=result.passed,
            metadata=result.metadata,
            target_materialization_data=_latest_materialization(context, check_key.asset_key, partition),
            severity=result.severity,
            description=result.description,
            blocking=True,
            partition=partition,
        )
    yield dg.Output(None, output_name=context.op_def.output_defs[0].name)


def _latest_materialization(context, asset_key: dg.AssetKey, partition: str):
    """What `AssetCheckResult` points a single-partition evaluation at, for one partition of the range."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=1
    ).records
    return check_evaluation_target(records[0]) if records else None
