"""Input-pipeline throughput: our tf.data pipeline against the reference study's ImageDataGenerator.

Run from the repository root::

    FER2013_CSV=/path/to/fer2013.csv.gz python benchmarks/input_pipeline.py
    python benchmarks/input_pipeline.py --data /path/to/image_root --images 5000 --json out.json

What it measures, in one run, on the same PNG/JPEG files and the same augmentation magnitudes
(rotation 15 degrees, width/height shift 0.15, zoom 0.15, horizontal flip), batch size 64:

* reference: ``ImageDataGenerator(rescale=1/255, ...).flow_from_directory(train_dir,
  target_size=(48, 48), color_mode="grayscale", class_mode="sparse")``, iterated for
  ``len(iterator)`` batches per epoch; it reads and decodes every file again each epoch;
* ours: ``fer_utils.data.load_image_folders`` (decode every file once) followed by
  ``fer_utils.pipeline.make_dataset(training=True, augmentation=build_augmentation(...))``
  iterated fully for the same number of epochs. Reported as the first epoch including the
  decode, the steady state (later epochs) and the overall average including the decode.

The images are the first ``--images`` training images in file order (not stratified): the
first rows with ``Usage == Training`` of a FER2013 CSV, or, for an image-folder root, the
first files by the number in their name (Kaggle's ``Training_<row>``). They are written
(CSV, synthetic) or copied (folders) into a temporary directory, removed at the end. Without
data the script falls back to synthetic faces from ``tests/synthetic.py`` and says so.

Timing is from files on disk to the last batch: it includes the directory scan, the first
batch (no warm-up is excluded, for both pipelines) and, for ours, building the dataset and
tracing the augmentation. Every batch is consumed by summing its pixels on the host, the
same for both. Files sit in the OS page cache for both (they were just written). The
reference runs in one Python thread, as in the study; tf.data uses every core it is given.
This is a measurement, not a test: the exit code is 0 whether or not the 5x target is met.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import tensorflow as tf  # noqa: E402,F401  (imported before timing starts)

from fer_utils.data import EMOTIONS, canonical_emotion, read_fer_csv  # noqa: E402
from fer_utils.pipeline import build_augmentation, make_dataset  # noqa: E402

# The reference study's augmentation, shared by both pipelines.
ROTATION_DEGREES = 15.0
SHIFT = 0.15
ZOOM = 0.15
HORIZONTAL_FLIP = True
TARGET_SPEEDUP = 5.0
# File types flow_from_directory reads; folder input is restricted to these so both read the same files.
REFERENCE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff"}


@dataclass
class ImageSource:
    """Where the benchmark images come from: 'csv', 'folder' or 'synthetic'."""

    kind: str
    path: Path | None
    description: str


@dataclass
class Measurement:
    """One row of the result table."""

    pipeline: str
    images: int
    epochs: float
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")


# ----------------------------------------------------------------------------- arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description="Images/second of our tf.data input pipeline vs the reference study's "
        "ImageDataGenerator.flow_from_directory, on the same files and augmentation.",
    )
    parser.add_argument(
        "--data", default=None,
        help="FER2013 .csv/.csv.gz or an image-folder root (train/<class>/*); default: $FER2013_CSV; "
        "synthetic faces when neither is available",
    )
    parser.add_argument("--images", type=int, default=10_000,
                        help="use the first N training images in file order, not stratified (default 10000)")
    parser.add_argument("--epochs", type=int, default=3, help="full passes over the images per pipeline (default 3)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size of both pipelines (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="shuffle/augmentation seed of both pipelines (default 0)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the numbers to this JSON file")
    parser.add_argument("--tmp-dir", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the temporary image folders go (default: the system temp dir)")
    args = parser.parse_args(argv)
    if args.images < 1 or args.epochs < 1 or args.batch_size < 1:
        parser.error("--images, --epochs and --batch-size must be positive")
    if args.data is not None and not Path(args.data).expanduser().exists():
        parser.error(f"--data '{args.data}' does not exist")
    return args


def resolve_source(data: str | None) -> ImageSource:
    """The explicit ``--data``, else $FER2013_CSV, else synthetic faces."""
    candidate = data or os.environ.get("FER2013_CSV")
    if candidate and Path(candidate).expanduser().exists():
        path = Path(candidate).expanduser()
        if path.is_dir():
            return ImageSource("folder", path, f"image folders at {path}")
        if path.name.endswith((".csv", ".csv.gz")):
            return ImageSource("csv", path, f"FER2013 CSV {path}")
        raise SystemExit(f"'{path}' is neither a .csv/.csv.gz file nor an image-folder root")
    reason = f"FER2013_CSV='{candidate}' does not exist" if candidate else "no --data and FER2013_CSV is not set"
    return ImageSource("synthetic", None, f"SYNTHETIC faces from tests/synthetic.py ({reason})")


# ----------------------------------------------------------------------------- image folders


def first_training_images_from_csv(path: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` rows with Usage == Training, in file order: (uint8 faces, FER2013 emotions)."""
    emotions, images, usages = read_fer_csv(path)
    rows = np.flatnonzero(usages == "Training")[:n]
    return images[rows], emotions[rows]


def synthetic_training_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` synthetic faces over the seven classes (the first ``n`` of a shuffled balanced set)."""
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from synthetic import synthetic_faces

    images, labels = synthetic_faces(math.ceil(n / len(EMOTIONS)), classes=range(len(EMOTIONS)), seed=seed)
    return images[:n], labels[:n]


def write_png_folders(root: Path, images: np.ndarray, emotions: np.ndarray) -> int:
    """Write ``root/train/<emotion>/Training_<i>.png`` plus one face per class in ``root/test/``.

    ``fer_utils.data.load_image_folders`` needs a test split; it gets one image per class.
    Returns the number of training files written.
    """
    from PIL import Image

    first_of_class: dict[int, int] = {}
    for i, (image, emotion) in enumerate(zip(images, emotions)):
        folder = root / "train" / EMOTIONS[int(emotion)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(image[..., 0]), mode="L").save(folder / f"Training_{i}.png")
        first_of_class.setdefault(int(emotion), i)
    for emotion, i in first_of_class.items():
        folder = root / "test" / EMOTIONS[emotion]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(images[i][..., 0]), mode="L").save(folder / f"PrivateTest_{i}.png")
    return len(images)


def copy_first_training_files(source_root: Path, root: Path, n: int) -> int:
    """Copy the first ``n`` training files (by the number in their name) of an image-folder root.

    Class folders are renamed to FER2013's lower-case emotion names; one file per class also
    goes to ``root/test/``. Returns the number of training files copied.
    """
    train_dirs = [p for p in source_root.iterdir() if p.is_dir() and p.name.lower() in ("train", "training")]
    if not train_dirs:
        raise SystemExit(f"'{source_root}' has no train/ (or Training/) folder of class folders")
    files: list[tuple[Path, str]] = []
    for class_dir in sorted(p for p in train_dirs[0].iterdir() if p.is_dir() and not p.name.startswith(".")):
        emotion = canonical_emotion(class_dir.name)
        files.extend(
            (f, emotion) for f in class_dir.iterdir()
            if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in REFERENCE_EXTENSIONS
        )
    files.sort(key=lambda item: _natural_key(item[0].name))
    chosen = files[:n]
    if not chosen:
        raise SystemExit(f"'{train_dirs[0]}' holds no image files")
    for file, emotion in chosen:
        _copy_into(file, root / "train" / emotion)
    for emotion in dict.fromkeys(emotion for _, emotion in chosen):
        first = next(file for file, e in chosen if e == emotion)
        _copy_into(first, root / "test" / emotion)
    return len(chosen)


def _copy_into(file: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(file, folder / file.name)


def _natural_key(name: str) -> tuple:
    """Sort ``Training_10`` after ``Training_9``."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def prepare_image_folders(source: ImageSource, root: Path, n: int, seed: int) -> int:
    """Materialise the benchmark images under ``root``; returns how many training files there are."""
    if source.kind == "folder":
        return copy_first_training_files(source.path, root, n)
    if source.kind == "csv":
        images, emotions = first_training_images_from_csv(source.path, n)
    else:
        images, emotions = synthetic_training_images(n, seed)
    return write_png_folders(root, images, emotions)


def class_names_present(root: Path) -> tuple[str, ...]:
    """The emotions with a training folder, in FER2013 order (a small subset may lack disgust)."""
    present = {p.name for p in (root / "train").iterdir() if p.is_dir()}
    return tuple(e for e in EMOTIONS if e in present)


# ----------------------------------------------------------------------------- timing


def consume_batch(x, y) -> float:
    """Touch a batch on the host (sum of pixels) so no work can be skipped; same for both pipelines."""
    return float(np.asarray(x).sum()) + float(np.asarray(y).shape[0])


def time_reference_pipeline(train_dir: Path, epochs: int, batch_size: int, seed: int) -> tuple[list[float], int]:
    """Seconds per epoch of the study's ImageDataGenerator.flow_from_directory, and images per epoch.

    The first epoch includes creating the iterator (the directory scan).
    """
    from tensorflow.keras.preprocessing.image import ImageDataGenerator

    start = time.perf_counter()
    generator = ImageDataGenerator(
        rescale=1 / 255,
        rotation_range=ROTATION_DEGREES,
        width_shift_range=SHIFT,
        height_shift_range=SHIFT,
        zoom_range=ZOOM,
        horizontal_flip=HORIZONTAL_FLIP,
    )
    iterator = generator.flow_from_directory(
        str(train_dir), target_size=(48, 48), color_mode="grayscale",
        batch_size=batch_size, class_mode="sparse", shuffle=True, seed=seed,
    )
    seconds = []
    for epoch in range(epochs):
        for _ in tqdm(range(len(iterator)), desc=f"ImageDataGenerator epoch {epoch + 1}/{epochs}",
                      leave=False, disable=None):
            x, y = next(iterator)
            consume_batch(x, y)
        now = time.perf_counter()
        seconds.append(now - start)
        start = now
    return seconds, iterator.samples


def time_our_pipeline(
    root: Path, class_names: tuple[str, ...], epochs: int, batch_size: int, seed: int
) -> tuple[float, list[float], int]:
    """(decode seconds, seconds per epoch, images per epoch) of load_image_folders + make_dataset.

    The first epoch's time excludes the decode (returned separately) but includes building
    the dataset and tracing the augmentation on the first batch.
    """
    from fer_utils.data import load_image_folders

    start = time.perf_counter()
    dataset = load_image_folders(root, class_names, drop_blank=False, seed=seed)
    # load_image_folders carves a validation split out of train; the benchmark uses all of them.
    images = np.concatenate([dataset.train.images, dataset.val.images])
    labels = np.concatenate([dataset.train.labels, dataset.val.labels])
    decode_seconds = time.perf_counter() - start

    start = time.perf_counter()
    augmentation = build_augmentation(ROTATION_DEGREES, SHIFT, ZOOM, HORIZONTAL_FLIP, seed=seed)
    batches = make_dataset(images, labels, batch_size, training=True, augmentation=augmentation, seed=seed)
    steps = math.ceil(len(images) / batch_size)
    seconds = []
    for epoch in range(epochs):
        for x, y in tqdm(batches, total=steps, desc=f"tf.data epoch {epoch + 1}/{epochs}",
                         leave=False, disable=None):
            consume_batch(x, y)
        now = time.perf_counter()
        seconds.append(now - start)
        start = now
    return decode_seconds, seconds, len(images)


# ----------------------------------------------------------------------------- report


def summarise(
    reference_seconds: list[float], reference_images: int,
    decode_seconds: float, our_seconds: list[float], our_images: int,
) -> list[Measurement]:
    """The table rows: reference overall, our decode, first epoch, steady state and overall."""
    epochs = len(our_seconds)
    rows = [
        Measurement("ImageDataGenerator.flow_from_directory (all epochs)",
                    reference_images * len(reference_seconds), len(reference_seconds), sum(reference_seconds)),
        Measurement("ours: decode once (load_image_folders)", our_images, 0, decode_seconds),
        Measurement("ours: first epoch incl. decode", our_images, 1, decode_seconds + our_seconds[0]),
    ]
    if epochs > 1:
        later = "epoch 2" if epochs == 2 else f"epochs 2-{epochs}"
        rows.append(Measurement(f"ours: steady state ({later})",
                                our_images * (epochs - 1), epochs - 1, sum(our_seconds[1:])))
    rows.append(Measurement("ours: overall incl. decode", our_images * epochs, epochs,
                            decode_seconds + sum(our_seconds)))
    return rows


def format_table(rows: Iterable[Measurement]) -> str:
    """A plain-text table: pipeline, images, epochs, seconds, images/s."""
    lines = [f"{'pipeline':<54}{'images':>8}{'epochs':>8}{'seconds':>10}{'images/s':>11}"]
    for row in rows:
        lines.append(f"{row.pipeline:<54}{row.images:>8,}{row.epochs:>8g}{row.seconds:>10.2f}"
                     f"{row.images_per_second:>11,.0f}")
    return "\n".join(lines)


def speedups(rows: list[Measurement]) -> dict[str, float]:
    """Our images/s over the reference's: overall (the target's measure) and steady state."""
    by_name = {row.pipeline: row for row in rows}
    reference = rows[0].images_per_second
    result = {"overall_incl_decode": by_name["ours: overall incl. decode"].images_per_second / reference}
    steady = [row for row in rows if row.pipeline.startswith("ours: steady state")]
    if steady:
        result["steady_state"] = steady[0].images_per_second / reference
    result["first_epoch_incl_decode"] = by_name["ours: first epoch incl. decode"].images_per_second / reference
    return result


def iter_report_lines(source: ImageSource, args: argparse.Namespace, rows: list[Measurement],
                      ratios: dict[str, float]) -> Iterator[str]:
    """The printed report, line by line."""
    yield ""
    yield f"data: {source.description}"
    yield (f"images: first {rows[1].images:,} training images in file order (not stratified); "
           f"batch {args.batch_size}; seed {args.seed}; {os.cpu_count()} CPU core(s) visible")
    yield (f"augmentation (both): rotation {ROTATION_DEGREES:g} deg, shift {SHIFT}, zoom {ZOOM}, "
           f"horizontal flip; first batch included in timing for both")
    yield format_table(rows)
    overall = ratios["overall_incl_decode"]
    parts = ", ".join(f"{name.replace('_', ' ')} {value:.1f}x" for name, value in ratios.items())
    yield f"speed-up (ours / ImageDataGenerator, images/s): {parts}"
    verdict = "MET" if overall >= TARGET_SPEEDUP else "NOT met"
    yield f"target >= {TARGET_SPEEDUP:g}x (overall incl. decode): {verdict} ({overall:.1f}x)"
    if source.kind == "synthetic":
        yield "NOTE: synthetic faces, not FER2013; set FER2013_CSV or --data for the real measurement."


def write_json(path: Path, source: ImageSource, args: argparse.Namespace, rows: list[Measurement],
               ratios: dict[str, float], reference_seconds: list[float], our_seconds: list[float],
               decode_seconds: float) -> None:
    """Write every number of the run to ``path``."""
    payload = {
        "data": {"kind": source.kind, "path": str(source.path) if source.path else None,
                 "images": rows[1].images, "selection": "first N training images in file order"},
        "settings": {"epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
                     "rotation_degrees": ROTATION_DEGREES, "shift": SHIFT, "zoom": ZOOM,
                     "horizontal_flip": HORIZONTAL_FLIP, "first_batch_timed": True,
                     "cpu_count": os.cpu_count()},
        "rows": [asdict(row) | {"images_per_second": row.images_per_second} for row in rows],
        "reference_epoch_seconds": reference_seconds,
        "ours_decode_seconds": decode_seconds,
        "ours_epoch_seconds": our_seconds,
        "speedup": ratios,
        "target_speedup": TARGET_SPEEDUP,
        "target_met": ratios["overall_incl_decode"] >= TARGET_SPEEDUP,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    """Prepare the image folders, time both pipelines, print the table (and write JSON)."""
    args = parse_args(argv)
    source = resolve_source(args.data)
    print(f"data: {source.description}", flush=True)
    with tempfile.TemporaryDirectory(prefix="fer_input_pipeline_", dir=args.tmp_dir) as tmp:
        root = Path(tmp)
        print(f"writing the first {args.images:,} training images as files under {root} ...", flush=True)
        n_files = prepare_image_folders(source, root, args.images, args.seed)
        print(f"{n_files:,} training files; timing ImageDataGenerator ...", flush=True)
        reference_seconds, reference_images = time_reference_pipeline(
            root / "train", args.epochs, args.batch_size, args.seed)
        print("timing load_image_folders + make_dataset ...", flush=True)
        decode_seconds, our_seconds, our_images = time_our_pipeline(
            root, class_names_present(root), args.epochs, args.batch_size, args.seed)
    if not reference_images == our_images == n_files:
        raise SystemExit(f"image counts differ: files {n_files}, reference {reference_images}, ours {our_images}")
    rows = summarise(reference_seconds, reference_images, decode_seconds, our_seconds, our_images)
    ratios = speedups(rows)
    print("\n".join(iter_report_lines(source, args, rows, ratios)))
    if args.json is not None:
        write_json(args.json, source, args, rows, ratios, reference_seconds, our_seconds, decode_seconds)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
