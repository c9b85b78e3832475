"""The demo's photo handling without models or a server: finding the face, decoding odd and bad files.

The same photos go through the launched app in tests/test_demo_compare.py.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from demo_fixtures import EXAMPLES  # noqa: E402


def test_faces_finds_the_astronaut_and_crops_48x48():
    from fer_utils.faces import draw_face_boxes, locate_face

    rgb = np.asarray(Image.open(EXAMPLES / "astronaut.jpg").convert("RGB"))
    crop = locate_face(rgb)
    assert crop.found and len(crop.boxes) == 1
    x, y, w, h = crop.box.as_list()
    assert 150 <= x <= 200 and 40 <= y <= 90 and 80 <= w <= 120  # her face, not the helmet or the flag
    assert crop.face.shape == (48, 48) and crop.face.dtype == np.uint8
    boxed = draw_face_boxes(rgb, crop)
    assert boxed.shape == rgb.shape and not np.array_equal(boxed, rgb)
    assert np.array_equal(rgb, np.asarray(Image.open(EXAMPLES / "astronaut.jpg").convert("RGB")))  # a copy


def test_faces_small_face_in_big_photo_is_found():
    from fer_utils.faces import locate_face

    crop = locate_face(np.asarray(Image.open(EXAMPLES / "small_face.jpg").convert("RGB")))
    assert crop.found and crop.box.w < 120 and crop.image_size == (1600, 1067)


def test_faces_whole_image_when_no_face():
    from fer_utils.faces import locate_face

    crop = locate_face(np.asarray(Image.open(EXAMPLES / "coffee_no_face.jpg").convert("RGB")))
    assert not crop.found and crop.face.shape == (48, 48)
    assert "No face found" in crop.note and "whole image" in crop.note


def test_faces_crop_at_the_edge_stays_square():
    from fer_utils.faces import Box, crop_face

    gray = np.arange(100 * 80, dtype=np.uint32).reshape(100, 80).astype(np.uint8)
    assert crop_face(gray, Box(60, 0, 30, 30)).shape == (48, 48)
    assert crop_face(gray, Box(0, 0, 80, 100)).shape == (48, 48)


def test_decode_rejects_bad_files_with_clear_messages(photos):
    from fer_utils.imaging import ImageInputError, decode_image

    expected = {
        "not_an_image.jpg": "not an image",
        "truncated.jpg": "truncated",
        "empty.png": "empty",
        "one_pixel.png": "only 1x1 pixels",
        "bomb.png": "too many pixels",
        "huge_file.png": "the limit is 10 MB",
    }
    for name, message in expected.items():
        with pytest.raises(ImageInputError, match=message):
            decode_image(photos[name])


def test_decode_normalises_odd_but_valid_images(photos):
    from fer_utils.imaging import decode_image

    for name in ("sixteen_bit.png", "cmyk.jpg", "palette.png", "rgba.png", "animated.gif", "exif_rotated.jpg", "grey.jpg"):
        decoded = decode_image(photos[name])
        assert decoded.rgb.dtype == np.uint8 and decoded.rgb.shape == (512, 512, 3), name
    assert np.asarray(decode_image(photos["sixteen_bit.png"]).rgb).max() > 200  # scaled, not clipped to black
    assert any("first one" in note for note in decode_image(photos["animated.gif"]).notes)
    assert any("EXIF" in note for note in decode_image(photos["exif_rotated.jpg"]).notes)
    assert decode_image(photos["rgba.png"]).rgb.mean() > decode_image(photos["astronaut.jpg"]).rgb.mean()  # white behind
