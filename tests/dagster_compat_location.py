"""A small code location for tests/test_dagster_compat.py, in the shapes the avatar graph uses: a dynamically
partitioned asset that runs in batches (ranged runs), its blocking partitioned gate (`partitioned_gate`),
an asset that waits on the gate, and a sensor that requests a run under a run key.

The gate fails partitions named `bad-…`, which gives the tests failed runs to re-execute.
"""

import warnings

import dagster as dg

from avatar_assets.checks.gates import partitioned_gate

things = dg.DynamicPartitionsDefinition(name="things")
SENSOR_PARTITION = "sensed"
SENSOR_RUN_KEY = "compat:sensed"


class _Discard(dg.ConfigurableIOManager):
    """Nothing is stored; an input is its partition key ({key: key} for a batch)."""

    def handle_output(self, context, obj) -> None:
        pass

    def load_input(self, context):
        keys = context.asset_partition_keys
        return {key: key for key in keys} if len(keys) > 1 else keys[0]


with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)  # backfill policies and eager automation

    @dg.asset(partitions_def=things, io_manager_key="discard", backfill_policy=dg.BackfillPolicy.multi_run(4))
    def image(context: dg.AssetExecutionContext) -> None:
        context.log.info(f"made {context.partition_keys}")

    @dg.asset(partitions_def=things, io_manager_key="discard", deps=[image],
              automation_condition=dg.AutomationCondition.eager())
    def downstream() -> None:
        return None


@partitioned_gate(image, "fails partitions named bad-…", things)
def gate(image: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=not image.startswith("bad-"), description=f"judged {image}")


@dg.sensor(asset_selection=[image], default_status=dg.DefaultSensorStatus.RUNNING)
def tagger(context: dg.SensorEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(run_key=SENSOR_RUN_KEY, partition_key=SENSOR_PARTITION)


defs = dg.Definitions(
    assets=[image, downstream],
    asset_checks=[gate],
    sensors=[tagger],
    resources={"discard": _Discard()},
    executor=dg.in_process_executor,
)
