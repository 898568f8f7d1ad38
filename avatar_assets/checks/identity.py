"""Identity QA gates. ERROR blocks everything downstream of that avatar; WARN asks for review."""


from typing import TYPE_CHECKING

import dagster as dg

from avatar_assets.checks.expectations import validate_table
from avatar_assets.checks.gates import partitioned_gate
from avatar_assets.contracts import NeutralImageRecord, ValidatedInputsRecord, VoiceProfileRecord
from avatar_assets.identity import rules
from avatar_assets.identity.assets import neutral_image, validated_inputs, voice_profile
from partitions import avatars

if TYPE_CHECKING:  # pandas is imported where a frame is built, not at definitions load
    import pandas as pd

SEVERITY = dg.AssetCheckSeverity


def avatar_gate(asset, description: str):
    return partitioned_gate(asset, description, avatars)


PHOTO_EXPECTATIONS = [
    ("ExpectColumnValuesToBeNull", {"column": "problem_on_decode"}),
    ("ExpectColumnValuesToBeInSet", {"column": "face_count", "value_set": [1]}),
    ("ExpectColumnValuesToBeBetween", {"column": "face_side_px", "min_value": rules.MIN_FACE_PIXELS}),
    (
        "ExpectColumnValuesToBeBetween",
        {"column": "face_fraction", "min_value": rules.FACE_FRACTION[0], "max_value": rules.FACE_FRACTION[1]},
    ),
    ("ExpectColumnValuesToBeBetween", {"column": "sharpness", "min_value": rules.MIN_SHARPNESS}),
    ("ExpectColumnValuesToBeBetween", {"column": "exposure", "min_value": rules.EXPOSURE[0], "max_value": rules.EXPOSURE[1]}),
]


def photo_frame(record: ValidatedInputsRecord) -> "pd.DataFrame":
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "path": row.path,
                "problem_on_decode": row.problem if row.face_count is None else None,
                "face_count": row.face_count if row.face_count is not None else -1,
                "face_side_px": min(row.face_box[2:]) if row.face_box else 0,
                "face_fraction": row.face_fraction if row.face_fraction is not None else 0.0,
                "sharpness": row.sharpness if row.sharpness is not None else 0.0,
                "exposure": row.exposure if row.exposure is not None else 0.0,
            }
            for row in record.rows
        ]
    )


@avatar_gate(validated_inputs, "Great-expectations suite over the per-photo table; likeness consent present.")
def usable_photo_and_consent(validated_inputs: ValidatedInputsRecord) -> dg.AssetCheckResult:
    frame = photo_frame(validated_inputs)
    outcomes = validate_table(frame, "photos", PHOTO_EXPECTATIONS)
    failing = set().union(*(o.failing_rows for o in outcomes)) if outcomes else set()
    passing = [path for index, path in enumerate(frame["path"]) if index not in failing]
    reasons = [f"{row.path}: {row.problem}" for row in validated_inputs.rows if row.problem]
    has_likeness = "likeness" in validated_inputs.consent_scopes
    if not passing:
        reasons.insert(0, "no photo with exactly one usable face")
    if not has_likeness:
        reasons.insert(0, "consent does not include the 'likeness' scope")
    return dg.AssetCheckResult(
        passed=bool(passing) and has_likeness,
        severity=SEVERITY.ERROR,
        description="; ".join(reasons) if reasons else f"{len(passing)} usable photo(s)",
        metadata={
            "usable_photos": len(passing),
            "photos": len(frame),
            "likeness_consent": has_likeness,
            "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in reasons) or "none"),
            "expectations": dg.MetadataValue.md(
                "\n".join(
                    f"- `{o.expectation}` on `{o.column}`: {'pass' if o.success else 'fail'} "
                    f"(failing rows {o.failing_rows})"
                    for o in outcomes
                )
            ),
        },
    )


@avatar_gate(neutral_image, "Exactly one face, centred within 10 % of the frame, eye line level within 3 degrees.")
def neutral_face_geometry(neutral_image: NeutralImageRecord) -> dg.AssetCheckResult:
    problems = []
    if neutral_image.face_count != 1:
        problems.append(f"{neutral_image.face_count} faces in the neutral image (exactly one needed)")
    offset = neutral_image.centre_offset
    if offset is None or offset > rules.MAX_CENTRE_OFFSET:
        problems.append(f"face centre off by {offset if offset is not None else 'unknown'} of the frame (max {rules.MAX_CENTRE_OFFSET})")
    angle = neutral_image.eye_angle_deg
    if angle is not None and abs(angle) > rules.MAX_EYE_ANGLE_DEG:
        problems.append(f"eye line tilted {angle:.1f} degrees (max {rules.MAX_EYE_ANGLE_DEG})")
    return dg.AssetCheckResult(
        passed=not problems,
        severity=SEVERITY.ERROR,
        description="; ".join(problems) or "one centred, level face",
        metadata={
            "face_count": neutral_image.face_count,
            "centre_offset": offset if offset is not None else -1.0,
            "eye_angle_deg": angle if angle is not None else float("nan"),
            "eyes_found": angle is not None,
        },
    )


@avatar_gate(voice_profile, "8-300 s of speech, SNR >= 15 dB, clipping <= 0.1 %, 'voice' consent scope present.")
def voice_sample_quality(voice_profile: VoiceProfileRecord) -> dg.AssetCheckResult:
    if voice_profile.sample is None:
        return dg.AssetCheckResult(
            passed=False,
            severity=SEVERITY.WARN,
            description="no voice sample uploaded: videos will use the default synthetic voice",
            metadata={"voice_sample": False},
        )
    problems = [voice_profile.problem] if voice_profile.problem else []
    metrics = voice_profile.metrics
    if metrics is not None:
        problems += rules.voice_problems(metrics)
    if "voice" not in voice_profile.consent.scopes:
        problems.insert(0, "consent does not include the 'voice' scope")
    numbers = metrics.model_dump() if metrics else {}
    return dg.AssetCheckResult(
        passed=not problems,
        severity=SEVERITY.ERROR,
        description="; ".join(problems) or "voice sample is usable",
        metadata={
            "voice_consent": "voice" in voice_profile.consent.scopes,
            **{k: float(v) if v is not None else float("nan") for k, v in numbers.items()},
        },
    )


IDENTITY_CHECKS = [usable_photo_and_consent, neutral_face_geometry, voice_sample_quality]
