"""Every stage reports started / completed / failed (and progress) into the outbox, keyed by partition."""

import functools
import warnings

import dagster as dg

from avatar_assets import events
from avatar_assets.contracts import Record

PROVIDER_RETRIES = dg.RetryPolicy(max_retries=2, delay=1, backoff=dg.Backoff.EXPONENTIAL)
"""Transient provider failures retry with backoff; input problems raise Failure(allow_retries=False)."""


def recorded(record: Record, metadata: dict) -> dg.Output:
    """Every output carries its record's content hash as the data version (drives staleness)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.Output(record, data_version=dg.DataVersion(record.content_hash()), metadata=metadata)


def partition_of(context) -> tuple[str, str | None]:
    key = context.partition_key
    if isinstance(key, dg.MultiPartitionKey):
        return key.keys_by_dimension["avatar"], key.keys_by_dimension["output"]
    return str(key), None


def _store():
    from resources.wiring import media_store

    return media_store()


def emit_for(context, type: events.EventType, **detail) -> None:
    avatar_id, output = partition_of(context)
    events.emit(
        _store(), type, avatar_id=avatar_id, output=output, asset=context.asset_key.to_user_string(),
        run_id=context.run_id, **detail,
    )


def emits_lifecycle(fn):
    """Wrap an asset's compute function; Dagster still sees the original signature."""

    @functools.wraps(fn)
    def wrapper(context, *args, **kwargs):
        emit_for(context, "started", retry_number=context.retry_number)
        try:
            result = fn(context, *args, **kwargs)
        except Exception as error:
            emit_for(context, "failed", error=str(error)[:2000], retry_number=context.retry_number)
            raise
        emit_for(context, "completed", data_version=getattr(result, "data_version", None) and result.data_version.value)
        return result

    return wrapper


def progress(context, what: str):
    """A progress callback for long media loops: logs and emits at most every 10 %."""

    def report(done: int, total: int) -> None:
        context.log.info(f"{what}: {done}/{total} frames")
        emit_for(context, "progress", what=what, done=done, total=total)

    return report


SEED_TAG = "avatar/seed"


def seed_override(context, default: int) -> int:
    """Regeneration with a new seed (CLI --seed, a rejection) passes it as a run tag; seeds stay explicit."""
    value = context.run.tags.get(SEED_TAG)
    return int(value) if value is not None else default
