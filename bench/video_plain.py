"""The video build without Dagster: the video stages' `media/` functions in a plain loop, one process.

`python -m bench.video_plain --config CONFIG.json --json-out OUT` is the baseline of the `video_overhead`
benchmark. CONFIG (written by bench/video_overhead.py) holds the avatar's bundle, the render settings and
the output requests, already resolved (master size, renditions with their sizes, caption look), so this
process imports no Dagster. The avatar's identity is prepared first, untimed (the subject builds it in an
earlier, untimed `runner.process` too). Then per output, stage by stage (stage names are the asset names),
what the video assets compute on the CPU defaults: script, storyboard, espeak-ng speech with word timings
and captions, classical backgrounds, composited keyframes, the landmark-mesh talking head encoded and
measured, the stitched video with burned captions, the enhanced and watermarked master, one transcode per
rendition and the poster. No media store, no records, no QA gates, no lifecycle events.

Adapt this file with the video stages: it mirrors avatar_assets/video/assets.py and video/packaging.py.
"""

from __future__ import annotations

import time

_STARTED = time.perf_counter()

import argparse
import hashlib
import io
import json
import tempfile
from pathlib import Path


def prepare_identity(bundle: Path) -> dict:
    """What the video stages read from the identity: neutral portrait (image, mask, face, landmarks), the
    character sheet's variants and the voice's median F0."""
    from avatar_assets.media.audio import load_wav
    from avatar_assets.media.faces import detect_faces
    from avatar_assets.media.images import load_photo
    from avatar_assets.media.portrait import make_neutral_portrait
    from avatar_assets.media.sheet import make_character_sheet
    from avatar_assets.media.voice import analyse_voice

    manifest = json.loads((bundle / "manifest.json").read_text())
    rgb = load_photo((bundle / manifest["photos"][0]).read_bytes()).rgb
    portrait = make_neutral_portrait(rgb, detect_faces(rgb)[0])
    sheet = make_character_sheet(portrait, seed=0)
    voice = analyse_voice(load_wav((bundle / manifest["voice_sample"]).read_bytes()))
    face = portrait.face
    return {
        "neutral": portrait.rgb, "mask": portrait.mask, "face_box": (face.x, face.y, face.w, face.h),
        "landmarks": portrait.landmarks.as_list() if portrait.landmarks is not None else None,
        "variants": sheet.variants, "median_f0_hz": voice.median_f0_hz,
    }


def build_video(identity: dict, output: dict, render: dict, scratch: Path, timings: dict[str, float]) -> dict:
    import numpy as np

    from avatar_assets.media import audio as audio_media
    from avatar_assets.media.backgrounds import classical_background
    from avatar_assets.media.captions import CaptionLook, to_ass, to_srt, to_vtt
    from avatar_assets.media.compose import composite_shot, contact_sheet
    from avatar_assets.media.cutout import pose_cutout
    from avatar_assets.media.enhance import enhance_frame
    from avatar_assets.media.face_motion import face_controls
    from avatar_assets.media.images import encode_png
    from avatar_assets.media.lipsync import mouth_openness
    from avatar_assets.media.script import estimated_duration_s, parse_script, ssml_with_spans, to_ssml
    from avatar_assets.media.storyboard import plan_scenes
    from avatar_assets.media.talking_head import (
        SceneTrack,
        frame_count,
        lip_sync_measurements,
        render_frames,
        scene_frame_source,
    )
    from avatar_assets.media.timings import display_timings, scene_boundaries
    from avatar_assets.media.tts import WordTiming, pitch_for_f0, synthesize, voice_for_f0
    from avatar_assets.media.video import (
        SceneClip,
        encode_frames,
        poster_frame,
        read_audio,
        read_frames,
        stitch_scenes,
        transcode_for_platform,
    )
    from avatar_assets.media.video_qa import analyse_video
    from avatar_assets.media.watermark import embed_watermark

    def stage(name: str, fn):
        started = time.perf_counter()
        value = fn()
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - started
        return value

    size, fps = tuple(render["master_size"]), render["fps"]
    crf, preset = render["crf"], render["preset"]

    def script():
        parsed = parse_script(output["script"])
        to_ssml(parsed.sentences)
        return parsed

    parsed = stage("script", script)
    scenes = stage("storyboard", lambda: plan_scenes(output["route"], [len(s) for s in parsed.sentences],
                                                      list(output["background_prompts"])))

    def speech():
        f0 = identity["median_f0_hz"]
        voice = voice_for_f0(f0, "en-us") if f0 else "en-us"
        pitch = pitch_for_f0(f0, voice) if f0 and ("+" not in voice or voice.endswith("+f3")) else 50
        synthesis = synthesize(to_ssml(parsed.sentences), voice=voice, rate_wpm=output["rate_wpm"], pitch=pitch, ssml=True)
        _, spans = ssml_with_spans([parsed.tokens])
        timed = display_timings(parsed.tokens, synthesis.words, spans)
        duration = len(synthesis.samples) / synthesis.sample_rate
        times = scene_boundaries([s.tokens[0] for s in scenes], timed, duration)
        words = [WordTiming(w.word, w.start_s, w.end_s, 0) for w in timed]
        audio_media.encode_wav(synthesis.samples, synthesis.sample_rate)
        to_srt(words), to_vtt(words)
        audio_media.longest_silence_s(synthesis.samples, synthesis.sample_rate)
        audio_media.clipping_fraction(synthesis.samples)
        audio_media.integrated_lufs(synthesis.samples, synthesis.sample_rate)
        return synthesis, timed, words, times, duration

    synthesis, timed, words, times, duration = stage("speech", speech)
    estimated_duration_s(parsed, output["rate_wpm"])

    def backgrounds():
        images = [classical_background(s.background_prompt, size[0], size[1], seed=output["seed"] + s.index)
                  for s in scenes]
        for image in images:
            encode_png(image)
        return images

    images = stage("backgrounds", backgrounds)

    def scene_assets():
        tracks, frames = [], []
        for scene, (start, end), background in zip(scenes, times, images):
            avatar, mask, box, points = identity["neutral"], identity["mask"], identity["face_box"], identity["landmarks"]
            if scene.variant != "neutral" and scene.variant in identity["variants"]:
                cutout = pose_cutout(identity["variants"][scene.variant], with_landmarks=bool(points))
                if cutout is not None:
                    avatar, mask, box, points = cutout
            shot = composite_shot(background, avatar, mask, shot=scene.shot, out_size=size, face_box=box,
                                  landmarks=np.asarray(points) if points else None)
            encode_png(shot.frame)
            frames.append(shot.frame)
            tracks.append(SceneTrack(start_s=start, end_s=end, keyframe=shot.frame, mouth_box=shot.mouth_box,
                                     landmarks=None if shot.landmarks is None else np.asarray(shot.landmarks, np.float64)))
        encode_png(contact_sheet(frames, [f"{s.index}: {s.shot} {s.variant}" for s in scenes]))
        return tracks

    tracks = stage("scene_assets", scene_assets)
    samples, rate = synthesis.samples, synthesis.sample_rate

    def lip_sync():
        total = frame_count(duration, fps)
        openness = mouth_openness(samples, rate, fps, words=timed, n_frames=total)
        controls = face_controls(openness, synthesis.phonemes, fps, seed=0)
        path = scratch / "lip_sync.mp4"
        encode_frames(render_frames(tracks, controls, fps), fps=fps, size=size, audio=(samples, rate), path=path,
                      crf=crf, preset=preset)
        lip_sync_measurements(read_frames(path, gray=True), tracks, timed, samples, rate, fps, total)
        np.save(io.BytesIO(), controls.astype(np.float32))
        return controls

    controls = stage("lip_sync", lip_sync)

    def stitched_video():
        clips = [SceneClip(t.start_s, t.end_s, frame_at=scene_frame_source(t, controls, fps)) for t in tracks]
        captions = to_ass(words, CaptionLook(**output["caption_look"]), size,
                          avoid=[tuple(t.mouth_box) for t in tracks if t.mouth_box])
        path = scratch / "stitched.mp4"
        stitch_scenes(clips, fps=fps, size=size, audio=(samples, rate), captions_ass=captions,
                      transition_s=render["transition_s"], path=path, crf=crf, preset=preset)
        return path, analyse_video(path, expected_fps=fps, expected_size=size)

    stitched, stitched_qa = stage("stitched_video", stitched_video)

    def enhanced_video():
        payload = hashlib.sha256(output["cell"].encode()).digest()[:8]
        levelled = audio_media.normalize_loudness(read_audio(stitched, sr=48000), 48000,
                                                  target_lufs=render["target_lufs"])
        frames = (embed_watermark(enhance_frame(f, sharpen=render["sharpen"], saturation=render["saturation"]), payload)
                  for f in read_frames(stitched))
        path = scratch / "enhanced.mp4"
        encode_frames(frames, fps=fps, size=(stitched_qa.width, stitched_qa.height), audio=(levelled, 48000),
                      path=path, crf=crf, preset=preset)
        return path, analyse_video(path, expected_fps=fps, expected_size=size), payload

    enhanced, enhanced_qa, payload = stage("enhanced_video", enhanced_video)

    def output_package():
        for index, rendition in enumerate(output["renditions"]):
            transcode_for_platform(enhanced, width=rendition["width"], height=rendition["height"],
                                   path=scratch / f"rendition-{index}.mp4", fit="cover" if index == 0 else "pad",
                                   crf=crf, preset=preset, watermark=payload)
        encode_png(poster_frame(enhanced, enhanced_qa.duration_s / 3))

    stage("output_package", output_package)
    return {"cell": output["cell"], "duration_s": duration, "frames": enhanced_qa.frame_count}


def _cpu_seconds() -> float:
    """This process's CPU time and its finished children's (ffmpeg), as bench.common.cpu_seconds counts it."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--json-out", type=Path, required=True)
    args = parser.parse_args(argv)
    config = json.loads(args.config.read_text())

    import_started = time.perf_counter()
    import avatar_assets.media.talking_head
    import avatar_assets.media.video  # noqa: F401

    import_s = time.perf_counter() - import_started
    identity = prepare_identity(Path(config["bundle"]))
    compute_started, compute_cpu = time.perf_counter(), _cpu_seconds()
    outputs = []
    for output in config["outputs"]:
        timings: dict[str, float] = {}
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="video-plain-") as scratch:
            summary = build_video(identity, output, config["render"], Path(scratch), timings)
        outputs.append({**summary, "total_s": time.perf_counter() - started, "stages": timings})
    args.json_out.write_text(json.dumps({
        "import_s": import_s,
        "compute_s": time.perf_counter() - compute_started,
        "compute_cpu_s": _cpu_seconds() - compute_cpu,
        "in_process_s": time.perf_counter() - _STARTED,
        "outputs": outputs,
    }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
