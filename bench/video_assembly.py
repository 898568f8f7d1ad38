"""Video assembly: `encode_renditions` (the stitcher: crossfades, watermark, burned captions) against a raw ffmpeg pipe.

Frames are rendered once and held in memory (talking-head frames from `talking_head.render_frames`
over three composited keyframes, mouth driven by espeak speech), so frame generation costs the same
for every writer: what differs is only the assembly and encode. Subject: `encode_renditions` with one
rendition and the production settings (3 scenes, 0.25 s crossfades, the invisible watermark, karaoke
captions burned by libass, speech track). Baseline, same run: `encode_frames` piping the same frames and
audio straight into the same libx264 preset/crf. A third writer, `encode_renditions` with one scene, no
transitions, no watermark and no captions, isolates the stitcher's own cost (its writer thread and queue).
Writers alternate order across repeats; medians are reported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import common
from bench.common import median, ratio, say

NAME = "video_assembly"
WATERMARK = bytes.fromhex("a1b2c3d4e5f60718")
TARGET_RATIO = 0.7
SIZE = (1280, 720)
FPS = 25
SCENES = [("mid", "soft studio backdrop"), ("close_up", "city at dusk"), ("mid", "calm ocean sunset")]
TEXT = (
    "Hi! I'm the demo avatar, built from one public domain photo and a synthetic voice. "
    "Everything you see was made step by step, as Dagster assets with quality gates. "
    "First my identity, then this video: a script, a storyboard, speech, backgrounds and lip sync. "
    "Finally it is stitched, enhanced, and packaged for every platform, with a rights manifest."
)


def parameters(quick: bool) -> dict[str, Any]:
    return {
        "duration_s": 4.0 if quick else 20.0,
        "size": list(SIZE),
        "fps": FPS,
        "repeats": 1 if quick else 7,
        "codec": "libx264 + AAC 160k",
        "crf": 20,
        "preset": "veryfast",
        "transition_s": 0.25,
        "scenes": [shot for shot, _ in SCENES],
    }


def render_timeline(duration_s: float):
    """(frames, audio, words, scene bounds, mouth boxes): everything the writers need, rendered up front."""
    from importlib.resources import files

    import numpy as np

    from avatar_assets.media.backgrounds import classical_background
    from avatar_assets.media.compose import composite_shot
    from avatar_assets.media.faces import detect_faces
    from avatar_assets.media.images import load_photo
    from avatar_assets.media.lipsync import mouth_openness
    from avatar_assets.media.portrait import make_neutral_portrait
    from avatar_assets.media.talking_head import SceneTrack, render_frames
    from avatar_assets.media.tts import synthesize
    from avatar_assets.media.video import fit_length

    photo = load_photo((files("avatar_assets") / "samples" / "astronaut.jpg").read_bytes()).rgb
    portrait = make_neutral_portrait(photo, detect_faces(photo)[0])
    face = portrait.face
    speech = synthesize(TEXT, rate_wpm=150)
    samples = fit_length(speech.samples, round(duration_s * speech.sample_rate))
    words = [w for w in speech.words if w.end_s <= duration_s]
    n = round(duration_s * FPS)
    bounds = np.linspace(0.0, duration_s, len(SCENES) + 1)
    tracks = []
    for index, (shot_type, prompt) in enumerate(SCENES):
        background = classical_background(prompt, SIZE[0], SIZE[1], seed=index)
        shot = composite_shot(background, portrait.rgb, portrait.mask, shot=shot_type, out_size=SIZE,
                              face_box=(face.x, face.y, face.w, face.h))
        tracks.append(SceneTrack(float(bounds[index]), float(bounds[index + 1]), shot.frame, shot.mouth_box))
    openness = mouth_openness(samples, speech.sample_rate, FPS, words=words, n_frames=n)
    frames = list(render_frames(tracks, openness, FPS))
    return (frames, (samples, speech.sample_rate), words, [(t.start_s, t.end_s) for t in tracks],
            [t.mouth_box for t in tracks])


def run(opts) -> dict[str, Any]:
    from avatar_assets.contracts import CaptionStyle
    from avatar_assets.media.captions import CaptionLook, cues, to_ass
    from avatar_assets.media.video import RenditionJob, SceneClip, encode_frames, encode_renditions, probe

    params = parameters(opts.quick)
    duration, repeats = params["duration_s"], params["repeats"]
    say(f"rendering {duration:.0f} s of {SIZE[0]}x{SIZE[1]} talking-head frames into memory")
    render_s, (frames, audio, words, bounds, mouth_boxes) = common.timed(lambda: render_timeline(duration))
    n = len(frames)
    captions = cues(words)
    look = CaptionLook(**CaptionStyle(preset="karaoke").model_dump(exclude={"preset"}))
    ass = to_ass(words, look, SIZE, avoid=[box for box in mouth_boxes if box])
    clips = [SceneClip(start, end, frames=frames[round(start * FPS):round(end * FPS)]) for start, end in bounds]
    settings = {"fps": FPS, "audio": audio, "crf": params["crf"], "preset": params["preset"]}

    def raw(path: Path):
        return encode_frames(frames, path=path, size=SIZE, **settings)

    def stitched(path: Path):
        return encode_renditions([RenditionJob(SIZE, clips, path, ass)], transition_s=params["transition_s"],
                                 watermark=WATERMARK, **settings)[0]

    def stitched_bare(path: Path):
        return encode_renditions([RenditionJob(SIZE, [SceneClip(0.0, n / FPS, frames=frames)], path)], transition_s=0.0,
                                 **settings)[0]

    writers = {"raw_pipe": raw, "encode_renditions": stitched, "encode_renditions_bare": stitched_bare}
    seconds: dict[str, list[float]] = {name: [] for name in writers}
    cpu: dict[str, list[float]] = {name: [] for name in writers}
    outputs: dict[str, dict[str, Any]] = {}
    names = list(writers)
    with common.workdir(NAME, keep=opts.keep) as work:
        for rep in range(repeats):
            order = names[rep % len(names):] + names[:rep % len(names)]
            for name in order:
                path = work / f"{name}-{rep}.mp4"
                elapsed, cpu_s, _ = common.timed_cpu(lambda write=writers[name], out=path: write(out))
                seconds[name].append(elapsed)
                cpu[name].append(cpu_s)
                say(f"repeat {rep + 1}/{repeats} {name}: {elapsed:.2f} s ({n / elapsed:.1f} fps), CPU {cpu_s:.2f} s")
                if rep == 0:
                    info = probe(path)
                    outputs[name] = {"frames": info.frame_count, "size": [info.width, info.height],
                                     "has_audio": info.has_audio, "bytes": path.stat().st_size}
                    if info.frame_count != n:
                        raise RuntimeError(f"{name} wrote {info.frame_count} frames, expected {n}")
                path.unlink()

    fps = {name: n / median(values) for name, values in seconds.items()}
    speed_ratio = ratio(fps["encode_renditions"], fps["raw_pipe"])
    figures = {
        "frames": n,
        "frame_render_s": render_s,
        "frame_render_fps": n / render_s,
        "seconds": seconds,
        "median_s": {name: median(values) for name, values in seconds.items()},
        "fps": fps,
        "stitch_vs_raw_ratio": speed_ratio,
        "bare_stitch_vs_raw_ratio": ratio(fps["encode_renditions_bare"], fps["raw_pipe"]),
        "cpu_s": cpu,
        "cpu_median_s": {name: median(values) for name, values in cpu.items()},
        # CPU seconds of the raw pipe / of encode_renditions for the same frames: the throughput ratio the
        # writers would reach on a machine with nobody else on it (ffmpeg + Python, all threads).
        "stitch_vs_raw_cpu_ratio": ratio(median(cpu["raw_pipe"]), median(cpu["encode_renditions"])),
        "realtime_factor": {name: duration / median(values) for name, values in seconds.items()},
        "realtime_factor_with_frame_render": duration / (median(seconds["encode_renditions"]) + render_s),
        "outputs": outputs,
        "captions": len(captions),
    }
    return {
        "parameters": params,
        "figures": figures,
        "targets": {"stitch_vs_raw_ratio": {"op": ">=", "limit": TARGET_RATIO, "value": speed_ratio,
                                            "met": speed_ratio >= TARGET_RATIO}},
        "baseline": "encode_frames: the same in-memory frames and audio piped straight into ffmpeg "
                    "(same libx264 preset/crf, AAC), same run",
    }


def summary(result: dict[str, Any]) -> list[str]:
    f, p = result["figures"], result["parameters"]
    rt = f["realtime_factor"]
    return [
        (f"{p['duration_s']:.0f} s at {p['size'][0]}x{p['size'][1]}, {p['fps']} fps ({f['frames']} frames), "
        f"crf {p['crf']} {p['preset']}, {p['repeats']} repeat(s), medians:"),
        (f"encode_renditions {f['fps']['encode_renditions']:.1f} fps vs raw pipe {f['fps']['raw_pipe']:.1f} fps -> "
        f"ratio **{f['stitch_vs_raw_ratio']:.2f}** (target >= {TARGET_RATIO})"),
        f"CPU seconds: stitch {f['cpu_median_s']['encode_renditions']:.2f}, raw {f['cpu_median_s']['raw_pipe']:.2f}, "
        f"bare {f['cpu_median_s']['encode_renditions_bare']:.2f} -> CPU-based ratio {f['stitch_vs_raw_cpu_ratio']:.2f}; "
        f"wall seconds stitch " + ", ".join(f"{x:.1f}" for x in f["seconds"]["encode_renditions"]) + "; raw "
        + ", ".join(f"{x:.1f}" for x in f["seconds"]["raw_pipe"]),
        (f"encode_renditions without transitions/watermark/captions {f['fps']['encode_renditions_bare']:.1f} fps "
        f"(ratio {f['bare_stitch_vs_raw_ratio']:.2f})"),
        (f"real-time factor (video s per wall s): stitch {rt['encode_renditions']:.2f}x, raw pipe {rt['raw_pipe']:.2f}x, "
        f"bare stitch {rt['encode_renditions_bare']:.2f}x; stitch incl. frame rendering "
        f"{f['realtime_factor_with_frame_render']:.2f}x"),
        f"frame rendering (talking head over composited keyframes): {f['frame_render_fps']:.1f} fps",
    ]
