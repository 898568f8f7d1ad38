"""Tabular expectations through great-expectations, imported lazily (its import costs ~3 s)."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: pandas is not imported at definitions load
    import pandas as pd


@dataclass(frozen=True)
class ExpectationOutcome:
    expectation: str
    column: str
    success: bool
    failing_rows: list[int]
    observed: dict[str, Any]


@functools.cache
def _context():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def validate_table(frame: pd.DataFrame, name: str, expectations: list[tuple[str, dict]]) -> list[ExpectationOutcome]:
    """Run expectations (class name, kwargs) over the frame; report failing row indexes per expectation."""
    import great_expectations as gx

    context = _context()
    source = context.data_sources.add_or_update_pandas(f"{name}-source")
    asset = source.add_dataframe_asset(name=f"{name}-{id(frame)}")
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": frame})
    suite = gx.ExpectationSuite(name=name)
    for class_name, kwargs in expectations:
        suite.add_expectation(getattr(gx.expectations, class_name)(**kwargs))
    result = batch.validate(suite, result_format="COMPLETE")
    outcomes = []
    for item in result.results:
        details = item.result or {}
        outcomes.append(
            ExpectationOutcome(
                expectation=item.expectation_config.type,
                column=item.expectation_config.kwargs.get("column", ""),
                success=bool(item.success),
                failing_rows=[int(i) for i in details.get("unexpected_index_list") or []],
                observed={
                    key: details[key]
                    for key in ("element_count", "unexpected_count", "unexpected_percent")
                    if key in details
                },
            )
        )
    return outcomes
