import io

import numpy as np
import pytest
from PIL import Image

from fastssl.data.sources.decode import CorruptImageError, decode_image, decodes, encode_png, image_ext
from fastssl.errors import FastSSLError


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def test_png_roundtrip_is_exact_rgb():
    pixels = np.random.default_rng(0).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    img = decode_image(encode_png(pixels), "x.png")
    assert img.mode == "RGB" and img.size == (12, 8)
    np.testing.assert_array_equal(np.asarray(img), pixels)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK"])
def test_other_modes_become_rgb(mode):
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    data = _encode(Image.new("RGB", (8, 8), (200, 30, 30)).convert(mode), fmt)
    img = decode_image(data, "x")
    assert img.mode == "RGB" and img.size == (8, 8)


@pytest.mark.parametrize("cut", [0, 20, "half"])
def test_corrupt_bytes_name_the_image_and_the_skip_option(cut):
    data = _encode(Image.new("RGB", (8, 8), (10, 200, 30)), "JPEG")
    broken = data[: len(data) // 2] if cut == "half" else data[:cut]
    with pytest.raises(CorruptImageError) as err:
        decode_image(broken, "/data/train-3.npz[17]")
    msg = str(err.value)
    assert isinstance(err.value, FastSSLError)
    assert "/data/train-3.npz[17]" in msg and "--data.skip_corrupt=true" in msg and "\n" not in msg
    assert err.value.image_name == "/data/train-3.npz[17]"


def test_garbage_is_corrupt():
    with pytest.raises(CorruptImageError, match="not a recognised image format"):
        decode_image(b"this is not an image at all", "notes.jpg")


def test_image_ext_and_decodes_tell_formats_and_damage_apart():
    png = encode_png(np.zeros((4, 4, 3), np.uint8))
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "JPEG")
    assert image_ext(png) == "png" and image_ext(buf.getvalue()) == "jpg"
    assert image_ext(np.frombuffer(png, np.uint8)) == "png"  # DALI's feeder hands arrays
    assert image_ext(b"II*\x00rest") == "tif" and image_ext(b"hello") == ""
    assert decodes(png) and not decodes(png[:30]) and not decodes(b"hello")
