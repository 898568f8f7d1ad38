"""Tabular expectations: great-expectations for tables, a direct evaluation for small ones.

Gates name their expectations as great-expectations classes with their kwargs. A table of at most
`SMALL_TABLE_ROWS` rows whose expectations are all in `DIRECT` (the per-photo table: one row per photo)
is evaluated here with GX's semantics (nulls skipped by the value expectations, bounds inclusive,
`mostly` = 1), because GX costs ~1.5 s of import and context per process and ~0.1 s per validation for
what is a handful of comparisons; tests/test_expectations.py checks that both engines report the same
outcomes. Anything larger or any other expectation goes through GX, imported lazily (~3 s).
"""

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


SMALL_TABLE_ROWS = 64


def _null(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _between(value, min_value=None, max_value=None) -> bool:
    return (min_value is None or value >= min_value) and (max_value is None or value <= max_value)


# What each expectation asks of a row's value; None: the row is not judged (GX skips nulls there).
DIRECT = {
    "ExpectColumnValuesToBeNull": lambda value, kwargs: _null(value),
    "ExpectColumnValuesToBeInSet": lambda value, kwargs: None if _null(value) else value in kwargs["value_set"],
    "ExpectColumnValuesToBeBetween": lambda value, kwargs: None if _null(value) else _between(
        value, kwargs.get("min_value"), kwargs.get("max_value")),
}
_DIRECT_KWARGS = {"column", "value_set", "min_value", "max_value"}


def validate_table(frame: pd.DataFrame, name: str, expectations: list[tuple[str, dict]]) -> list[ExpectationOutcome]:
    """Run expectations (class name, kwargs) over the frame; report failing row indexes per expectation."""
    if len(frame) <= SMALL_TABLE_ROWS and all(
        class_name in DIRECT and set(kwargs) <= _DIRECT_KWARGS for class_name, kwargs in expectations
    ):
        return validate_directly(frame, expectations)
    return validate_with_gx(frame, name, expectations)


def _snake(class_name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in class_name).lstrip("_")


def validate_directly(frame: pd.DataFrame, expectations: list[tuple[str, dict]]) -> list[ExpectationOutcome]:
    """The small-table engine: the same outcomes GX reports (type, failing rows, counts)."""
    outcomes = []
    for class_name, kwargs in expectations:
        judge = DIRECT[class_name]
        values = frame[kwargs["column"]].tolist()
        verdicts = [judge(value, kwargs) for value in values]
        judged = [v for v in verdicts if v is not None]
        failing = [int(index) for index, v in zip(frame.index, verdicts, strict=True) if v is not None and not v]
        outcomes.append(
            ExpectationOutcome(
                expectation=_snake(class_name),
                column=kwargs["column"],
                success=not failing,
                failing_rows=failing,
                observed={
                    "element_count": len(values),
                    "unexpected_count": len(failing),
                    "unexpected_percent": 100.0 * len(failing) / len(judged) if judged else 0.0,
                },
            )
        )
    return outcomes


def validate_with_gx(frame: pd.DataFrame, name: str, expectations: list[tuple[str, dict]]) -> list[ExpectationOutcome]:
    """Run expectations (class name, kwargs) over the frame through great-expectations."""
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
