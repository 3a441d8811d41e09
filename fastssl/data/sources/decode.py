"""Encoded image bytes: their format, RGB PIL images from them, one clear error when unreadable."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from fastssl.errors import FastSSLError

# Pillow's ways of saying "not an image": truncated (OSError), bad headers (SyntaxError),
# nonsense sizes (ValueError), decompression bombs (their own error).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class CorruptImageError(FastSSLError):
    """An image that cannot be read or decoded; `skip_corrupt` skips exactly these."""

    # The message comes first so that DataLoader can re-raise this type from a worker.
    def __init__(self, message: str, image_name: str = "", reason: str = ""):
        super().__init__(message)
        self.image_name = image_name
        self.reason = reason


def corrupt_image(name: str, reason: str) -> CorruptImageError:
    return CorruptImageError(
        f"cannot decode image {name} ({reason}); "
        "replace or remove it, or pass --data.skip_corrupt=true to skip corrupt images",
        image_name=name,
        reason=reason,
    )


def decode_image(data: bytes, name: str) -> Image.Image:
    """JPEG/PNG/... bytes -> fully decoded RGB image; undecodable -> CorruptImageError naming `name`."""
    try:
        img = Image.open(io.BytesIO(data))
        # Image.open is lazy; load() forces the decode so truncated files fail here, not later.
        img.load()
        return img if img.mode == "RGB" else img.convert("RGB")
    except UnidentifiedImageError:
        raise corrupt_image(name, f"not a recognised image format, {len(data)} bytes") from None
    except _DECODE_ERRORS as e:
        raise corrupt_image(name, f"{type(e).__name__}: {e}") from None


def encode_png(pixels: np.ndarray) -> bytes:
    """uint8 `[H, W]` or `[H, W, 3]` -> PNG bytes (for in-memory datasets that have no files)."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def image_ext(data: bytes | np.ndarray) -> str:
    """File extension from the signature: "jpg", "png", "webp", "bmp", "tif", or "" if none matches."""
    head = bytes(data[:12])
    if head[:3] == b"\xff\xd8\xff":
        return "jpg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:2] == b"BM":
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tif"
    return ""


def decodes(data: bytes) -> bool:
    """Whether Pillow fully decodes `data` (finds the culprit after a batched decoder fails)."""
    try:
        decode_image(data, "")
    except CorruptImageError:
        return False
    return True
