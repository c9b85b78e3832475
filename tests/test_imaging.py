"""Regression tests for upload decoding (issue #19 items 6, 8, 9) and card permissions (item 14)."""

from __future__ import annotations

import io
import os
import stat

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image

from fer_utils.imaging import ImageInputError, decode_image


def _bytes(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _picture(size: int = 64) -> np.ndarray:
    """A gradient with a bright square: a picture whose loss (turning black) is easy to see."""
    ramp = np.linspace(0, 1, size)[None, :] * np.ones((size, 1))
    ramp[16:48, 16:48] = 1.0
    return ramp


@pytest.mark.parametrize("fmt", ["EPS", "PDF"])
def test_postscript_and_pdf_are_refused_before_any_interpreter_runs(fmt, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the EPS decoder (Ghostscript) must not run on an upload")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "load", never)
    data = _bytes(Image.new("RGB", (64, 64), (200, 30, 30)), fmt)
    with pytest.raises(ImageInputError, match="not an image we can read"):
        decode_image(data)


def test_svg_is_refused():
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64"/></svg>'
    with pytest.raises(ImageInputError, match="not an image we can read"):
        decode_image(svg)


def test_float_image_in_zero_one_keeps_its_picture():
    data = _bytes(Image.fromarray(_picture().astype(np.float32), mode="F"), "TIFF")
    rgb = decode_image(data).rgb
    assert rgb.max() == 255 and rgb.mean() > 100  # not black
    assert rgb[32, 32, 0] == 255 and rgb[2, 2, 0] < 20


def test_nan_and_inf_pixels_are_left_out_of_the_scaling_with_a_note():
    values = (_picture() * 1000).astype(np.float32)
    values[0, :4] = np.nan
    values[1, :4] = np.inf
    decoded = decode_image(_bytes(Image.fromarray(values, mode="F"), "TIFF"))
    assert decoded.rgb.max() == 255 and decoded.rgb[32, 32, 0] == 255  # scaled by the finite range
    assert any("infinite or not a number" in note for note in decoded.notes)
    all_nan = np.full((64, 64), np.nan, np.float32)
    with pytest.raises(ImageInputError, match="infinite or not a number"):
        decode_image(_bytes(Image.fromarray(all_nan, mode="F"), "TIFF"))


def test_twelve_bit_data_in_sixteen_bits_is_scaled_by_its_real_range():
    twelve = (_picture() * 4095).astype(np.uint16)
    data = _bytes(Image.fromarray(twelve, mode="I;16"), "PNG")
    rgb = decode_image(data).rgb
    assert rgb.max() >= 250 and rgb[32, 32, 0] >= 250  # /257 would leave it at 16


@pytest.mark.parametrize("orientation", [0, 9, 65535])
def test_invalid_exif_orientations_do_not_claim_a_turn(orientation):
    image = Image.new("RGB", (64, 48), (120, 120, 120))
    exif = image.getexif()
    exif[0x0112] = orientation
    decoded = decode_image(_bytes(image, "JPEG", exif=exif))
    assert not any("EXIF" in note for note in decoded.notes)
    assert decoded.rgb.shape == (48, 64, 3)


def test_a_real_exif_turn_is_still_applied_and_noted():
    image = Image.new("RGB", (64, 48), (120, 120, 120))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees
    decoded = decode_image(_bytes(image, "JPEG", exif=exif))
    assert any("EXIF" in note for note in decoded.notes) and decoded.rgb.shape == (64, 48, 3)


def test_cards_are_written_as_readable_as_model_files(tmp_path):
    from fer_utils.model_io import write_model_card

    old = os.umask(0o022)
    try:
        card = write_model_card(tmp_path / "m.keras", {"name": "m"})
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(card.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o644
