"""Landmarks, landmark alignment and the mesh-warp face animation on real pixels (the astronaut portrait)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from avatar_assets.media.compose import composite_shot
from avatar_assets.media.face_motion import (
    BLINK_L,
    CONTROL_NAMES,
    HEAD_X,
    JAW,
    JAW_DROP,
    SPREAD,
    build_rig,
    face_controls,
    viseme,
)
from avatar_assets.media.faces import Face, detect_faces
from avatar_assets.media.landmarks import face_distance, face_embedding, find_landmarks
from avatar_assets.media.lipsync import animate_mouth, mouth_openness
from avatar_assets.media.portrait import EYE_DISTANCE_RATIO, EYE_LINE_RATIO, NeutralPortrait, make_neutral_portrait
from avatar_assets.media.talking_head import SceneTrack, render_frames
from avatar_assets.media.tts import synthesize
from avatar_assets.media.video_qa import seam_ratio


def box(face: Face) -> tuple[int, int, int, int]:
    return face.x, face.y, face.w, face.h


@pytest.fixture(scope="module")
def shot(neutral_portrait: NeutralPortrait):
    """The neutral portrait composed as a close-up on a 720x1280 master, with its landmarks placed."""
    assert neutral_portrait.landmarks is not None
    background = np.full((1280, 720, 3), (90, 120, 160), np.uint8)
    return composite_shot(
        background, neutral_portrait.rgb, neutral_portrait.mask, shot="close_up", out_size=(720, 1280),
        face_box=box(neutral_portrait.face), landmarks=neutral_portrait.landmarks.points,
    )


def controls(**values: float) -> np.ndarray:
    vector = np.zeros(len(CONTROL_NAMES), np.float32)
    for name, value in values.items():
        vector[CONTROL_NAMES.index(name)] = value
    return vector


@pytest.mark.parametrize("transform", ["mirrored", "rotated"])
def test_landmark_alignment_levels_the_eyes_of_a_mirrored_or_rotated_portrait(astronaut_rgb, transform):
    """Haar eyes left a mirrored portrait tilted 4.5 degrees after alignment; landmarks level it."""
    if transform == "mirrored":
        photo = np.ascontiguousarray(astronaut_rgb[:, ::-1])
    else:
        photo = cv2.warpAffine(astronaut_rgb, cv2.getRotationMatrix2D((256, 256), -5, 1), (512, 512),
                               borderMode=cv2.BORDER_REFLECT_101)
    portrait = make_neutral_portrait(photo, detect_faces(photo)[0])
    assert portrait.landmarks is not None
    assert abs(portrait.landmarks.eye_angle_deg) < 1.0
    assert portrait.landmarks.eye_distance / 1024 == pytest.approx(EYE_DISTANCE_RATIO, abs=0.01)
    eye_line = (portrait.landmarks.left_eye[1] + portrait.landmarks.right_eye[1]) / 2
    assert eye_line / 1024 == pytest.approx(EYE_LINE_RATIO, abs=0.015)


def test_the_embedding_matches_the_same_person_and_not_a_texture(astronaut_rgb, astronaut_face):
    reference = face_embedding(astronaut_rgb, find_landmarks(astronaut_rgb, box(astronaut_face)))
    assert reference.shape == (128,)
    dimmed = (astronaut_rgb * 0.7).astype(np.uint8)
    assert face_distance(face_embedding(dimmed, find_landmarks(dimmed, box(astronaut_face))), reference) < 0.3
    noise = np.random.default_rng(0).integers(0, 256, astronaut_rgb.shape, dtype=np.uint8)
    assert face_distance(face_embedding(noise, find_landmarks(noise, box(astronaut_face))), reference) > 0.6


def test_phoneme_events_come_with_the_speech():
    speech = synthesize("Hello world, my voice.")
    names = [p.phoneme for p in speech.phonemes]
    assert "m" in names and any(name.lstrip("'") == "oU" for name in names)
    starts = [p.start_s for p in speech.phonemes]
    assert starts == sorted(starts) and speech.phonemes[-1].end_s <= len(speech.samples) / speech.sample_rate + 1e-6
    assert viseme("m") == (0.0, 0.0, 0.0) and viseme("'aI")[0] == 1.0 and viseme("u:")[2] == 1.0


def test_controls_keep_the_mouth_shut_in_silences_and_blink_by_seed():
    speech = synthesize('Hello there. <break time="900ms"/> Enjoy the ride.', ssml=True)
    fps, n = 25, round(len(speech.samples) / speech.sample_rate * 25)
    openness = mouth_openness(speech.samples, speech.sample_rate, fps, words=speech.words, n_frames=n)
    first = face_controls(openness, speech.phonemes, fps, seed=3)
    assert first.shape == (n, len(CONTROL_NAMES))
    assert np.array_equal(first, face_controls(openness, speech.phonemes, fps, seed=3))
    assert not np.array_equal(first[:, BLINK_L], face_controls(openness, speech.phonemes, fps, seed=4)[:, BLINK_L])
    silent = openness == 0
    assert silent.sum() > 10 and np.all(first[silent, JAW:SPREAD + 2] == 0)
    assert first[~silent, JAW].max() > 0.5
    blinks = np.flatnonzero(np.diff((first[:, BLINK_L] > 0.5).astype(int)) == 1)
    assert len(blinks) >= 1 and blinks[0] / fps <= 2.1
    assert np.ptp(first[:, HEAD_X]) > 0  # the head never stands perfectly still


def test_the_rig_opens_the_jaw_seamlessly_and_leaves_the_rest_untouched(shot):
    rig = build_rig(shot.frame, shot.landmarks)
    assert np.array_equal(rig.render(controls()), shot.frame)
    opened = rig.render(controls(jaw=1.0))
    x, y, w, h = rig.region
    outside = np.ones(shot.frame.shape[:2], bool)
    outside[y:y + h, x:x + w] = False
    assert np.array_equal(opened[outside], shot.frame[outside])  # the frame around the ring is never touched
    mouth_width = np.linalg.norm(shot.landmarks[54] - shot.landmarks[48])
    moved = rig.moved_points(controls(jaw=1.0))
    assert moved[57, 1] - shot.landmarks[57, 1] == pytest.approx(JAW_DROP * mouth_width, rel=0.05)
    assert np.allclose(moved[17:36], shot.landmarks[17:36])  # brows and nose stay: only the jaw and lips move
    new_seam = seam_ratio(opened, shot.frame)
    old_seam = seam_ratio(animate_mouth(shot.frame, shot.mouth_box, 1.0), shot.frame)
    assert new_seam < 1.15 < 1.3 < old_seam, (new_seam, old_seam)
    # The opening is dark inside the moved inner lips.
    inner = moved[60:68].mean(axis=0) + [0, 2]
    assert opened[int(inner[1]), int(inner[0])].mean() < 0.6 * shot.frame[int(inner[1]), int(inner[0])].mean()


def test_a_blink_closes_the_eyes(shot):
    rig = build_rig(shot.frame, shot.landmarks)
    closed = rig.render(controls(blink_left=1.0, blink_right=1.0))
    for eye in (slice(36, 42), slice(42, 48)):
        (x0, y0), (x1, y1) = shot.landmarks[eye].min(axis=0).astype(int), shot.landmarks[eye].max(axis=0).astype(int)
        change = np.abs(closed[y0:y1 + 1, x0:x1 + 1].astype(float) - shot.frame[y0:y1 + 1, x0:x1 + 1]).mean()
        assert change > 8, change
    assert seam_ratio(closed, shot.frame) < 1.15


def test_scenes_without_landmarks_fall_back_to_the_envelope_mouth(shot):
    from avatar_assets.media.talking_head import PUSH_IN, push_in

    fps, n = 25, 10
    scripted = np.zeros((n, len(CONTROL_NAMES)), np.float32)
    scripted[:, JAW] = np.linspace(0, 1, n)
    without = SceneTrack(0.0, n / fps, shot.frame, shot.mouth_box, landmarks=None)
    frames = list(render_frames([without], scripted, fps))
    x, y, w, h = shot.mouth_box
    expected = push_in(animate_mouth(shot.frame, shot.mouth_box, 1.0), (x + w / 2, y + h / 2), PUSH_IN * (n - 1) / n)
    assert np.array_equal(frames[-1], expected)
    with_mesh = list(render_frames([SceneTrack(0.0, n / fps, shot.frame, shot.mouth_box, shot.landmarks)], scripted, fps))
    assert np.array_equal(with_mesh[-1], build_rig(shot.frame, shot.landmarks).render(scripted[-1]))


def test_the_lip_sync_provider_says_when_it_falls_back():
    from resources.providers import LipSyncer

    syncer = LipSyncer(seed=5)
    mesh = syncer.info(5)
    assert mesh.provider == "landmark-mesh" and mesh.fallback_from is None and mesh.seed == 5
    fallback = syncer.info(5, fallback_reason="the landmark model is not installed")
    assert fallback.provider == "envelope-mouth" and fallback.fallback_from == "landmark-mesh"
    assert fallback.settings["reason"] == "the landmark model is not installed"
