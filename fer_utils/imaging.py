"""Turn whatever a person uploads into an RGB array, or a message that says what is wrong with it.

Decoding is done here with Pillow rather than by Gradio so that every bad file gets its own
clear sentence (an empty file, a truncated JPEG, a decompression bomb...) instead of a stack
trace, and so that odd but valid images (16-bit PNG, CMYK JPEG, palette, transparency,
animated GIF, EXIF-rotated phone photos) become the same plain RGB picture.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_BYTES = 10 * 1024 * 1024  # matches the upload cap the app passes to launch(max_file_size=...)
MAX_PIXELS = 40_000_000  # e.g. 8000x5000; a phone photo is 12-50 MP, a bomb is far more
# Pixels alone do not bound the cost: a 40 MP 16-bit or RGBA image holds 80-160 MB once decoded, and
# a 90 KB PNG can say so. The decoded size (width x height x the mode's bytes per pixel, read from
# the header before anything is decompressed) is capped too: 40 MP of 8-bit RGB is just allowed.
MAX_DECODED_BYTES = 120 * 1024 * 1024
BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "LA": 2, "La": 2, "PA": 2, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2,
                   "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3}  # others (RGBA, CMYK, I, F...): 4
MIN_SIDE = 24  # smaller than the face detector's window: nothing useful can be seen
JPEG_DRAFT_SIDE = 2048  # big JPEGs are decoded at 1/2, 1/4 or 1/8 scale, keeping at least this many pixels
REDUCE_SIDE = JPEG_DRAFT_SIDE  # other formats are shrunk by a whole factor after loading, keeping at least this
MESSAGE_INPUT_CHARS = 100  # at most this much of anything a user sent is quoted in a message or a log line
SUPPORTED = "JPEG, PNG, GIF, WebP, BMP or TIFF"
# The only decoders Pillow may use: an .eps upload must never reach Ghostscript, nor a PDF or SVG
# anything at all. (Pillow's own names; its JPEG decoder also reads the MPO files many phones write.)
DECODERS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
EXIF_TURNS = range(2, 9)  # EXIF orientations 2-8 flip or turn the picture; 1 is upright, others are invalid

# Pillow refuses images over 2x this on open and warns above it; the warning is made an
# error in decode_image, so nothing over MAX_PIXELS is ever decompressed.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class ImageInputError(ValueError):
    """The upload cannot be used; the message is written for the person who uploaded it."""


@dataclass
class DecodedImage:
    """The picture as (H, W, 3) uint8 RGB, and what was done to get there."""

    rgb: np.ndarray
    notes: list[str] = field(default_factory=list)
    format: str | None = None


def read_source(source: str | os.PathLike | bytes) -> bytes:
    """The upload's bytes, from a path, raw bytes or a ``data:`` URL; size-checked before reading."""
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    elif isinstance(source, str) and source.startswith("data:"):
        data = _decode_data_url(source)
    else:
        path = Path(source)
        try:
            if not path.is_file():
                raise ImageInputError("The uploaded file could not be found on the server; please upload it again.")
            size = path.stat().st_size
            if size > MAX_BYTES:
                raise ImageInputError(_too_big_message(size))
            data = path.read_bytes()
        except OSError as error:  # e.g. a file name too long: the message would quote all of it
            raise ImageInputError(
                f"The uploaded file could not be read on the server ({error.strerror or type(error).__name__}: "
                f"{quote_input(source)}); please upload it again."
            ) from None
    if not data:
        raise ImageInputError("The file is empty (0 bytes). Please upload a photo.")
    if len(data) > MAX_BYTES:
        raise ImageInputError(_too_big_message(len(data)))
    return data


def decode_image(source: str | os.PathLike | bytes) -> DecodedImage:
    """Decode an upload to RGB, or raise :class:`ImageInputError` with a message for people."""
    data = read_source(source)
    notes: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=DECODERS)  # never EPS/PDF (Ghostscript) or others
            image_format = image.format
            _check_pixels(image.size)
            if image.format == "JPEG" and max(image.size) > 2 * JPEG_DRAFT_SIDE:
                # A 12 MP phone photo decodes several times faster at reduced scale, and the face
                # detector only looks at a <= 960 px copy anyway.
                factor = JPEG_DRAFT_SIDE / max(image.size)
                image.draft(None, (max(1, int(image.width * factor)), max(1, int(image.height * factor))))
            _check_decoded_bytes(image.size, image.mode)  # after the draft: what load() will really allocate
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)
                notes.append(f"{image_format or 'The'} file has {image.n_frames} frames; the first one was used.")
            image.load()
            image = _shrink(image)  # before the colour conversions, which copy the pixels (16-bit ones as float64)
            image = _upright(image, notes)
            rgb = _to_rgb_array(image, notes)
        except ImageInputError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageInputError(_too_many_pixels_message()) from None
        except UnidentifiedImageError:
            raise ImageInputError(f"This file is not an image we can read. Please upload a {SUPPORTED} photo.") from None
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as error:
            if "truncated" in str(error).lower() or isinstance(error, (EOFError, SyntaxError)):
                raise ImageInputError("The image file is truncated or damaged; please upload the complete file.") from None
            raise ImageInputError(f"The image could not be decoded ({_short(error)}). Please upload a {SUPPORTED} photo.") from None
        except MemoryError:
            raise ImageInputError(_too_many_pixels_message()) from None
    height, width = rgb.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ImageInputError(
            f"The image is only {width}x{height} pixels; please upload a photo at least {MIN_SIDE}x{MIN_SIDE} pixels "
            "(the models were trained on 48x48 faces)."
        )
    return DecodedImage(rgb, notes, image_format)


def _check_pixels(size: tuple[int, int]) -> None:
    width, height = size
    if width * height > MAX_PIXELS:
        raise ImageInputError(_too_many_pixels_message(width, height))


def decoded_bytes(size: tuple[int, int], mode: str) -> int:
    """What the pixels of an image of this size and Pillow mode take once decoded (from its header)."""
    width, height = size
    return width * height * BYTES_PER_PIXEL.get(mode, 4)


def _check_decoded_bytes(size: tuple[int, int], mode: str) -> None:
    needed = decoded_bytes(size, mode)
    if needed > MAX_DECODED_BYTES:
        width, height = size
        raise ImageInputError(
            f"The image ({width}x{height}, {mode} pixels) would take {needed / 1024 / 1024:.0f} MB once decoded; the "
            f"limit is {MAX_DECODED_BYTES // (1024 * 1024)} MB. Please upload a smaller or 8-bit photo."
        )


def _shrink(image: Image.Image) -> Image.Image:
    """A big non-JPEG image shrunk by a whole factor, keeping at least REDUCE_SIDE pixels on its long side
    (as the JPEG draft does: the face detector only looks at a <= 960 px copy anyway)."""
    factor = max(image.size) // REDUCE_SIDE
    if factor < 2:
        return image
    size = (max(1, image.width // factor), max(1, image.height // factor))
    if image.mode.startswith("I;16"):  # Pillow cannot reduce 16-bit images; OpenCV averages them
        pixels = np.asarray(image).astype(np.uint16, copy=False)
        small = Image.fromarray(cv2.resize(pixels, size, interpolation=cv2.INTER_AREA))
        small.info = dict(image.info)  # the EXIF orientation, if any, still applies
        return small
    if image.mode in ("1", "P", "PA"):  # averaging palette indices would be noise
        return image.resize(size, Image.Resampling.NEAREST)
    try:
        return image.reduce(factor)
    except ValueError:  # a mode Pillow cannot reduce
        return image.resize(size, Image.Resampling.NEAREST)


def _upright(image: Image.Image, notes: list[str]) -> Image.Image:
    """Apply the EXIF orientation phones write instead of rotating the pixels."""
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block must not cost the photo
        return image
    if orientation not in EXIF_TURNS:  # upright (1), absent, or not a valid orientation (0, 9, 65535...)
        return image
    try:
        upright = ImageOps.exif_transpose(image)
    except Exception:
        notes.append("The photo's EXIF orientation could not be applied; it is shown as stored.")
        return image
    notes.append("The photo was turned upright using its EXIF orientation.")
    return upright if upright is not None else image


def _to_rgb_array(image: Image.Image, notes: list[str]) -> np.ndarray:
    """Every Pillow mode the app may meet, as (H, W, 3) uint8 RGB."""
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        grey = _high_depth_to_uint8(np.asarray(image), mode, notes)
        notes.append(f"The {mode} image (more than 8 bits per pixel) was scaled to 8-bit grey.")
        return np.repeat(grey[..., None], 3, axis=-1)
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode == "PA":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "RGBa", "La"):
        image = _flatten_alpha(image.convert("RGBA"))
        notes.append("Transparent areas were filled with white.")
    if image.mode == "CMYK":
        notes.append("The CMYK image was converted to RGB.")
    if image.mode != "RGB":
        try:
            image = image.convert("RGB")
        except ValueError:
            raise ImageInputError(
                f"Images in the {mode} colour mode are not supported; please save it as an RGB or grey {SUPPORTED}."
            ) from None
    return np.asarray(image, dtype=np.uint8)


def _high_depth_to_uint8(arr: np.ndarray, mode: str, notes: list[str] | None = None) -> np.ndarray:
    """16-bit, 32-bit and float grey to 0-255, keeping the picture.

    Integers are scaled by the bit depth they actually use (12-bit data stored in 16 bits is
    scaled by 4095, not 65535, so it does not turn nearly black); floats in [0, 1] are taken as
    0-1 intensities; anything else by the image's own range. Infinite or NaN pixels are left out
    of the scaling (shown black) and a note says so; an image with no finite pixel is refused.
    """
    arr = arr.astype(np.float64)
    finite = np.isfinite(arr)
    if not finite.all():
        if not finite.any():
            raise ImageInputError("Every pixel of this image is infinite or not a number; please upload a normal photo.")
        if notes is not None:
            notes.append(f"{int((~finite).sum())} pixels were infinite or not a number; they are shown black.")
        arr = np.where(finite, arr, np.nan)
    low, high = float(np.nanmin(arr)), float(np.nanmax(arr))
    if mode == "F" and 0 <= low and high <= 1:
        arr = arr * 255.0
    elif mode.startswith("I") and 0 <= low and high <= 65535 and high > 255:
        bits = max(8, int(np.ceil(np.log2(high + 1))))  # 12-bit data peaks below 4096
        arr = arr * (255.0 / (2 ** bits - 1))
    elif 0 <= low and high <= 255:
        pass
    elif high > low:
        arr = (arr - low) * (255.0 / (high - low))
    else:
        arr = np.zeros_like(arr)
    return np.clip(np.rint(np.nan_to_num(arr, nan=0.0)), 0, 255).astype(np.uint8)


def _flatten_alpha(image: Image.Image) -> Image.Image:
    background = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, image).convert("RGB")


def _decode_data_url(url: str) -> bytes:
    header, _, payload = url.partition(",")
    if len(payload) > MAX_BYTES * 4 // 3 + 4:
        raise ImageInputError(_too_big_message(len(payload) * 3 // 4))
    try:
        return base64.b64decode(payload, validate=False) if ";base64" in header else payload.encode()
    except (binascii.Error, ValueError):
        raise ImageInputError("The image data URL is not valid base64.") from None


def _too_big_message(size: int) -> str:
    return f"The file is {size / 1024 / 1024:.1f} MB; the limit is {MAX_BYTES // (1024 * 1024)} MB. Please upload a smaller photo."


def _too_many_pixels_message(width: int | None = None, height: int | None = None) -> str:
    size = f" ({width}x{height})" if width and height else ""
    return (
        f"The image has too many pixels{size}; the limit is {MAX_PIXELS // 1_000_000} megapixels. "
        "Please upload a smaller photo (it may also be a decompression bomb)."
    )


def _short(error: Exception, limit: int = MESSAGE_INPUT_CHARS) -> str:
    return quote_input(str(error) or type(error).__name__, limit)


def quote_input(value: object, limit: int = MESSAGE_INPUT_CHARS) -> str:
    """``value`` as text for a message or a log line, cut to ``limit`` characters (a data URL can be megabytes)."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 25]}... ({len(text):,} characters)"


def jpeg_data_url(rgb: np.ndarray, quality: int = 80) -> str | None:
    """An RGB array as an inline ``data:image/jpeg;base64,...`` URL (a streamed frame need not be a file)."""
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return "data:image/jpeg;base64," + base64.b64encode(encoded.tobytes()).decode("ascii") if ok else None
