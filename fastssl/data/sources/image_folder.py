"""A folder of image files: torchvision's ImageFolder layout, or a flat folder without labels.

`root/<class>/**/<image>` gives one class per sub-folder (sorted names -> 0, 1, ...); images
directly in `root` with no class sub-folders give an unlabelled source (labels -1).
"""

from __future__ import annotations

import os

from fastssl.data.sources.files import FilesSource
from fastssl.errors import FastSSLError
from fastssl.registry import SOURCES

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff")


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def _images_under(folder: str) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(os.path.join(dirpath, f) for f in sorted(filenames) if _is_image(f))
    return found


@SOURCES.register("folder", single_split=True)
class ImageFolderSource(FilesSource):
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
        num_classes = len(classes)
        if not paths:
            # No class sub-folders with images: a flat folder of unlabelled images.
            paths = sorted(os.path.join(root, f) for f in os.listdir(root) if _is_image(f))
            labels = [-1] * len(paths)
            num_classes = 0
        if not paths:
            raise FastSSLError(
                f"no images found in '{root}' (looked for {' '.join(IMAGE_EXTENSIONS)}, any case, "
                "directly or in class sub-folders); fix --data.path"
            )
        super().__init__(paths, labels, num_classes)
