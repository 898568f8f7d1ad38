"""Encoding, stitching, probing and decoding of MP4 files with the ffmpeg binary that imageio-ffmpeg ships.

There is no system ffmpeg or ffprobe: everything goes through `FFMPEG` pipes (raw RGB in, raw RGB or f32
PCM out) and stream facts are parsed from `ffmpeg -i` output. Every writer produces a temp file next to
the target and renames it into place, so a reader never sees a half-written video.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import queue
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import soundfile as sf
from PIL import ImageFont

from avatar_assets.media.captions import FONTS_DIR
from avatar_assets.media.partial import make_part_file

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
# ffmpeg's native AAC at 160 kb/s with its fast coder: on the demo's speech it encodes in 0.44 s of CPU against
# 0.77 s for the default two-loop search, and decodes closer to the source (51 dB SNR against 33 dB).
AAC_ARGS = ["-c:a", "aac", "-aac_coder", "fast", "-b:a", "160k"]
_FONT_CANDIDATES = ("DejaVuSans-Bold.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")

Audio = tuple[np.ndarray, int]
Size = tuple[int, int]


@dataclass(frozen=True)
class EncodeResult:
    """What a writer produced; `elapsed_s` is wall time so callers can report real-time factors."""

    path: Path
    width: int
    height: int
    fps: float
    frame_count: int
    duration_s: float
    has_audio: bool
    elapsed_s: float
    size_bytes: int

    @property
    def realtime_factor(self) -> float:
        """Seconds of video produced per second of wall time (> 1 is faster than real time)."""
        return self.duration_s / self.elapsed_s if self.elapsed_s > 0 else math.inf


@dataclass(frozen=True)
class VideoProbe:
    """Stream facts of a media file. `frame_count` is counted from packets, not estimated."""

    width: int
    height: int
    fps: float
    frame_count: int
    duration_s: float
    video_codec: str
    pix_fmt: str
    audio_codec: str | None
    audio_sample_rate: int | None
    audio_channels: int | None
    has_audio: bool


@dataclass(frozen=True)
class SceneClip:
    """One scene on the timeline. Its source is pre-rendered frames at the output fps, or `frame_at(t)`
    with `t` in seconds from the scene's own start. Frames must already be at the output size."""

    start_s: float
    end_s: float
    frames: Sequence[np.ndarray] | np.ndarray | None = None
    frame_at: Callable[[float], np.ndarray] | None = None

    def __post_init__(self) -> None:
        if (self.frames is None) == (self.frame_at is None):
            raise ValueError("SceneClip needs exactly one of frames or frame_at")
        if self.frames is not None and len(self.frames) == 0:
            raise ValueError("SceneClip.frames is empty")
        if not self.end_s > self.start_s >= 0:
            raise ValueError(f"SceneClip times must satisfy 0 <= start < end, got {self.start_s}..{self.end_s}")

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def frame(self, local_t: float, fps: float) -> np.ndarray:
        """Source frame at `local_t`, held at the first/last frame outside the scene (used by crossfades)."""
        local_t = min(max(local_t, 0.0), self.duration_s)
        if self.frame_at is not None:
            return self.frame_at(local_t)
        assert self.frames is not None
        return self.frames[min(int(round(local_t * fps)), len(self.frames) - 1)]


# --------------------------------------------------------------------------- writing helpers


def _fps_arg(fps: float) -> str:
    """ffmpeg wants NTSC rates as exact fractions (30000/1001), not 29.97."""
    frac = Fraction(fps).limit_denominator(1001)
    return f"{frac.numerator}/{frac.denominator}"


@contextlib.contextmanager
def _scratch(beside: Path, suffix: str) -> Iterator[Path]:
    """A partial file next to `beside` (same filesystem as the output), always removed afterwards."""
    path = make_part_file(beside, suffix)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _atomic_target(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a partial file beside `path`; rename it over `path` only if the block finishes cleanly."""
    final = Path(path)
    with _scratch(final, final.suffix) as tmp:
        yield tmp
        os.replace(tmp, final)


@contextlib.contextmanager
def _temp_wav(audio: Audio | None, directory: Path, n_samples: int | None) -> Iterator[Path | None]:
    """Audio as a float WAV beside the output (ffmpeg's second input), fitted to `n_samples` when
    given; removed afterwards."""
    if audio is None:
        yield None
        return
    samples, sr = _mono_float(audio)
    if n_samples is not None:
        samples = fit_length(samples, n_samples)
    with _scratch(directory / "audio", ".wav") as wav:
        sf.write(wav, samples, sr, subtype="FLOAT")
        yield wav


def _mono_float(audio: Audio) -> Audio:
    samples, sr = audio
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"audio must be mono 1-D float32, got shape {samples.shape}")
    if sr <= 0:
        raise ValueError(f"audio sample rate must be positive, got {sr}")
    return samples, int(sr)


def fit_length(samples: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad to exactly `n` samples so audio and video end together."""
    if len(samples) >= n:
        return samples[:n]
    return np.concatenate([samples, np.zeros(n - len(samples), samples.dtype)])


def _check_frame(frame: np.ndarray, size: Size) -> np.ndarray:
    w, h = size
    if frame.shape != (h, w, 3) or frame.dtype != np.uint8:
        raise ValueError(f"frame must be uint8 {(h, w, 3)}, got {frame.dtype} {frame.shape}")
    return np.ascontiguousarray(frame)


def to_i420(rgb: np.ndarray, mark: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """`rgb` as the planar BT.601 limited-range I420 picture x264 encodes (Y, then U and V at half size, as
    one (h * 3/2, w) array), with `mark` (`watermark.luma_marks`: what to add, what to subtract) on its Y plane."""
    yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
    if mark is not None:
        luma = yuv[:rgb.shape[0]]
        cv2.subtract(luma, mark[1], dst=luma)
        cv2.add(luma, mark[0], dst=luma)
    return yuv


def _check_even(size: Size) -> None:
    if size[0] % 2 or size[1] % 2:
        raise ValueError(f"yuv420p needs even dimensions, got {size[0]}x{size[1]}")


def _result(path: Path, size: Size, fps: float, frames: int, has_audio: bool, started: float) -> EncodeResult:
    return EncodeResult(
        path=path,
        width=size[0],
        height=size[1],
        fps=fps,
        frame_count=frames,
        duration_s=frames / fps,
        has_audio=has_audio,
        elapsed_s=time.perf_counter() - started,
        size_bytes=path.stat().st_size,
    )


def _x264_args(crf: int, preset: str, x264_params: str) -> list[str]:
    # The pictures are BT.601 limited range (cv2's I420): say so, or players guess BT.709 for HD sizes and
    # shift the colours.
    return ["-c:v", "libx264", "-preset", preset, "-crf", str(crf), *(["-x264-params", x264_params] if x264_params else []),
            "-pix_fmt", "yuv420p", "-colorspace", "smpte170m", "-color_range", "tv"]


# --------------------------------------------------------------------------- encode_frames


def encode_frames(
    frames: Iterable[np.ndarray],
    *,
    fps: float,
    size: Size,
    audio: Audio | None,
    path: str | os.PathLike[str],
    crf: int = 20,
    preset: str = "veryfast",
    x264_params: str = "",
) -> EncodeResult:
    """Pipe RGB frames, converted to I420 here (`to_i420`), straight into libx264 (+ AAC audio): the fastest
    path and the stitching baseline.

    The frames decide the length and the audio is cut or padded with silence to match, sample-exact.
    When `frames` has a length that happens in one ffmpeg pass; for a plain iterator the frame count is
    only known at the end, so the video is encoded first and the audio muxed in by a second, copy pass.
    """
    _check_even(size)
    started = time.perf_counter()
    final = Path(path)
    known = len(frames) if isinstance(frames, Sized) else None
    with _atomic_target(final) as tmp:
        if audio is None or known is not None:
            n_samples = round(known / fps * audio[1]) if audio is not None and known is not None else None
            with _temp_wav(audio, final.parent, n_samples) as wav:
                count = _pipe_frames(_encode_cmd(size, fps, wav, tmp, crf, preset, x264_params), frames, size)
        else:
            with _scratch(final.with_suffix(".video"), ".mp4") as video_only:
                count = _pipe_frames(_encode_cmd(size, fps, None, video_only, crf, preset, x264_params), frames, size)
                with _temp_wav(audio, final.parent, round(count / fps * audio[1])) as wav:
                    _mux(video_only, wav, tmp, "mux")
        if count == 0:
            raise ValueError("encode_frames got no frames")
    return _result(final, size, fps, count, audio is not None, started)


def _encode_cmd(size: Size, fps: float, wav: Path | None, out: Path, crf: int, preset: str, x264_params: str,
                video_filter: str | None = None) -> list[str]:
    """Raw I420 pictures (`to_i420`) on stdin (+ an optional WAV) to H.264/AAC MP4."""
    w, h = size
    cmd = [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{w}x{h}", "-r", _fps_arg(fps), "-i", "-"]
    if wav is not None:
        cmd += ["-i", str(wav), "-map", "0:v:0", "-map", "1:a:0", *AAC_ARGS]
    if video_filter is not None:
        cmd += ["-vf", video_filter]
    return [*cmd, *_x264_args(crf, preset, x264_params), "-movflags", "+faststart", "-f", "mp4", str(out)]


def _mux(video: str | os.PathLike[str], audio: Path, out: Path, what: str) -> None:
    """`video`'s picture stream copied bit for bit, with `audio` as its AAC track: encoded from a WAV, or
    copied from an AAC track already encoded (`_aac_cmd`)."""
    codec = ["-c:a", "copy"] if audio.suffix == ".m4a" else AAC_ARGS
    _ffmpeg([FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(video), "-i", str(audio),
             "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", *codec, "-movflags", "+faststart", "-f", "mp4",
             str(out)], what)


def _aac_cmd(wav: Path, m4a: Path) -> list[str]:
    """`wav` encoded once as the AAC track (`.m4a`) that every output of a stage copies: each copy saves an
    encode (0.44 s of CPU for the demo's 25 s of speech)."""
    return [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(wav),
            *AAC_ARGS, "-f", "mp4", str(m4a)]


def _ffmpeg(cmd: list[str], what: str) -> None:
    """Run a one-shot ffmpeg command; RuntimeError with its stderr tail on failure."""
    out = _run(cmd)
    if out.returncode != 0:
        raise RuntimeError(f"ffmpeg {what} failed: {out.stderr.decode(errors='replace')[-2000:]}")


PIPE_BYTES = 1 << 20  # Linux's default ceiling for an unprivileged process (/proc/sys/fs/pipe-max-size)


def _widen_pipe(stream) -> None:
    """A frame pipe of PIPE_BYTES instead of 64 KiB: a 1080p picture then crosses in a few writes instead of ~50,
    each a wake-up of the process on the other end. Where the system refuses (another OS, a lower limit), the
    pipe keeps its size."""
    with contextlib.suppress(AttributeError, OSError):
        fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def _pipe_frames(cmd: list[str], frames: Iterable[np.ndarray], size: Size) -> int:
    """Write RGB frames to ffmpeg's stdin as I420; on any failure kill ffmpeg and raise with its stderr."""
    with tempfile.TemporaryFile() as errlog:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errlog)
        _widen_pipe(proc.stdin)
        assert proc.stdin is not None
        count = 0
        try:
            for frame in frames:
                proc.stdin.write(memoryview(to_i420(_check_frame(frame, size))).cast("B"))
                count += 1
            proc.stdin.close()
            rc = proc.wait()
        except BrokenPipeError:
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if rc != 0:
            errlog.seek(0)
            raise RuntimeError(f"ffmpeg failed ({rc}): {errlog.read().decode(errors='replace')[-2000:]}")
    return count


# --------------------------------------------------------------------------- stitching renditions


def load_font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Bold DejaVu where installed, else Pillow's built-in scalable font."""
    for candidate in _FONT_CANDIDATES:
        with contextlib.suppress(OSError):
            return ImageFont.truetype(candidate, px)
    return ImageFont.load_default(px)


@dataclass(frozen=True)
class _Timeline:
    """Per-output-frame plan, computed once so the frame function is only look-ups and blends."""

    scene: np.ndarray  # index of the main scene
    other: np.ndarray  # index of the scene faded with it, -1 if none
    mix: np.ndarray  # weight of `other`


def _plan(scenes: Sequence[SceneClip], n: int, fps: float, transition_s: float) -> _Timeline:
    t = np.arange(n) / fps
    starts = np.array([s.start_s for s in scenes])
    scene = np.clip(np.searchsorted(starts, t + 1e-9, side="right") - 1, 0, len(scenes) - 1)
    other = np.full(n, -1)
    mix = np.zeros(n)
    for k in range(len(scenes) - 1):
        # Centred crossfade: half of it is in each scene, so the cut time and the audio sync stay put.
        half = min(transition_s, scenes[k].duration_s, scenes[k + 1].duration_s) / 2
        if half * 2 < 1 / fps:
            continue
        b = scenes[k].end_s
        win = (t >= b - half) & (t < b + half)
        weight = (t[win] - (b - half)) / (2 * half)
        scene[win] = k
        other[win] = k + 1
        mix[win] = weight
    return _Timeline(scene, other, mix)


def _check_scenes(scenes: Sequence[SceneClip], fps: float) -> float:
    """Scenes must tile the timeline from 0 (within half a frame); returns the total duration."""
    if not scenes:
        raise ValueError("a timeline needs at least one scene")
    if abs(scenes[0].start_s) > 0.5 / fps:
        raise ValueError(f"first scene must start at 0, starts at {scenes[0].start_s}")
    for a, b in zip(scenes, scenes[1:]):
        if abs(b.start_s - a.end_s) > 0.5 / fps:
            raise ValueError(f"scenes must be contiguous: {a.end_s} then {b.start_s}")
    return scenes[-1].end_s


@dataclass(frozen=True)
class RenditionJob:
    """One rendition of a timeline: its scenes (frames at `size`), the captions to burn in, where it goes."""

    size: Size
    scenes: Sequence[SceneClip]
    path: str | os.PathLike[str]
    captions_ass: str | None = None


def encode_renditions(
    jobs: Sequence[RenditionJob],
    *,
    fps: float,
    audio: Audio | None,
    transition_s: float = 0.25,
    watermark: bytes | None = None,
    crf: int = 20,
    preset: str = "veryfast",
    x264_params: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> list[EncodeResult]:
    """Every rendition of one timeline in one pass, each encoded once: each output frame of each rendition is
    composed from its scenes (centred crossfades, `_plan`), converted to the encoder's I420 here (one SIMD
    pass; ffmpeg's own rgb24 conversion and libass blending on RGB cost several times more), marked with
    `watermark` on its luma (`watermark.luma_marks`: what `embed_watermark` puts, on the Y plane) and piped to
    that rendition's own ffmpeg, whose filter graph burns the ASS captions (libass, the caption fonts shipped
    in matplotlib) on the way into x264 + AAC. The renditions of one frame are composed side by side in
    threads (cv2 and numpy let go of the GIL), so a scene source shared by renditions must be thread-safe;
    the ffmpegs run side by side too, each fed by a writer thread. All renditions share the scenes' timing,
    so the scenes of the first job define the length; the audio is fitted to it. Every output appears only
    complete."""
    from concurrent.futures import ThreadPoolExecutor

    from avatar_assets.media.watermark import luma_marks

    if not jobs:
        raise ValueError("encode_renditions needs at least one rendition")
    for job in jobs:
        _check_even(job.size)
        if len(job.scenes) != len(jobs[0].scenes):
            raise ValueError("every rendition needs the same scenes")
    started = time.perf_counter()
    duration = _check_scenes(jobs[0].scenes, fps)
    n = max(1, round(duration * fps))
    plan = _plan(jobs[0].scenes, n, fps, transition_s)
    marks = [luma_marks(bytes(watermark), job.size[1], job.size[0]) if watermark else None for job in jobs]

    def frame_of(job: RenditionJob, i: int) -> np.ndarray:
        t = i / fps
        scene = job.scenes[int(plan.scene[i])]
        frame = _check_frame(scene.frame(t - scene.start_s, fps), job.size)
        if plan.other[i] >= 0:
            nxt = job.scenes[int(plan.other[i])]
            b = _check_frame(nxt.frame(t - nxt.start_s, fps), job.size)
            frame = cv2.addWeighted(frame, 1.0 - float(plan.mix[i]), b, float(plan.mix[i]), 0.0)
        return frame

    def writer(proc: subprocess.Popen, frames: queue.Queue, failed: list[BaseException]) -> None:
        assert proc.stdin is not None
        try:
            while (frame := frames.get()) is not None:
                if not failed:
                    proc.stdin.write(memoryview(frame).cast("B"))
        except BaseException as error:  # noqa: BLE001 - reported by the composing thread
            failed.append(error)
            while frames.get() is not None:  # drain so the composing thread never blocks
                pass
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()

    with contextlib.ExitStack() as stack:
        targets = [stack.enter_context(_atomic_target(job.path)) for job in jobs]
        first = Path(jobs[0].path)
        wav = stack.enter_context(_temp_wav(audio, first.parent, round(n / fps * audio[1]) if audio else None))
        procs, feeds, threads, failures, logs = [], [], [], [], []
        # With audio, the pictures go to video-only files and the track is encoded once beside them (`_aac_cmd`),
        # then each rendition is muxed with a copy of it.
        pictures_to, track, track_encoder = targets, None, None
        if wav is not None:
            track = stack.enter_context(_scratch(first.with_suffix(".audio"), ".m4a"))
            pictures_to = [stack.enter_context(_scratch(Path(job.path).with_suffix(".video"), ".mp4")) for job in jobs]
            track_log = stack.enter_context(tempfile.TemporaryFile())
        try:
            if track is not None:
                track_encoder = subprocess.Popen(_aac_cmd(wav, track), stdin=subprocess.DEVNULL,
                                                 stdout=subprocess.DEVNULL, stderr=track_log)
            for job, tmp in zip(jobs, pictures_to):
                burn = None
                if job.captions_ass is not None:
                    ass = stack.enter_context(_scratch(Path(tmp).with_suffix(".captions"), ".ass"))
                    ass.write_text(job.captions_ass, encoding="utf-8")
                    burn = f"ass=filename={_filter_value(ass)}:fontsdir={_filter_value(FONTS_DIR)}"
                cmd = _encode_cmd(job.size, fps, None, tmp, crf, preset, x264_params, video_filter=burn)
                log = stack.enter_context(tempfile.TemporaryFile())
                proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log)
                _widen_pipe(proc.stdin)
                feed: queue.Queue = queue.Queue(maxsize=3)
                failed: list[BaseException] = []
                thread = threading.Thread(target=writer, args=(proc, feed, failed), daemon=True)
                thread.start()
                procs.append(proc), feeds.append(feed), threads.append(thread), failures.append(failed), logs.append(log)
            step = max(1, math.ceil(n / 10))
            lanes = list(zip(jobs, feeds, marks, failures))
            with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
                for i in range(n):
                    live = [lane for lane in lanes if not lane[3]]
                    pictures = pool.map(lambda lane: to_i420(frame_of(lane[0], i), lane[2]), live)
                    for (_, feed, _, _), picture in zip(live, pictures):
                        feed.put(picture)
                    if progress is not None and ((i + 1) % step == 0 or i == n - 1):
                        progress(i + 1, n)
            for feed in feeds:
                feed.put(None)
            for thread in threads:
                thread.join()
            codes = [proc.wait() for proc in procs]
            track_code = track_encoder.wait() if track_encoder is not None else 0
        except BaseException:
            for proc in [*procs, *([track_encoder] if track_encoder is not None else [])]:
                proc.kill()
                proc.wait()
            for feed in feeds:  # make room for the end mark, so every writer thread finishes
                with contextlib.suppress(queue.Empty):
                    while True:
                        feed.get_nowait()
                feed.put(None)
            for thread in threads:
                thread.join(timeout=10)
            raise
        for code, log, job in zip(codes, logs, jobs):
            if code != 0:
                log.seek(0)
                raise RuntimeError(f"ffmpeg failed ({code}) on the {job.size[0]}x{job.size[1]} rendition: "
                                   f"{log.read().decode(errors='replace')[-2000:]}")
        if track is not None:
            if track_code != 0:
                track_log.seek(0)
                raise RuntimeError(f"ffmpeg failed ({track_code}) on the audio track: "
                                   f"{track_log.read().decode(errors='replace')[-2000:]}")
            for pictures, tmp in zip(pictures_to, targets):
                _mux(pictures, track, tmp, "audio mux")
    return [_result(Path(job.path), job.size, fps, n, audio is not None, started) for job in jobs]


def remux_audio(
    sources: Sequence[str | os.PathLike[str]], audio: Audio, *, paths: Sequence[str | os.PathLike[str]]
) -> list[EncodeResult]:
    """Each source's video stream copied bit for bit (`-c:v copy`, no decode) into its path with `audio` as
    its AAC track, fitted to the video's length: a loudness pass that never touches the picture. The sources
    are renditions of one timeline (the same frame count and rate), so the track is encoded once and copied
    into every output."""
    if not sources or len(sources) != len(paths):
        raise ValueError("remux_audio needs one output path per source, and at least one source")
    started = time.perf_counter()
    infos = [probe(src) for src in sources]
    if len({(info.frame_count, info.fps) for info in infos}) != 1:
        raise ValueError("remux_audio's sources must share one timeline: "
                         + ", ".join(f"{info.frame_count} frames at {info.fps:g} fps" for info in infos))
    samples, sr = _mono_float(audio)
    first = Path(paths[0])
    with (_temp_wav((samples, sr), first.parent, round(infos[0].frame_count / infos[0].fps * sr)) as wav,
          _scratch(first.with_suffix(".audio"), ".m4a") as track):
        _ffmpeg(_aac_cmd(wav, track), "audio encode")
        for src, path in zip(sources, paths):
            with _atomic_target(path) as tmp:
                _mux(src, track, tmp, "audio remux")
    return [_result(Path(path), (info.width, info.height), info.fps, info.frame_count, True, started)
            for path, info in zip(paths, infos)]


def _filter_value(path: Path) -> str:
    """A path as a filter option inside a filtergraph: escaped once for the option, once for the graph."""
    value = str(path)
    for char in "\\':":
        value = value.replace(char, "\\" + char)
    for char in "\\'[],;":
        value = value.replace(char, "\\" + char)
    return value


# --------------------------------------------------------------------------- probing and decoding

_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_VIDEO = re.compile(r"Stream #\d+:\d+.*?: Video: (\w+)[^,]*, (\w+)(?:\([^)]*\))?,.*?(\d{2,5})x(\d{2,5})")
_FPS = re.compile(r"([\d.]+) (?:fps|tbr)")
_AUDIO = re.compile(r"Stream #\d+:\d+.*?: Audio: (\w+)[^,]*, (\d+) Hz, ([^,]+)")
_FRAMES = re.compile(r"frame=\s*(\d+)")


def _run(cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)


def probe(path: str | os.PathLike[str]) -> VideoProbe:
    """Parse `ffmpeg -i`'s stream report, and count video packets with a stream copy (no decoding)."""
    src = str(path)
    if not os.path.isfile(src):
        raise FileNotFoundError(src)
    out = _run([FFMPEG, "-nostdin", "-hide_banner", "-i", src, "-map", "0:v:0?", "-c", "copy", "-f", "null", "-"])
    text = out.stderr.decode(errors="replace")
    video = _VIDEO.search(text)
    if video is None:
        raise ValueError(f"{src} has no readable video stream: {text[-500:]}")
    line = text[video.start():text.find("\n", video.start())]
    fps_match = _FPS.search(line)
    audio = _AUDIO.search(text)
    duration = _DURATION.search(text)
    frames = _FRAMES.findall(text)
    return VideoProbe(
        width=int(video.group(3)),
        height=int(video.group(4)),
        fps=float(fps_match.group(1)) if fps_match else 0.0,
        frame_count=int(frames[-1]) if frames else 0,
        duration_s=int(duration[1]) * 3600 + int(duration[2]) * 60 + float(duration[3]) if duration else 0.0,
        video_codec=video.group(1),
        pix_fmt=video.group(2),
        audio_codec=audio.group(1) if audio else None,
        audio_sample_rate=int(audio.group(2)) if audio else None,
        audio_channels=_channel_count(audio.group(3)) if audio else None,
        has_audio=audio is not None,
    )


_LAYOUT_CHANNELS = {"mono": 1, "stereo": 2, "2.1": 3, "quad": 4, "5.0": 5, "5.1": 6, "6.1": 7, "7.1": 8}


def _channel_count(layout: str) -> int | None:
    """ffmpeg prints a layout name ("stereo", "5.1(side)") or "N channels"."""
    layout = layout.strip()
    named = _LAYOUT_CHANNELS.get(layout.split("(")[0])
    if named is not None:
        return named
    counted = re.match(r"(\d+) channels", layout)
    return int(counted.group(1)) if counted else None


def read_frames(
    path: str | os.PathLike[str], *, every_nth: int = 1, size: Size | None = None, gray: bool = False,
    threads: int | None = None, still: tuple[int, str | os.PathLike[str]] | None = None,
) -> Iterator[np.ndarray]:
    """Decode frames through an ffmpeg pipe: RGB (h, w, 3), or full-range luma (h, w) with `gray`.
    `every_nth` and `size` are applied inside ffmpeg (area scaling, so small details such as a
    moving mouth still register after downscaling). `threads` caps the decoder's threads (decodes that run
    side by side on few cores spend less CPU on one each). With `still` (frame index, file), the same decode
    also writes that frame, full size raw RGB, to the file (`read_still`): a scan and a poster for one decode."""
    if every_nth < 1:
        raise ValueError("every_nth must be >= 1")
    if size is None:
        info = probe(path)
        size = (info.width, info.height)
    w, h = size
    filters = []
    if every_nth > 1:
        filters.append(f"select=not(mod(n\\,{every_nth}))")
    filters.append(f"scale={w}:{h}:flags=area")
    cmd = [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", *(["-threads", str(threads)] if threads else []),
           "-i", str(path)]
    scan = ["-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "gray" if gray else "rgb24"]
    if still is None:
        cmd += ["-map", "0:v:0", "-vf", ",".join(filters), *scan, "-"]
    else:
        index, still_path = still
        cmd += ["-filter_complex", f"[0:v:0]split[scan][still];[scan]{','.join(filters)}[scanned];"
                                   f"[still]select=eq(n\\,{int(index)})[picked]",
                "-map", "[scanned]", *scan, "pipe:1",
                "-map", "[picked]", "-frames:v", "1", "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24",
                "-y", str(still_path)]
    return _decode(cmd, w, h, 1 if gray else 3)


def read_still(path: str | os.PathLike[str], size: Size) -> np.ndarray | None:
    """The frame `read_frames(still=...)` wrote to `path`, or None when the video had no such frame."""
    w, h = size
    data = np.fromfile(path, np.uint8) if Path(path).exists() else np.empty(0, np.uint8)
    return data.reshape(h, w, 3) if data.size == w * h * 3 else None


class DecodedFrames:
    """Frames of an encoded video by index, for readers that move forward together (the stitcher's rendition
    threads, whose crossfades look back a few frames): decoded, and passed through `transform` when given,
    `ahead` frames in advance by a thread of its own, so the readers never wait on the decoder; the last
    `keep` frames stay; an earlier index restarts the decoder; an index past the end holds the last frame.
    Thread-safe; memory stays `keep + ahead` frames whatever the video's length."""

    def __init__(self, path: str | os.PathLike[str], keep: int = 32, *,
                 transform: Callable[[np.ndarray], np.ndarray] | None = None, ahead: int = 4) -> None:
        self.path, self.keep, self.transform, self.ahead = Path(path), keep, transform, ahead
        self._lock = threading.Lock()
        self._reader: _Prefetch | None = None
        self._restart()

    def _restart(self) -> None:
        if self._reader is not None:
            self._reader.stop()
        self._reader = _Prefetch(read_frames(self.path), self.transform, self.ahead)
        self._cache: dict[int, np.ndarray] = {}
        self._next = 0
        self._ended = False

    def __getitem__(self, index: int) -> np.ndarray:
        with self._lock:
            if index < self._next - len(self._cache):
                self._restart()
            while self._next <= index and not self._ended:
                frame = self._reader.next()
                if frame is None:
                    self._ended = True
                    break
                self._cache[self._next] = frame
                self._cache.pop(self._next - self.keep, None)
                self._next += 1
            if not self._cache:
                raise ValueError(f"{self.path} has no video frames")
            return self._cache[min(max(index, self._next - len(self._cache)), self._next - 1)]

    def __del__(self) -> None:
        if self._reader is not None:
            self._reader.stop()


class _Prefetch:
    """An iterator of frames run in a daemon thread, `depth` items ahead; None marks its end. `stop()` (or the
    owner's end) lets the thread finish within a tenth of a second and closes the iterator (its ffmpeg). The
    end and a failure are kept: every later `next()` gets them again instead of waiting on a thread that is
    gone (the stitcher's other rendition threads ask after the first one saw the failure)."""

    def __init__(self, frames: Iterator[np.ndarray], transform: Callable | None, depth: int) -> None:
        self.items: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.stopped = threading.Event()
        self.last: BaseException | None | object = _RUNNING
        threading.Thread(target=_produce, args=(frames, transform, self.items, self.stopped), daemon=True).start()

    def next(self) -> np.ndarray | None:
        item = self.items.get() if self.last is _RUNNING else self.last
        if item is None or isinstance(item, BaseException):
            self.last = item
        if isinstance(item, BaseException):
            raise item
        return item

    def stop(self) -> None:
        self.stopped.set()


_RUNNING = object()


def _produce(frames: Iterator[np.ndarray], transform: Callable | None, items: queue.Queue,
             stopped: threading.Event) -> None:
    def offer(item) -> bool:
        while not stopped.is_set():
            with contextlib.suppress(queue.Full):
                items.put(item, timeout=0.1)
                return True
        return False

    try:
        for frame in frames:
            if not offer(transform(frame) if transform is not None else frame):
                return
        offer(None)
    except Exception as error:  # noqa: BLE001 - raised in the reading thread
        offer(error)
    finally:
        frames.close()


def _decode(cmd: list[str], w: int, h: int, channels: int = 3) -> Iterator[np.ndarray]:
    nbytes = w * h * channels
    shape = (h, w, channels) if channels > 1 else (h, w)
    with tempfile.TemporaryFile() as errlog:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errlog, bufsize=0)
        _widen_pipe(proc.stdout)
        assert proc.stdout is not None
        try:
            while True:
                frame = np.empty(shape, np.uint8)  # not zeroed: every byte is read into it
                view = memoryview(frame).cast("B")
                got = 0
                while got < nbytes:
                    k = proc.stdout.readinto(view[got:])
                    if not k:
                        break
                    got += k
                if got < nbytes:
                    break
                yield frame
            rc = proc.wait()
            if rc != 0:
                errlog.seek(0)
                raise RuntimeError(f"ffmpeg decode failed ({rc}): {errlog.read().decode(errors='replace')[-2000:]}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()


def read_audio(path: str | os.PathLike[str], sr: int = 24000) -> np.ndarray:
    """Decode the first audio stream as float32 mono at `sr`; ValueError if there is none."""
    out = _run([FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(path), "-map", "0:a:0",
                "-ac", "1", "-ar", str(sr), "-f", "f32le", "-"])
    if out.returncode != 0:
        raise ValueError(f"cannot read audio from {path}: {out.stderr.decode(errors='replace')[-500:]}")
    return np.frombuffer(out.stdout, np.float32).copy()


def within_video(at_s: float, info: VideoProbe) -> float:
    """`at_s` clamped to the times of the video's first and last frames."""
    return min(max(at_s, 0.0), max(0.0, (info.frame_count - 1) / info.fps))


def poster_frame(
    source: str | os.PathLike[str] | Sequence[np.ndarray], at_s: float, *, fps: float | None = None
) -> np.ndarray:
    """The frame shown at `at_s` (clamped into the video), from a file or from in-memory frames at `fps`."""
    if isinstance(source, (str, os.PathLike)):
        info = probe(source)
        at_s = within_video(at_s, info)
        cmd = [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-ss", f"{at_s:.6f}", "-i", str(source),
               "-map", "0:v:0", "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
        frame = next(_decode(cmd, info.width, info.height), None)
        if frame is None:
            raise ValueError(f"no frame decoded at {at_s}s from {source}")
        return frame
    if fps is None:
        raise ValueError("poster_frame from in-memory frames needs fps")
    return source[min(max(int(round(at_s * fps)), 0), len(source) - 1)]


# --------------------------------------------------------------------------- b-roll motion


def ken_burns(
    image: np.ndarray, size: Size, duration_s: float, *, zoom: tuple[float, float] = (1.0, 1.08),
    pan: tuple[float, float] = (0.03, -0.02),
) -> Callable[[float], np.ndarray]:
    """`frame_at(t)` for a slow zoom-and-drift over a still, for b-roll scenes.

    The still is cover-fitted once at the largest zoom; each frame is one affine warp at output size.
    `pan` is the drift over the whole scene as a fraction of the frame (x, y).
    """
    w, h = size
    z_max = max(zoom)
    ih, iw = image.shape[:2]
    base_scale = max(w / iw, h / ih) * z_max
    base = cv2.resize(image, (max(w, round(iw * base_scale)), max(h, round(ih * base_scale))),
                      interpolation=cv2.INTER_AREA if base_scale < 1 else cv2.INTER_CUBIC)
    bh, bw = base.shape[:2]

    def frame_at(t: float) -> np.ndarray:
        u = min(max(t / duration_s, 0.0), 1.0) if duration_s > 0 else 0.0
        u = u * u * (3 - 2 * u)  # ease in and out
        z = zoom[0] + (zoom[1] - zoom[0]) * u
        s = z / z_max  # base pixels -> output pixels
        # Keep the view inside the base image while drifting by `pan`.
        max_dx, max_dy = (bw * s - w) / 2, (bh * s - h) / 2
        cx = bw * s / 2 + np.clip(pan[0] * w * u, -max_dx, max_dx)
        cy = bh * s / 2 + np.clip(pan[1] * h * u, -max_dy, max_dy)
        m = np.array([[s, 0, w / 2 - cx], [0, s, h / 2 - cy]], np.float32)
        return cv2.warpAffine(base, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

    return frame_at
