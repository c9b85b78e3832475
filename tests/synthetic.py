"""Synthetic, learnable facial-expression images for tests (never real FER2013 data).

Each face is a skin-toned ellipse on a darker gradient background, with two eyes,
eyebrows, a nose and a mouth drawn with anti-aliased OpenCV primitives.  The seven
FER2013 classes differ by brow shape and mouth shape (features a small CNN learns
from 48x48 pixels), while nuisance variation (position, scale, rotation, skin tone,
brightness/contrast, background gradient, Gaussian noise, small per-feature jitter)
keeps the task from being trivial.

The module has no package-relative imports, so tests can use either
``from synthetic import ...`` (tests/ on sys.path) or ``from tests.synthetic import ...``.

Example::

    images, labels = synthetic_faces(20, seed=1)          # (140, 48, 48, 1) uint8, (140,) int64
    write_fer_csv(tmp_path / "fer2013.csv.gz", images, labels, "Training")
    write_image_folders(tmp_path / "kaggle", images, labels,
                        usages=["Training"] * 100 + ["PublicTest"] * 20 + ["PrivateTest"] * 20)
"""
from __future__ import annotations

import math
import pathlib
from typing import Iterable, Mapping, Sequence

import cv2
import numpy as np

__all__ = [
    "CLASS_NAMES_7",
    "CLASS_DIRS_6",
    "KAGGLE_SPLITS",
    "SIX_CLASS_SPLITS",
    "synthetic_face",
    "synthetic_faces",
    "write_fer_csv",
    "write_image_folders",
]

CLASS_NAMES_7 = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]  # FER2013 label order 0..6

# Folder names of the 6-class study layout, indexed by FER2013 emotion index (None = class absent: Disgust).
CLASS_DIRS_6: list[str | None] = ["Angry", None, "Fear", "Happy", "Sad", "Surprise", "Neutral"]

# FER2013 ``Usage`` value -> split directory.
KAGGLE_SPLITS = {"Training": "train", "PublicTest": "test", "PrivateTest": "test"}
SIX_CLASS_SPLITS = {"Training": "Training", "PublicTest": "Testing", "PrivateTest": "Testing"}

_SHIFT = 4                 # fractional bits for sub-pixel cv2 drawing
_ONE = 1 << _SHIFT
_AA = cv2.LINE_AA


# --------------------------------------------------------------------------- drawing helpers
def _p(x: float, y: float) -> tuple[int, int]:
    return int(round(x * _ONE)), int(round(y * _ONE))


def _line(img, p0, p1, color, thick):
    cv2.line(img, _p(*p0), _p(*p1), color, thick, _AA, _SHIFT)


def _ellipse(img, center, axes, angle, a0, a1, color, thick):
    cv2.ellipse(img, _p(*center), _p(*axes), angle, a0, a1, color, thick, _AA, _SHIFT)


def _poly(img, pts, color, thick, closed=False):
    arr = (np.asarray(pts, dtype=np.float64) * _ONE).round().astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(img, [arr], closed, color, thick, _AA, _SHIFT)


def _brow(img, cx, inner_dx, outer_dx, y_inner, y_outer, side, color, thick, arch=0.0):
    """Draw one eyebrow; side=-1 for the image-left brow, +1 for the image-right brow."""
    xi, xo = cx + side * inner_dx, cx + side * outer_dx
    if arch == 0.0:
        _line(img, (xi, y_inner), (xo, y_outer), color, thick)
    else:  # quadratic arch through a raised midpoint
        t = np.linspace(0.0, 1.0, 7)
        xs = xi + (xo - xi) * t
        ys = y_inner + (y_outer - y_inner) * t - arch * 4 * t * (1 - t)
        _poly(img, np.stack([xs, ys], 1), color, thick)


# Per-class geometry in a canonical 48x48 frame (face centre x=24).
# brows: (y_inner, y_outer, inner_dx, arch) for each side, mouth handled in _draw_mouth.
def _draw_features(face: np.ndarray, emotion: int, rng: np.random.Generator, k: float, feat: int, skin: int) -> None:
    j = lambda s=0.6: float(rng.normal(0.0, s))  # noqa: E731 - per-feature jitter in px (48-frame)
    cx = 24.0 + j(0.3)
    eye_y = 21.0 + j(0.4)
    eye_dx = 6.0 + j(0.3)
    t1 = max(1, int(round(1.0 * k)))
    t2 = max(1, int(round(2.0 * k)))
    dark = feat
    white = min(255, skin + 45)

    # ---- eyes: sclera + pupil (surprise/fear: wider open eyes)
    wide = emotion in (2, 5)
    ey_ax = (2.9 if wide else 2.2) + j(0.15)
    ex_ax = 3.2 + j(0.15)
    if emotion == 0:      # angry: narrowed eyes
        ey_ax = 1.5 + j(0.1)
    for side in (-1, 1):
        ex = cx + side * eye_dx
        _ellipse(face, (ex * k, eye_y * k), (ex_ax * k, ey_ax * k), 0, 0, 360, white, -1)
        _ellipse(face, (ex * k, eye_y * k), (1.6 * k, min(1.6, ey_ax) * k), 0, 0, 360, dark, -1)

    # ---- eyebrows
    by = 16.0 + j(0.4)        # neutral brow height
    inner_dx, outer_dx = 2.5 + j(0.3), 9.5 + j(0.3)
    arch = 0.0
    if emotion == 0:          # angry: slant down inward, lowered
        yl = yr = (by + 2.5, by - 1.5)
        inner_dx -= 0.8
    elif emotion == 1:        # disgust: one brow lowered & pinched, the other normal
        low = (by + 2.5, by + 1.5)
        norm = (by - 0.5, by - 0.5)
        yl, yr = (low, norm) if rng.random() < 0.5 else (norm, low)
    elif emotion == 2:        # fear: raised, drawn together, inner ends up
        yl = yr = (by - 4.5, by - 2.5)
        inner_dx -= 1.0
        outer_dx -= 1.5
    elif emotion == 3:        # happy: level, relaxed
        yl = yr = (by + 0.3, by + 0.3)
    elif emotion == 4:        # sad: inner ends up, slant down outward
        yl = yr = (by - 2.0, by + 2.0)
    elif emotion == 5:        # surprise: high arched brows
        yl = yr = (by - 3.5, by - 3.5)
        arch = 2.0
    else:                     # neutral: level
        yl = yr = (by, by)
    for side, (yi, yo) in ((-1, yl), (1, yr)):
        _brow(face, cx * k, inner_dx * k, outer_dx * k, (yi + j(0.25)) * k, (yo + j(0.25)) * k, side,
              dark, t2, arch * k)

    # ---- nose
    nose_col = max(0, skin - 35)
    _line(face, (cx * k, 24.5 * k), ((cx - 0.8) * k, 29.0 * k), nose_col, t1)
    _line(face, ((cx - 0.8) * k, 29.0 * k), ((cx + 1.5) * k, 29.3 * k), nose_col, t1)

    # ---- mouth
    my = 35.0 + j(0.4)
    mw = 7.0 + j(0.4)          # half width
    lip = max(0, feat + 10)
    if emotion == 3:          # happy: upward arc (smile), lower half of an ellipse
        _ellipse(face, (cx * k, (my - 2.5) * k), (mw * k, (4.0 + j(0.3)) * k), 0, 10, 170, lip, t2)
    elif emotion == 4:        # sad: downward arc (frown), upper half of an ellipse
        _ellipse(face, (cx * k, (my + 2.5) * k), ((mw - 1) * k, (3.5 + j(0.3)) * k), 0, 190, 350, lip, t2)
    elif emotion == 5:        # surprise: open round mouth
        r = 3.6 + j(0.3)
        _ellipse(face, (cx * k, (my + 0.5) * k), (r * 0.85 * k, r * 1.2 * k), 0, 0, 360, dark, -1)
    elif emotion == 0:        # angry: flat, tight, short mouth
        _line(face, ((cx - 4.5) * k, my * k), ((cx + 4.5) * k, my * k), dark, t2)
    elif emotion == 2:        # fear: wide open (stretched) mouth
        _ellipse(face, (cx * k, (my + 0.5) * k), ((mw + 0.5) * k, (2.4 + j(0.2)) * k), 0, 0, 360, dark, -1)
    elif emotion == 1:        # disgust: wavy, asymmetric mouth (one corner raised)
        xs = np.linspace(-mw, mw, 11)
        lift = 2.0 if rng.random() < 0.5 else -2.0
        ys = my + 1.1 * np.sin(xs / mw * 2 * math.pi) - lift * (xs / mw + 1) / 2 + lift / 2
        _poly(face, np.stack([(cx + xs) * k, ys * k], 1), lip, t2)
    else:                     # neutral: straight medium mouth, thin
        _line(face, ((cx - mw + 0.5) * k, my * k), ((cx + mw - 0.5) * k, my * k), lip, t1)


# --------------------------------------------------------------------------- public API
def synthetic_face(emotion: int, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """Return one (size, size) uint8 grayscale face showing FER2013 ``emotion`` (0..6)."""
    emotion = int(emotion)
    if not 0 <= emotion < 7:
        raise ValueError(f"emotion must be in 0..6, got {emotion}")
    k = size / 48.0

    # background: dark random linear gradient
    b0 = rng.uniform(10, 90)
    b1 = b0 + rng.uniform(-40, 60)
    ang = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    ramp = (xx - 0.5) * math.cos(ang) + (yy - 0.5) * math.sin(ang) + 0.5
    bg = (b0 + (b1 - b0) * ramp).astype(np.float32)

    # face layer in a canonical frame + mask
    skin = int(rng.uniform(140, 215))
    feat = int(rng.uniform(15, 55))
    face = np.full((size, size), skin, np.uint8)
    mask = np.zeros((size, size), np.uint8)
    fc = (24.0 * k, 25.5 * k)
    fax = ((15.5 + rng.normal(0, 0.5)) * k, (20.0 + rng.normal(0, 0.5)) * k)
    _ellipse(mask, fc, fax, 0, 0, 360, 255, -1)
    # optional hair fringe (random darkness), clipped to the face ellipse by the mask
    if rng.random() < 0.7:
        hair = int(rng.uniform(20, 110))
        _ellipse(face, (fc[0], fc[1] - 20.0 * k), (fax[0] + 2 * k, rng.uniform(3.0, 5.0) * k), 0, 0, 360, hair, -1)
    _draw_features(face, emotion, rng, k, feat, skin)

    # nuisance geometry: rotation ±8°, scale ±10 %, shift ±3 px
    M = cv2.getRotationMatrix2D(fc, float(rng.uniform(-8, 8)), float(rng.uniform(0.9, 1.1)))
    M[:, 2] += rng.uniform(-3, 3, size=2) * k
    face_w = cv2.warpAffine(face, M, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    mask_w = cv2.warpAffine(mask, M, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)
    m = mask_w.astype(np.float32) / 255.0
    img = bg * (1.0 - m) + face_w.astype(np.float32) * m

    # photometric nuisance: contrast, brightness, Gaussian noise
    img = (img - 128.0) * rng.uniform(0.75, 1.2) + 128.0 + rng.uniform(-25, 25)
    img += rng.normal(0.0, rng.uniform(2.0, 9.0), size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).round().astype(np.uint8)


def synthetic_faces(n_per_class: int, classes: Iterable[int] = range(7), seed: int = 0,
                    size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images, labels)``: images (N, size, size, 1) uint8, labels (N,) int64 FER2013 indices.

    ``N = n_per_class * len(classes)``; each class in ``classes`` appears exactly ``n_per_class``
    times.  The order is shuffled deterministically by ``seed`` (same seed -> identical arrays).
    """
    classes = [int(c) for c in classes]
    rng = np.random.default_rng(seed)
    n = n_per_class * len(classes)
    images = np.empty((n, size, size, 1), np.uint8)
    labels = np.repeat(np.asarray(classes, np.int64), n_per_class)
    for i, c in enumerate(labels):
        images[i, :, :, 0] = synthetic_face(int(c), rng, size)
    order = rng.permutation(n)
    return images[order], labels[order]


def _per_item(value, n: int, name: str) -> list:
    if value is None or isinstance(value, (str, bytes)):
        return [value] * n
    vals = list(value)
    if len(vals) != n:
        raise ValueError(f"{name} has {len(vals)} entries, expected {n} (or pass a single string)")
    return vals


def write_fer_csv(path, images, labels, usages="Training") -> pathlib.Path:
    """Write the original FER2013 CSV: header ``emotion,pixels,Usage``, pixels space-separated ints.

    ``images``: (N, H, W) or (N, H, W, 1) uint8 (48x48 gives the real 2304 pixels per row);
    ``usages``: one string for all rows or a sequence of N strings
    ("Training", "PublicTest", "PrivateTest").  A path ending in ``.gz`` is gzip-compressed.
    """
    import pandas as pd

    path = pathlib.Path(path)
    images = np.asarray(images)
    n = len(images)
    flat = images.reshape(n, -1).astype(np.int64)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if len(labels) != n:
        raise ValueError("images and labels differ in length")
    df = pd.DataFrame({
        "emotion": labels,
        "pixels": [" ".join(map(str, row)) for row in flat.tolist()],
        "Usage": _per_item(usages, n, "usages"),
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False, compression="gzip" if path.suffix == ".gz" else None)
    return path


def write_synthetic_fer_csv(path, splits=(("Training", 40, 11), ("PublicTest", 10, 12), ("PrivateTest", 10, 13))) -> pathlib.Path:
    """A small FER2013-format CSV of synthetic faces; ``splits``: (Usage, faces per class, seed), all seven classes."""
    images, labels, usages = [], [], []
    for usage, n_per_class, seed in splits:
        x, y = synthetic_faces(n_per_class, seed=seed)
        images.append(x)
        labels.append(y)
        usages += [usage] * len(y)
    return write_fer_csv(path, np.concatenate(images), np.concatenate(labels), usages)


def write_image_folders(root, images, labels,
                        split_names: Mapping[str, str] | None = None,
                        class_dir_names: Sequence[str | None] | None = None,
                        file_prefixes: Sequence[str] | str | None = None,
                        ext: str = ".png",
                        usages: Sequence[str] | str = "Training") -> pathlib.Path:
    """Write images as ``root/<split>/<class_dir>/<prefix><i><ext>`` with Pillow; return ``root``.

    * ``usages``: FER2013 Usage per image (sequence of N) or one string for all, default "Training".
    * ``split_names``: maps a usage to its split folder; default :data:`KAGGLE_SPLITS`
      (Training->train, PublicTest/PrivateTest->test).  Usages missing from the map are used
      verbatim; a split name of ``""`` writes straight into ``root/<class_dir>/``.
    * ``class_dir_names``: folder name per FER2013 emotion index (length 7); default
      :data:`CLASS_NAMES_7` (lowercase).  An entry ``None`` skips that class (e.g. no Disgust).
    * ``file_prefixes``: per-image sequence of N prefixes, one string for all, or None ->
      ``f"{usage}_"`` (Kaggle style ``Training_12.jpg``, ``PublicTest_123.jpg``).
    * ``i`` is the image's index in ``images``, so names are unique; ``ext`` e.g. ".png" or ".jpg".

    Example, both layouts from one array (``u`` = list of N usages)::

        write_image_folders(tmp / "kaggle", x, y, usages=u, ext=".jpg")   # train/angry/Training_0.jpg, test/happy/PublicTest_7.jpg
        write_image_folders(tmp / "six", x, y, usages=u, split_names=SIX_CLASS_SPLITS,
                            class_dir_names=CLASS_DIRS_6)               # Training/Angry/..., Testing/Surprise/...
    """
    from PIL import Image

    root = pathlib.Path(root)
    images = np.asarray(images)
    n = len(images)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if len(labels) != n:
        raise ValueError("images and labels differ in length")
    splits = dict(KAGGLE_SPLITS if split_names is None else split_names)
    dirs = list(CLASS_NAMES_7 if class_dir_names is None else class_dir_names)
    use = _per_item(usages, n, "usages")
    prefixes = _per_item(file_prefixes, n, "file_prefixes")
    if not ext.startswith("."):
        ext = "." + ext
    root.mkdir(parents=True, exist_ok=True)
    made: set[pathlib.Path] = set()
    for i in range(n):
        cls_dir = dirs[int(labels[i])]
        if cls_dir is None:
            continue
        split = splits.get(use[i], use[i])
        folder = root / split / cls_dir if split else root / cls_dir
        if folder not in made:
            folder.mkdir(parents=True, exist_ok=True)
            made.add(folder)
        prefix = f"{use[i]}_" if prefixes[i] is None else prefixes[i]
        img = images[i]
        if img.ndim == 3:
            img = img[..., 0]
        Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8), mode="L").save(folder / f"{prefix}{i}{ext}")
    return root


def save_preview(path="/tmp/synthetic_preview.png", per_class: int = 8, seed: int = 0, scale: int = 3) -> pathlib.Path:
    """Save a grid (rows = classes 0..6, columns = samples), upscaled ``scale`` x, for eyeballing."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    rows = [np.concatenate([synthetic_face(c, rng) for _ in range(per_class)], axis=1) for c in range(7)]
    grid = np.concatenate(rows, axis=0)
    grid = cv2.resize(grid, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    path = pathlib.Path(path)
    Image.fromarray(grid, mode="L").save(path)
    return path


if __name__ == "__main__":  # python tests/synthetic.py -> preview grid
    print(save_preview())
