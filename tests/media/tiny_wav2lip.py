"""A random-weight Wav2Lip generator saved the way public checkpoints are: the full-size architecture
(36.3 M parameters, runs a few 96x96 frames a second on CPU), under `state_dict` with DataParallel's
`module.` prefixes. Nothing is downloaded; the weights are noise, so the mouth it paints is noise too."""

from __future__ import annotations

from pathlib import Path


def save_random_wav2lip(path: Path, *, seed: int = 0, prefix: str = "module.", wrapped: bool = True) -> Path:
    import torch

    from avatar_assets.media.wav2lip import build_generator

    torch.manual_seed(seed)
    state = {prefix + key: value for key, value in build_generator().state_dict().items()}
    torch.save({"state_dict": state, "global_step": 0, "global_epoch": 0} if wrapped else state, path)
    return path
