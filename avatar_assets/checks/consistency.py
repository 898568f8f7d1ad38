"""Identity-consistency gates: the face is still there, and still the uploaded person's.

Blocking, partitioned, ERROR severity, on `neutral_image` and `character_sheet` (the rendered video is
judged per scene in `checks/video.py`). Every image is measured, whichever provider made it.

Measure: Haar face detection, dlib's 68 landmarks inside the face box, then the Euclidean distance of
dlib's 128-d face embedding to the embedding of the face in the **uploaded photo**
(`identity/face_reference.py`), so the sheet is never compared with an already drifted neutral image.
Threshold: `AVATAR_IDENTITY_MAX_DISTANCE`, default 0.6 (the library's same-person threshold; measured
here: a person's mirrored, rotated, re-lit and down-scaled photos 0.06-0.21, two different people
0.65-0.71). The LBPH texture similarity (`media/face_identity.py`) is reported beside it as a cheap
second opinion, and judges alone only when the landmark model is not installed. On the sheet, the
frontal variants are gated; three-quarter and profile views are listed as not judged.
"""

from __future__ import annotations

import json

import dagster as dg

from avatar_assets import settings
from avatar_assets.checks.gates import partitioned_gate
from avatar_assets.contracts import (
    CharacterSheetRecord,
    NeutralImageRecord,
    SourceUploadRecord,
    ValidatedInputsRecord,
)
from avatar_assets.identity.assets import character_sheet, neutral_image
from avatar_assets.identity.face_reference import ReferenceFace, reference_face
from partitions import avatars
from resources.media_store import MediaStore

GENERATIVE_PROVIDERS = ("diffusers",)
SOURCE_INS = {"source_upload": dg.AssetIn("source_upload"), "validated_inputs": dg.AssetIn("validated_inputs")}


def max_distance() -> float:
    from avatar_assets.media.landmarks import SAME_PERSON_MAX_DISTANCE

    return settings.decimal_number("AVATAR_IDENTITY_MAX_DISTANCE", SAME_PERSON_MAX_DISTANCE)


def min_similarity() -> float:
    from avatar_assets.media.face_identity import DEFAULT_MIN_SIMILARITY

    return settings.decimal_number("AVATAR_IDENTITY_MIN_SIMILARITY", DEFAULT_MIN_SIMILARITY)


def consistency_gate(asset, description: str):
    """A blocking partitioned gate that also reads the source photo."""
    return partitioned_gate(asset, description, avatars, additional_ins=SOURCE_INS)


def measure(rgb, reference: ReferenceFace, expected_box=None, landmarks=None, detected=None) -> dict:
    """Face count, the judged face's box, its embedding distance and LBPH similarity to the reference.

    `landmarks` (a FaceLandmarks already measured on `rgb`) saves fitting them again; `detected`
    ((face count, largest face's box), from `judged_faces` on these pixels) saves detecting them again.
    """
    from avatar_assets.media.face_identity import identity_similarity
    from avatar_assets.media.landmarks import face_distance, face_embedding, find_landmarks

    count, box = detected if detected is not None else _detected(rgb, expected_box)
    if not count:
        return {"face_count": 0, "face_box": None, "face_distance": None, "lbph_similarity": None}
    distance = None
    if reference.embedding is not None:
        points = landmarks if landmarks is not None else find_landmarks(rgb, box)
        distance = face_distance(face_embedding(rgb, points), reference.embedding)
    return {
        "face_count": count,
        "face_box": box,
        "face_distance": distance,
        "lbph_similarity": identity_similarity(rgb, box, reference.rgb, reference.box),
    }


def _detected(rgb, expected_box=None) -> tuple[int, tuple[int, int, int, int] | None]:
    """(face count, the judged face's box): the face nearest `expected_box`, else the largest."""
    from avatar_assets.media.faces import judged_faces

    faces = judged_faces(rgb)
    if not faces:
        return 0, None
    if expected_box is not None:
        ex, ey = expected_box[0] + expected_box[2] / 2, expected_box[1] + expected_box[3] / 2
        face = min(faces, key=lambda f: (f.centre[0] - ex) ** 2 + (f.centre[1] - ey) ** 2)
    else:
        face = faces[0]  # largest first
    return len(faces), (face.x, face.y, face.w, face.h)


def judge(name: str, measured: dict) -> str | None:
    """Why the face in `name` is not the reference person, in words; None when it is."""
    if measured["face_count"] == 0:
        return f"{name}: no face found (identity cannot be checked)"
    distance = measured["face_distance"]
    if distance is not None:
        limit = max_distance()
        return None if distance <= limit else f"{name}: face distance {distance:.3f} to the uploaded face is above {limit:.2f}: another person"
    similarity, limit = measured["lbph_similarity"], min_similarity()
    return None if similarity >= limit else f"{name}: LBPH similarity {similarity:.3f} below {limit:.2f} (landmark model missing)"


def _generated(provider) -> bool:
    return provider.provider in GENERATIVE_PROVIDERS


def _provider_metadata(provider) -> dict:
    return {
        "generated": _generated(provider), "provider": provider.provider, "model_id": provider.model_id,
        "fallback_from": provider.fallback_from or "none", "seed": provider.seed or 0, "max_face_distance": max_distance(),
    }


def _made_by(provider) -> str:
    via = f", fallback from {provider.fallback_from}" if provider.fallback_from else ""
    return f"; made by the {provider.provider} provider{via}"


def _no_reference(problem: str, provider) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=False, severity=dg.AssetCheckSeverity.ERROR, description=problem, metadata=_provider_metadata(provider)
    )


def _number(value) -> float:
    return float(value) if value is not None else float("nan")


@consistency_gate(
    neutral_image,
    "The neutral image shows the uploaded person: dlib face-embedding distance to the uploaded photo's face at most "
    "AVATAR_IDENTITY_MAX_DISTANCE (default 0.6).",
)
def neutral_identity_consistency(
    store: MediaStore,
    neutral_image: NeutralImageRecord,
    source_upload: SourceUploadRecord,
    validated_inputs: ValidatedInputsRecord,
) -> dg.AssetCheckResult:
    from avatar_assets.media.images import decode_image
    from avatar_assets.media.landmarks import FaceLandmarks

    reference, problem = reference_face(store, source_upload, validated_inputs)
    if reference is None:
        return _no_reference(problem, neutral_image.provider)
    points = FaceLandmarks.from_list(neutral_image.landmarks) if neutral_image.landmarks else None
    measured = measure(decode_image(store.read(neutral_image.image)), reference, neutral_image.face_box, points)
    if measured["face_count"] == 0:
        kind = "generated neutral image: the model lost the face" if _generated(neutral_image.provider) else "neutral image"
        failure = f"no face found in the {kind} (identity cannot be checked)"
    else:
        failure = judge("neutral image", measured)
    return dg.AssetCheckResult(
        passed=failure is None,
        severity=dg.AssetCheckSeverity.ERROR,
        description=failure or f"same person as the upload (face distance {_number(measured['face_distance']):.3f})"
        + _made_by(neutral_image.provider),
        metadata={
            **_provider_metadata(neutral_image.provider),
            "face_count": measured["face_count"],
            "face_distance": _number(measured["face_distance"]),
            "lbph_similarity": _number(measured["lbph_similarity"]),
        },
    )


def _recorded_detection(geometry: dict, name: str) -> tuple[int, tuple[int, int, int, int] | None] | None:
    """The sheet's own `judged_faces` result for a variant, as (count, largest box): the same detection
    on the same pixels (the stored PNG is lossless), so the gate does not run it twice. None when the
    sheet did not record it (then the gate detects)."""
    found = geometry.get("variants", {}).get(name)
    if not isinstance(found, dict) or "face_count" not in found:
        return None
    box = found.get("face_box")
    return found["face_count"], None if box is None else (box["x"], box["y"], box["w"], box["h"])


@consistency_gate(
    character_sheet,
    "Every frontal variant of the character sheet (front, smiling, neutral lighting) shows the uploaded person "
    "(face-embedding distance within the threshold); turned variants are not judged.",
)
def sheet_identity_consistency(
    store: MediaStore,
    character_sheet: CharacterSheetRecord,
    source_upload: SourceUploadRecord,
    validated_inputs: ValidatedInputsRecord,
) -> dg.AssetCheckResult:
    from avatar_assets.media.images import decode_image
    from avatar_assets.styles import FRONTAL_VARIANTS

    reference, problem = reference_face(store, source_upload, validated_inputs)
    if reference is None:
        return _no_reference(problem, character_sheet.provider)
    geometry = json.loads(store.read(character_sheet.geometry))
    measured_names = geometry.get("generated") or list(character_sheet.variants)
    gated = [name for name in geometry.get("frontal", FRONTAL_VARIANTS) if name in measured_names]
    problems, rows, distances = [], [], []
    if not gated:
        problems.append("the sheet has none of the frontal variants the gate judges")
    for name in measured_names:
        if name not in gated:  # a frontal detector and embedding cannot judge a turned head
            rows.append(f"| {name} | not judged | - | - | - |")
            continue
        measured = measure(
            decode_image(store.read(character_sheet.variants[name])), reference,
            detected=_recorded_detection(geometry, name),
        )
        failure = f"{name}: no face found" if measured["face_count"] == 0 else judge(name, measured)
        if failure:
            problems.append(failure)
        if measured["face_distance"] is not None:
            distances.append(measured["face_distance"])
        shown = "no face" if measured["face_count"] == 0 else f"{_number(measured['face_distance']):.3f}"
        rows.append(f"| {name} | gated | {measured['face_count']} | {shown} | {_number(measured['lbph_similarity']):.3f} |")
    return dg.AssetCheckResult(
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(problems) or f"{len(gated)} frontal variant(s) show the uploaded person"
        + _made_by(character_sheet.provider),
        metadata={
            **_provider_metadata(character_sheet.provider),
            "variants_gated": len(gated),
            "failures": len(problems),
            "face_distance": max(distances) if distances else float("nan"),
            "variants": dg.MetadataValue.md(
                "| variant | role | faces | face distance | LBPH |\n|---|---|---|---|---|\n" + "\n".join(rows)
            ),
        },
    )


CONSISTENCY_CHECKS = [neutral_identity_consistency, sheet_identity_consistency]
