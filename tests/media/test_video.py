import os
import subprocess
from dataclasses import replace

import numpy as np
import pytest

from avatar_assets.media.captions import CaptionLook, layout_captions, to_ass
from avatar_assets.media.tts import WordTiming
from avatar_assets.media.watermark import detect_watermark_frames
from avatar_assets.media.video import (
    FFMPEG,
    DecodedFrames,
    SceneClip,
    encode_frames,
    ken_burns,
    poster_frame,
    probe,
    read_audio,
    read_frames,
    RenditionJob,
    encode_renditions,
    remux_audio,
)
from tests.media.video_fixtures import FPS, SR, astronaut, flat_background, speechlike

SIZE = (320, 240)


def audio_packets(path) -> bytes:
    """The file's AAC packets as stored (no decode): equal bytes mean one encode, copied."""
    out = subprocess.run([FFMPEG, "-nostdin", "-loglevel", "error", "-i", str(path), "-map", "0:a:0", "-c", "copy",
                          "-f", "adts", "-"], capture_output=True, check=True)
    return out.stdout


def _moving_frames(n, size=SIZE, seed=0):
    """A bright square crossing a gradient: every frame differs and is easy to check after decoding."""
    w, h = size
    grad = np.linspace(40, 200, w, dtype=np.float32)[None, :, None] * np.ones((h, 1, 3), np.float32)
    grad[..., 2] = 255 - grad[..., 2]
    base = grad.astype(np.uint8)
    frames = []
    for i in range(n):
        f = base.copy()
        x = int((i * 7 + seed * 50) % (w - 40))
        f[h // 2 - 20:h // 2 + 20, x:x + 40] = (250, 250, 60)
        frames.append(f)
    return frames


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    frames = _moving_frames(60)
    samples, _ = speechlike(2.4, seed=4)
    path = tmp_path_factory.mktemp("enc") / "clip.mp4"
    return frames, samples, encode_frames(frames, fps=FPS, size=SIZE, audio=(samples, SR), path=path)


def test_encode_frames_writes_h264_aac_with_the_right_numbers(encoded):
    frames, samples, result = encoded
    assert result.frame_count == 60 and result.duration_s == pytest.approx(2.4)
    assert result.has_audio and result.size_bytes == os.path.getsize(result.path)
    info = probe(result.path)
    assert (info.width, info.height, info.fps, info.frame_count) == (320, 240, 25.0, 60)
    assert info.video_codec == "h264" and info.pix_fmt == "yuv420p"
    assert info.audio_codec == "aac" and info.audio_sample_rate == SR and info.has_audio
    assert info.duration_s == pytest.approx(2.4, abs=1 / FPS)


def test_decoded_frames_and_audio_match_the_input(encoded):
    frames, samples, result = encoded
    decoded = list(read_frames(result.path))
    assert len(decoded) == 60 and decoded[0].shape == (240, 320, 3)
    assert max(np.abs(d.astype(int) - f).mean() for d, f in zip(decoded, frames)) < 4
    audio = read_audio(result.path, sr=SR)
    assert len(audio) / SR == pytest.approx(2.4, abs=1 / FPS)
    # AAC at 160k keeps the waveform's energy profile.
    assert np.sqrt(np.mean(audio**2)) == pytest.approx(np.sqrt(np.mean(samples**2)), rel=0.1)


def test_decoded_frames_by_index_forward_back_and_past_the_end(encoded):
    _, _, result = encoded
    decoded = list(read_frames(result.path))
    frames = DecodedFrames(result.path, keep=4)
    for index in [0, 1, 5, 3, 10, 2, 59, 80]:  # 3 is in the kept window, 2 restarts the decoder
        assert np.array_equal(frames[index], decoded[min(index, 59)])


def test_decoded_frames_transform_each_frame_once_for_readers_in_threads(encoded):
    """The stitcher's rendition threads read the same layer frame side by side; it is decoded and enhanced once."""
    from concurrent.futures import ThreadPoolExecutor

    _, _, result = encoded
    decoded = list(read_frames(result.path))
    calls = []
    frames = DecodedFrames(result.path, keep=8, transform=lambda frame: calls.append(1) or 255 - frame)
    with ThreadPoolExecutor(max_workers=3) as pool:
        for index in range(60):
            assert all(np.array_equal(got, 255 - decoded[index]) for got in pool.map(lambda _: frames[index], range(3)))
    assert len(calls) == 60


def test_decoded_frames_failing_mid_video_fails_every_reader_and_hangs_none(encoded):
    """A layer frame that cannot be made (here its enhancement fails at frame 5) stops the stitch: every
    rendition thread that asks gets the error, including those that ask after the decoder's thread has ended."""
    from concurrent.futures import ThreadPoolExecutor, wait

    _, _, result = encoded

    def transform(frame):
        transform.count += 1
        if transform.count > 5:
            raise RuntimeError("frame 5 cannot be made")
        return frame

    transform.count = 0
    frames = DecodedFrames(result.path, keep=8, transform=transform)
    for index in range(5):
        assert frames[index].shape == (240, 320, 3)
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = [pool.submit(lambda: frames[7]) for _ in range(3)]
        done, pending = wait(futures, timeout=10)
    assert not pending
    for future in futures:
        with pytest.raises(RuntimeError, match="frame 5 cannot be made"):
            future.result()
    assert frames[2].shape == (240, 320, 3)  # a kept frame is still there


def test_read_frames_every_nth_and_resize(encoded):
    _, _, result = encoded
    small = list(read_frames(result.path, every_nth=5, size=(160, 120)))
    assert len(small) == 12 and small[0].shape == (120, 160, 3)
    gray = next(read_frames(result.path, size=(160, 120), gray=True))
    assert gray.shape == (120, 160)


@pytest.mark.parametrize("audio_s", [3.0, 1.0])
@pytest.mark.parametrize("as_generator", [True, False])
def test_audio_is_cut_or_padded_to_the_frames(tmp_path, audio_s, as_generator):
    samples, _ = speechlike(audio_s, seed=5)
    frames = _moving_frames(40)  # 1.6 s
    result = encode_frames((f for f in frames) if as_generator else frames, fps=FPS, size=SIZE,
                           audio=(samples, SR), path=tmp_path / "fit.mp4")
    audio = read_audio(result.path, sr=SR)
    assert result.frame_count == 40 and probe(result.path).frame_count == 40
    assert len(audio) / SR == pytest.approx(1.6, abs=0.002)
    assert sorted(os.listdir(tmp_path)) == ["fit.mp4"]


def test_poster_frame_from_file_and_from_frames(encoded):
    frames, _, result = encoded
    from_file = poster_frame(result.path, 1.0)
    assert np.abs(from_file.astype(int) - frames[25]).mean() < 4
    assert poster_frame(frames, 1.0, fps=FPS) is frames[25]
    assert poster_frame(result.path, 99.0).shape == (240, 320, 3)  # clamped to the last frame


def test_encoder_error_leaves_no_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "out.mp4"

    def frames_then_wrong_size():
        yield from _moving_frames(10)
        yield np.zeros((100, 100, 3), np.uint8)

    with pytest.raises(ValueError, match="frame must be"):
        encode_frames(frames_then_wrong_size(), fps=FPS, size=SIZE, audio=None, path=target)
    assert os.listdir(tmp_path) == []

    good = encode_frames(_moving_frames(10), fps=FPS, size=SIZE, audio=None, path=target)
    before = target.read_bytes()
    with pytest.raises(RuntimeError, match="ffmpeg failed"):
        encode_frames(_moving_frames(10), fps=FPS, size=SIZE, audio=None, path=target, preset="not-a-preset")
    assert target.read_bytes() == before and good.path == target
    assert sorted(os.listdir(tmp_path)) == ["out.mp4"]


def stitch(scenes, *, size, audio, path, captions_ass=None, transition_s=0.25, progress=None):
    """One rendition through `encode_renditions`, the stitcher of every rendition."""
    [result] = encode_renditions([RenditionJob(size, scenes, path, captions_ass)], fps=FPS, audio=audio,
                                 transition_s=transition_s, progress=progress)
    return result


def _two_scenes(size=SIZE):
    red, blue = flat_background(size, (220, 30, 30)), flat_background(size, (30, 30, 220))
    return [SceneClip(0.0, 1.2, frames=[red] * 30), SceneClip(1.2, 2.4, frame_at=lambda t: blue)]


CAPTION = [(0.4, 0.9, "Hello from the avatar."), (1.6, 2.0, "Second line")]
CLASSIC = CaptionLook(font_size=64, position="auto", text_colour="#FFFFFF", highlight_colour="#FFD400",
                      background_box=True, word_highlight=False)


def caption_words(captions):
    """Word timings spreading each (start, end, text) evenly over its words."""
    words = []
    for start, end, text in captions:
        parts = text.split()
        step = (end - start) / len(parts)
        words += [WordTiming(word, start + i * step, start + (i + 1) * step, 0) for i, word in enumerate(parts)]
    return words


def captions_ass(captions, size=SIZE, look=CLASSIC):
    return to_ass(caption_words(captions), look, size)


@pytest.fixture(scope="module")
def stitched(tmp_path_factory):
    root = tmp_path_factory.mktemp("stitch")
    samples, _ = speechlike(2.4, seed=6)
    calls = []
    with_caps = stitch(_two_scenes(), size=SIZE, audio=(samples, SR), captions_ass=captions_ass(CAPTION),
                              path=root / "caps.mp4", progress=lambda d, t: calls.append((d, t)))
    plain = stitch(_two_scenes(), size=SIZE, audio=(samples, SR),
                          path=root / "plain.mp4")
    return with_caps, plain, calls, list(read_frames(with_caps.path)), list(read_frames(plain.path))


def test_stitch_writes_h264_aac_of_the_scene_length(stitched):
    with_caps, _, _, frames, _ = stitched
    info = probe(with_caps.path)
    assert (info.width, info.height, info.frame_count, info.fps) == (320, 240, 60, 25.0)
    assert info.video_codec == "h264" and info.audio_codec == "aac" and info.pix_fmt == "yuv420p"
    assert info.audio_channels == 1 and info.audio_sample_rate == SR
    assert len(frames) == 60
    audio = read_audio(with_caps.path, sr=SR)
    assert len(audio) / SR == pytest.approx(60 / FPS, abs=1 / FPS)
    assert not [p for p in os.listdir(with_caps.path.parent) if p not in ("caps.mp4", "plain.mp4")]


def test_captions_are_burned_only_while_active(stitched):
    _, _, _, caps, plain = stitched
    changed = [(np.abs(a.astype(int) - b).max(axis=2) > 40) for a, b in zip(caps, plain)]
    active = [i for i in range(60) if any(s <= i / FPS < e for s, e, _ in CAPTION)]
    inactive = [i for i in range(60) if i not in active]
    assert min(changed[i].sum() for i in active) > 300  # text and box pixels
    assert max(changed[i].sum() for i in inactive) == 0
    # Captions sit in the lower part of the frame, horizontally centred.
    rows, cols = np.nonzero(np.any([changed[i] for i in active], axis=0))
    assert rows.min() > 240 // 2 and abs((cols.min() + cols.max()) / 2 - 160) < 8


WIDE = (640, 360)
KARAOKE = CaptionLook(font_size=100, position="bottom", text_colour="#FFFFFF", highlight_colour="#00FF00",
                      background_box=True, word_highlight=True)
SPOKEN = [WordTiming("Hello", 0.2, 0.6, 0), WordTiming("bright", 0.6, 1.0, 0), WordTiming("world.", 1.2, 1.6, 0)]


def _stitch_dark(tmp_path, name, ass, size=WIDE, seconds=1.8):
    dark = flat_background(size, (40, 40, 60))
    result = stitch([SceneClip(0.0, seconds, frames=[dark])], size=size, audio=None,
                           captions_ass=ass, path=tmp_path / name)
    return list(read_frames(result.path))


def _highlight(frame):
    r, g, b = (frame[..., c].astype(int) for c in range(3))
    return (g > 170) & (r < 110) & (b < 110)


def _text(frame):
    return np.all(frame > 200, axis=2)


def test_the_word_being_spoken_is_highlighted_and_the_rest_keeps_the_text_colour(tmp_path):
    """Decoded frames of a karaoke caption: while word k is spoken the highlight colour covers words up
    to k (filling word k), the words still to come are in the text colour; without highlight there is none."""
    frames = _stitch_dark(tmp_path, "karaoke.mp4", to_ass(SPOKEN, KARAOKE, WIDE))
    mid = [frames[round((w.start_s + w.end_s) / 2 * FPS)] for w in SPOKEN]
    lit = [int(_highlight(f).sum()) for f in mid]
    assert lit[0] > 30 and lit[0] < lit[1] < lit[2], lit
    for frame in mid[:2]:  # highlighted text left of the text-coloured words still to come
        hx, tx = np.nonzero(_highlight(frame))[1], np.nonzero(_text(frame))[1]
        assert tx.size > 30 and np.median(hx) < np.median(tx)
    assert _text(mid[0]).sum() > _text(mid[2]).sum()
    before, after = frames[round(0.1 * FPS)], frames[round(1.7 * FPS)]
    assert not _highlight(before).any() and not _text(before).any()  # nothing before the first word
    assert not _highlight(after).any()  # nor after the last
    plain = _stitch_dark(tmp_path, "plain.mp4", to_ass(SPOKEN, replace(KARAOKE, word_highlight=False), WIDE))
    assert not any(_highlight(f).any() for f in plain) and _text(plain[round(0.4 * FPS)]).sum() > 30


@pytest.mark.parametrize("size", [WIDE, (360, 640)])
def test_captions_sit_in_the_requested_band(tmp_path, size):
    w, h = size
    rows = {}
    for position in ["top", "middle", "bottom"]:
        look = replace(KARAOKE, position=position, word_highlight=False)
        frame = _stitch_dark(tmp_path, f"{position}.mp4", to_ass(SPOKEN[:2], look, size), size=size, seconds=0.8)[10]
        changed = np.nonzero(np.abs(frame.astype(int) - (40, 40, 60)).max(axis=2) > 30)
        rows[position] = (changed[0].min() / h, changed[0].max() / h)
        assert abs((changed[1].min() + changed[1].max()) / 2 - w / 2) < 0.02 * w  # centred
        # libass draws the box where the layout says (its box hugs the glyphs, the layout reserves the full
        # line height: a few pixels less at the top).
        [block] = layout_captions(SPOKEN[:2], look, size)
        x, y, bw, bh = block.box
        drawn = (changed[1].min(), changed[0].min(), changed[1].max() + 1, changed[0].max() + 1)
        assert np.abs(np.array(drawn) - (x, y, x + bw, y + bh)).max() <= 6, (drawn, block.box)
    band_bottom = 0.84 if h > w else 0.93
    assert rows["top"][0] == pytest.approx(0.08, abs=0.02) and rows["top"][1] < 0.3
    assert (rows["middle"][0] + rows["middle"][1]) / 2 == pytest.approx(0.5, abs=0.03)
    assert rows["bottom"][1] == pytest.approx(band_bottom, abs=0.02) and rows["bottom"][0] > 0.6


def test_crossfade_between_scenes(stitched):
    _, _, _, _, frames = stitched
    red, blue = frames[10][5, 5], frames[50][5, 5]
    assert red[0] > 200 > 60 > red[2] and blue[2] > 200 > 60 > blue[0]
    mid = frames[30][5, 5].astype(int)  # t = 1.2 s, the cut: half of each
    assert 90 < mid[0] < 160 and 90 < mid[2] < 160
    # The fade is gradual: red falls monotonically through the transition window.
    reds = [int(frames[i][5, 5, 0]) for i in range(26, 35)]
    assert reds == sorted(reds, reverse=True) and reds[0] - reds[-1] > 100


def test_progress_is_reported_about_every_ten_percent(stitched):
    _, _, calls, _, _ = stitched
    assert 9 <= len(calls) <= 11
    assert calls[-1] == (60, 60)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_scenes_must_tile_the_timeline(tmp_path):
    red = flat_background(SIZE, (200, 0, 0))
    with pytest.raises(ValueError, match="contiguous"):
        stitch([SceneClip(0, 1, frames=[red]), SceneClip(1.5, 2, frames=[red])], size=SIZE,
                      audio=None, path=tmp_path / "x.mp4")
    with pytest.raises(ValueError, match="uint8"):
        stitch([SceneClip(0, 1, frames=[flat_background((64, 64))])], size=SIZE, audio=None,
                      path=tmp_path / "y.mp4")
    assert os.listdir(tmp_path) == []


def test_stitch_failing_midway_leaves_nothing_behind(tmp_path):
    red = flat_background(SIZE, (200, 0, 0))

    def breaks_after_a_second(t):
        if t > 1.0:
            raise RuntimeError("renderer crashed")
        return red

    samples, _ = speechlike(2.0, seed=8)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        stitch([SceneClip(0, 2.0, frame_at=breaks_after_a_second)], size=SIZE, audio=(samples, SR),
                      captions_ass=captions_ass([(0.1, 1.5, "never shown")]), path=tmp_path / "broken.mp4")
    assert os.listdir(tmp_path) == []  # no partial video, no temp audio


def test_caller_frames_are_not_modified(tmp_path):
    frame = flat_background(SIZE, (10, 200, 10))
    keep = frame.copy()
    stitch([SceneClip(0, 0.4, frames=[frame] * 10)], size=SIZE, audio=None,
                  captions_ass=captions_ass([(0, 0.4, "over the top")]), path=tmp_path / "c.mp4")
    assert np.array_equal(frame, keep)


RENDITION_SIZES = [(240, 426), (240, 240), (426, 240)]


def _rendition_jobs(root, captions=CAPTION):
    """Two scenes (a Ken Burns still each) composed for each of three frames, with their own captions."""
    jobs = []
    for size in RENDITION_SIZES:
        first = ken_burns(astronaut(), size, 1.0)
        second = ken_burns(astronaut()[::-1].copy(), size, 1.2)
        jobs.append(RenditionJob(size, [SceneClip(0.0, 1.0, frame_at=first), SceneClip(1.0, 2.2, frame_at=second)],
                                 root / f"r{size[0]}x{size[1]}.mp4", captions_ass(captions, size)))
    return jobs


def test_encode_renditions_encodes_every_frame_once_each_with_its_mark_and_captions(tmp_path):
    samples, _ = speechlike(2.0, seed=7)
    jobs = _rendition_jobs(tmp_path)
    bare = _rendition_jobs(tmp_path / "bare", captions=[])
    (tmp_path / "bare").mkdir()
    results = encode_renditions(jobs, fps=FPS, audio=(samples, SR), watermark=PAYLOAD)
    encode_renditions([RenditionJob(j.size, j.scenes, j.path) for j in bare], fps=FPS, audio=(samples, SR))
    for job, result, plain in zip(jobs, results, bare):
        info = probe(job.path)
        # 2.2 s of scenes: the scenes define the length, the 2.0 s of audio is padded to it.
        assert (info.width, info.height, info.frame_count) == (*job.size, 55) == (result.width, result.height, result.frame_count)
        assert (info.video_codec, info.audio_codec, info.pix_fmt) == ("h264", "aac", "yuv420p")
        assert len(read_audio(job.path, sr=SR)) / SR == pytest.approx(2.2, abs=1 / FPS)
        decoded = list(read_frames(job.path))
        assert detect_watermark_frames(decoded[::5]) == PAYLOAD
        assert detect_watermark_frames(read_frames(plain.path)) is None
        # The caption is drawn where its layout says, only while its cue is on (0.4-0.9 s).
        block = layout_captions(caption_words(CAPTION), CLASSIC, job.size)[0]
        x, y, w, h = block.box
        during, after = decoded[round(0.6 * FPS)], decoded[round(1.3 * FPS)]
        clean = list(read_frames(plain.path))
        assert np.abs(during[y:y + h, x:x + w].astype(int) - clean[round(0.6 * FPS)][y:y + h, x:x + w]).mean() > 20
        assert np.abs(after[y:y + h, x:x + w].astype(int) - clean[round(1.3 * FPS)][y:y + h, x:x + w]).mean() < 8
    packets = [audio_packets(job.path) for job in jobs]
    assert packets[0] and packets.count(packets[0]) == len(jobs)  # the track is encoded once, then copied
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["bare", *(j.path.name for j in jobs)])  # no scratch left


def test_encode_renditions_refuses_bad_jobs_and_leaves_no_file(tmp_path):
    scene = [SceneClip(0.0, 1.0, frame_at=ken_burns(astronaut(), (240, 240), 1.0))]
    with pytest.raises(ValueError, match="even dimensions"):
        encode_renditions([RenditionJob((241, 240), scene, tmp_path / "odd.mp4")], fps=FPS, audio=None)
    with pytest.raises(ValueError, match="at least one"):
        encode_renditions([], fps=FPS, audio=None)
    with pytest.raises(ValueError, match="uint8"):  # a scene drawing the wrong size
        encode_renditions([RenditionJob((320, 240), scene, tmp_path / "wrong.mp4")], fps=FPS, audio=None)
    assert list(tmp_path.iterdir()) == []


def test_an_audio_track_that_fails_to_encode_fails_every_rendition_and_keeps_the_old_files(tmp_path, monkeypatch):
    """The AAC track is encoded once beside the pictures: when that encoder fails, the error names it, no
    rendition is replaced by a silent or half-made file and no scratch file is left."""
    import avatar_assets.media.video as video

    samples, _ = speechlike(2.0, seed=10)
    jobs = _rendition_jobs(tmp_path, captions=[])
    encode_renditions(jobs[:2], fps=FPS, audio=(samples, SR))
    before = {job.path.name: job.path.read_bytes() for job in jobs[:2]}
    monkeypatch.setattr(video, "AAC_ARGS", ["-c:a", "aac", "-b:a", "not-a-bitrate"])
    with pytest.raises(RuntimeError, match="on the audio track"):
        encode_renditions(jobs, fps=FPS, audio=(samples, SR))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_remux_audio_copies_the_video_stream_and_replaces_the_audio(tmp_path):
    samples, _ = speechlike(2.0, seed=8)
    src = encode_frames(_moving_frames(50), fps=FPS, size=SIZE, audio=(samples, SR), path=tmp_path / "src.mp4")
    quiet = (samples * 0.1).astype(np.float32)
    [out] = remux_audio([src.path], (quiet, SR), paths=[tmp_path / "out.mp4"])
    assert (out.frame_count, out.width, out.height) == (50, 320, 240)
    same = [np.array_equal(a, b) for a, b in zip(read_frames(src.path), read_frames(out.path))]
    assert len(same) == 50 and all(same)  # bit-exact pictures: nothing was decoded and re-encoded
    ratio = np.sqrt(np.mean(read_audio(out.path, sr=SR) ** 2) / np.mean(read_audio(src.path, sr=SR) ** 2))
    assert ratio == pytest.approx(0.1, rel=0.1)
    assert sorted(os.listdir(tmp_path)) == ["out.mp4", "src.mp4"]


def test_remux_audio_encodes_the_track_once_for_every_rendition_of_a_timeline(tmp_path):
    samples, _ = speechlike(2.0, seed=9)
    wide = encode_frames(_moving_frames(50), fps=FPS, size=SIZE, audio=None, path=tmp_path / "wide.mp4")
    tall = encode_frames(_moving_frames(50, size=(240, 320)), fps=FPS, size=(240, 320), audio=None,
                         path=tmp_path / "tall.mp4")
    outs = remux_audio([wide.path, tall.path], (samples, SR), paths=[tmp_path / "w.mp4", tmp_path / "t.mp4"])
    assert [(o.width, o.height, o.frame_count, o.has_audio) for o in outs] == [(320, 240, 50, True), (240, 320, 50, True)]
    packets = [audio_packets(o.path) for o in outs]
    assert packets[0] and packets[0] == packets[1]
    assert len(read_audio(outs[1].path, sr=SR)) == pytest.approx(50 / FPS * SR, abs=SR / FPS)

    short = encode_frames(_moving_frames(40), fps=FPS, size=SIZE, audio=None, path=tmp_path / "short.mp4")
    with pytest.raises(ValueError, match="share one timeline: 50 frames at 25 fps, 40 frames at 25 fps"):
        remux_audio([wide.path, short.path], (samples, SR), paths=[tmp_path / "a.mp4", tmp_path / "b.mp4"])
    assert sorted(os.listdir(tmp_path)) == ["short.mp4", "t.mp4", "tall.mp4", "w.mp4", "wide.mp4"]


PAYLOAD = bytes.fromhex("a1b2c3d4e5f60718")


def test_ken_burns_moves_slowly_within_the_image():
    frame_at = ken_burns(astronaut(), SIZE, 2.0)
    first, mid, last = frame_at(0.0), frame_at(1.0), frame_at(2.0)
    assert first.shape == (240, 320, 3)
    assert np.abs(first.astype(int) - last).mean() > 5
    # Slow: neighbouring frames barely move.
    assert np.abs(frame_at(1.0).astype(int) - frame_at(1.0 + 1 / FPS)).mean() < 4
    assert np.array_equal(frame_at(5.0), last) and mid.dtype == np.uint8


def test_frame_pipes_are_widened_to_a_mebibyte():
    """A 1080p picture then crosses the pipe in a few writes instead of ~50 wake-ups of the other process."""
    import fcntl
    import subprocess

    from avatar_assets.media.video import PIPE_BYTES, _widen_pipe

    with subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL) as proc:
        before = fcntl.fcntl(proc.stdin.fileno(), fcntl.F_GETPIPE_SZ)
        _widen_pipe(proc.stdin)
        after = fcntl.fcntl(proc.stdin.fileno(), fcntl.F_GETPIPE_SZ)
        proc.stdin.close()
    assert before < PIPE_BYTES and after == PIPE_BYTES
