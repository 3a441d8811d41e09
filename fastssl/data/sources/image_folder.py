"""A folder of image files: torchvision's ImageFolder layout, or a flat folder without labels.

`root/<class>/**/<image>` gives one class per sub-folder (sorted names -> 0, 1, ...); images
directly in `root` with no class sub-folders give an unlabelled source (labels -1). The listing
is cached in an index (listing_index.py): later starts do not list the folders.
"""

from __future__ import annotations

import os

import numpy as np

from fastssl.data.sources.files import ListedFilesSource
from fastssl.data.sources.listing_index import Listing, mtime_ns
from fastssl.errors import FastSSLError
from fastssl.registry import SOURCES

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff")


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def list_image_folder(root: str) -> Listing:
    """One class per sub-folder (sorted names), images anywhere under it; else the root's images
    unlabelled. Each folder is stat'ed before it is listed, so a change during the listing shows."""
    stamps, mtimes = [""], [mtime_ns(root)]
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    paths: list[str] = []
    labels: list[int] = []
    for k, c in enumerate(classes):
        files = _images_under(root, c, stamps, mtimes)
        paths += files
        labels += [k] * len(files)
    num_classes = len(classes)
    if not paths:
        # No class sub-folders with images: a flat folder of unlabelled images.
        paths = sorted(f for f in os.listdir(root) if _is_image(f))
        labels = [-1] * len(paths)
        num_classes = 0
    if not paths:
        raise FastSSLError(
            f"no images found in '{root}' (looked for {' '.join(IMAGE_EXTENSIONS)}, any case, "
            "directly or in class sub-folders); fix --data.path"
        )
    return Listing(paths, np.asarray(labels, dtype=np.int64), num_classes, stamps, mtimes)


def _images_under(root: str, rel: str, stamps: list[str], mtimes: list[int]) -> list[str]:
    """Image paths under `root/rel`, relative to root, in os.walk's top-down sorted order."""
    folder = os.path.join(root, rel)
    stamps.append(rel)
    mtimes.append(mtime_ns(folder))
    entries = sorted(os.scandir(folder), key=lambda e: e.name)
    found = [os.path.join(rel, e.name) for e in entries if not e.is_dir() and _is_image(e.name)]
    for e in entries:
        if e.is_dir() and not e.name.startswith("."):  # follows links to folders, as os.walk(followlinks=True)
            found += _images_under(root, os.path.join(rel, e.name), stamps, mtimes)
    return found


@SOURCES.register("folder", single_split=True, indexed=True)
class ImageFolderSource(ListedFilesSource):
    def __init__(self, root: str, index_dir: str = ""):
        if not os.path.isdir(root):
            raise FastSSLError(f"image folder '{root}' does not exist or is not a folder; fix --data.path")
        super().__init__(root, index_dir, list_image_folder, prefix=os.path.join(root, ""))
