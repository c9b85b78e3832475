"""How often the photo search finds a face it should, and a face where there is none.

    python benchmarks/face_search.py --fer-csv ../shared/data/fer2013/fer2013.csv.gz [--faces 800] [--no-face 200]

Labelled photos of expressions in the wild are what the search is for, and the project has none it
may measure on besides JAFFE (posed, frontal, every face found). So this builds them: FER2013
**PublicTest** faces (the selection split; real faces from the web, many hard to find) enlarged to
90-170 px and blended into a 480x360 piece of one of scikit-image's face-free sample photos (a cat,
a rocket, coins, text, textures...). The same pieces without a face measure false faces. Each photo
goes through ``fer_utils.faces.find_faces`` as the app calls it, with MTCNN's second look at lower
thresholds and without it, and the first face's crop through one network (with the mirror image, as
the app answers photos). A face counts as the pasted one where its box overlaps the pasted square
by IoU 0.25 or more; one found only in a turned copy is always another (the pasted face is upright).

Needs scikit-image (``requirements.txt``) for the sample photos. Nothing here trains or selects weights.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fer_utils.faces import find_faces  # noqa: E402

#: scikit-image sample photos with no human face in them
BACKGROUNDS = ("chelsea", "rocket", "coins", "page", "text", "brick", "grass", "gravel", "moon", "horse",
               "hubble_deep_field", "immunohistochemistry", "logo", "coffee", "colorwheel", "retina",
               "shepp_logan_phantom", "clock", "cell", "checkerboard")
WIDTH, HEIGHT = 480, 360


def sample_photos() -> list[np.ndarray]:
    """scikit-image's face-free sample photos as RGB uint8."""
    try:
        import skimage.data
    except ImportError:
        raise SystemExit("error: this benchmark needs scikit-image for its sample photos: pip install scikit-image")
    photos = []
    for name in BACKGROUNDS:
        pixels = np.asarray(getattr(skimage.data, name)())
        if pixels.dtype != np.uint8:
            pixels = pixels.astype(np.float32)
            pixels = (255 * (pixels - pixels.min()) / max(1e-6, float(pixels.max() - pixels.min()))).astype(np.uint8)
        if pixels.ndim == 2:
            pixels = np.stack([pixels] * 3, axis=-1)
        photos.append(np.ascontiguousarray(pixels[..., :3]))
    return photos


def background(photos: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """A random 480x360 piece of a random sample photo, enlarged 1-1.6x, mirrored half the time."""
    import cv2

    photo = photos[rng.integers(len(photos))]
    k = max(WIDTH / photo.shape[1], HEIGHT / photo.shape[0]) * rng.uniform(1, 1.6)
    photo = cv2.resize(photo, (int(photo.shape[1] * k) + 1, int(photo.shape[0] * k) + 1))
    y, x = rng.integers(0, photo.shape[0] - HEIGHT + 1), rng.integers(0, photo.shape[1] - WIDTH + 1)
    piece = photo[y:y + HEIGHT, x:x + WIDTH]
    return np.ascontiguousarray(piece[:, ::-1] if rng.random() < 0.5 else piece)


def paste_face(face: np.ndarray, photo: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """``face`` (48x48 grey) enlarged to 90-170 px and blended (soft edges) into ``photo`` at a random place."""
    import cv2

    side = int(rng.integers(90, 170))
    big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC).astype(np.float32)[..., None]
    x, y = int(rng.integers(0, WIDTH - side)), int(rng.integers(0, HEIGHT - side))
    edge = side // 10
    mask = np.zeros((side, side), np.float32)
    mask[edge:-edge, edge:-edge] = 1
    mask = cv2.GaussianBlur(mask, (0, 0), edge / 2)[..., None]
    out = photo.copy()
    region = out[y:y + side, x:x + side].astype(np.float32)
    out[y:y + side, x:x + side] = (mask * big + (1 - mask) * region).astype(np.uint8)
    return out, (x, y, side, side)


def iou(a, b) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def outcome(search, truth) -> str:
    """What the search gave for a photo with a pasted face: which step found what."""
    if search.whole_image:
        return "whole image"
    if search.rotation:
        return "a face in a turned copy"
    box = search.faces[0].box
    right = truth is not None and iou((box.x, box.y, box.w, box.h), truth) >= 0.25
    step = "second look" if search.second_look else search.faces[0].detection.detector
    return f"{step}: {'the pasted face' if right else 'another box'}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fer-csv", default=os.environ.get("FER2013_CSV"), help="FER2013 CSV (default: $FER2013_CSV)")
    parser.add_argument("--faces", type=int, default=800, help="PublicTest faces to paste")
    parser.add_argument("--no-face", type=int, default=200, help="face-free photos")
    parser.add_argument("--model", type=Path, default=ROOT / "saved_models" / "scratch_cnn_distilled.keras")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)
    if not args.fer_csv:
        parser.error("give --fer-csv or set FER2013_CSV")
    from tqdm import tqdm

    from fer_utils.data import load_dataset
    from fer_utils.evaluation import predict_proba
    from fer_utils.model_io import load_model

    rng = np.random.default_rng(args.seed)
    photos = sample_photos()
    val = load_dataset(args.fer_csv).val
    chosen = rng.choice(len(val.labels), min(args.faces, len(val.labels)), replace=False)
    faces, labels = val.images[chosen].reshape(-1, 48, 48).astype(np.uint8), val.labels[chosen]
    model = load_model(args.model)
    runs = {"with the second look": True, "without it": False}
    counts = {name: collections.Counter() for name in runs}
    crops: dict[str, list[np.ndarray]] = {name: [] for name in runs}
    seconds = {name: 0.0 for name in runs}
    for face in tqdm(faces, desc="pasted faces", unit="photo"):
        photo, truth = paste_face(face, background(photos, rng), rng)
        for name, look in runs.items():
            started = time.perf_counter()
            search = find_faces(photo, "mtcnn", second_look=look)
            seconds[name] += time.perf_counter() - started
            counts[name][outcome(search, truth)] += 1
            crops[name].append(search.faces[0].crop)
    false_faces = collections.Counter()
    for _ in tqdm(range(args.no_face), desc="face-free photos", unit="photo"):
        photo = background(photos, rng)
        for name, look in runs.items():
            search = find_faces(photo, "mtcnn", second_look=look)
            false_faces[name] += int(search.found)
    print(f"\n{len(faces)} FER2013 PublicTest faces pasted into photos; {args.no_face} face-free photos; "
          f"answers by {args.model.stem} (with the mirror image)\n")
    print("| search | " + " | ".join(sorted({k for c in counts.values() for k in c})) +
          " | accuracy | ms / photo | false faces in face-free photos |")
    keys = sorted({k for c in counts.values() for k in c})
    print("|" + "---|" * (len(keys) + 4))
    for name in runs:
        batch = np.stack(crops[name]).astype(np.float32)[..., None]
        answers = (predict_proba(model, batch) + predict_proba(model, batch[:, :, ::-1])) / 2
        accuracy = float(np.mean(answers.argmax(axis=1) == labels))
        print(f"| {name} | " + " | ".join(str(counts[name][k]) for k in keys) +
              f" | {accuracy:.1%} | {seconds[name] * 1000 / len(faces):.1f} | {false_faces[name]}/{args.no_face} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
