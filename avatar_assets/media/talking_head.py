"""The talking-head timeline: scene keyframes animated by per-frame face controls, and measured back.

The keyframes are the avatar layer (the avatar in its own pixels, see `compose.AvatarOverlay`), rendered once
and composited into every rendition by the stitcher; a b-roll scene's layer is empty and stays still.

Controls are a (frames, 8) array for the landmark mesh (`face_motion`), or a (frames,) mouth openness for
the fallback animation (`lipsync.animate_mouth`, used when a scene has no landmarks). Lip sync and
stitching both render frames through `scene_frame_source`, so the stitched video shows exactly the frames
the lip-sync gate measured (`lip_sync_measurements`).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from avatar_assets.media.face_motion import build_rig
from avatar_assets.media.lipsync import animate_mouth, estimate_lag_frames, mouth_motion, speech_envelope

Box = tuple[int, int, int, int]
PUSH_IN = 0.03  # slow zoom over an avatar scene, about the mouth, so the mouth box stays put
RENDER_THREADS = min(4, os.cpu_count() or 1)
RENDER_AHEAD = 2 * RENDER_THREADS  # frames in flight: a few, so memory stays a few frames
SILENCE_MARGIN_S = 0.1  # frames this close to a word are neither speech nor silence (coarticulation)


def push_in(frame: np.ndarray, anchor: tuple[float, float], amount: float) -> np.ndarray:
    """Scale by 1 + amount about `anchor`: keeps a still keyframe alive without moving the mouth."""
    if amount <= 0:
        return frame
    scale = 1.0 + amount
    ax, ay = anchor
    matrix = np.array([[scale, 0, ax * (1 - scale)], [0, scale, ay * (1 - scale)]], np.float32)
    return cv2.warpAffine(frame, matrix, (frame.shape[1], frame.shape[0]), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)


@dataclass(frozen=True, eq=False)
class SceneTrack:
    start_s: float
    end_s: float
    keyframe: np.ndarray
    mouth_box: Box | None  # None: b-roll, the avatar is not on screen
    landmarks: np.ndarray | None = None  # (68, 2) in keyframe pixels: animate with the mesh


def scene_frame_source(track: SceneTrack, controls: np.ndarray, fps: float) -> Callable[[float], np.ndarray]:
    """`frame_at(local_t)` for one scene: the still keyframe for b-roll, the face mesh or the fallback mouth
    otherwise."""
    duration = track.end_s - track.start_s
    if track.mouth_box is None:
        return lambda local_t: track.keyframe

    def index_at(local_t: float) -> int:
        return min(max(int(round((track.start_s + local_t) * fps)), 0), len(controls) - 1)

    if controls.ndim == 2 and track.landmarks is not None:
        rig = build_rig(track.keyframe, track.landmarks)
        return lambda local_t: rig.render(controls[index_at(local_t)])

    openness = controls if controls.ndim == 1 else controls[:, 0]
    x, y, w, h = track.mouth_box
    anchor = (x + w / 2, y + h / 2)

    def frame_at(local_t: float) -> np.ndarray:
        frame = animate_mouth(track.keyframe, track.mouth_box, float(openness[index_at(local_t)]))
        return push_in(frame, anchor, PUSH_IN * min(max(local_t / duration, 0.0), 1.0) if duration > 0 else 0.0)

    return frame_at


def frame_count(duration_s: float, fps: float) -> int:
    return max(1, int(round(duration_s * fps)))


def render_frames(
    tracks: Sequence[SceneTrack], controls: np.ndarray, fps: float, *, progress: Callable[[int, int], None] | None = None
) -> Iterator[np.ndarray]:
    """Every frame of the timeline in order (hard cuts; transitions are the stitcher's job), rendered a few
    frames ahead in threads (the mesh warp is cv2 and numpy, which let go of the GIL)."""
    total = frame_count(tracks[-1].end_s, fps)
    sources = [scene_frame_source(track, controls, fps) for track in tracks]
    owner = scene_of_frame(tracks, total, fps)

    def render(index: int) -> np.ndarray:
        scene = int(owner[index])
        return sources[scene](index / fps - tracks[scene].start_s)

    with ThreadPoolExecutor(max_workers=RENDER_THREADS) as pool:
        ahead = deque(pool.submit(render, index) for index in range(min(RENDER_AHEAD, total)))
        for index in range(total):
            if index + RENDER_AHEAD < total:
                ahead.append(pool.submit(render, index + RENDER_AHEAD))
            if progress and (index % max(1, total // 10) == 0 or index == total - 1):
                progress(index + 1, total)
            yield ahead.popleft().result()


def scene_of_frame(tracks: Sequence[SceneTrack], total: int, fps: float) -> np.ndarray:
    starts = np.array([track.start_s for track in tracks])
    times = np.arange(total) / fps
    return np.clip(np.searchsorted(starts, times + 1e-9, side="right") - 1, 0, len(tracks) - 1)


def scene_spans(tracks: Sequence[Any], total: int, fps: float) -> list[tuple[int, int]]:
    """(first, last) frame of the layer that each scene owns; a scene with none holds the last frame."""
    owner = scene_of_frame(tracks, total, fps)
    spans = []
    for index in range(len(tracks)):
        own = np.flatnonzero(owner == index)
        spans.append((int(own.min()), int(own.max())) if len(own) else (total - 1, total - 1))
    return spans


def layer_scene_source(overlay: Any, background: np.ndarray, layer: Any, start_s: float, span: tuple[int, int],
                       fps: float) -> Callable[[float], np.ndarray]:
    """`frame_at(local_t)` of an avatar scene in one rendition: the layer's frame at that time (`layer` is
    indexable) placed by `overlay` (`compose.AvatarOverlay`) over the backdrop; a crossfade past the scene's
    ends holds its first or last own frame. Every frame is made in the same buffer: read it before the next,
    never write to it."""
    first, last = span
    buffer = np.empty_like(background)
    return lambda local_t: overlay.over(background, layer[min(max(int(round((start_s + local_t) * fps)), first), last)],
                                        buffer)


def lip_sync_measurements(frames: Iterable[np.ndarray], tracks: Sequence[SceneTrack], words: Sequence[Any],
                          samples: np.ndarray, sample_rate: int, fps: float, total: int) -> tuple[int, float, float]:
    """(lag in frames, mouth motion in silences, mouth motion in speech) of rendered frames, measured
    against the audio: speech and silence come from the word timings (`start_s`, `end_s`), never from the
    openness that drove the mouth, so a mouth that moves in a pause is seen moving in silence."""
    centres = (np.arange(total) + 0.5) / fps
    spoken, near = np.zeros(total, bool), np.zeros(total, bool)
    for word in words:
        spoken |= (centres >= word.start_s) & (centres < word.end_s)
        near |= (centres >= word.start_s - SILENCE_MARGIN_S) & (centres < word.end_s + SILENCE_MARGIN_S)
    motion = measured_mouth_motion(frames, tracks, total, fps, rest_from=~near)
    envelope = speech_envelope(samples, sample_rate, fps, total)
    talking = ~np.isnan(motion)
    silent, speaking = talking & ~near, talking & spoken
    return (
        estimate_lag_frames(np.nan_to_num(motion), np.where(talking, envelope, 0.0)),
        float(np.mean(motion[silent])) if silent.any() else 0.0,
        float(np.mean(motion[speaking])) if speaking.any() else 0.0,
    )


def measured_mouth_motion(frames: Iterable[np.ndarray], tracks: Sequence[SceneTrack], total: int, fps: float,
                          rest_from: np.ndarray | None = None) -> np.ndarray:
    """Mouth motion per frame measured on decoded video, NaN where no mouth is on screen (b-roll).
    `rest_from` marks the frames (silences) whose median is each scene's rest pose."""
    frames = list(frames)[:total]
    owner = scene_of_frame(tracks, len(frames), fps)
    motion = np.full(total, np.nan, np.float32)
    for index, track in enumerate(tracks):
        members = np.flatnonzero(owner == index)
        if track.mouth_box is None or not len(members):
            continue
        rest = None if rest_from is None else rest_from[members]
        motion[members] = mouth_motion([frames[i] for i in members], track.mouth_box, rest_from=rest)
    return motion
