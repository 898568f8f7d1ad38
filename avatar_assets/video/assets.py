"""Video stages. Thin wiring: load records, call providers and media functions, store, describe."""

import functools
import hashlib
import io
import tempfile
from pathlib import Path

import dagster as dg
import numpy as np

from avatar_assets import settings
from avatar_assets.contracts import (
    BackgroundsRecord,
    CharacterSheetRecord,
    IdentityBundleRecord,
    LipSyncRecord,
    NeutralImageRecord,
    OutputPackageRecord,
    PhonemeTimingModel,
    Record,
    Scene,
    SceneAsset,
    SceneAssetsRecord,
    ScriptRecord,
    SourceUploadRecord,
    SpeechRecord,
    StoryboardRecord,
    Token,
    VideoQAModel,
    VideoRecord,
    VoiceProfileRecord,
    WordTimingModel,
)
from avatar_assets.pipeline.caching import content_key, reuse_or_compute, reuse_or_generate
from avatar_assets.pipeline.lifecycle import PROVIDER_RETRIES, emits_lifecycle, progress, recorded, seed_override
from avatar_assets.video import gates
from avatar_assets.video.graph import gates_waited_for, stage_order
from avatar_assets.video.requests import REQUEST_TAG, RequestError, accepted_request
from partitions import cell_key, identity_to_video, refresh_cell, video_cells
from resources.media_store import MediaStore, sha256_bytes
from resources.providers import Enhancer, ImageGenerator, LipSyncer, SpeechSynthesizer, VideoSettings
from resources.wav2lip import PROVIDER as WAV2LIP

GROUP = "video"
CODE_VERSION = "2"


def video_asset(*, refresh: bool = True, **kwargs):
    asset = dg.asset(
        partitions_def=video_cells,
        group_name=GROUP,
        io_manager_key="records",
        code_version=CODE_VERSION,
        automation_condition=refresh_cell if refresh else None,
        retry_policy=PROVIDER_RETRIES,
        **kwargs,
    )
    return lambda fn: asset(emits_lifecycle(approval_guard(fn)))


def approval_guard(fn):
    """A stage behind a human gate runs only when that gate's current content is approved. Which gates a
    stage waits behind is read from the graph that the stages make together (`GUARDED_BY`), so it is
    looked up when the stage runs, not when it is defined."""

    @functools.wraps(fn)
    def guarded(context, *args, **kwargs):
        waits_for = GUARDED_BY.get(fn.__name__, ())
        if waits_for:
            from resources.records import read_record

            avatar_id, slug = cell(context)
            store = context.resources.store
            script_record = read_record(store, "script", cell_key(avatar_id, slug))
            requested = gates.gate_assets(script_record.request) if script_record is not None else []
            for gate in [gate for gate in waits_for if gate in requested]:
                gated = read_record(store, gate, cell_key(avatar_id, slug))
                content = gated.content_hash() if gated else "missing"
                if gated is None or not gates.is_approved(store, avatar_id, slug, gate, content):
                    raise dg.Failure(
                        f"waiting for approval of {gate} {content[:12]} for {avatar_id}/{slug}: "
                        f"avatarops approve {gate} --avatar {avatar_id} --output {slug}",
                        allow_retries=False,
                    )
        return fn(context, *args, **kwargs)

    return guarded


def identity_input() -> dg.AssetIn:
    return dg.AssetIn(partition_mapping=identity_to_video)


def cell(context: dg.AssetExecutionContext) -> tuple[str, str]:
    keys = context.partition_key.keys_by_dimension
    return keys["avatar"], keys["output"]


def for_cell(record: Record, **fields) -> Record:
    """A reused record re-addressed to this cell: the content key shares bytes between cells (same script,
    same prompts), never the cell a record names, its watermark, its caption style or its approval state."""
    changed = {name: value for name, value in fields.items() if getattr(record, name) != value}
    return record.model_copy(update=changed) if changed else record


def scratch_dir(context: dg.AssetExecutionContext) -> tempfile.TemporaryDirectory:
    """Under the run's own scratch folder, which is removed with everything in it when the run is over
    (or found dead), so a killed stage leaves no frames or audio of the person behind."""
    root = settings.run_scratch_dir(context.run_id)
    root.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(dir=root)


# --------------------------------------------------------------------------- script


@video_asset(refresh=False, description="The request's script normalised into sentences, pauses and emphasis.")
def script(context: dg.AssetExecutionContext, store: MediaStore) -> dg.Output[ScriptRecord]:
    from avatar_assets.media.script import ScriptError, estimated_duration_s, parse_script, to_ssml

    avatar_id, slug = cell(context)
    try:
        request, raw = accepted_request(store, avatar_id, slug, context.run.tags.get(REQUEST_TAG))
    except RequestError as error:
        raise dg.Failure(str(error), allow_retries=False) from error
    try:
        parsed = parse_script(request.script, pronunciations=request.pronunciations)
    except ScriptError as error:
        raise dg.Failure(f"script for {avatar_id}/{slug} cannot be spoken: {error}", allow_retries=False) from error
    record = ScriptRecord(
        avatar_id=avatar_id,
        slug=slug,
        request=request,
        request_sha256=sha256_bytes(raw),
        text=parsed.text,
        sentences=[[Token(**vars(token)) for token in sentence] for sentence in parsed.sentences],
        ssml=to_ssml(parsed.sentences),
        word_count=parsed.word_count,
        estimated_duration_s=round(estimated_duration_s(parsed, request.voice.rate_wpm), 3),
        cleaned=parsed.cleaned,
    )
    store.put_bytes(raw, "json", "application/json")
    return recorded(
        record,
        {
            "route": request.route,
            "words": record.word_count,
            "sentences": len(record.sentences),
            "estimated_duration_s": record.estimated_duration_s,
            "cleaned": "; ".join(record.cleaned) or "nothing",
            "text": dg.MetadataValue.md(record.text[:2000]),
        },
    )


# --------------------------------------------------------------------------- storyboard


@video_asset(description="Scenes with timing estimates, shot type, background prompt and pose.")
def storyboard(
    context: dg.AssetExecutionContext, store: MediaStore, video: VideoSettings, script: ScriptRecord
) -> dg.Output[StoryboardRecord]:
    from avatar_assets.media.storyboard import plan_scenes

    request = script.request
    tokens = [token for sentence in script.sentences for token in sentence]
    planned = plan_scenes(request.route, [len(s) for s in script.sentences], list(request.background_prompts))
    seconds_per_token = script.estimated_duration_s / max(1, len(tokens))
    scenes = [
        Scene(
            index=p.index,
            tokens=p.tokens,
            text=" ".join(t.display for t in tokens[p.tokens[0] : p.tokens[1]]),
            shot=p.shot,
            background_prompt=p.background_prompt,
            variant=p.variant,
            est_start_s=round(p.tokens[0] * seconds_per_token, 3),
            est_end_s=round(p.tokens[1] * seconds_per_token, 3),
        )
        for p in planned
    ]
    record = StoryboardRecord(
        avatar_id=script.avatar_id,
        slug=script.slug,
        route=request.route,
        scenes=scenes,
        master_size=video.master_size(request.renditions()[0]),
        fps=video.fps,
    )
    table = "| # | shot | pose | background | text |\n|---|---|---|---|---|\n" + "\n".join(
        f"| {s.index} | {s.shot} | {s.variant} | {s.background_prompt} | {s.text[:60]} |" for s in scenes
    )
    return recorded(record, {"scenes": len(scenes), "route": request.route, "storyboard": dg.MetadataValue.md(table)})


# --------------------------------------------------------------------------- speech


@video_asset(
    description="24 kHz speech in the avatar's matched pitch, word timings from the synthesiser, captions.",
    ins={"voice_profile": identity_input()},
    pool="gpu",  # always, whichever provider: a neural voice runs here (README, "Neural speech")
)
def speech(
    context: dg.AssetExecutionContext,
    store: MediaStore,
    tts: SpeechSynthesizer,
    script: ScriptRecord,
    storyboard: StoryboardRecord,
    voice_profile: VoiceProfileRecord,
) -> dg.Output[SpeechRecord]:
    from avatar_assets.media.audio import clipping_fraction, encode_wav, integrated_lufs, longest_silence_s
    from avatar_assets.media.captions import to_srt, to_vtt
    from avatar_assets.media.script import ssml_with_spans, voice_language
    from avatar_assets.media.timings import display_timings, scene_boundaries
    from avatar_assets.media.tts import WordTiming, voice_for_f0

    settings_ = script.request.voice
    median_f0 = voice_profile.metrics.median_f0_hz if voice_profile.metrics else None
    requested = settings_.voice
    language = None if requested else voice_language(script.text)
    if language:  # a Cyrillic (Greek, Arabic...) script read by the English voice is spelled letter by letter
        requested = voice_for_f0(median_f0, language) if median_f0 else language
        context.log.info(f"script is written mostly for the {language!r} voice: speaking it with {requested}")
    voice, pitch = tts.voice_and_pitch(median_f0, requested, settings_.pitch_shift)
    provider = tts.info(voice, pitch, settings_.rate_wpm)

    def compute() -> SpeechRecord:
        context.log.info(f"synthesising {script.word_count} words with {voice} at pitch {pitch}")
        synthesis, spoken_by = tts.synthesize(
            script.ssml, voice=voice, pitch=pitch, rate_wpm=settings_.rate_wpm, profile=voice_profile
        )
        tokens = [token for sentence in script.sentences for token in sentence]
        _, spans = ssml_with_spans([tokens])
        timed = display_timings(tokens, synthesis.words, spans)
        duration = len(synthesis.samples) / synthesis.sample_rate
        scene_times = scene_boundaries([scene.tokens[0] for scene in storyboard.scenes], timed, duration)
        words = [WordTimingModel(word=w.word, start_s=w.start_s, end_s=w.end_s) for w in timed]
        caption_words = [WordTiming(w.word, w.start_s, w.end_s, 0) for w in timed]
        return SpeechRecord(
            avatar_id=script.avatar_id,
            slug=script.slug,
            audio=store.put_bytes(encode_wav(synthesis.samples, synthesis.sample_rate), "wav", "audio/wav"),
            sample_rate=synthesis.sample_rate,
            duration_s=round(duration, 4),
            words=words,
            scene_times=scene_times,
            captions_srt=store.put_bytes(to_srt(caption_words).encode(), "srt", "application/x-subrip"),
            captions_vtt=store.put_bytes(to_vtt(caption_words).encode(), "vtt", "text/vtt"),
            longest_silence_s=round(longest_silence_s(synthesis.samples, synthesis.sample_rate), 3),
            clipping_fraction=clipping_fraction(synthesis.samples),
            loudness_lufs=round(integrated_lufs(synthesis.samples, synthesis.sample_rate), 2),
            provider=spoken_by,
            phonemes=[
                PhonemeTimingModel(phoneme=p.phoneme, start_s=round(p.start_s, 4), end_s=round(p.end_s, 4))
                for p in synthesis.phonemes
            ],
        )

    parts = {"ssml": script.ssml, "scenes": [s.tokens for s in storyboard.scenes], "provider": provider.model_dump(),
             "words": "by-text-offset"}
    model = tts.cache_parts()
    if model:  # a model provider: its weights decide the speech, and an espeak-ng stand-in is never reused
        record, _ = reuse_or_generate(store, "speech", content_key("speech", CODE_VERSION, {**parts, "model": model}),
                                      compute, context.log)
    else:  # espeak-ng's keys are unchanged
        record, _ = reuse_or_compute(store, "speech", content_key("speech", CODE_VERSION, parts), compute, context.log)
    record = for_cell(record, avatar_id=script.avatar_id, slug=script.slug, caption_style=script.request.captions)
    return recorded(
        record,
        {
            "audio": dg.MetadataValue.path(store.uri(record.audio)),
            "duration_s": record.duration_s,
            "words": len(record.words),
            "longest_silence_s": record.longest_silence_s,
            "loudness_lufs": record.loudness_lufs,
            "voice": voice,
            "pitch": pitch,
            "provider": record.provider.provider,
            "fallback_from": record.provider.fallback_from or "none",
        },
    )


# --------------------------------------------------------------------------- backgrounds


@video_asset(
    description="One backdrop per scene from its prompt in the avatar's style preset, deterministic by seed.",
    ins={"source_upload": identity_input()},  # the style preset lives in the avatar's manifest
    pool="gpu",  # always, whichever provider (docs/diffusers.md)
)
def backgrounds(
    context: dg.AssetExecutionContext, store: MediaStore, images: ImageGenerator, storyboard: StoryboardRecord,
    script: ScriptRecord, source_upload: SourceUploadRecord,
) -> dg.Output[BackgroundsRecord]:
    from avatar_assets.media.images import encode_png, thumbnail_markdown

    preset = source_upload.manifest.style.preset
    prompts = [scene.background_prompt for scene in storyboard.scenes]
    seeds = [seed_override(context, script.request.seed) + scene.index for scene in storyboard.scenes]
    size = tuple(storyboard.master_size)

    def compute() -> BackgroundsRecord:
        generated, provider = images.backgrounds(prompts, size, seeds, preset=preset)
        context.log.info(f"generated {len(generated)} backgrounds at {size[0]}x{size[1]}")
        return BackgroundsRecord(
            avatar_id=storyboard.avatar_id,
            slug=storyboard.slug,
            images=[store.put_bytes(encode_png(image), "png", "image/png") for image in generated],
            prompts=prompts,
            seeds=seeds,
            provider=provider,
        )

    key = content_key("backgrounds", CODE_VERSION, {"prompts": prompts, "seeds": seeds, "size": size, "provider": images.cache_parts(preset)})
    record, _ = reuse_or_generate(store, "backgrounds", key, compute, context.log)
    record = for_cell(record, avatar_id=storyboard.avatar_id, slug=storyboard.slug)
    from avatar_assets.media.images import decode_image

    previews = [thumbnail_markdown(decode_image(store.read(ref)), max_side=128, alt=p) for ref, p in zip(record.images, prompts)]
    return recorded(record, {"backgrounds": len(record.images), "preview": dg.MetadataValue.md(" ".join(previews))})


# --------------------------------------------------------------------------- scene assets


@video_asset(
    description="Each scene's keyframe: the avatar (or a pose variant) composited over its backdrop per shot type.",
    ins={"neutral_image": identity_input(), "character_sheet": identity_input()},
)
def scene_assets(
    context: dg.AssetExecutionContext,
    store: MediaStore,
    storyboard: StoryboardRecord,
    speech: SpeechRecord,
    backgrounds: BackgroundsRecord,
    neutral_image: NeutralImageRecord,
    character_sheet: CharacterSheetRecord,
) -> dg.Output[SceneAssetsRecord]:
    from avatar_assets.media.compose import composite_shot, contact_sheet
    from avatar_assets.media.cutout import pose_cutout
    from avatar_assets.media.images import decode_image, encode_png, thumbnail_markdown
    from avatar_assets.media.landmarks import FaceLandmarks

    def compute() -> SceneAssetsRecord:
        neutral = decode_image(store.read(neutral_image.image))
        mask = decode_image(store.read(neutral_image.mask))[..., 0]
        scenes, frames = [], []
        for scene, (start, end), background_ref in zip(storyboard.scenes, speech.scene_times, backgrounds.images):
            avatar, avatar_mask, face_box, points = neutral, mask, neutral_image.face_box, neutral_image.landmarks
            if scene.variant != "neutral" and scene.variant in character_sheet.variants:
                variant = decode_image(store.read(character_sheet.variants[scene.variant]))
                cutout = pose_cutout(variant, with_landmarks=bool(points))
                if cutout is not None:
                    avatar, avatar_mask, face_box, points = cutout
            shot = composite_shot(
                decode_image(store.read(background_ref)), avatar, avatar_mask,
                shot=scene.shot, out_size=tuple(storyboard.master_size), face_box=face_box,
                landmarks=np.asarray(points) if points else None,
            )
            frames.append(shot.frame)
            scenes.append(
                SceneAsset(
                    index=scene.index, shot=scene.shot, variant=scene.variant,
                    keyframe=store.put_bytes(encode_png(shot.frame), "png", "image/png"),
                    mouth_box=shot.mouth_box, face_box=shot.face_box, start_s=start, end_s=end,
                    landmarks=None if shot.landmarks is None else FaceLandmarks(shot.landmarks).as_list(),
                )
            )
        sheet = contact_sheet(frames, [f"{s.index}: {s.shot} {s.variant}" for s in scenes])
        return SceneAssetsRecord(
            avatar_id=storyboard.avatar_id, slug=storyboard.slug, scenes=scenes,
            contact_sheet=store.put_bytes(encode_png(sheet), "png", "image/png"),
            master_size=storyboard.master_size, fps=storyboard.fps,
        )

    key = content_key(
        "scene_assets", CODE_VERSION,
        {"storyboard": storyboard.content_hash(), "times": speech.scene_times, "backgrounds": [b.sha256 for b in backgrounds.images],
         "neutral": neutral_image.image.sha256, "sheet": character_sheet.sheet.sha256},
    )
    record, _ = reuse_or_compute(store, "scene_assets", key, compute, context.log)
    sheet = decode_image(store.read(record.contact_sheet))
    return recorded(
        record,
        {
            "scenes": len(record.scenes),
            "contact_sheet": dg.MetadataValue.md(thumbnail_markdown(sheet, max_side=640, alt="storyboard contact sheet")),
        },
    )


# --------------------------------------------------------------------------- lip sync


@video_asset(
    description="The talking-head track: the face animated by visemes, the speech envelope, blinks and idle motion.",
    pool="gpu",  # always, whichever provider: a lip-sync model runs here (README, "Real lip sync")
)
def lip_sync(
    context: dg.AssetExecutionContext,
    store: MediaStore,
    lipsync: LipSyncer,
    video: VideoSettings,
    scene_assets: SceneAssetsRecord,
    speech: SpeechRecord,
    script: ScriptRecord,
) -> dg.Output[LipSyncRecord]:
    from avatar_assets.media.audio import load_wav
    from avatar_assets.media.talking_head import frame_count, lip_sync_measurements, render_frames
    from avatar_assets.media.video import encode_frames, read_frames

    fps = scene_assets.fps
    # approval_gated always waits here; any request can ask for the same gate (video_asset_approval).
    awaiting = "lip_sync" in gates.gate_assets(script.request)
    seed = seed_override(context, lipsync.seed)
    faces = [s for s in scene_assets.scenes if s.mouth_box is not None]
    if not lipsync.landmark_mesh_ready():
        fallback = "the landmark model (dlib-bin, face_recognition_models) is not installed"
    elif any(s.landmarks is None for s in faces):
        fallback = "the scenes carry no face landmarks (the neutral image was made without the landmark model)"
    else:
        fallback = None
    if fallback:
        context.log.warning(f"lip sync falls back to the envelope-driven mouth: {fallback}")

    def compute() -> LipSyncRecord:
        from avatar_assets.media.wav2lip import LipSyncFailed

        audio = load_wav(store.read(speech.audio))
        total = frame_count(speech.duration_s, fps)
        controls = lipsync.controls(
            audio.samples, audio.sample_rate, fps, speech.words, speech.phonemes, total, seed=seed, mesh=fallback is None
        )
        tracks = scene_tracks(store, scene_assets)
        base = lipsync.info(seed, fallback_reason=fallback)
        with scratch_dir(context) as tmp:
            path = Path(tmp) / "lip_sync.mp4"

            def render(batch_size: int | None, with_model: bool = True):
                frames = render_frames(tracks, controls, fps, progress=progress(context, "lip sync"))
                frames, info = (
                    lipsync.resync(frames, tracks, audio.samples, audio.sample_rate, fps, total, base, batch_size)
                    if with_model else (frames, base)
                )
                encode_frames(
                    frames, fps=fps, size=tuple(scene_assets.master_size), audio=(audio.samples, audio.sample_rate),
                    path=path, crf=video.crf, preset=video.preset,
                )
                return info

            provider, failures = None, []
            for batch_size in lipsync.batch_attempts():  # a model out of memory at its batch may pass at 1
                try:
                    provider = render(batch_size)
                    break
                except LipSyncFailed as error:
                    failures.append(f"batch {batch_size}: {error}")
                    context.log.warning(f"lip sync attempt at batch {batch_size} failed: {error}")
            if provider is None:  # the model loaded but failed every attempt: the CPU default's frames
                context.log.warning("lip sync falls back to the CPU default")
                provider = lipsync.fallback_info(render(None, with_model=False), "; ".join(failures))
            lag, in_silence, in_speech = lip_sync_measurements(
                read_frames(path, gray=True), tracks, speech.words, audio.samples, audio.sample_rate, fps, total
            )
            ref = store.put_file(path, "mp4", "video/mp4")
        buffer = io.BytesIO()
        np.save(buffer, controls.astype(np.float32))
        return LipSyncRecord(
            avatar_id=scene_assets.avatar_id, slug=scene_assets.slug, video=ref,
            openness=store.put_bytes(buffer.getvalue(), "npy", "application/x-npy"),
            fps=fps, frames=total,
            lag_frames=lag, motion_in_silence=in_silence, motion_in_speech=in_speech,
            provider=provider,
            awaiting_approval=awaiting,
        )

    parts = {"scenes": scene_assets.content_hash(), "audio": speech.audio.sha256, "video": video.model_dump(),
             "phonemes": [p.model_dump() for p in speech.phonemes], "seed": seed, "mesh": fallback is None}
    model = lipsync.cache_parts()
    if model:  # a model provider: its weights decide the frames, and a fallback stand-in is never reused
        record, _ = reuse_or_generate(store, "lip_sync", content_key("lip_sync", CODE_VERSION, {**parts, "model": model}),
                                      compute, context.log)
    else:  # the CPU default's keys are unchanged (its own envelope fallback is deterministic and keyed by "mesh")
        record, _ = reuse_or_compute(store, "lip_sync", content_key("lip_sync", CODE_VERSION, parts), compute, context.log)
    record = for_cell(record, avatar_id=scene_assets.avatar_id, slug=scene_assets.slug,
                      awaiting_approval=awaiting)
    if record.awaiting_approval:
        context.log.info(
            f"{record.avatar_id}/{record.slug} waits for approval of lip_sync before stitched_video "
            f"(avatarops approve lip_sync --avatar {record.avatar_id} --output {record.slug})"
        )
    return recorded(
        record,
        {
            "video": dg.MetadataValue.path(store.uri(record.video)),
            "frames": record.frames,
            "lag_frames": record.lag_frames,
            "motion_in_silence": record.motion_in_silence,
            "motion_in_speech": record.motion_in_speech,
            "awaiting_approval": record.awaiting_approval,
            "provider": record.provider.provider,
            "fallback_from": record.provider.fallback_from or "none",
            "seed": seed,
        },
    )


def scene_tracks(store: MediaStore, scene_assets: SceneAssetsRecord):
    from avatar_assets.media.images import decode_image
    from avatar_assets.media.talking_head import SceneTrack

    return [
        SceneTrack(
            start_s=s.start_s, end_s=s.end_s, keyframe=decode_image(store.read(s.keyframe)), mouth_box=s.mouth_box,
            landmarks=np.asarray(s.landmarks, np.float64) if s.landmarks else None,
        )
        for s in scene_assets.scenes
    ]


# --------------------------------------------------------------------------- stitched and enhanced video


def video_metadata(record: VideoRecord, store: MediaStore) -> dict:
    from avatar_assets.media.images import thumbnail_markdown
    from avatar_assets.media.video import poster_frame

    poster = poster_frame(store.local_path(record.video), record.qa.duration_s / 3)
    return {
        "video": dg.MetadataValue.path(str(store.local_path(record.video))),
        "uri": store.uri(record.video),
        "poster": dg.MetadataValue.md(thumbnail_markdown(poster, max_side=320, alt="poster frame")),
        "duration_s": record.qa.duration_s,
        "fps": record.qa.fps,
        "size": f"{record.qa.width}x{record.qa.height}",
        "loudness_lufs": record.qa.loudness_lufs if record.qa.loudness_lufs is not None else float("nan"),
        "longest_black_s": record.qa.longest_black_s,
        "longest_frozen_s": record.qa.longest_frozen_s,
    }


@video_asset(description="Scenes in order with crossfades, burned-in styled captions (libass) and the speech track (moviepy).")
def stitched_video(
    context: dg.AssetExecutionContext,
    store: MediaStore,
    video: VideoSettings,
    lip_sync: LipSyncRecord,
    scene_assets: SceneAssetsRecord,
    speech: SpeechRecord,
) -> dg.Output[VideoRecord]:
    from avatar_assets.media.audio import load_wav
    from avatar_assets.media.captions import CaptionLook, to_ass
    from avatar_assets.media.talking_head import scene_frame_source
    from avatar_assets.media.tts import WordTiming
    from avatar_assets.media.video import DecodedFrames, SceneClip, stitch_scenes
    from avatar_assets.media.video_qa import analyse_video

    def compute() -> VideoRecord:
        audio = load_wav(store.read(speech.audio))
        controls = np.load(io.BytesIO(store.read(lip_sync.openness)))
        tracks = scene_tracks(store, scene_assets)
        # A lip-sync model's faces exist only in the lip-sync video (controls cannot redraw them): read them there.
        synced = None
        if lip_sync.provider.provider == WAV2LIP:
            synced = DecodedFrames(store.local_path(lip_sync.video)).__getitem__
        clips = [SceneClip(t.start_s, t.end_s, frame_at=scene_frame_source(t, controls, lip_sync.fps, synced)) for t in tracks]
        captions = to_ass(
            [WordTiming(w.word, w.start_s, w.end_s, 0) for w in speech.words],
            CaptionLook(**speech.caption_style.model_dump(exclude={"preset"})), tuple(scene_assets.master_size),
            avoid=[tuple(s.mouth_box) for s in scene_assets.scenes if s.mouth_box],
        )
        with scratch_dir(context) as tmp:
            path = Path(tmp) / "stitched.mp4"
            stitch_scenes(
                clips, fps=lip_sync.fps, size=tuple(scene_assets.master_size), audio=(audio.samples, audio.sample_rate),
                captions_ass=captions, transition_s=video.transition_s, path=path, crf=video.crf, preset=video.preset,
                progress=progress(context, "stitching"),
            )
            qa = VideoQAModel.model_validate(
                analyse_video(path, expected_fps=lip_sync.fps, expected_size=tuple(scene_assets.master_size)),
                from_attributes=True,
            )
            ref = store.put_file(path, "mp4", "video/mp4")
        return VideoRecord(
            avatar_id=lip_sync.avatar_id, slug=lip_sync.slug, stage="stitched_video", video=ref, qa=qa,
            expected_size=scene_assets.master_size, expected_fps=lip_sync.fps, audio_duration_s=speech.duration_s,
            provider=ProviderInfoFor.stitch(), captions_ass=store.put_bytes(captions.encode(), "ass", "text/x-ssa"),
        )

    key = content_key("stitched_video", CODE_VERSION, {"lip_sync": lip_sync.content_hash(), "speech": speech.content_hash(), "video": video.model_dump()})
    record, _ = reuse_or_compute(store, "stitched_video", key, compute, context.log)
    return recorded(record, video_metadata(record, store))


class ProviderInfoFor:
    @staticmethod
    def stitch():
        from importlib.metadata import version

        from avatar_assets.contracts import ProviderInfo

        return ProviderInfo(capability="stitch", provider="moviepy", model_id="crossfade+ass-captions", version=version("moviepy"))


@video_asset(description="Sharpened and colour-balanced, loudness normalised to -16 LUFS, invisibly watermarked.")
def enhanced_video(
    context: dg.AssetExecutionContext,
    store: MediaStore,
    enhancer: Enhancer,
    video: VideoSettings,
    stitched_video: VideoRecord,
    speech: SpeechRecord,
) -> dg.Output[VideoRecord]:
    from avatar_assets.media.audio import normalize_loudness
    from avatar_assets.media.enhance import enhance_frame
    from avatar_assets.media.video import encode_frames, read_audio, read_frames
    from avatar_assets.media.video_qa import analyse_video
    from avatar_assets.media.watermark import embed_watermark

    payload = hashlib.sha256(cell_key(stitched_video.avatar_id, stitched_video.slug).encode()).digest()[:8]

    def compute() -> VideoRecord:
        source = store.local_path(stitched_video.video)
        audio = read_audio(source, sr=48000)
        levelled = normalize_loudness(audio, 48000, target_lufs=enhancer.target_lufs)
        total = stitched_video.qa.frame_count
        report = progress(context, "enhancing")

        def frames():
            for index, frame in enumerate(read_frames(source)):
                if index % max(1, total // 10) == 0:
                    report(index + 1, total)
                yield embed_watermark(enhance_frame(frame, sharpen=enhancer.sharpen, saturation=enhancer.saturation), payload)

        with scratch_dir(context) as tmp:
            path = Path(tmp) / "enhanced.mp4"
            size = (stitched_video.qa.width, stitched_video.qa.height)
            encode_frames(frames(), fps=stitched_video.expected_fps, size=size, audio=(levelled, 48000), path=path,
                          crf=video.crf, preset=video.preset)
            qa = VideoQAModel.model_validate(
                analyse_video(path, expected_fps=stitched_video.expected_fps, expected_size=tuple(stitched_video.expected_size)),
                from_attributes=True,
            )
            ref = store.put_file(path, "mp4", "video/mp4")
        return VideoRecord(
            avatar_id=stitched_video.avatar_id, slug=stitched_video.slug, stage="enhanced_video", video=ref, qa=qa,
            expected_size=stitched_video.expected_size, expected_fps=stitched_video.expected_fps,
            audio_duration_s=speech.duration_s, provider=enhancer.info(), watermark=payload.hex(),
        )

    # The watermark names the cell, so two cells with identical stitched bytes still get their own file.
    key = content_key("enhanced_video", CODE_VERSION, {"stitched": stitched_video.video.sha256, "watermark": payload.hex(),
                                                       "enhancer": enhancer.model_dump(), "video": video.model_dump()})
    record, _ = reuse_or_compute(store, "enhanced_video", key, compute, context.log)
    return recorded(record, {**video_metadata(record, store), "watermark": record.watermark or ""})


# --------------------------------------------------------------------------- output package


@video_asset(
    description="H.264/AAC MP4 per platform size, poster, captions and the rights manifest.",
    ins={"source_upload": identity_input(), "identity_bundle": identity_input()},
)
def output_package(
    context: dg.AssetExecutionContext,
    store: MediaStore,
    video: VideoSettings,
    enhanced_video: VideoRecord,
    stitched_video: VideoRecord,
    lip_sync: LipSyncRecord,
    scene_assets: SceneAssetsRecord,
    backgrounds: BackgroundsRecord,
    speech: SpeechRecord,
    storyboard: StoryboardRecord,
    script: ScriptRecord,
    source_upload: SourceUploadRecord,
    identity_bundle: IdentityBundleRecord,
) -> dg.Output[OutputPackageRecord]:
    from avatar_assets.media.images import thumbnail_markdown
    from avatar_assets.video.packaging import PackageSources, build_package

    sources = PackageSources(
        script=script, storyboard=storyboard, speech=speech, backgrounds=backgrounds, scene_assets=scene_assets,
        lip_sync=lip_sync, stitched_video=stitched_video, enhanced_video=enhanced_video,
        source_upload=source_upload, identity_bundle=identity_bundle,
    )
    with scratch_dir(context) as tmp:
        record, poster_rgb = build_package(store, video, sources, Path(tmp), context.log)
    return recorded(
        record,
        {
            "folder": dg.MetadataValue.path(store.uri(record.folder)),
            "poster": dg.MetadataValue.md(thumbnail_markdown(poster_rgb, max_side=320, alt="poster")),
            "renditions": ", ".join(f"{r.aspect_ratio} {r.width}x{r.height}" for r in record.renditions),
            "rights_manifest": dg.MetadataValue.path(store.uri(record.rights_manifest)),
        },
    )


VIDEO_ASSETS = [script, storyboard, speech, backgrounds, scene_assets, lip_sync, stitched_video, enhanced_video, output_package]
VIDEO_STAGES = stage_order(VIDEO_ASSETS)
GUARDED_BY = gates_waited_for(VIDEO_ASSETS)
