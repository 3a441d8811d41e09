import io

import numpy as np
from PIL import Image

from fastssl.data.sources.digits import DigitsSource


def test_digits_are_rgb_uint8_images_with_labels():
    src = DigitsSource()
    assert len(src) == 1797 and src.num_classes == 10
    assert src.labels.dtype == np.int64 and set(src.labels.tolist()) == set(range(10))
    img = np.asarray(src.image(0))
    assert img.shape == (8, 8, 3) and img.dtype == np.uint8
    assert img.max() > 200 and img.min() == 0  # 0..16 was stretched to 0..255
    assert (img[..., 0] == img[..., 2]).all()


def test_encoded_png_decodes_to_the_same_pixels():
    src = DigitsSource()
    decoded = np.asarray(Image.open(io.BytesIO(src.encoded(5))).convert("RGB"))
    np.testing.assert_array_equal(decoded, np.asarray(src.image(5)))
    assert src.name(5) == "digits[5]"
