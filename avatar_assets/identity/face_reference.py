"""The avatar's reference face: the chosen upload photo's face, its landmarks and identity embedding.

Identity gates compare every generated or rendered face with this one, never with an intermediate
image, so drift cannot accumulate; `identity_bundle` stores its embedding for the video gates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from avatar_assets.contracts import SourceUploadRecord, ValidatedInputsRecord
from resources.media_store import MediaStore


@dataclass(frozen=True, eq=False)
class ReferenceFace:
    rgb: np.ndarray
    box: tuple[int, int, int, int]
    landmarks: Any | None  # media.landmarks.FaceLandmarks; None when the landmark model is missing
    embedding: np.ndarray | None


def reference_face(
    store: MediaStore, source_upload: SourceUploadRecord, validated_inputs: ValidatedInputsRecord
) -> tuple[ReferenceFace | None, str | None]:
    """(the reference face, None) or (None, why there is none) for the chosen source photo."""
    from avatar_assets.media.faces import detect_faces
    from avatar_assets.media.images import decode_image
    from avatar_assets.media.landmarks import LandmarksUnavailable, face_embedding, find_landmarks

    photo = next((p for p in source_upload.photos if p.path == validated_inputs.best_photo), None)
    if photo is None or photo.upright is None:
        return None, f"source photo {validated_inputs.best_photo!r} is not available"
    rgb = decode_image(store.read(photo.upright))
    faces = detect_faces(rgb)
    if not faces:
        return None, f"no face found in the source photo {photo.path}"
    face = max(faces, key=lambda f: f.area)
    box = (face.x, face.y, face.w, face.h)
    try:
        landmarks = find_landmarks(rgb, box)
        embedding = face_embedding(rgb, landmarks)
    except LandmarksUnavailable:
        landmarks = embedding = None
    return ReferenceFace(rgb, box, landmarks, embedding), None
