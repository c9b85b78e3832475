"""The photo pipeline end to end on labelled real photos: how often a face is found, and how accurate.

    FER_PHOTOS_DIR=../shared/data/jaffe python benchmarks/photo_pipeline.py [--models-dir saved_models]
        [--fer-csv ../shared/data/fer2013/fer2013.csv.gz] [--json out.json] [--also CANDIDATE.keras ...]

``FER_PHOTOS_DIR`` holds ``<class>/<photo>`` folders named with FER2013's class names (angry,
disgust, fear, happy, sad, surprise, neutral). For every detector (``haar``, ``mtcnn``), with and
without alignment, and with each photometric step (``none``, ``equalize``, ``clahe``) it runs
every photo through the serving path's own functions (``fer_utils.imaging.decode_image`` ->
``fer_utils.faces.find_faces`` -> each shipped model; with several faces the largest is scored;
with none, the whole image, as the app does), with each face answered once and, as the serving
path does by default, averaged with its mirror image (``--mirror``), and reports:

- faces found: photos with at least one face;
- full-pipeline accuracy and macro-F1 per model (scikit-learn);
- milliseconds per photo for decoding and face finding (the models' time is the same for all).

With ``--fer-csv`` it also measures each photometric step on FER2013 **PublicTest** crops (the
selection split, never PrivateTest), so a step that only helps photos is visible.

``--lighting dark flat ...`` repeats everything with the light changed first (:data:`LIGHTING`:
the photos before the face search, so finding the face is tested too, and the PublicTest crops):
how well each photometric step copes with a dim room, a flat or an over-exposed picture.

The photos are for evaluation only: nothing here trains or selects model weights, and the
pipeline's defaults are chosen from these figures together with PublicTest's (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fer_utils.faces import DETECTORS, NORMALIZATIONS, find_faces, normalize_face  # noqa: E402
from fer_utils.imaging import ImageInputError, decode_image  # noqa: E402

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
#: Changes of light, on 0-255 pixels: round, common settings, not fitted to any photo set.
LIGHTING = {
    "as_taken": lambda x: x,
    "dark": lambda x: x * 0.35,  # about 1.5 stops under-exposed
    "flat": lambda x: 128 + (x - 128) * 0.4,  # low contrast: haze, a screen photographed
    "bright": lambda x: x + 70,  # over-exposed
    "dim_flat": lambda x: 40 + x * 0.3,  # a dim, flat room: dark and low contrast at once
}


def relight(image: np.ndarray, lighting: str) -> np.ndarray:
    """``image`` (uint8) under one of :data:`LIGHTING`'s changes, clipped back to uint8."""
    if lighting == "as_taken":
        return image
    return np.clip(np.rint(LIGHTING[lighting](np.asarray(image, dtype=np.float32))), 0, 255).astype(np.uint8)


def labelled_photos(root: Path, class_names: tuple[str, ...]) -> list[tuple[Path, int]]:
    """``(path, label index)`` for every photo in a class folder whose name is one of ``class_names``."""
    photos = []
    for index, name in enumerate(class_names):
        folder = root / name
        if folder.is_dir():
            photos += [(path, index) for path in sorted(folder.iterdir()) if path.suffix.lower() in IMAGE_SUFFIXES]
    if not photos:
        raise SystemExit(f"error: no photos in class folders ({', '.join(class_names)}) under {root}")
    return photos


def network_predictions(models, crops: np.ndarray, also: dict | None = None, mirror: bool = False) -> dict[str, np.ndarray]:
    """Each model's class probabilities for a batch of 48x48 crops (the ensemble from its members').

    ``also`` maps names to more Keras models (trained candidates outside the models folder).
    ``mirror``: every answer is the mean of the answers on the crop and on its mirror image, as the
    serving path answers photos (``fer_utils.serving.predict_all``; the ensemble's head runs on each).
    """
    views = [crops, crops[:, :, ::-1]] if mirror else [crops]
    answers = [_one_view(models, view.astype(np.float32)[..., None], also) for view in views]
    return {key: np.mean([answer[key] for answer in answers], axis=0) for key in answers[0]}


def _one_view(models, batch: np.ndarray, also: dict | None) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {name: model.predict(batch, batch_size=128, verbose=0) for name, model in (also or {}).items()}
    networks = models.networks()
    for key, loaded in networks.items():
        out[key] = loaded.model.predict(batch, batch_size=128, verbose=0)
    for loaded in models:
        if loaded.is_ensemble:
            joined = np.concatenate([out[m.key] for m in loaded.members], axis=1)
            head = loaded.head_forward.model
            out[loaded.key] = head.predict(joined, batch_size=256, verbose=0)
    return out


def scores(probabilities: dict[str, np.ndarray], labels: np.ndarray, class_names) -> dict[str, dict]:
    """Accuracy, macro-F1, each class's recall and the confusion matrix (rows: true class) per model."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score

    result = {}
    classes = list(range(len(class_names)))
    for key, probs in probabilities.items():
        predicted = probs.argmax(axis=1)
        recalls = recall_score(labels, predicted, labels=classes, average=None, zero_division=0)
        result[key] = {
            "accuracy": round(float(accuracy_score(labels, predicted)), 4),
            "macro_f1": round(float(f1_score(labels, predicted, average="macro", labels=classes, zero_division=0)), 4),
            "recall": {name: round(float(value), 4) for name, value in zip(class_names, recalls)},
            "confusion": confusion_matrix(labels, predicted, labels=classes).tolist(),
        }
    return result


def recall_markdown(rows: list[dict], key: str, class_names) -> str:
    """Each class's recall for one model (the ensemble where there is one), per pipeline row: which
    expressions the photos lose."""
    lines = [f"Recall per class, {key}:", "", "| lighting | detector | aligned | normalize | mirror | " + " | ".join(class_names) + " |",
             "|" + "---|" * (5 + len(class_names))]
    for row in rows:
        recall = row["models"][key]["recall"]
        lines.append(f"| {row.get('lighting', 'as_taken')} | {row['detector']} | {'yes' if row['aligned'] else 'no'} | {row['normalize']} | "
                     f"{'yes' if row.get('mirror', False) else 'no'} | "
                     + " | ".join(f"{recall[name]:.2f}" for name in class_names) + " |")
    return "\n".join(lines)


def confusion_figure(rows: list[dict], key: str, class_names, path: Path) -> Path:
    """One row-normalised confusion matrix of ``key`` per pipeline row, side by side, saved to ``path``."""
    from matplotlib.figure import Figure

    from fer_utils.plotting import plot_confusion_matrix, save_figure

    size = 1.0 + 0.75 * len(class_names)
    figure = Figure(figsize=((size + 1.2) * len(rows), size + 0.4), layout="constrained")
    for i, row in enumerate(rows):
        title = (f"{key}: {row.get('lighting', 'as_taken')}, {row['detector']}, {'aligned' if row['aligned'] else 'not aligned'}, {row['normalize']}"
                 f"{', mirror' if row.get('mirror') else ''} ({row['models'][key]['accuracy']:.1%})")
        plot_confusion_matrix(row["models"][key]["confusion"], class_names, normalize=True, title=title,
                              ax=figure.add_subplot(1, len(rows), i + 1))
    return save_figure(figure, path)


def run_photos(models, photos, detectors, aligns, normalizations, also: dict | None = None,
               mirrors: tuple[bool, ...] = (True,), lightings: tuple[str, ...] = ("as_taken",)) -> list[dict]:
    from tqdm import tqdm

    class_names = next(iter(models)).class_names
    labels = np.array([label for _, label in photos])
    decoded = []
    started = time.perf_counter()
    for path, _ in photos:
        try:
            decoded.append(decode_image(path).rgb)
        except ImageInputError as error:
            raise SystemExit(f"error: {path}: {error}")
    decode_ms = (time.perf_counter() - started) * 1000 / len(photos)
    rows = []
    for lighting, detector, align in ((l, d, a) for l in lightings for d in detectors for a in aligns):
        crops: dict[str, list[np.ndarray]] = {n: [] for n in normalizations}
        found = 0
        rotated = 0
        started = time.perf_counter()
        for rgb in tqdm(decoded, desc=f"{lighting}, {detector}, {'aligned' if align else 'not aligned'}", unit="photo"):
            search = find_faces(relight(rgb, lighting), detector, align=align, normalize="none")
            found += int(search.found)
            rotated += int(search.rotation != 0)
            for normalize in normalizations:
                crops[normalize].append(normalize_face(search.faces[0].crop, normalize))
        face_ms = (time.perf_counter() - started) * 1000 / len(decoded)
        for normalize in normalizations:
            for mirror in mirrors:
                probabilities = network_predictions(models, np.stack(crops[normalize]), also, mirror)
                gaps = ensemble_gaps(models, probabilities, labels)
                rows.append({
                    "lighting": lighting, "detector": detector, "aligned": align, "normalize": normalize, "mirror": mirror,
                    "photos": len(photos), "faces_found": found, "found_fraction": round(found / len(photos), 4),
                    "found_after_turning": rotated,
                    "ms_per_photo": round(decode_ms + face_ms, 1),
                    "models": scores(probabilities, labels, class_names),
                    "ensemble_gaps": gaps,
                })
    return rows


def ensemble_gaps(models, probabilities: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, dict]:
    """Each shipped ensemble's accuracy minus its best member's, and whether any member reads above it
    beyond chance (:func:`fer_utils.evaluation.gap_to_best_member`): on a few hundred photos, a
    member picked as best on the very photos it is compared on reads high by luck alone."""
    from dataclasses import asdict

    from fer_utils.evaluation import gap_to_best_member

    gaps = {}
    for loaded in models:
        if loaded.is_ensemble:
            gap = gap_to_best_member(labels, probabilities[loaded.key], {m.key: probabilities[m.key] for m in loaded.members})
            gaps[loaded.key] = {**asdict(gap), "below": gap.below, "sentence": gap.sentence()}
    return gaps


def gap_lines(rows: list[dict]) -> list[str]:
    """The gap of each row's ensemble(s) to the best member, one readable line each."""
    return [f"{row.get('lighting', 'as_taken')}, {row['detector']}, {'aligned' if row['aligned'] else 'not aligned'}, "
            f"{row['normalize']}{', mirror' if row.get('mirror') else ''}, {key}: {gap['sentence']}"
            for row in rows for key, gap in row.get("ensemble_gaps", {}).items()]


def run_fer_crops(models, csv_path: str, normalizations, also: dict | None = None, mirror: bool = True,
                  lightings: tuple[str, ...] = ("as_taken",)) -> dict[str, dict]:
    """Each photometric step on FER2013 PublicTest crops (the selection split), keyed
    ``normalize`` (as taken) or ``lighting/normalize``."""
    from fer_utils.data import load_dataset

    val = load_dataset(csv_path).val
    class_names = next(iter(models)).class_names
    result = {}
    for lighting in lightings:
        faces = relight(np.asarray(val.images).reshape(len(val.images), 48, 48).astype(np.uint8), lighting)
        for normalize in normalizations:
            crops = np.stack([normalize_face(face, normalize) for face in faces])
            key = normalize if lighting == "as_taken" else f"{lighting}/{normalize}"
            result[key] = scores(network_predictions(models, crops, also, mirror), val.labels, class_names)
    return result


def markdown(rows: list[dict], fer: dict | None, keys: list[str]) -> str:
    head = "| lighting | detector | aligned | normalize | mirror | faces found | ms / photo | " + " | ".join(keys) + " |"
    lines = [head, "|" + "---|" * (7 + len(keys))]
    for row in rows:
        cells = [f"{row['models'][k]['accuracy']:.1%} / {row['models'][k]['macro_f1']:.3f}" for k in keys]
        lines.append(f"| {row.get('lighting', 'as_taken')} | {row['detector']} | {'yes' if row['aligned'] else 'no'} | {row['normalize']} | "
                     f"{'yes' if row.get('mirror', False) else 'no'} | "
                     f"{row['faces_found']}/{row['photos']} ({row['found_fraction']:.1%}) | {row['ms_per_photo']} | "
                     + " | ".join(cells) + " |")
    if fer:
        lines += ["", "FER2013 PublicTest crops (accuracy / macro-F1; lighting/normalize):", "",
                  "| normalize | " + " | ".join(keys) + " |", "|" + "---|" * (1 + len(keys))]
        for normalize, by_model in fer.items():
            lines.append(f"| {normalize} | " + " | ".join(
                f"{by_model[k]['accuracy']:.1%} / {by_model[k]['macro_f1']:.3f}" for k in keys) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, default=os.environ.get("FER_PHOTOS_DIR"),
                        help="labelled photo folder (default: $FER_PHOTOS_DIR)")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "saved_models")
    parser.add_argument("--detectors", nargs="+", default=list(DETECTORS), choices=DETECTORS)
    parser.add_argument("--normalize", nargs="+", default=list(NORMALIZATIONS), choices=NORMALIZATIONS)
    parser.add_argument("--no-unaligned", action="store_true", help="only the aligned pipeline")
    parser.add_argument("--mirror", choices=("yes", "no", "both"), default="both",
                        help="average each face with its mirror image as the serving path does (yes), "
                             "one pass (no), or report both (default)")
    parser.add_argument("--lighting", nargs="+", default=["as_taken"], choices=list(LIGHTING),
                        help="change the light first (photos and PublicTest crops), each in turn; default: as taken")
    parser.add_argument("--fer-csv", default=None, help="also measure each photometric step on FER2013 PublicTest")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument("--figure", type=Path, default=None,
                        help="save the ensemble's (else the first model's) confusion matrices here, one per pipeline "
                             "row (a PNG; keep figures of licensed photo sets out of the repository)")
    parser.add_argument("--also", type=Path, nargs="+", default=[], metavar="MODEL.keras",
                        help="also score these networks (trained candidates outside the models folder), by file name")
    args = parser.parse_args(argv)
    if args.photos is None or not Path(args.photos).is_dir():
        print("error: point FER_PHOTOS_DIR (or --photos) at a folder of <class>/<photo> images, "
              "for example ../shared/data/jaffe", file=sys.stderr)
        return 2
    from fer_utils.model_io import load_model
    from fer_utils.serving import load_models

    models = load_models(args.models_dir, warm_up=False)
    if not models:
        print(f"error: no models could be loaded from {args.models_dir}", file=sys.stderr)
        return 2
    class_names = next(iter(models)).class_names
    also = {}
    for path in args.also:
        try:
            also[path.stem] = load_model(path)
        except Exception as error:  # a bad candidate is named, not a traceback
            print(f"error: {path} could not be loaded: {error}", file=sys.stderr)
            return 2
        if also[path.stem].output_shape[-1] != len(class_names):
            print(f"error: {path} has {also[path.stem].output_shape[-1]} classes, the shipped models {len(class_names)}",
                  file=sys.stderr)
            return 2
    photos = labelled_photos(Path(args.photos), class_names)
    aligns = [True] if args.no_unaligned else [False, True]
    mirrors = {"yes": (True,), "no": (False,), "both": (False, True)}[args.mirror]
    lightings = tuple(args.lighting)
    rows = run_photos(models, photos, args.detectors, aligns, args.normalize, also, mirrors, lightings)
    fer = run_fer_crops(models, args.fer_csv, args.normalize, also, mirrors[-1], lightings) if args.fer_csv else None
    keys = list(rows[0]["models"])
    print(f"{len(photos)} photos from {args.photos}; models from {args.models_dir} (accuracy / macro-F1)\n")
    print(markdown(rows, fer, keys))
    shown = "ensemble" if "ensemble" in keys else keys[0]
    lines = gap_lines(rows)
    if lines:
        print("\nThe ensemble against its best member, on these photos:\n\n" + "\n".join(f"- {line}" for line in lines))
    print("\n" + recall_markdown(rows, shown, class_names))
    if args.figure:
        print(f"\nconfusion matrices of {shown}: {confusion_figure(rows, shown, class_names, args.figure)}")
    if args.json:
        args.json.write_text(json.dumps({"photos": str(args.photos), "rows": rows, "fer_public_test": fer}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
