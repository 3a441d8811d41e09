"""A folder of image files: torchvision's ImageFolder layout, or a flat folder without labels.

`root/<class>/**/<image>` gives one class per sub-folder (sorted names -> 0, 1, ...); images
directly in `root` with no class sub-folders give an unlabelled source (labels -1).
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from fastssl.data.decode import corrupt_image, decode_image
from fastssl.data.sources import ImageSource
from fastssl.errors import FastSSLError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff")


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def _images_under(folder: str) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(os.path.join(dirpath, f) for f in sorted(filenames) if _is_image(f))
    return found


class ImageFolderSource(ImageSource):
    def __init__(self, root: str):
        if not os.path.isdir(root):
            raise FastSSLError(f"image folder '{root}' does not exist or is not a folder; fix --data.path")
        classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
        paths: list[str] = []
        labels: list[int] = []
        for k, c in enumerate(classes):
            files = _images_under(os.path.join(root, c))
            paths += files
            labels += [k] * len(files)
        if paths:
            self.num_classes = len(classes)
        else:
            # No class sub-folders with images: a flat folder of unlabelled images.
            paths = sorted(os.path.join(root, f) for f in os.listdir(root) if _is_image(f))
            labels = [-1] * len(paths)
            self.num_classes = 0
        if not paths:
            raise FastSSLError(
                f"no images found in '{root}' (looked for {' '.join(IMAGE_EXTENSIONS)}, any case, "
                "directly or in class sub-folders); fix --data.path"
            )
        self.paths = paths
        self.labels = np.asarray(labels, dtype=np.int64)

    def encoded(self, i: int) -> bytes:
        with open(self.paths[i], "rb") as f:
            return f.read()

    def name(self, i: int) -> str:
        return self.paths[i]

    def image(self, i: int) -> Image.Image:
        try:
            data = self.encoded(i)
        except OSError as e:
            raise corrupt_image(self.paths[i], f"unreadable: {e.strerror or e}") from None
        return decode_image(data, self.paths[i])
