"""The Wav2Lip kernel without Dagster: the public checkpoint layout loads, the mel windows are centred on
their frames, the paste-back changes only the feathered lower face, and batching changes nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avatar_assets.media.wav2lip import (
    FACE_SIDE,
    MEL_BANDS,
    MEL_STEP,
    FaceTarget,
    ModelUnavailable,
    Wav2LipModel,
    build_generator,
    face_crop_box,
    lower_face_mask,
    mel_windows,
    melspectrogram,
    model_inputs,
    paste_back,
    sync_frames,
)
from tests.media.tiny_wav2lip import save_random_wav2lip

# Names as they appear in the public Rudrabha/Wav2Lip checkpoints (after stripping `module.`).
PUBLIC_KEYS = [
    "face_encoder_blocks.0.0.conv_block.0.weight",
    "face_encoder_blocks.6.1.conv_block.1.running_var",
    "audio_encoder.0.conv_block.0.weight",
    "audio_encoder.12.conv_block.1.num_batches_tracked",
    "face_decoder_blocks.0.0.conv_block.0.weight",
    "face_decoder_blocks.1.0.conv_block.0.weight",
    "face_decoder_blocks.6.2.conv_block.1.bias",
    "output_block.0.conv_block.0.weight",
    "output_block.1.weight",
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_random_wav2lip(tmp_path_factory.mktemp("wav2lip") / "wav2lip.pth")


@pytest.fixture(scope="module")
def model(checkpoint: Path) -> Wav2LipModel:
    return Wav2LipModel(checkpoint, device="cpu").load()


def test_module_names_and_size_are_the_public_checkpoints():
    generator = build_generator()
    state = generator.state_dict()
    assert set(PUBLIC_KEYS) <= set(state)
    assert len(state) == 352
    assert sum(p.numel() for p in generator.parameters()) == 36_298_035
    assert tuple(state["face_decoder_blocks.1.0.conv_block.0.weight"].shape) == (1024, 512, 3, 3)  # ConvTranspose2d


@pytest.mark.parametrize("prefix, wrapped", [("module.", True), ("", False)])
def test_checkpoint_loads_wrapped_or_bare(tmp_path: Path, prefix: str, wrapped: bool):
    path = save_random_wav2lip(tmp_path / "g.pth", prefix=prefix, wrapped=wrapped)
    loaded = Wav2LipModel(path, device="cpu").load()
    assert loaded.model_id.startswith("g.pth@") and len(loaded.sha256) == 64


def test_missing_corrupt_or_foreign_files_name_the_file_and_the_problem(tmp_path: Path):
    import torch

    with pytest.raises(ModelUnavailable, match="does not exist"):
        Wav2LipModel(tmp_path / "nope.pth").load()
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelUnavailable, match="not a readable torch checkpoint") as error:
        Wav2LipModel(corrupt).load()
    assert str(corrupt) in str(error.value)
    foreign = tmp_path / "foreign.pth"
    torch.save({"state_dict": {"conv.weight": torch.zeros(1)}}, foreign)
    with pytest.raises(ModelUnavailable, match="not a Wav2Lip generator checkpoint"):
        Wav2LipModel(foreign).load()


def test_mel_has_wav2lips_rate_and_range_and_windows_are_centred_on_their_frame():
    sr, fps = 22_050, 25
    samples = np.zeros(sr * 2, np.float32)
    burst = slice(int(1.0 * sr), int(1.04 * sr))  # one frame of noise at t = 1.0 s (frame 25)
    samples[burst] = np.random.default_rng(0).normal(0, 0.3, burst.stop - burst.start)
    mel = melspectrogram(samples, sr)
    assert mel.shape[0] == MEL_BANDS and abs(mel.shape[1] - 160) <= 1  # 80 mel frames a second
    assert mel.min() >= -4 and mel.max() <= 4
    windows = mel_windows(mel, fps, 50)
    assert windows.shape == (50, MEL_BANDS, MEL_STEP)
    loudest = windows[25].mean(axis=0).argmax()
    assert 6 <= loudest <= 10  # the burst sits in the middle of its own frame's window
    assert windows[20].max() < windows[25].max()  # and not in a window 0.2 s away


def test_crop_box_covers_the_landmarks_and_stays_in_the_frame():
    landmarks = np.array([[40, 60], [80, 60], [60, 110], [45, 100], [75, 100]], float)
    x, y, side = face_crop_box(landmarks, (120, 120))
    assert x <= 40 and x + side >= 80 and y + side >= 110 and y <= 50
    assert 0 <= x and 0 <= y and x + side <= 120 and y + side <= 120


def test_paste_back_changes_only_the_feathered_lower_face():
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (120, 160, 3), np.uint8)
    box = (30, 10, 80)
    mask = lower_face_mask(80)
    assert mask[:40].max() == 0 and mask[:, 0].max() == 0 and mask[-1].max() == 0
    assert mask[60, 40] == 1.0
    out = paste_back(frame, np.zeros((FACE_SIDE, FACE_SIDE, 3), np.uint8), box, mask)
    outside = np.ones(frame.shape[:2], bool)
    outside[10:90, 30:110] = mask == 0
    assert np.array_equal(out[outside], frame[outside])
    assert (out[60:80, 50:90] == 0).all()  # fully pasted in the middle of the lower face


def test_model_inputs_zero_the_lower_half_and_carry_the_reference():
    frame = np.full((100, 100, 3), 200, np.uint8)
    reference = np.full((100, 100, 3), 50, np.uint8)
    inputs = model_inputs(frame, reference, (0, 0, 100))
    assert inputs.shape == (FACE_SIDE, FACE_SIDE, 6)
    assert (inputs[:48, :, :3] == 200).all() and (inputs[48:, :, :3] == 0).all() and (inputs[..., 3:] == 50).all()


def test_batched_frames_equal_one_by_one_and_b_roll_passes_through(model: Wav2LipModel):
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 256, (128, 128, 3), np.uint8) for _ in range(5)]
    face = FaceTarget((16, 16, 96), frames[0])
    targets = [face, face, None, face, face]
    windows = rng.uniform(-4, 4, (5, MEL_BANDS, MEL_STEP)).astype(np.float32)
    one = list(sync_frames(model, frames, targets, windows, batch_size=1))
    four = list(sync_frames(model, frames, targets, windows, batch_size=4))
    assert len(one) == len(four) == 5
    for a, b in zip(one, four):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert np.array_equal(one[2], frames[2])
    assert not np.array_equal(one[0], frames[0])
