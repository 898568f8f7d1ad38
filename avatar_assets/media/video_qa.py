"""Delivery checks on a finished MP4: decode every frame (at reduced size) and every audio sample.

Black and frozen runs are measured on area-downscaled luma. A frame is frozen when both its mean
difference from the previous frame is tiny and no pixel moved by more than compression noise: a
talking head whose only motion is the mouth has a near-zero mean difference, but the mouth pixels
change a lot, which the per-pixel maximum sees; a slow fade changes every pixel a little, which the
mean sees.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyloudnorm

from avatar_assets.media.video import poster_frame, probe, read_audio, read_frames, read_still, within_video

QA_WIDTH = 320
# pyloudnorm's gating needs at least one 400 ms block.
_MIN_LOUDNESS_S = 0.4


@dataclass(frozen=True)
class VideoQA:
    """Measured facts and the problems found; `frames` is the per-frame table (index, time, luma, diffs);
    `poster` the frame asked for with `poster_at_s`, from the same decode."""

    path: str
    width: int
    height: int
    fps: float
    frame_count: int
    duration_s: float
    audio_duration_s: float | None
    has_audio: bool
    video_codec: str
    audio_codec: str | None
    loudness_lufs: float | None
    longest_black_s: float
    longest_frozen_s: float
    issues: tuple[str, ...]
    frames: list[dict[str, float]] = field(repr=False)
    poster: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def passed(self) -> bool:
        return not self.issues


def _longest_run(flags: np.ndarray) -> int:
    """Length of the longest run of True."""
    best = run = 0
    for f in flags:
        run = run + 1 if f else 0
        best = max(best, run)
    return best


def _loudness(samples: np.ndarray, sr: int) -> float | None:
    """Integrated LUFS, or None when it cannot be measured (too short, or digital silence)."""
    if len(samples) < _MIN_LOUDNESS_S * sr:
        return None
    value = float(pyloudnorm.Meter(sr).integrated_loudness(samples.astype(np.float64)))
    return value if np.isfinite(value) else None


def analyse_video(
    path: str | os.PathLike[str],
    *,
    expected_fps: float | None = None,
    expected_size: tuple[int, int] | None = None,
    black_threshold: float = 0.06,
    freeze_threshold: float = 0.002,
    freeze_max_diff: float = 0.014,
    max_black_s: float = 0.5,
    max_frozen_s: float = 1.0,
    poster_at_s: float | None = None,
    threads: int | None = None,
) -> VideoQA:
    """Fully decode `path` and report size, fps, frame count, audio/video durations, loudness, the
    longest black run (mean luma < `black_threshold`) and the longest frozen run (mean luma change
    < `freeze_threshold` and largest per-pixel change < `freeze_max_diff`). Levels are fractions of
    full scale. With `poster_at_s`, the frame shown then (as `video.poster_frame` picks it) comes from the
    same decode; `threads` caps the decoder's threads."""
    info = probe(path)
    qa_w = min(QA_WIDTH, info.width)
    qa_h = max(2, round(info.height * qa_w / info.width / 2) * 2)

    def scan(still=None) -> list[dict[str, float]]:
        return _scan(read_frames(path, size=(qa_w, qa_h), gray=True, threads=threads, still=still), info.fps)

    if poster_at_s is None or not info.fps:  # (a file without a frame rate has no time to pick a poster at)
        rows, poster = scan(), None
    else:  # the scan's decode also keeps the poster's frame, full size, in a scratch file beside the video
        with tempfile.TemporaryDirectory(prefix=".poster-", dir=Path(path).parent) as scratch:
            still = (math.ceil(within_video(poster_at_s, info) * info.fps - 1e-6), Path(scratch) / "poster.rgb")
            try:
                rows = scan(still)
                poster = read_still(still[1], (info.width, info.height))
            except RuntimeError:  # a damaged file with fewer frames than it says: ffmpeg fails an empty still
                rows, poster = scan(), None
        if poster is None:
            poster = poster_frame(path, poster_at_s)
    n = len(rows)
    black = np.array([r["mean_luma"] < black_threshold for r in rows], bool)
    frozen = np.array([r["mean_diff"] < freeze_threshold and r["max_diff"] < freeze_max_diff for r in rows[1:]], bool)
    frozen_run = _longest_run(frozen)
    duration = n / info.fps if info.fps else 0.0

    audio_duration, loudness = _audio_facts(path, info)

    result = dict(
        path=str(path), width=info.width, height=info.height, fps=info.fps, frame_count=n,
        duration_s=duration, audio_duration_s=audio_duration, has_audio=info.has_audio,
        video_codec=info.video_codec, audio_codec=info.audio_codec, loudness_lufs=loudness,
        longest_black_s=_longest_run(black) / info.fps if info.fps else 0.0,
        longest_frozen_s=(frozen_run + 1) / info.fps if frozen_run else 0.0,
    )
    issues = _issues(result, expected_fps, expected_size, max_black_s, max_frozen_s)
    return VideoQA(**result, issues=tuple(issues), frames=rows, poster=poster)


def analyse_renditions(videos: Sequence[tuple[str | os.PathLike[str], tuple[int, int]]], *, expected_fps: float,
                       poster_at_s: float) -> list[VideoQA]:
    """`analyse_video` of each (path, expected size), the renditions of one timeline, side by side: each decode
    is its own ffmpeg and they share the cores, one decoder thread each on 2 (less CPU than frame threads
    contending); each keeps its poster from that decode."""
    from concurrent.futures import ThreadPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // len(videos))
    with ThreadPoolExecutor(max_workers=len(videos)) as pool:
        return list(pool.map(lambda video: analyse_video(video[0], expected_fps=expected_fps, expected_size=video[1],
                                                         poster_at_s=poster_at_s, threads=threads), videos))


def _scan(lumas, fps: float) -> list[dict[str, float]]:
    """The per-frame table of decoded luma frames: mean level, and mean and largest change from the frame before."""
    rows: list[dict[str, float]] = []
    prev: np.ndarray | None = None
    for i, luma in enumerate(lumas):
        cur = luma.astype(np.int16)
        diff = np.abs(cur - prev) if prev is not None else None
        rows.append({
            "frame": i,
            "time_s": i / fps if fps else 0.0,
            "mean_luma": float(cur.mean()) / 255,
            "mean_diff": float(diff.mean()) / 255 if diff is not None else float("nan"),
            "max_diff": float(diff.max()) / 255 if diff is not None else float("nan"),
        })
        prev = cur
    return rows


def analyse_remuxed(path: str | os.PathLike[str], source: VideoQA | object) -> dict:
    """The QA facts of `path`, whose video stream is a bit-exact copy of an analysed video's (`source`,
    anything with `VideoQA`'s fields; see `video.remux_audio`): stream facts and the frame count probed from
    the file, the audio decoded and measured again, and the black and frozen runs carried over, since the
    pictures are the same ones. No video frame is decoded."""
    info = probe(path)
    audio_duration, loudness = _audio_facts(path, info)
    return dict(
        width=info.width, height=info.height, fps=info.fps, frame_count=info.frame_count,
        duration_s=info.frame_count / info.fps if info.fps else 0.0, audio_duration_s=audio_duration,
        has_audio=info.has_audio, video_codec=info.video_codec, audio_codec=info.audio_codec, loudness_lufs=loudness,
        longest_black_s=source.longest_black_s, longest_frozen_s=source.longest_frozen_s,
    )


def _audio_facts(path: str | os.PathLike[str], info) -> tuple[float | None, float | None]:
    """(duration, integrated loudness) of the file's audio track, decoded; (None, None) without one."""
    if not info.has_audio:
        return None, None
    sr = info.audio_sample_rate or 48000
    samples = read_audio(path, sr=sr)
    return len(samples) / sr, _loudness(samples, sr)


def _issues(r: dict, expected_fps: float | None, expected_size: tuple[int, int] | None,
            max_black_s: float, max_frozen_s: float) -> list[str]:
    """Human-readable problems; an empty list means the file is fit to deliver."""
    out = []
    if r["frame_count"] == 0:
        out.append("no decodable video frames")
    if expected_fps is not None and abs(r["fps"] - expected_fps) > 0.01:
        out.append(f"fps {r['fps']:g} != expected {expected_fps:g}")
    if expected_size is not None and (r["width"], r["height"]) != tuple(expected_size):
        out.append(f"size {r['width']}x{r['height']} != expected {expected_size[0]}x{expected_size[1]}")
    if not r["has_audio"]:
        out.append("no audio stream")
    elif abs(r["duration_s"] - r["audio_duration_s"]) > 1.5 / r["fps"]:
        out.append(f"video {r['duration_s']:.3f}s and audio {r['audio_duration_s']:.3f}s differ by more than a frame")
    if r["longest_black_s"] > max_black_s:
        out.append(f"black for {r['longest_black_s']:.2f}s (max {max_black_s}s)")
    if r["longest_frozen_s"] > max_frozen_s:
        out.append(f"frozen for {r['longest_frozen_s']:.2f}s (max {max_frozen_s}s)")
    return out


def seam_ratio(frame: np.ndarray, reference: np.ndarray, *, threshold: float = 10.0) -> float:
    """Edge energy along the border of what changed between `reference` and `frame`, over the reference's
    edge energy on the same pixels: ~1 when the change blends in, well above 1 for a pasted patch's seam.

    Changes smaller than `threshold` luma levels (compression noise) are not "changed"; specks are ignored.
    """
    import cv2

    grey_f = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)
    grey_r = cv2.cvtColor(reference, cv2.COLOR_RGB2GRAY).astype(np.float32)
    changed = (np.abs(cv2.GaussianBlur(grey_f - grey_r, (0, 0), 1.0)) > threshold).astype(np.uint8)
    changed = cv2.morphologyEx(changed, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    if not changed.any():
        return 1.0
    kernel = np.ones((5, 5), np.uint8)
    border = (cv2.dilate(changed, kernel) - cv2.erode(changed, kernel)).astype(bool)

    def energy(grey: np.ndarray) -> float:
        gx, gy = cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)
        return float(np.hypot(gx, gy)[border].mean())

    return energy(grey_f) / max(energy(grey_r), 1e-6)
