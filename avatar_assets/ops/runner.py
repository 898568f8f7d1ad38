"""One synchronous pass of what the daemon does, for headless use and CI (`avatarops process`).

Evaluate the project's sensors once, register partitions, execute the requested runs in-process
against the persistent instance, evaluate automation once and execute what it asks for, and repeat
until nothing is left. Run keys are honoured exactly as the sensor daemon honours them.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import dagster as dg

from avatar_assets import settings
from avatar_assets.dagster_compat import (
    RUN_KEY_TAG,
    SENSOR_NAME_TAG,
    AutomationCursor,
    automation_cursor_from_json,
    automation_cursor_to_json,
    partition_range_tags,
)
from avatar_assets.identity import intake
from avatar_assets.ops import run_health
from avatar_assets.pipeline import quarantine
from resources.wiring import store_of

MAX_ROUNDS = 20


@dataclass
class RunOutcome:
    run_id: str
    origin: str
    job: str
    partition: str
    success: bool
    failed_checks: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class ProcessReport:
    runs: list[RunOutcome] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    quarantined: list[dict] = field(default_factory=list)
    crashed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.quarantined and all(run.success and not run.failed_checks for run in self.runs)

    def as_dict(self) -> dict:
        return {"ok": self.ok, "runs": [asdict(r) for r in self.runs], "skipped": self.skipped,
                "quarantined": self.quarantined, "crashed": self.crashed}


def quarantine_entries(defs: dg.Definitions) -> dict[str, list[str]]:
    """Every quarantine entry, the home's and an object store's, with its problems, by where it is."""
    with store_of(defs) as store:
        listed = [*quarantine.entries(), *quarantine.stored_entries(store)]
    return {str(where): entry["problems"] for where, entry in listed}


class CliState:
    """Sensor and automation cursors of the CLI's passes, kept beside the instance."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {}

    def sensor_cursor(self, name: str) -> str | None:
        return self.data.get("sensors", {}).get(name)

    def set_sensor_cursor(self, name: str, cursor: str | None) -> None:
        self.data.setdefault("sensors", {})[name] = cursor

    @property
    def automation_cursor(self) -> AutomationCursor | None:
        return automation_cursor_from_json(self.data.get("automation"))

    @automation_cursor.setter
    def automation_cursor(self, cursor: AutomationCursor) -> None:
        self.data["automation"] = automation_cursor_to_json(cursor)

    def save(self) -> None:
        from avatar_assets.media.partial import atomic_write_text

        atomic_write_text(self.path, json.dumps(self.data))

    @classmethod
    def of_home(cls) -> "CliState":
        """The state of the current home's instance (where `process` keeps it)."""
        return cls(settings.dagster_home() / "avatarops_state.json")


def check_failures(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    failures = []
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ).records
    for record in records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        if not evaluation.passed:
            severity = evaluation.severity.value
            failures.append(
                f"{evaluation.asset_key.to_user_string()}[{evaluation.partition or ''}] "
                f"{evaluation.check_name} ({severity}): {evaluation.description or 'failed'}"
            )
    return failures


def run_failure(instance: dg.DagsterInstance, run_id: str) -> tuple[str | None, str | None]:
    """The step that failed first and its error (a user-code error's cause, not Dagster's wrapper)."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE, limit=1).records
    if not records:
        return None, None
    event = records[0].event_log_entry.dagster_event
    error = event.step_failure_data.error
    while error is not None and error.cause is not None:
        error = error.cause
    return event.step_key, error.message.strip() if error else "failed"


def _run_error(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> str | None:
    if result.success:
        return None
    step, error = run_failure(instance, result.run_id)
    return f"{step}: {error}" if step else "run failed"


def execute(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    *,
    job_name: str | None,
    asset_keys: list[dg.AssetKey] | None,
    partition_key: str | None,
    tags: dict[str, str],
    origin: str,
    partition_range: list[str] | None = None,
) -> RunOutcome:
    """One run in this process. `partition_range` (consecutive partitions) makes it a ranged run."""
    if job_name:
        job = defs.resolve_job_def(job_name)
    else:
        job = defs.resolve_implicit_job_def_def_for_assets(asset_keys)
    if partition_range:
        tags = {**tags, **partition_range_tags(partition_range[0], partition_range[-1])}
    with partitions_remembered(instance):
        result = job.execute_in_process(
            instance=instance,
            run_config={"loggers": {"console": {"config": {"log_level": settings.console_log_level()}}}},
            partition_key=partition_key,
            asset_selection=asset_keys,
            tags={**tags, **run_health.this_process_tags()},
            raise_on_error=False,
        )
    run_health.remove_scratch(result.run_id)
    failed = [f for f in check_failures(instance, result.run_id) if "(ERROR)" in f]
    return RunOutcome(
        run_id=result.run_id,
        origin=origin,
        job=job.name,
        partition=f"{partition_range[0]}...{partition_range[-1]}" if partition_range else str(partition_key),
        success=result.success,
        failed_checks=failed,
        error=_run_error(instance, result),
    )


def _already_launched(instance: dg.DagsterInstance, sensor: str, run_key: str) -> bool:
    return bool(
        instance.get_run_ids(dg.RunsFilter(tags={SENSOR_NAME_TAG: sensor, RUN_KEY_TAG: run_key}), limit=1)
    )


def sensor_context(
    defs: dg.Definitions, instance: dg.DagsterInstance, sensor: dg.SensorDefinition, cursor: str | None
) -> dg.SensorEvaluationContext:
    """A tick's context as the daemon builds it: the resources the sensor declares, from the definitions.
    Enter it: a resource with nested resources (the S3 store) is set up and torn down with the context."""
    return dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        definitions=defs,
        sensor_name=sensor.name,
        resources={key: defs.resources[key] for key in sensor.required_resource_keys},
    )


def run_sensors(defs: dg.Definitions, instance: dg.DagsterInstance, state: CliState, report: ProcessReport, echo) -> int:
    launched = 0
    for sensor in defs.get_repository_def().sensor_defs:
        if isinstance(sensor, dg.AutomationConditionSensorDefinition):
            continue
        with sensor_context(defs, instance, sensor, state.sensor_cursor(sensor.name)) as context:
            data = sensor(context)
        if not isinstance(data, dg.SensorResult):
            continue
        for request in data.dynamic_partitions_requests or []:
            if isinstance(request, dg.AddDynamicPartitionsRequest):
                instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
            else:
                for key in request.partition_keys:
                    instance.delete_dynamic_partition(request.partitions_def_name, key)
        for request in data.run_requests or []:
            if request.run_key and _already_launched(instance, sensor.name, request.run_key):
                report.skipped.append(f"{sensor.name}: run key {request.run_key} already launched")
                continue
            job_name = request.job_name or sensor.job_name
            echo(f"{sensor.name}: running {job_name} for {request.partition_key}")
            tags = {**request.tags, SENSOR_NAME_TAG: sensor.name}
            if request.run_key:
                tags[RUN_KEY_TAG] = request.run_key
            report.runs.append(
                execute(
                    defs,
                    instance,
                    job_name=job_name,
                    asset_keys=list(request.asset_selection) if request.asset_selection else None,
                    partition_key=request.partition_key,
                    tags=tags,
                    origin=sensor.name,
                )
            )
            launched += 1
        state.set_sensor_cursor(sensor.name, data.cursor if data.cursor is not None else state.sensor_cursor(sensor.name))
        state.save()
    return launched


@contextmanager
def _answering(instance: dg.DagsterInstance, method: str, replacement):
    """`instance.<method>` answered by `replacement` for a block; what it was before (a memo around this one,
    a test's wrapper) is put back after."""
    shadowed = vars(instance).get(method)
    setattr(instance, method, replacement)
    try:
        yield
    finally:
        if shadowed is None:
            delattr(instance, method)
        else:
            setattr(instance, method, shadowed)


@contextmanager
def dynamic_partitions_frozen(instance: dg.DagsterInstance):
    """Nothing adds partitions during one evaluation, yet dagster 1.13 looks them up hundreds of times
    per tick (measured: 1 605 calls for 5 avatars); answer from memory for the length of the tick."""
    lookup = instance.get_dynamic_partitions
    cache: dict[str, list[str]] = {}

    def cached(partitions_def_name: str) -> list[str]:
        if partitions_def_name not in cache:
            cache[partitions_def_name] = lookup(partitions_def_name)
        return cache[partitions_def_name]

    with _answering(instance, "get_dynamic_partitions", cached):
        yield


@contextmanager
def partitions_remembered(instance: dg.DagsterInstance):
    """A run's partitions exist for its length, yet dagster 1.13 asks the instance's storage again for
    every input and output context it builds (measured: 92 queries, about 0.3 s, per identity run);
    remember each partition found, in this thread only. A partition not found is asked again."""
    lookup = instance.has_dynamic_partition
    owner = threading.get_ident()
    found: set[tuple[str, str]] = set()

    def remembered(partitions_def_name: str, partition_key: str) -> bool:
        if threading.get_ident() != owner:
            return lookup(partitions_def_name, partition_key)
        key = (partitions_def_name, partition_key)
        if key not in found and lookup(*key):
            found.add(key)
        return key in found

    with _answering(instance, "has_dynamic_partition", remembered):
        yield


def run_automation(defs: dg.Definitions, instance: dg.DagsterInstance, state: CliState, report: ProcessReport, echo) -> int:
    with dynamic_partitions_frozen(instance):
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=state.automation_cursor)
    state.automation_cursor = result.cursor
    state.save()
    by_partition: dict[str | None, list[dg.AssetKey]] = defaultdict(list)
    for key in defs.resolve_asset_graph().get_all_asset_keys():
        for partition in result.get_requested_partitions(key):
            by_partition[partition].append(key)
    for partition, keys in sorted(by_partition.items(), key=lambda item: str(item[0])):
        echo(f"automation: refreshing {', '.join(k.to_user_string() for k in keys)} for {partition}")
        report.runs.append(
            execute(defs, instance, job_name=None, asset_keys=keys, partition_key=partition, tags={}, origin="automation")
        )
    return len(by_partition)


def batches(ordered: list[str], selected: set[str], size: int) -> list[list[str]]:
    """Runs of consecutive selected partitions, at most `size` each: a ranged run materializes every
    partition between its two ends, so a gap in the selection starts a new run."""
    found: list[list[str]] = []
    current: list[str] = []
    for key in ordered:
        if key not in selected or len(current) == size:
            if current:
                found.append(current)
            current = []
        if key in selected:
            current.append(key)
    if current:
        found.append(current)
    return found


def backfill_batches(defs: dg.Definitions, instance: dg.DagsterInstance, asset_keys: list[dg.AssetKey],
                     avatar_ids: list[str]) -> list[list[str]]:
    """How a backfill launched from the UI splits avatars into runs: the assets' backfill policy decides how
    many share a run (the model-backed images: `IMAGE_BATCH_PARTITIONS`), others run one avatar per run."""
    graph = defs.resolve_asset_graph()
    policies = {graph.get(key).backfill_policy for key in asset_keys}
    if len(policies) != 1:
        raise ValueError("assets with different backfill policies cannot share a run: backfill them separately")
    policy = policies.pop()
    size = 1 if policy is None else (policy.max_partitions_per_run or len(avatar_ids))
    return batches(instance.get_dynamic_partitions("avatars"), set(avatar_ids), size)


def backfill(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    asset_keys: list[dg.AssetKey],
    avatar_ids: list[str],
    *,
    tags: dict[str, str],
    echo=print,
) -> list[RunOutcome]:
    """What a backfill launched from the UI does, in this process."""
    names = ", ".join(key.to_user_string() for key in asset_keys)
    outcomes = []
    for batch in backfill_batches(defs, instance, asset_keys, avatar_ids):
        echo(f"backfill: {names} for {batch[0]}" + (f" ... {batch[-1]} ({len(batch)} avatars, one run)" if len(batch) > 1 else ""))
        outcomes.append(
            execute(
                defs, instance, job_name=None, asset_keys=asset_keys, tags=tags, origin="backfill",
                partition_key=batch[0] if len(batch) == 1 else None,
                partition_range=batch if len(batch) > 1 else None,
            )
        )
    return outcomes


def process(defs: dg.Definitions, instance: dg.DagsterInstance, echo=print) -> ProcessReport:
    state = CliState.of_home()
    report = ProcessReport(crashed=run_health.reap(instance).failed_runs)
    settle = settings.upload_settle_seconds()
    before = quarantine_entries(defs)
    for _ in range(MAX_ROUNDS):
        launched = run_sensors(defs, instance, state, report, echo)
        launched += run_automation(defs, instance, state, report, echo)
        if launched:
            continue
        settling = intake.settling_bundles(settings.inbox_dir() / "avatars", settle)
        if not settling:
            break
        echo(f"waiting {settle:.0f} s for {len(settling)} upload(s) to settle")
        time.sleep(settle)
    for where, problems in sorted(quarantine_entries(defs).items()):
        if where not in before:
            report.quarantined.append({"path": where, "problems": problems})
    return report
