import numpy as np
import pytest
from PIL import Image

from fastssl.data.sources.image_folder import ImageFolderSource
from fastssl.errors import FastSSLError


def _save(path, color, fmt="PNG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path, format=fmt)


def test_class_subfolders_give_sorted_labels(tmp_path):
    _save(tmp_path / "dog" / "a.PNG", (0, 0, 255))
    _save(tmp_path / "cat" / "x.jpeg", (255, 0, 0), "JPEG")
    _save(tmp_path / "cat" / "nested" / "y.JPG", (250, 0, 0), "JPEG")
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    src = ImageFolderSource(str(tmp_path))
    assert len(src) == 3 and src.num_classes == 2
    assert src.labels.tolist() == [0, 0, 1]  # cat = 0, dog = 1
    assert src.name(2).endswith("dog/a.PNG")
    assert np.asarray(src.image(2))[0, 0].tolist() == [0, 0, 255]
    assert src.encoded(2)[:4] == b"\x89PNG"


def test_flat_folder_is_unlabelled(tmp_path):
    for i in range(3):
        _save(tmp_path / f"{i}.png", (i, i, i))
    src = ImageFolderSource(str(tmp_path))
    assert len(src) == 3 and src.num_classes == 0 and src.labels.tolist() == [-1, -1, -1]


def test_empty_folder_lists_extensions(tmp_path):
    (tmp_path / "empty_class").mkdir()
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(FastSSLError) as err:
        ImageFolderSource(str(tmp_path))
    assert "no images found" in str(err.value) and ".jpeg" in str(err.value) and ".png" in str(err.value)
