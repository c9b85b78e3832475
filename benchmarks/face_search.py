"""How often the photo search finds a face it should, and a face where there is none.

    python benchmarks/face_search.py --fer-csv ../shared/data/fer2013/fer2013.csv.gz [--faces 800] [--turned 300]
        [--no-face 200] [--thresholds 0.5 0.5 0.5 --thresholds 0.4 0.4 0.4 ...]

Labelled photos of expressions in the wild are what the search is for, and the project has none it
may measure on besides JAFFE (posed, frontal, every face found). So this builds them: FER2013
**PublicTest** faces (the selection split; real faces from the web, many hard to find) enlarged to
90-170 px and blended into a 480x360 piece of one of scikit-image's face-free sample photos (a cat,
a rocket, coins, text, textures...). The same pieces without a face measure false faces. Each photo
goes through ``fer_utils.faces.find_faces`` as the app calls it, with MTCNN's second look at lower
thresholds (one or more settings) and without it, once more without the profile cascade (faces seen
from the side, asked where nothing frontal is found upright or turned), and the first face's crop through one network
(with the mirror image, as the app answers photos). A face counts as the pasted one where its box
overlaps the pasted square by IoU 0.25 or more; one found only in a turned copy is always another
(the pasted face is upright). The first ``--turned`` photos are also searched turned 90 degrees
clockwise, as a sideways photo without its EXIF orientation arrives, where the turned search
should find the face.

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

from fer_utils.faces import SECOND_LOOK_THRESHOLDS as DEFAULT_SECOND_LOOK  # noqa: E402
from fer_utils.faces import Box, find_faces  # noqa: E402

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


def outcome(search, truth, turned: bool = False) -> str:
    """What the search gave for a photo with a pasted face: which step found what. In a photo
    turned sideways (``turned``), a face found upright is not told right from wrong."""
    if search.whole_image:
        return "whole image"
    if search.rotation:
        return "a face in a turned copy"
    if turned:
        return "second look" if search.second_look else f"{search.faces[0].detection.detector}, upright"
    right = truth is not None and search.faces[0].box.overlap(Box(*truth)) >= 0.25
    step = "second look" if search.second_look else search.faces[0].detection.detector
    return f"{step}: {'the pasted face' if right else 'another box'}"


#: A setting: the second look's thresholds (None: without it), and whether the profile cascade looks.
Setting = tuple[tuple[float, float, float] | None, bool]


def search_with(photo: np.ndarray, setting: Setting):
    """``find_faces`` as the app calls it, with the second look at the setting's thresholds (None:
    without it) and with or without the profile cascade."""
    from fer_utils import faces

    thresholds, profiles = setting
    shipped = faces.SECOND_LOOK_THRESHOLDS
    faces.SECOND_LOOK_THRESHOLDS = thresholds or shipped
    try:
        return find_faces(photo, "mtcnn", second_look=thresholds is not None, profiles=profiles)
    finally:
        faces.SECOND_LOOK_THRESHOLDS = shipped


def setting_name(setting: Setting) -> str:
    thresholds, profiles = setting
    without = "" if profiles else ", without the profile cascade"
    if thresholds is None:
        return "without the second look" + without
    default = "default, " if thresholds == DEFAULT_SECOND_LOOK else ""
    return f"second look at {'/'.join(f'{t:g}' for t in thresholds)} ({default}PNet/RNet/ONet){without}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fer-csv", default=os.environ.get("FER2013_CSV"), help="FER2013 CSV (default: $FER2013_CSV)")
    parser.add_argument("--faces", type=int, default=800, help="PublicTest faces to paste")
    parser.add_argument("--turned", type=int, default=300,
                        help="of those, photos also measured turned 90 degrees clockwise (what the turned search is for)")
    parser.add_argument("--no-face", type=int, default=200, help="face-free photos")
    parser.add_argument("--thresholds", type=float, nargs=3, action="append", metavar=("PNET", "RNET", "ONET"),
                        help=f"a second-look setting to measure (repeatable; default: the shipped {DEFAULT_SECOND_LOOK})")
    parser.add_argument("--model", type=Path, default=ROOT / "saved_models" / "scratch_cnn_distilled.keras")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)
    if not args.fer_csv:
        parser.error("give --fer-csv or set FER2013_CSV")
    from tqdm import tqdm

    from fer_utils.data import load_dataset
    from fer_utils.evaluation import predict_proba
    from fer_utils.model_io import load_model

    settings: list[Setting] = [*((tuple(t), True) for t in (args.thresholds or [DEFAULT_SECOND_LOOK])),
                               (DEFAULT_SECOND_LOOK, False), (None, True)]
    rng = np.random.default_rng(args.seed)
    photos = sample_photos()
    val = load_dataset(args.fer_csv).val
    chosen = rng.choice(len(val.labels), min(args.faces, len(val.labels)), replace=False)
    faces, labels = val.images[chosen].reshape(-1, 48, 48).astype(np.uint8), val.labels[chosen]
    model = load_model(args.model)
    sets = ("upright", "turned")
    counts = {(kind, s): collections.Counter() for kind in sets for s in settings}
    crops: dict = {(kind, s): [] for kind in sets for s in settings}
    seconds = {s: 0.0 for s in settings}
    for i, face in enumerate(tqdm(faces, desc="pasted faces", unit="photo")):
        photo, truth = paste_face(face, background(photos, rng), rng)
        for setting in settings:
            started = time.perf_counter()
            search = search_with(photo, setting)
            seconds[setting] += time.perf_counter() - started
            counts["upright", setting][outcome(search, truth)] += 1
            crops["upright", setting].append(search.faces[0].crop)
            if i < args.turned:
                search = search_with(np.ascontiguousarray(np.rot90(photo, -1)), setting)
                counts["turned", setting][outcome(search, None, turned=True)] += 1
                crops["turned", setting].append(search.faces[0].crop)
    false_faces = collections.Counter()
    for _ in tqdm(range(args.no_face), desc="face-free photos", unit="photo"):
        photo = background(photos, rng)
        for setting in settings:
            false_faces[setting] += int(search_with(photo, setting).found)

    def accuracy(key, n) -> str:
        batch = np.stack(crops[key]).astype(np.float32)[..., None]
        answers = (predict_proba(model, batch) + predict_proba(model, batch[:, :, ::-1])) / 2
        return f"{np.mean(answers.argmax(axis=1) == labels[:n]):.1%}"

    print(f"\n{len(faces)} FER2013 PublicTest faces pasted into face-free photos ({args.turned} of them also turned "
          f"90 degrees); {args.no_face} face-free photos; answers by {args.model.stem} (with the mirror image)")
    for kind, n in (("upright", len(faces)), ("turned", min(args.turned, len(faces)))):
        if not n:
            continue
        keys = sorted({k for s in settings for k in counts[kind, s]})
        extra = " | ms / photo | false faces in face-free photos" if kind == "upright" else ""
        print(f"\n{kind} photos ({n}):\n\n| search | " + " | ".join(keys) + f" | accuracy{extra} |")
        print("|" + "---|" * (len(keys) + (4 if kind == "upright" else 2)))
        for setting in settings:
            cells = " | ".join(str(counts[kind, setting][k]) for k in keys)
            more = f" | {seconds[setting] * 1000 / len(faces):.1f} | {false_faces[setting]}/{args.no_face}" if kind == "upright" else ""
            print(f"| {setting_name(setting)} | {cells} | {accuracy((kind, setting), n)}{more} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
