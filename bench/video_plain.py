"""The video build without Dagster: the video stages' `media/` functions in a plain loop, one process.

`python -m bench.video_plain --config CONFIG.json --json-out OUT` is the baseline of the `video_overhead`
benchmark. CONFIG (written by bench/video_overhead.py) holds the avatar's bundle, the render settings and
the output requests, already resolved (master size, renditions with their sizes, caption look), so this
process imports no Dagster. The avatar's identity is prepared first, untimed (the subject builds it in an
earlier, untimed `runner.process` too). Then per output, stage by stage (stage names are the asset names),
what the video assets compute on the CPU defaults: script, storyboard, espeak-ng speech with word timings
and captions, classical backgrounds for every rendition, the avatar layer and its placement per rendition,
the landmark-mesh talking head rendered once on the layer, encoded and measured, every rendition composed
and encoded in one pass with burned captions and the watermark, the audio-only loudness pass and the
poster. No media store, no records, no QA gates, no lifecycle events.

Adapt this file with the video stages: it mirrors avatar_assets/video/assets.py, video/renditions.py and
video/packaging.py.
"""

from __future__ import annotations

import time

_STARTED = time.perf_counter()

import argparse
import hashlib
import io
import json
import shutil
import tempfile
from functools import partial
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
    from avatar_assets.media.compose import (
        Avatar,
        AvatarOverlay,
        ScaledLayer,
        composite_shot,
        contact_sheet,
        fit_avatar,
        frame_avatar,
    )
    from avatar_assets.media.cutout import pose_cutout
    from avatar_assets.media.enhance import enhance_frame
    from avatar_assets.media.face_motion import face_controls
    from avatar_assets.media.images import encode_png
    from avatar_assets.media.landmarks import FaceLandmarks
    from avatar_assets.media.lipsync import mouth_box_from_face, mouth_openness
    from avatar_assets.media.script import estimated_duration_s, parse_script, ssml_with_spans, to_ssml
    from avatar_assets.media.storyboard import plan_scenes
    from avatar_assets.media.talking_head import (
        SceneTrack,
        frame_count,
        lip_sync_measurements,
        render_frames,
        layer_scene_source,
        scene_spans,
    )
    from avatar_assets.media.timings import display_timings, scene_boundaries
    from avatar_assets.media.tts import WordTiming, pitch_for_f0, synthesize, voice_for_f0
    from avatar_assets.media.video import (
        DecodedFrames,
        RenditionJob,
        SceneClip,
        encode_frames,
        encode_renditions,
        ken_burns,
        read_audio,
        read_frames,
        remux_audio,
    )
    from avatar_assets.media.video_qa import analyse_remuxed, analyse_renditions

    def stage(name: str, fn):
        started = time.perf_counter()
        value = fn()
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - started
        return value

    sizes = {r["aspect"]: (r["width"], r["height"]) for r in output["renditions"]}
    fps, crf, preset, x264_params = render["fps"], render["crf"], render["preset"], render["x264_params"]
    sharpen, saturation = render["sharpen"], render["saturation"]

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

    def backgrounds():  # per rendition: the same prompts and seeds, generated for that frame
        images = {aspect: [classical_background(s.background_prompt, w, h, seed=output["seed"] + s.index) for s in scenes]
                  for aspect, (w, h) in sizes.items()}
        for image in (image for per_aspect in images.values() for image in per_aspect):
            encode_png(image)
        return images

    images = stage("backgrounds", backgrounds)

    def scene_assets():
        points = identity["landmarks"]
        neutral = Avatar(identity["neutral"], identity["mask"], identity["face_box"],
                         np.asarray(points, np.float64) if points else None)
        canvas = neutral.size
        layer_scale = min(1.0, max(frame_avatar(neutral.face_box, canvas, "close_up", size).scale
                                   for size in sizes.values()))
        layer_size = (max(2, round(canvas[0] * layer_scale / 2) * 2), max(2, round(canvas[1] * layer_scale / 2) * 2))
        built, stills = [], []
        for index, scene in enumerate(scenes):
            avatar = neutral
            if scene.variant != "neutral" and scene.variant in identity["variants"]:
                cutout = pose_cutout(identity["variants"][scene.variant], with_landmarks=neutral.landmarks is not None)
                if cutout is not None:
                    rgb, mask, box, found = cutout
                    avatar = fit_avatar(Avatar(rgb, mask, box, np.asarray(found) if found else None), canvas)
            layer = fit_avatar(avatar, layer_size)
            broll = scene.shot == "broll"
            if broll:
                layer = Avatar(np.zeros_like(layer.rgb), np.zeros_like(layer.mask), layer.face_box)
            placements = {}
            for aspect, size in sizes.items():
                shot = composite_shot(images[aspect][index], layer.rgb, layer.mask, shot=scene.shot, out_size=size,
                                      face_box=layer.face_box, landmarks=layer.landmarks)
                placements[aspect] = (shot.placement, shot.mouth_box)
                stills.append(shot.frame)
            mouth = None if broll else (FaceLandmarks(layer.landmarks).mouth_box if layer.landmarks is not None
                                        else mouth_box_from_face(layer.face_box))
            encode_png(layer.rgb), encode_png(np.dstack([layer.mask] * 3))
            built.append((layer, mouth, placements))
        encode_png(contact_sheet(stills, [str(i) for i in range(len(stills))], columns=len(sizes)))
        return built, layer_size

    built, layer_size = stage("scene_assets", scene_assets)
    tracks = [SceneTrack(start_s=start, end_s=end, keyframe=layer.rgb, mouth_box=mouth, landmarks=layer.landmarks)
              for (layer, mouth, _), (start, end) in zip(built, times)]
    samples, rate = synthesis.samples, synthesis.sample_rate
    total = frame_count(duration, fps)

    def lip_sync():  # the avatar layer, rendered once for every rendition
        openness = mouth_openness(samples, rate, fps, words=timed, n_frames=total)
        controls = face_controls(openness, synthesis.phonemes, fps, seed=0)
        path = scratch / "lip_sync.mp4"
        encode_frames(render_frames(tracks, controls, fps), fps=fps, size=layer_size, audio=(samples, rate), path=path,
                      crf=crf, preset=preset, x264_params=x264_params)
        lip_sync_measurements(read_frames(path, gray=True), tracks, timed, samples, rate, fps, total)
        np.save(io.BytesIO(), controls.astype(np.float32))
        return path

    layer_video = stage("lip_sync", lip_sync)
    payload = hashlib.sha256(output["cell"].encode()).digest()[:8]

    def stitched_video():  # what video/renditions.py builds from the records, from the objects in hand
        layer = DecodedFrames(layer_video, transform=partial(enhance_frame, sharpen=sharpen, saturation=saturation))
        spans = scene_spans(tracks, total, fps)
        scaled = ScaledLayer()
        jobs = []
        for aspect, size in sizes.items():
            clips = []
            for index, (track, (_, _, placements)) in enumerate(zip(tracks, built)):
                background = enhance_frame(images[aspect][index], sharpen=sharpen, saturation=saturation)
                placement = placements[aspect][0]
                frame_at = (ken_burns(background, size, track.end_s - track.start_s) if placement is None
                            else layer_scene_source(AvatarOverlay(built[index][0].mask, placement, size, scaled), background,
                                                    layer, track.start_s, spans[index], fps))
                clips.append(SceneClip(track.start_s, track.end_s, frame_at=frame_at))
            mouths = [tuple(placements[aspect][1]) for _, _, placements in built if placements[aspect][1]]
            captions = to_ass(words, CaptionLook(**output["caption_look"]), size, avoid=mouths)
            jobs.append(RenditionJob(size, clips, scratch / f"stitched_{aspect.replace(':', 'x')}.mp4", captions))
        encoded = encode_renditions(jobs, fps=fps, audio=(samples, rate), transition_s=render["transition_s"],
                                    watermark=payload, crf=crf, preset=preset, x264_params=x264_params)
        measured = analyse_renditions([(job.path, job.size) for job in jobs], expected_fps=fps,
                                      poster_at_s=encoded[0].duration_s / 3)
        return [(job.path, qa) for job, qa in zip(jobs, measured)]

    stitched = stage("stitched_video", stitched_video)

    def enhanced_video():  # loudness only; the pictures are copied
        levelled = audio_media.normalize_loudness(read_audio(stitched[0][0], sr=48000), 48000,
                                                  target_lufs=render["target_lufs"])
        outs = [Path(str(path).replace("stitched_", "enhanced_")) for path, _ in stitched]
        remux_audio([path for path, _ in stitched], (levelled, 48000), paths=outs)
        return [(out, analyse_remuxed(out, qa)) for out, (_, qa) in zip(outs, stitched)]

    enhanced = stage("enhanced_video", enhanced_video)

    def output_package():  # the renditions are delivered as made: a copy each, and the poster the stitch decoded
        for index, (path, _) in enumerate(enhanced):
            shutil.copyfile(path, scratch / f"video-{index}.mp4")
        encode_png(stitched[0][1].poster)

    stage("output_package", output_package)
    return {"cell": output["cell"], "duration_s": duration, "frames": total}


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
