"""The decorator every QA gate uses: a blocking, partitioned asset check."""

import warnings

import dagster as dg


def partitioned_gate(asset, description: str, partitions_def: dg.PartitionsDefinition, **check_kwargs):
    """Partitioned checks are a 1.13 preview feature; the design relies on them, so the notice is muted."""

    def decorate(fn):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dg.PreviewWarning)
            return dg.asset_check(
                asset=asset, blocking=True, partitions_def=partitions_def, description=description, **check_kwargs
            )(fn)

    return decorate
