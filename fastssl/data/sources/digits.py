"""The built-in default dataset: scikit-learn's 1,797 8x8 handwritten digits, 10 classes.

Ships with scikit-learn, so a fresh install can pretrain and evaluate with no download.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from fastssl.data.sources.base import ImageSource
from fastssl.data.sources.decode import encode_png
from fastssl.registry import SOURCES


# reads_path=False: the built-in set ignores --data.path (fastssl.data.sources.factory).
@SOURCES.register("digits", single_split=True, reads_path=False)
class DigitsSource(ImageSource):
    def __init__(self):
        from sklearn.datasets import load_digits

        digits = load_digits()
        # 0..16 intensities -> 0..255, replicated to RGB so every backend sees 3 channels.
        gray = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # [1797, 8, 8]
        self.pixels = np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=-1))  # [1797, 8, 8, 3]
        self.labels = digits.target.astype(np.int64)
        self.num_classes = 10

    def encoded(self, i: int) -> bytes:
        return encode_png(self.pixels[i])

    def name(self, i: int) -> str:
        return f"digits[{i}]"

    def image(self, i: int) -> Image.Image:
        return Image.fromarray(self.pixels[i])
