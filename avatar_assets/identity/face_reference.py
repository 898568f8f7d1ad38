"""The avatar's reference face: the chosen upload photo's face, its landmarks and identity embedding.

Identity gates compare every generated or rendered face with this one, never with an intermediate
image, so drift cannot accumulate; `identity_bundle` stores its embedding for the video gates.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
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
    from avatar_assets.media.images import decode_image

    photo = next((p for p in source_upload.photos if p.path == validated_inputs.best_photo), None)
    if photo is None or photo.upright is None:
        return None, f"source photo {validated_inputs.best_photo!r} is not available"
    # Three steps of an avatar's run ask for this face (both identity gates and identity_bundle): it is measured
    # once per process, keyed by the upright photo's content hash (its blob is content-addressed, so the hash
    # names the bytes the measurement saw).
    key = photo.upright.sha256
    with _LOCK:
        found = _MEASURED.get(key, _MISSING)
        if found is not _MISSING:
            _MEASURED.move_to_end(key)
    if found is _MISSING:
        row = next((r for r in validated_inputs.rows if r.path == photo.path), None)
        found = _measure(decode_image(store.read(photo.upright)), row.face_box if row else None)
        with _LOCK:
            _MEASURED[key] = found
            while len(_MEASURED) > _KEEP:
                _MEASURED.popitem(last=False)
    if found is None:
        return None, f"no face found in the source photo {photo.path}"
    return found, None


_KEEP = 8  # a ranged run's avatars at most (IMAGE_BATCH_PARTITIONS); an entry holds one decoded photo
_LOCK = threading.Lock()
_MISSING = object()
_MEASURED: OrderedDict[str, ReferenceFace | None] = OrderedDict()


def _measure(rgb: np.ndarray, box: tuple[int, int, int, int] | None) -> ReferenceFace | None:
    """The photo's largest face with its landmarks and embedding; None when there is no face.

    `box` is `validated_inputs`' measurement of the same photo (`photo_metrics`: `detect_faces` on the same
    upright pixels, largest face first), so the face is not detected a second time.
    """
    from avatar_assets.media.landmarks import LandmarksUnavailable, face_embedding, find_landmarks

    if box is None:
        return None
    try:
        landmarks = find_landmarks(rgb, box)
        embedding = face_embedding(rgb, landmarks)
    except LandmarksUnavailable:
        landmarks = embedding = None
    # Every caller of the memo shares these arrays: nobody may paint on them.
    rgb.setflags(write=False)
    if embedding is not None:
        embedding.setflags(write=False)
    return ReferenceFace(rgb, box, landmarks, embedding)
