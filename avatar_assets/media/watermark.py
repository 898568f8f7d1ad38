"""Invisible provenance mark: up to 8 bytes spread over every 8x8 luma block of a frame.

Each block carries one bit (blocks are dealt to bits by a keyed permutation) as a keyed ±1 pattern
on seven mid-frequency DCT coefficients: low enough to survive H.264 at crf 20, high enough to stay
invisible (PSNR ~42 dB at the default strength). The change is added equally to R, G and B, so it
lives in luma only and chroma subsampling does not touch it; a picture already in I420 gets the same mark
on its Y plane (`luma_marks`). Detection correlates each block with its pattern, weights quiet blocks up
(busy texture is mostly host noise), sums per bit, and accepts the result only if a CRC-16 over the framed
payload checks out.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

import numpy as np

DEFAULT_KEY = 0xA5A7
DEFAULT_STRENGTH = 6.0
MAX_PAYLOAD = 8
_LEN_BITS = 4
_CRC_BITS = 16
N_BITS = _LEN_BITS + 8 * MAX_PAYLOAD + _CRC_BITS
_COEFFS = ((1, 2), (2, 1), (2, 2), (1, 3), (3, 1), (3, 2), (2, 3))
_ROWS = np.array([r for r, _ in _COEFFS])
_COLS = np.array([c for _, c in _COEFFS])
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_TV_LUMA = 219 / 255  # Y levels per RGB level in limited range


def _dct_matrix(n: int = 8) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.sqrt(2 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    d[0] /= np.sqrt(2)
    return d.astype(np.float32)


_D = _dct_matrix()


@lru_cache(maxsize=16)
def _layout(n_blocks: int, key: int) -> tuple[np.ndarray, np.ndarray]:
    """Which bit each block carries and its chip signs; depends only on the block count and key."""
    rng = np.random.default_rng(key)
    bit = rng.permutation(n_blocks) % N_BITS
    signs = rng.choice(np.array([-1.0, 1.0], np.float32), size=(n_blocks, len(_COEFFS)))
    return bit, signs


def _crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def _frame_bits(payload: bytes) -> np.ndarray:
    padded = payload.ljust(MAX_PAYLOAD, b"\0")
    crc = _crc16(bytes([len(payload)]) + padded)
    value = (len(payload) << (8 * MAX_PAYLOAD + _CRC_BITS)) | (int.from_bytes(padded, "big") << _CRC_BITS) | crc
    return np.array([(value >> (N_BITS - 1 - i)) & 1 for i in range(N_BITS)], np.uint8)


def _unframe_bits(bits: np.ndarray) -> bytes | None:
    value = 0
    for b in bits:
        value = (value << 1) | int(b)
    length = value >> (8 * MAX_PAYLOAD + _CRC_BITS)
    padded = ((value >> _CRC_BITS) & ((1 << (8 * MAX_PAYLOAD)) - 1)).to_bytes(MAX_PAYLOAD, "big")
    crc = value & 0xFFFF
    if not 1 <= length <= MAX_PAYLOAD or any(padded[length:]):
        return None
    if _crc16(bytes([length]) + padded) != crc:
        return None
    return padded[:length]


def _check(frame: np.ndarray) -> tuple[int, int]:
    """Whole 8x8 blocks per column and row; the frame must hold at least one block per bit."""
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 frame, got {frame.dtype} {frame.shape}")
    nby, nbx = frame.shape[0] // 8, frame.shape[1] // 8
    if nby * nbx < N_BITS:
        raise ValueError(f"frame {frame.shape[1]}x{frame.shape[0]} is too small to carry a watermark")
    return nby, nbx


@lru_cache(maxsize=8)
def _pattern(payload: bytes, height: int, width: int, strength: float, key: int) -> np.ndarray:
    """The luma offsets for one payload and frame size. The mark does not depend on the picture, so
    it is built once and every later frame is a single add."""
    nby, nbx = height // 8, width // 8
    bit, signs = _layout(nby * nbx, key)
    polarity = _frame_bits(payload)[bit].astype(np.float32) * 2 - 1
    delta = np.zeros((nby * nbx, 8, 8), np.float32)
    delta[:, _ROWS, _COLS] = (strength * polarity)[:, None] * signs
    blocks = (_D.T @ delta @ _D).reshape(nby, nbx, 8, 8).transpose(0, 2, 1, 3).reshape(nby * 8, nbx * 8)
    out = np.zeros((height, width, 1), np.int16)
    out[:nby * 8, :nbx * 8, 0] = np.round(blocks).astype(np.int16)
    out.setflags(write=False)
    return out


def embed_watermark(
    frame: np.ndarray, payload: bytes, *, strength: float = DEFAULT_STRENGTH, key: int = DEFAULT_KEY
) -> np.ndarray:
    """Return a copy of the RGB frame carrying `payload` (1..8 bytes). `strength` is the per-coefficient
    DCT amplitude in luma levels: higher survives harsher compression, lower is less visible."""
    if not 1 <= len(payload) <= MAX_PAYLOAD:
        raise ValueError(f"payload must be 1..{MAX_PAYLOAD} bytes, got {len(payload)}")
    _check(frame)
    pattern = _pattern(bytes(payload), frame.shape[0], frame.shape[1], float(strength), key)
    return np.clip(frame.astype(np.int16) + pattern, 0, 255).astype(np.uint8)


@lru_cache(maxsize=8)
def luma_marks(
    payload: bytes, height: int, width: int, *, strength: float = DEFAULT_STRENGTH, key: int = DEFAULT_KEY
) -> tuple[np.ndarray, np.ndarray]:
    """The mark of `embed_watermark` for a limited-range (BT.601 "tv") Y plane, as two uint8 planes, what to
    add and what to subtract (`cv2.add(cv2.subtract(y, minus), plus)`: two saturating passes over one plane).
    A level of R, G and B together is 219/255 of a Y level in that range, so the pattern is built at that
    strength and the decoded picture carries the mark `embed_watermark` puts."""
    if not 1 <= len(payload) <= MAX_PAYLOAD:
        raise ValueError(f"payload must be 1..{MAX_PAYLOAD} bytes, got {len(payload)}")
    _check(np.zeros((height, width, 3), np.uint8))
    pattern = _pattern(bytes(payload), height, width, float(strength) * _TV_LUMA, key)[..., 0]
    plus = np.clip(pattern, 0, 255).astype(np.uint8)
    minus = np.clip(-pattern, 0, 255).astype(np.uint8)
    plus.setflags(write=False)
    minus.setflags(write=False)
    return plus, minus


def _soft_bits(frame: np.ndarray, key: int) -> np.ndarray:
    """Per-bit weighted correlation sums; the sign is the bit."""
    nby, nbx = _check(frame)
    y = frame[:nby * 8, :nbx * 8].astype(np.float32) @ _LUMA
    coeffs = _D @ y.reshape(nby, 8, nbx, 8).transpose(0, 2, 1, 3).reshape(-1, 8, 8) @ _D.T
    bit, signs = _layout(nby * nbx, key)
    corr = (coeffs[:, _ROWS, _COLS] * signs).mean(axis=1)
    activity = np.sqrt(np.maximum((coeffs**2).sum(axis=(1, 2)) - coeffs[:, 0, 0] ** 2, 0)) / 8
    return np.bincount(bit, weights=corr / (activity + 2.0), minlength=N_BITS)


def detect_watermark(frame: np.ndarray, *, key: int = DEFAULT_KEY) -> bytes | None:
    """The embedded payload, or None when the frame carries no (intact) watermark for `key`."""
    return _unframe_bits((_soft_bits(frame, key) > 0).astype(np.uint8))


def detect_watermark_frames(frames: Iterable[np.ndarray], *, key: int = DEFAULT_KEY) -> bytes | None:
    """Payload of a whole clip: soft decisions are summed over frames, so heavy compression or motion
    that breaks single frames still decodes."""
    total: np.ndarray | None = None
    for frame in frames:
        soft = _soft_bits(frame, key)
        total = soft if total is None else total + soft
    return None if total is None else _unframe_bits((total > 0).astype(np.uint8))
