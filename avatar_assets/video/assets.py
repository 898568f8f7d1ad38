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
    Placement,
    RenditionVideo,
    SceneAsset,
    SceneAssetsRecord,
    SceneFrame,
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
        renditions={aspect: video.master_size(aspect) for aspect in request.renditions()},
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
    description="One backdrop per scene and rendition, generated for that rendition's frame from the scene's prompt "
                "in the avatar's style preset, deterministic by seed.",
    ins={"source_upload": identity_input()},  # the style preset lives in the avatar's manifest
    pool="gpu",  # always, whichever provider (docs/diffusers.md)
)
def backgrounds(
    context: dg.AssetExecutionContext, store: MediaStore, images: ImageGenerator, storyboard: StoryboardRecord,
    script: ScriptRecord, source_upload: SourceUploadRecord,
) -> dg.Output[BackgroundsRecord]:
    from avatar_assets.media.images import decode_image, encode_png, thumbnail_markdown

    preset = source_upload.manifest.style.preset
    prompts = [scene.background_prompt for scene in storyboard.scenes]
    seeds = [seed_override(context, script.request.seed) + scene.index for scene in storyboard.scenes]
    sizes = {aspect: tuple(size) for aspect, size in storyboard.renditions.items()}

    def compute() -> BackgroundsRecord:
        by_aspect, provider = {}, None
        for aspect, size in sizes.items():  # the same prompts and seeds, composed for each frame
            generated, provider = images.backgrounds(prompts, size, seeds, preset=preset)
            context.log.info(f"generated {len(generated)} backgrounds at {size[0]}x{size[1]} for {aspect}")
            by_aspect[aspect] = [store.put_bytes(encode_png(image), "png", "image/png") for image in generated]
        first, *others = by_aspect
        return BackgroundsRecord(
            avatar_id=storyboard.avatar_id,
            slug=storyboard.slug,
            images=by_aspect[first],
            by_aspect={aspect: by_aspect[aspect] for aspect in others},
            prompts=prompts,
            seeds=seeds,
            provider=provider,
        )

    key = content_key("backgrounds", CODE_VERSION, {"prompts": prompts, "seeds": seeds, "sizes": list(sizes.items()),
                                                    "provider": images.cache_parts(preset)})
    record, _ = reuse_or_generate(store, "backgrounds", key, compute, context.log)
    record = for_cell(record, avatar_id=storyboard.avatar_id, slug=storyboard.slug)
    previews = [thumbnail_markdown(decode_image(store.read(ref)), max_side=128, alt=p) for ref, p in zip(record.images, prompts)]
    return recorded(record, {"backgrounds": len(record.images), "renditions": ", ".join(sizes),
                             "preview": dg.MetadataValue.md(" ".join(previews))})


# --------------------------------------------------------------------------- scene assets


@video_asset(
    description="Each scene's avatar layer (the avatar or a pose variant, what lip sync animates) and its "
                "composition for every rendition: framed by shot type inside the platform's safe area over the "
                "backdrop made for that frame.",
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
    import cv2

    from avatar_assets.media.compose import Avatar, composite_shot, contact_sheet, cover_resize, fit_avatar, frame_avatar
    from avatar_assets.media.cutout import pose_cutout
    from avatar_assets.media.images import decode_image, encode_png, thumbnail_markdown
    from avatar_assets.media.landmarks import FaceLandmarks
    from avatar_assets.media.lipsync import mouth_box_from_face

    def png(image: np.ndarray):
        return store.put_bytes(encode_png(image), "png", "image/png")

    def compute() -> SceneAssetsRecord:
        neutral = Avatar(decode_image(store.read(neutral_image.image)), decode_image(store.read(neutral_image.mask))[..., 0],
                         tuple(neutral_image.face_box),
                         np.asarray(neutral_image.landmarks, np.float64) if neutral_image.landmarks else None)
        canvas = neutral.size
        avatars = []
        for scene in storyboard.scenes:
            avatar = neutral
            if scene.variant != "neutral" and scene.variant in character_sheet.variants:
                variant = decode_image(store.read(character_sheet.variants[scene.variant]))
                cutout = pose_cutout(variant, with_landmarks=neutral.landmarks is not None)
                if cutout is not None:
                    rgb, mask, face_box, points = cutout
                    avatar = fit_avatar(Avatar(rgb, mask, face_box, np.asarray(points) if points else None), canvas)
            avatars.append(avatar)
        # The layer is as large as a close-up of the avatar needs in the largest rendition, never above the
        # avatar's own pixels. Framing is scale-invariant, so the placements do not depend on the layer's size,
        # and the layer's size depends only on the avatar and the renditions (same scene, same layer).
        layer_scale = min(1.0, max(frame_avatar(neutral.face_box, canvas, "close_up", size).scale
                                   for size in storyboard.renditions.values()))
        layer_size = (max(2, round(canvas[0] * layer_scale / 2) * 2), max(2, round(canvas[1] * layer_scale / 2) * 2))
        scenes, stills, labels = [], [], []
        for index, (scene, (start, end), avatar) in enumerate(zip(storyboard.scenes, speech.scene_times, avatars)):
            layer = fit_avatar(avatar, layer_size)
            broll = scene.shot == "broll"
            if broll:  # the avatar is not on screen: an empty layer
                layer = Avatar(np.zeros_like(layer.rgb), np.zeros_like(layer.mask), layer.face_box)
            frames = []
            for aspect, size in storyboard.renditions.items():
                background_ref = backgrounds.for_aspect(aspect)[index]
                background = decode_image(store.read(background_ref))
                if background.shape[:2] != (size[1], size[0]):  # a provider that could not make the exact size
                    background = cover_resize(background, tuple(size))
                    background_ref = png(background)
                shot = composite_shot(background, layer.rgb, layer.mask, shot=scene.shot, out_size=tuple(size),
                                      face_box=layer.face_box, landmarks=layer.landmarks)
                placement = shot.placement
                frames.append(SceneFrame(
                    aspect_ratio=aspect, size=tuple(size), background=background_ref,
                    face_box=shot.face_box, mouth_box=shot.mouth_box,
                    placement=None if placement is None else Placement.model_validate(placement, from_attributes=True),
                ))
                stills.append(cv2.resize(shot.frame, (320, max(1, round(320 * size[1] / size[0]))), interpolation=cv2.INTER_AREA))
                labels.append(f"{scene.index}: {scene.shot} {scene.variant} {aspect}")
            mouth = None
            if not broll:
                mouth = (FaceLandmarks(layer.landmarks).mouth_box if layer.landmarks is not None
                         else mouth_box_from_face(layer.face_box))
            scenes.append(SceneAsset(
                index=scene.index, shot=scene.shot, variant=scene.variant, keyframe=png(layer.rgb), mask=png(np.dstack([layer.mask] * 3)),
                mouth_box=mouth, face_box=None if broll else layer.face_box, start_s=start, end_s=end,
                landmarks=None if broll or layer.landmarks is None else FaceLandmarks(layer.landmarks).as_list(),
                frames=frames,
            ))
        sheet = contact_sheet(stills, labels, columns=len(storyboard.renditions))
        return SceneAssetsRecord(
            avatar_id=storyboard.avatar_id, slug=storyboard.slug, scenes=scenes, contact_sheet=png(sheet),
            layer_size=layer_size, fps=storyboard.fps,
        )

    key = content_key(
        "scene_assets", CODE_VERSION,
        {"storyboard": storyboard.content_hash(), "times": speech.scene_times,
         "backgrounds": [b.sha256 for aspect in storyboard.renditions for b in backgrounds.for_aspect(aspect)],
         "neutral": neutral_image.image.sha256, "sheet": character_sheet.sheet.sha256},
    )
    record, _ = reuse_or_compute(store, "scene_assets", key, compute, context.log)
    sheet = decode_image(store.read(record.contact_sheet))
    return recorded(
        record,
        {
            "scenes": len(record.scenes),
            "layer_size": f"{record.layer_size[0]}x{record.layer_size[1]}",
            "renditions": ", ".join(f"{a} {w}x{h}" for a, (w, h) in record.renditions.items()),
            "contact_sheet": dg.MetadataValue.md(thumbnail_markdown(sheet, max_side=640, alt="storyboard contact sheet")),
        },
    )


# --------------------------------------------------------------------------- lip sync


@video_asset(
    description="The avatar layer, rendered once for every rendition: the face animated by visemes, the speech "
                "envelope, blinks and idle motion (its alpha is each scene's mask).",
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
        audio = load_wav(store.read(speech.audio))
        total = frame_count(speech.duration_s, fps)
        controls = lipsync.controls(
            audio.samples, audio.sample_rate, fps, speech.words, speech.phonemes, total, seed=seed, mesh=fallback is None
        )
        tracks = scene_tracks(store, scene_assets)
        base = lipsync.info(seed, fallback_reason=fallback)
        with scratch_dir(context) as tmp:
            path = Path(tmp) / "lip_sync.mp4"

            def render(batch_size: int | None, with_model: bool):
                frames = render_frames(tracks, controls, fps, progress=progress(context, "lip sync"))
                frames, info = (
                    lipsync.resync(frames, tracks, audio.samples, audio.sample_rate, fps, total, base, batch_size)
                    if with_model else (frames, base)
                )
                encode_frames(
                    frames, fps=fps, size=tuple(scene_assets.layer_size), audio=(audio.samples, audio.sample_rate),
                    path=path, crf=video.crf, preset=video.preset, x264_params=video.x264_params,
                )
                return info

            provider = lipsync.render_with_fallback(render, context.log.warning)
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


def rendition_poster(store: MediaStore, rendition: RenditionVideo) -> np.ndarray:
    """The rendition's poster frame: its stored PNG, or decoded from the video (a record from before posters)."""
    from avatar_assets.media.images import decode_image
    from avatar_assets.media.video import poster_frame

    if rendition.poster is not None:
        return decode_image(store.read(rendition.poster))
    return poster_frame(store.local_path(rendition.video), rendition.qa.duration_s / 3)


def video_metadata(record: VideoRecord, store: MediaStore) -> dict:
    from avatar_assets.media.images import thumbnail_markdown

    posters = " ".join(thumbnail_markdown(rendition_poster(store, r), max_side=240, alt=r.aspect_ratio)
                       for r in record.renditions)
    table = "| rendition | size | fps | duration | loudness | longest black | longest frozen |\n|---|---|---|---|---|---|---|\n" + "\n".join(
        f"| {r.aspect_ratio} | {r.qa.width}x{r.qa.height} | {r.qa.fps:g} | {r.qa.duration_s:.2f} s | "
        f"{r.qa.loudness_lufs if r.qa.loudness_lufs is not None else float('nan'):.1f} LUFS | {r.qa.longest_black_s:.2f} s | "
        f"{r.qa.longest_frozen_s:.2f} s |" for r in record.renditions)
    return {
        "video": dg.MetadataValue.path(str(store.local_path(record.video))),
        "uri": store.uri(record.video),
        "poster": dg.MetadataValue.md(posters),
        "renditions": dg.MetadataValue.md(table),
        "duration_s": record.qa.duration_s,
        "fps": record.qa.fps,
        "size": f"{record.qa.width}x{record.qa.height}",
        "loudness_lufs": record.qa.loudness_lufs if record.qa.loudness_lufs is not None else float("nan"),
        "longest_black_s": max(r.qa.longest_black_s for r in record.renditions),
        "longest_frozen_s": max(r.qa.longest_frozen_s for r in record.renditions),
    }


def watermark_payload(avatar_id: str, slug: str) -> bytes:
    """The invisible mark of a cell's videos: it names the cell."""
    return hashlib.sha256(cell_key(avatar_id, slug).encode()).digest()[:8]


@video_asset(description="Every rendition composed natively in one pass from one decode of the avatar layer: the "
                         "layer over each scene's backdrop for that frame, crossfades, sharpening, the invisible "
                         "watermark and the styled captions (libass) in the caption-safe band, one encode each.")
def stitched_video(
    context: dg.AssetExecutionContext,
    store: MediaStore,
    video: VideoSettings,
    enhancer: Enhancer,
    lip_sync: LipSyncRecord,
    scene_assets: SceneAssetsRecord,
    speech: SpeechRecord,
) -> dg.Output[VideoRecord]:
    from avatar_assets.media.audio import load_wav
    from avatar_assets.media.images import encode_png
    from avatar_assets.media.video import encode_renditions
    from avatar_assets.media.video_qa import analyse_renditions
    from avatar_assets.video.renditions import rendition_jobs

    payload = watermark_payload(lip_sync.avatar_id, lip_sync.slug)

    def compute() -> VideoRecord:
        audio = load_wav(store.read(speech.audio))
        fps = lip_sync.fps
        with scratch_dir(context) as tmp:
            jobs = rendition_jobs(store, scene_assets, lip_sync, speech, Path(tmp), sharpen=enhancer.sharpen,
                                  saturation=enhancer.saturation)
            encoded = encode_renditions(
                list(jobs.values()), fps=fps, audio=(audio.samples, audio.sample_rate), transition_s=video.transition_s,
                watermark=payload, crf=video.crf, preset=video.preset, x264_params=video.x264_params,
                progress=progress(context, "composing renditions"),
            )
            # Each rendition decoded in full for its gate, and its poster kept from that decode: enhanced_video (the
            # same pictures), the UI and the package reuse it.
            measured = analyse_renditions([(job.path, job.size) for job in jobs.values()], expected_fps=fps,
                                          poster_at_s=encoded[0].duration_s / 3)
            renditions = []
            for (aspect, job), facts in zip(jobs.items(), measured):
                qa = VideoQAModel.model_validate(facts, from_attributes=True)
                renditions.append(RenditionVideo(
                    aspect_ratio=aspect, video=store.put_file(job.path, "mp4", "video/mp4"), qa=qa, expected_size=job.size,
                    captions_ass=store.put_bytes(job.captions_ass.encode(), "ass", "text/x-ssa"),
                    poster=store.put_bytes(encode_png(facts.poster), "png", "image/png"),
                ))
        return VideoRecord(
            avatar_id=lip_sync.avatar_id, slug=lip_sync.slug, stage="stitched_video", renditions=renditions,
            expected_fps=fps, audio_duration_s=speech.duration_s, provider=stitch_info(enhancer), watermark=payload.hex(),
        )

    # The watermark names the cell, so two cells with identical layers still get their own files.
    key = content_key("stitched_video", CODE_VERSION, {
        "lip_sync": lip_sync.content_hash(), "scene_assets": scene_assets.content_hash(), "speech": speech.content_hash(),
        "video": video.model_dump(), "enhancer": enhancer.model_dump(), "watermark": payload.hex()})
    record, _ = reuse_or_compute(store, "stitched_video", key, compute, context.log)
    return recorded(record, {**video_metadata(record, store), "watermark": record.watermark or ""})


def stitch_info(enhancer: Enhancer):
    from importlib.metadata import version

    from avatar_assets.contracts import ProviderInfo

    return ProviderInfo(
        capability="stitch", provider="native-renditions", model_id="layer-composite+crossfade+unsharp+watermark+ass-captions",
        version=version("imageio-ffmpeg"), settings={"sharpen": enhancer.sharpen, "saturation": enhancer.saturation},
    )


@video_asset(description="Loudness normalised to -16 LUFS in an audio-only pass: every rendition's video stream is "
                         "copied bit for bit (already sharpened and watermarked by stitched_video).")
def enhanced_video(
    context: dg.AssetExecutionContext,
    store: MediaStore,
    enhancer: Enhancer,
    stitched_video: VideoRecord,
    speech: SpeechRecord,
) -> dg.Output[VideoRecord]:
    from avatar_assets.media.audio import normalize_loudness
    from avatar_assets.media.video import read_audio, remux_audio
    from avatar_assets.media.video_qa import analyse_remuxed

    def compute() -> VideoRecord:
        from concurrent.futures import ThreadPoolExecutor

        audio = read_audio(store.local_path(stitched_video.video), sr=48000)  # every rendition carries the same track
        levelled = normalize_loudness(audio, 48000, target_lufs=enhancer.target_lufs)
        renditions = []
        report = progress(context, "levelling loudness", unit="renditions")
        with scratch_dir(context) as tmp:
            paths = [Path(tmp) / f"enhanced_{r.aspect_ratio.replace(':', 'x')}.mp4" for r in stitched_video.renditions]
            remux_audio([store.local_path(r.video) for r in stitched_video.renditions], (levelled, 48000), paths=paths)
            # Each rendition's audio measurement is its own ffmpeg: side by side.
            with ThreadPoolExecutor(max_workers=len(paths)) as pool:
                measured = pool.map(analyse_remuxed, paths, [r.qa for r in stitched_video.renditions])
                for rendition, path, facts in zip(stitched_video.renditions, paths, measured):
                    qa = VideoQAModel.model_validate(facts)
                    renditions.append(rendition.model_copy(update={"video": store.put_file(path, "mp4", "video/mp4"),
                                                                   "qa": qa}))
                    report(len(renditions), len(stitched_video.renditions))
        return VideoRecord(
            avatar_id=stitched_video.avatar_id, slug=stitched_video.slug, stage="enhanced_video", renditions=renditions,
            expected_fps=stitched_video.expected_fps, audio_duration_s=speech.duration_s, provider=enhancer.info(),
            watermark=stitched_video.watermark,
        )

    key = content_key("enhanced_video", CODE_VERSION, {"stitched": [r.video.sha256 for r in stitched_video.renditions],
                                                       "target_lufs": enhancer.target_lufs})
    record, _ = reuse_or_compute(store, "enhanced_video", key, compute, context.log)
    return recorded(record, {**video_metadata(record, store), "watermark": record.watermark or ""})


# --------------------------------------------------------------------------- output package


@video_asset(
    description="The natively composed H.264/AAC MP4 of every rendition (no transcode), poster, captions and the rights manifest.",
    ins={"source_upload": identity_input(), "identity_bundle": identity_input()},
)
def output_package(
    context: dg.AssetExecutionContext,
    store: MediaStore,
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
    record, poster_rgb = build_package(store, sources, context.log)
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
