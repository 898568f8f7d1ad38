"""The small-table engine of checks/expectations.py reports what great-expectations reports.

Gates on one-row-per-photo tables skip GX's ~1.5 s import and context (checks/expectations.py); these tables
run through both engines and every outcome (expectation, column, verdict, failing rows, counts) must match.
"""

import math

import pandas as pd
import pytest

from avatar_assets.checks import expectations
from avatar_assets.checks.identity import PHOTO_EXPECTATIONS, photo_frame
from avatar_assets.contracts import MediaRef, PhotoRow, ValidatedInputsRecord

EXTRA = [
    ("ExpectColumnValuesToBeBetween", {"column": "x", "min_value": 0.0, "max_value": 1.0}),
    ("ExpectColumnValuesToBeBetween", {"column": "x", "max_value": 0.5}),
    ("ExpectColumnValuesToBeBetween", {"column": "x", "min_value": 0.5}),
    ("ExpectColumnValuesToBeInSet", {"column": "n", "value_set": [1, 2]}),
    ("ExpectColumnValuesToBeNull", {"column": "problem"}),
]


def _tables():
    good = PhotoRow(path="a.jpg", usable=True, problem=None, face_count=1, face_box=(10, 10, 200, 220), face_fraction=0.3,
                    sharpness=80.0, exposure=0.5)
    two_faces = good.model_copy(update={"path": "b.jpg", "face_count": 2})
    blurred = good.model_copy(update={"path": "c.jpg", "sharpness": 1.0, "exposure": 0.02, "face_fraction": 0.9})
    broken = PhotoRow(path="d.jpg", usable=False, problem="cannot decode")
    record = ValidatedInputsRecord(avatar_id="a", rows=[good, two_faces, blurred, broken], table=MediaRef(key="media/00/" + "0" * 64 + ".csv", sha256="0" * 64, size=1, media_type="text/csv"),
                                  
                                   best_photo="a.jpg", consent_scopes=["likeness"])
    yield "photos", photo_frame(record), PHOTO_EXPECTATIONS
    yield "photos", photo_frame(record.model_copy(update={"rows": [good]})), PHOTO_EXPECTATIONS
    yield "photos", photo_frame(record.model_copy(update={"rows": [broken]})), PHOTO_EXPECTATIONS
    frame = pd.DataFrame({
        "x": [0.0, 0.5, 1.0, 1.5, -0.1, float("nan"), None],
        "n": [1, 2, 3, None, 1, 2, 0],
        "problem": [None, "bad", None, float("nan"), None, None, ""],
    })
    yield "mixed", frame, EXTRA


@pytest.mark.parametrize("index", range(4))
def test_the_direct_engine_reports_what_great_expectations_reports(index):
    name, frame, suite = list(_tables())[index]
    direct = expectations.validate_directly(frame, suite)
    gx = expectations.validate_with_gx(frame, name, suite)
    assert len(direct) == len(gx) == len(suite)
    for mine, theirs in zip(direct, gx, strict=True):
        assert (mine.expectation, mine.column, mine.success, mine.failing_rows) == (
            theirs.expectation, theirs.column, theirs.success, theirs.failing_rows)
        assert mine.observed["element_count"] == theirs.observed["element_count"]
        assert mine.observed["unexpected_count"] == theirs.observed["unexpected_count"]
        assert math.isclose(mine.observed["unexpected_percent"], theirs.observed["unexpected_percent"] or 0.0)


def test_small_tables_skip_gx_and_anything_else_goes_through_it(monkeypatch):
    calls = []
    monkeypatch.setattr(expectations, "validate_with_gx", lambda *args: calls.append(args) or [])
    _, frame, suite = next(_tables())
    expectations.validate_table(frame, "photos", suite)
    assert calls == []
    big = pd.concat([frame] * (expectations.SMALL_TABLE_ROWS // len(frame) + 1), ignore_index=True)
    expectations.validate_table(big, "photos", suite)
    expectations.validate_table(frame, "photos", [("ExpectColumnValuesToBeUnique", {"column": "path"})])
    expectations.validate_table(frame, "photos", [("ExpectColumnValuesToBeBetween", {"column": "sharpness",
                                                                                       "min_value": 1, "mostly": 0.5})])
    assert len(calls) == 3
