"""Every stage reports started / completed / failed (and progress) into the outbox, keyed by partition."""

import functools
import inspect
import typing
import warnings

import dagster as dg

from avatar_assets.contracts import Record
from avatar_assets.pipeline import events
from partitions import split_cell

PROVIDER_RETRIES = dg.RetryPolicy(max_retries=2, delay=1, backoff=dg.Backoff.EXPONENTIAL)
"""Transient provider failures retry with backoff; input problems raise Failure(allow_retries=False)."""


def recorded(record: Record, metadata: dict) -> dg.Output:
    """Every output carries its record's content hash as the data version (drives staleness)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.Output(record, data_version=dg.DataVersion(record.content_hash()), metadata=metadata)


def partition_keys(context) -> list[str]:
    """The avatars of this step: one, or several in a ranged run (`BackfillPolicy.multi_run`)."""
    return list(context.partition_keys) if context.has_partition_key_range else [str(context.partition_key)]


def per_partition(value, keys: list[str]) -> dict:
    """An input as {partition: record}: the record IO manager hands ranged inputs over as such a dict."""
    return value if isinstance(value, dict) else {keys[0]: value}


def recorded_partitions(context, records: dict[str, Record], metadata: dict[str, dict]) -> dg.Output:
    """`recorded` for one or many partitions. A ranged output is one Output for all its partitions, so
    each partition's metadata goes on its own materialization event, and Dagster derives the (shared)
    data version from the code version and the inputs' versions instead of the content hash."""
    if len(records) == 1:
        (key, record), = records.items()
        return recorded(record, metadata[key])
    for key, entries in metadata.items():
        context.add_asset_metadata({**entries, "batch_partitions": len(records)}, partition_key=key)
    return dg.Output(records)


def accepts_partition_ranges(wrapper):
    """Dagster type-checks inputs and outputs by annotation, and in a ranged run a record input or
    output is a {partition: record} dict: show Dagster the signature without the record annotations.
    Context and resource parameters keep theirs (Dagster finds resources by annotation)."""
    original = inspect.unwrap(wrapper)
    hints = typing.get_type_hints(original)
    kept = (dg.ConfigurableResource, dg.AssetExecutionContext, dg.OpExecutionContext, dg.AssetCheckExecutionContext)

    def keep(name: str) -> bool:
        hint = hints.get(name)
        return isinstance(hint, type) and issubclass(hint, kept)

    signature = inspect.signature(original)
    wrapper.__signature__ = signature.replace(
        parameters=[
            param.replace(annotation=hints[name] if keep(name) else inspect.Parameter.empty)
            for name, param in signature.parameters.items()
        ],
        return_annotation=inspect.Signature.empty,
    )
    return wrapper


def _partitions(context) -> list[tuple[str, str | None]]:
    """(avatar, output) of each partition of the step."""
    return [split_cell(key) for key in partition_keys(context)]


def emit_for(context, type: events.EventType, *, versions: dict[str, str] | None = None, **detail) -> None:
    """One event per partition of the step; `versions` gives each partition its own data version."""
    store = context.resources.store
    for avatar_id, output in _partitions(context):
        extra = {"data_version": versions.get(avatar_id)} if versions is not None else {}
        events.emit(
            store, type, avatar_id=avatar_id, output=output, asset=context.asset_key.to_user_string(),
            run_id=context.run.run_id, **detail, **extra,
        )


def _versions(context, result) -> dict[str, str | None]:
    """Each partition's data version for its 'completed' event: its record's content hash."""
    value = getattr(result, "value", None)
    if isinstance(value, dict):  # a ranged output: {avatar: record}
        return {key: record.content_hash() for key, record in value.items()}
    version = getattr(result, "data_version", None)
    return {avatar_id: version and version.value for avatar_id, _ in _partitions(context)}


def emits_lifecycle(fn):
    """Wrap an asset's compute function; Dagster still sees the original signature, which must take
    `store`: the events go to the store's outbox, and Dagster gives a step only the resources it declares."""
    if "store" not in inspect.signature(fn).parameters:
        raise TypeError(f"{fn.__name__} must take `store: MediaStore`: its lifecycle events are written there")

    @functools.wraps(fn)
    def wrapper(context, *args, **kwargs):
        emit_for(context, "started", retry_number=context.retry_number)
        try:
            result = fn(context, *args, **kwargs)
        except Exception as error:
            emit_for(context, "failed", error=str(error)[:2000], retry_number=context.retry_number)
            raise
        emit_for(context, "completed", versions=_versions(context, result))
        return result

    return wrapper


def progress(context, what: str, unit: str = "frames"):
    """A progress callback for long media loops: logs and emits at most every 10 %."""

    def report(done: int, total: int) -> None:
        context.log.info(f"{what}: {done}/{total} {unit}")
        emit_for(context, "progress", what=what, done=done, total=total)

    return report


SEED_TAG = "avatar/seed"


def seed_override(context, default: int) -> int:
    """Regeneration with a new seed (CLI --seed, a rejection) passes it as a run tag; seeds stay explicit."""
    value = context.run.tags.get(SEED_TAG)
    return int(value) if value is not None else default
