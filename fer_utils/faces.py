"""Find every face in a photo and cut each out the way FER2013 faces look: 48x48 grey, framed like the data.

Two detectors ship inside their packages, so both work offline:

- ``"mtcnn"`` (the default): PyPI ``mtcnn``'s three small TensorFlow networks; it finds more faces
  in real photos than Haar and gives five landmarks (eyes, nose, mouth corners);
- ``"haar"``: OpenCV's bundled Haar cascade: several times faster, no landmarks.

Each face is then *aligned*: with eye landmarks, the photo is rotated so the eyes are level and
scaled so they land where they sit in an average FER2013 face (:class:`Framing`, measured on
FER2013 Training faces by ``python -m fer_utils.framing``, not guessed); a Haar box is placed
where Haar's boxes sit in FER2013 faces. Finally the crop gets the same photometric step
everywhere (:data:`DEFAULT_NORMALIZE`), so the demo, the CLI and evaluation see the same face.

With no face found the whole image is used and :attr:`FaceSearch.note` says so, and why where it
can tell (too dark, blank, or a face turned sideways: the 90/180/270 degree turns are tried
first). An upload that already is a small face crop, such as a FER2013 face, is used as it is
(the ``tone`` step leaves it alone: a FER2013 face outside the usual range is still one the models learned from).

Example::

    rgb = np.asarray(Image.open("photo.jpg").convert("RGB"))
    search = find_faces(rgb)                 # search.faces[i].crop: (48, 48) uint8, .box, .landmarks
    shown = draw_faces(rgb, search, ["happy", "sad"])
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from . import mtcnn_stages
from .tone import match_tone

__all__ = [
    "Box",
    "Landmarks",
    "Detection",
    "Face",
    "FaceSearch",
    "FaceCrop",
    "Framing",
    "DETECTORS",
    "DEFAULT_DETECTOR",
    "NORMALIZATIONS",
    "DEFAULT_NORMALIZE",
    "MAX_FACES",
    "CASCADE_FILE",
    "to_gray",
    "detect",
    "detect_faces",
    "align_face",
    "crop_face",
    "normalize_face",
    "whole_image_face",
    "find_faces",
    "locate_face",
    "looks_like_face_crop",
    "draw_faces",
    "draw_face_boxes",
    "warm_up_detector",
    "detect_profiles",
]

FACE_SIZE = 48
DETECTORS = ("mtcnn", "haar")
DEFAULT_DETECTOR = "mtcnn"  # chosen from benchmarks/photo_pipeline.py's figures (docs in benchmarks/README.md)
MAX_FACES = 20
# Photometric step on the 48x48 crop. "tone" leaves a crop whose brightness and contrast lie in FER2013's
# range as it is and moves any other into it (fer_utils.tone): on PublicTest crops as taken it changes
# nothing measurable, on darkened, flat or over-exposed ones it wins back 1-4 points; equalisation and
# CLAHE cost 3.5-6.5 points on every crop. Figures: benchmarks/photo_pipeline.py --lighting
# (FER2013 PublicTest crops and real photos), see benchmarks/README.md.
NORMALIZATIONS = ("none", "tone", "equalize", "clahe")
DEFAULT_NORMALIZE = "tone"
# alt2 rather than "default": on the LFW faces scikit-image bundles it found 98/100 faces (default 97)
# with no false alarms on 100 non-faces, and it runs about twice as fast on the example photos.
CASCADE_FILE = "haarcascade_frontalface_alt2.xml"
# OpenCV's cascade for faces seen from the side (trained on faces looking one way; the mirror image
# finds the other), as film stills and candid photos often show them. Asked only where neither MTCNN
# nor the frontal cascade finds a face upright or turned, before MTCNN's second look. On FER2013
# PublicTest faces pasted into face-free photos (benchmarks/face_search.py) it finds some faces
# they miss and no false face in the face-free ones: benchmarks/README.md, "Face search".
PROFILE_CASCADE_FILE = "haarcascade_profileface.xml"
PROFILE = "haar_profile"  # Detection.detector of a face the profile cascade found
DEFAULT_MARGIN = 0.15  # of a box's side on every side; used only where no measured framing applies
# Haar detection passes, tried in turn until one finds a face: (longest side of the shrunk copy, the
# cascade's scale step). The coarse pass is quick (a portrait's face is big); the fine one finds
# small faces in big photos, and only runs when the coarse one found nothing.
DETECT_PASSES: tuple[tuple[int, float], ...] = ((320, 1.15), (960, 1.15))
MIN_FACE_PIXELS = 24  # the cascade's own window; smaller faces cannot be found
MTCNN_MAX_SIDE = 1280  # MTCNN's pyramid on a 12 MP photo takes seconds; faces stay findable at this size
MTCNN_MIN_SCORE = mtcnn_stages.ONET_THRESHOLD  # ONet's confidence: the mtcnn package's own default (0.8), kept as it is
# Where neither MTCNN nor the Haar cascade finds a face, upright or turned, MTCNN looks once more at the
# upright photo with its three stages' thresholds (PNet, RNet, ONet; the package's are 0.6, 0.7, 0.8) at
# 0.5 and keeps its most confident face, rather than answer on the whole image. Measured on FER2013
# PublicTest faces pasted into face-free photos by benchmarks/face_search.py (benchmarks/README.md).
SECOND_LOOK_THRESHOLDS = (0.5, 0.5, 0.5)
CROP_MAX_SIDE = 96  # an image this small with no face in it is taken to be a face crop already (FER2013: 48)
DARK_MEAN, BRIGHT_MEAN, BLANK_STD = 35.0, 225.0, 6.0  # grey levels for "too dark", "too bright", "blank"
ROTATIONS = (90, 180, 270)  # tried, clockwise, when nothing is found upright

CHOSEN_COLOUR = (40, 200, 60)  # RGB
OTHER_COLOUR = (255, 160, 0)
FRAMING_FILE = Path(__file__).with_name("fer2013_framing.json")

log = logging.getLogger(__name__)
_local = threading.local()
_mtcnn_lock = threading.Lock()  # MTCNN calls take turns


# ----------------------------------------------------------------------------- types


@dataclass(frozen=True)
class Box:
    """A face rectangle in the original photo's pixel coordinates."""

    x: int
    y: int
    w: int
    h: int

    @property
    def area(self) -> int:
        return self.w * self.h

    @property
    def centre(self) -> tuple[float, float]:
        return self.x + self.w / 2, self.y + self.h / 2

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]

    def overlap(self, other: "Box") -> float:
        """Intersection over union with ``other``: 1 for the same box, 0 for boxes apart."""
        width = min(self.x + self.w, other.x + other.w) - max(self.x, other.x)
        height = min(self.y + self.h, other.y + other.h) - max(self.y, other.y)
        inter = max(0, width) * max(0, height)
        union = self.area + other.area - inter
        return inter / union if union else 0.0


@dataclass(frozen=True)
class Landmarks:
    """MTCNN's five points in photo pixels. "left" is the image's left (the person's right eye)."""

    left_eye: tuple[float, float]
    right_eye: tuple[float, float]
    nose: tuple[float, float]
    mouth_left: tuple[float, float]
    mouth_right: tuple[float, float]

    def as_dict(self) -> dict[str, list[float]]:
        return {name: [round(float(v), 1) for v in getattr(self, name)] for name in self.__dataclass_fields__}

    def moved(self, dx: float, dy: float) -> "Landmarks":
        return Landmarks(*[(p[0] + dx, p[1] + dy) for p in (self.left_eye, self.right_eye, self.nose,
                                                              self.mouth_left, self.mouth_right)])


@dataclass(frozen=True)
class Detection:
    """One face a detector found: its box, its landmarks (MTCNN only) and its confidence."""

    box: Box
    landmarks: Landmarks | None = None
    score: float | None = None
    detector: str = "haar"


@dataclass
class Face:
    """One face ready for the models: the 48x48 crop and where it came from."""

    crop: np.ndarray  # (48, 48) uint8, aligned and normalised
    detection: Detection | None  # None when the whole image is used

    @property
    def box(self) -> Box | None:
        return self.detection.box if self.detection else None

    @property
    def landmarks(self) -> Landmarks | None:
        return self.detection.landmarks if self.detection else None


@dataclass
class FaceSearch:
    """Every face found in one photo (largest first, at most :data:`MAX_FACES`), and what was done."""

    faces: list[Face]
    detector: str
    image_size: tuple[int, int]  # (width, height) of the photo as searched (after any turn)
    aligned: bool = True
    normalize: str = DEFAULT_NORMALIZE
    rotation: int = 0  # degrees clockwise the photo was turned before faces were found
    whole_image: bool = False  # no face: the whole image is the only "face"
    face_crop: bool = False  # ... because the upload already is a face crop
    reason: str = ""  # why nothing was found, where it could be told
    total_found: int = 0  # faces found before the MAX_FACES cap
    detector_failed: bool = False  # MTCNN raised on this photo and the Haar cascade looked instead
    second_look: bool = False  # the face was found by MTCNN's second look, at lower thresholds

    @property
    def found(self) -> bool:
        return not self.whole_image

    @property
    def boxes(self) -> list[Box]:
        return [face.box for face in self.faces if face.box is not None]

    def found_by(self, face: Face) -> str:
        """Which step found ``face``: ``"mtcnn"``, ``"haar"``, ``"haar_profile"`` (a face seen from
        the side), ``"mtcnn second look"`` (lower thresholds, so perhaps not a face), or ``""`` for
        the whole image."""
        if face.detection is None:
            return ""
        return "mtcnn second look" if self.second_look else face.detection.detector

    @property
    def note(self) -> str:
        """One or two sentences for people: how many faces, which detector, or why none."""
        who = f"{self.detector.upper() if self.detector == 'mtcnn' else 'Haar cascade'}"
        if self.face_crop:
            width, height = self.image_size
            return (f"This image ({width}x{height} px) looks like a face crop already, so it was used as it is "
                    "(no face detection).")
        failed = "the Haar cascade (MTCNN failed on this photo)"
        if self.whole_image:
            who = failed if self.detector_failed else who
            why = f" {self.reason}" if self.reason else " Try a photo where the face is frontal and larger."
            return f"No face found ({who}): the whole image was used, so predictions may be unreliable.{why}"
        turned = f" The photo was turned {self.rotation} degrees clockwise to find {'it' if len(self.faces) == 1 else 'them'}." if self.rotation else ""
        capped = (f" {self.total_found} were found; the {MAX_FACES} largest are shown."
                  if self.total_found > len(self.faces) else "")
        box = self.faces[0].box
        size = f"{box.w}x{box.h} px at ({box.x}, {box.y})"
        fallback = self.faces[0].detection.detector != self.detector
        if fallback:
            who = failed if self.detector_failed else f"the Haar cascade ({self.detector.upper()} found none)"
        if self.faces[0].detection.detector == PROFILE:
            found_none = "MTCNN failed on this photo" if self.detector_failed else "no frontal face was found"
            who = (f"the Haar profile cascade ({found_none}), seen from the side, where expressions are "
                   "harder to read")
        if self.second_look:
            who = (f"MTCNN at lower thresholds (a second look; confidence {self.faces[0].detection.score:.2f}), "
                   "so it may not be a face")
        if len(self.faces) == 1:
            return f"One face found by {who} ({size}).{turned}"
        return (f"{len(self.faces)} faces found by {who}, numbered largest first (#1: {size}).{capped}{turned}")


# Backwards-compatible view of the largest face, for callers that want one face.
@dataclass
class FaceCrop:
    """The largest face of a :class:`FaceSearch`: ``face`` (48x48), ``box``, ``boxes``, ``note``."""

    face: np.ndarray
    box: Box | None
    boxes: list[Box] = field(default_factory=list)
    image_size: tuple[int, int] = (0, 0)
    search: FaceSearch | None = None

    @property
    def found(self) -> bool:
        return self.box is not None

    @property
    def note(self) -> str:
        if self.search is not None:
            return self.search.note
        if self.box is None:
            return "No face found: the whole image was used, so predictions may be unreliable."
        return f"One face found ({self.box.w}x{self.box.h} px at ({self.box.x}, {self.box.y}))."


@dataclass(frozen=True)
class Framing:
    """Where a FER2013 face sits in its 48x48 frame, as fractions of the frame's side.

    ``left_eye`` and ``right_eye`` are MTCNN's eye landmarks; ``mtcnn_box`` and ``haar_box`` are
    each detector's box as (centre x, centre y, width, height). Medians over the FER2013 Training
    faces each detector found (``python -m fer_utils.framing`` measures and writes them).
    """

    left_eye: tuple[float, float]
    right_eye: tuple[float, float]
    mtcnn_box: tuple[float, float, float, float]
    haar_box: tuple[float, float, float, float]
    measured_on: str = ""

    @classmethod
    def load(cls, path: str | Path = FRAMING_FILE) -> "Framing":
        data = json.loads(Path(path).read_text())
        return cls(tuple(data["left_eye"]), tuple(data["right_eye"]), tuple(data["mtcnn_box"]),
                   tuple(data["haar_box"]), data.get("measured_on", ""))

    def box_for(self, detector: str) -> tuple[float, float, float, float]:
        """Where ``detector``'s boxes sit in a FER2013 frame; the profile cascade's boxes, square
        like the frontal cascade's, take its framing (FER2013 has too few profiles to measure)."""
        return self.haar_box if detector in ("haar", PROFILE) else self.mtcnn_box


@lru_cache(maxsize=1)
def fer2013_framing() -> Framing:
    """The shipped framing, measured on FER2013 Training (see :class:`Framing`)."""
    return Framing.load()


# ----------------------------------------------------------------------------- pixels


def to_gray(image: np.ndarray) -> np.ndarray:
    """An (H, W) uint8 grey copy of a grey, RGB or RGBA image (RGB order, as Pillow gives)."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        return arr
    if arr.ndim == 3 and arr.shape[-1] == 3:
        return cv2.cvtColor(arr, cv2.COLOR_RGB2GRAY)
    if arr.ndim == 3 and arr.shape[-1] == 4:
        return cv2.cvtColor(arr, cv2.COLOR_RGBA2GRAY)
    raise ValueError(f"expected a grey, RGB or RGBA image, got shape {arr.shape}")


def to_rgb(image: np.ndarray) -> np.ndarray:
    """An (H, W, 3) uint8 RGB copy of a grey, RGB or RGBA image."""
    arr = np.asarray(image)
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 1):
        return cv2.cvtColor(to_gray(arr), cv2.COLOR_GRAY2RGB)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.shape[-1] == 4:
        return cv2.cvtColor(arr, cv2.COLOR_RGBA2RGB)
    return arr


def normalize_face(face: np.ndarray, method: str = DEFAULT_NORMALIZE) -> np.ndarray:
    """The photometric step on a grey crop: ``none``; ``tone``, brightness and contrast moved into
    FER2013's range only where they lie outside it (:func:`fer_utils.tone.match_tone`); global
    histogram ``equalize``; or ``clahe``."""
    if method not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {method!r}")
    face = to_gray(face)
    if method == "tone":
        return match_tone(face)
    if method == "equalize":
        return cv2.equalizeHist(face)
    if method == "clahe":
        return _clahe().apply(face)
    return face


def _clahe() -> cv2.CLAHE:
    clahe = getattr(_local, "clahe", None)
    if clahe is None:
        clahe = _local.clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4))  # 12x12-pixel tiles at 48 px
    return clahe


# ----------------------------------------------------------------------------- detectors


def detect(image: np.ndarray, detector: str = DEFAULT_DETECTOR, *, max_faces: int | None = None,
           min_fraction: float = 0.03, max_side: int = MTCNN_MAX_SIDE,
           thresholds: tuple[float, float, float] | None = None) -> list[Detection]:
    """Every face in an RGB (or grey) image, largest first. ``detector`` is ``"mtcnn"`` or ``"haar"``.

    MTCNN looks at a copy shrunk to ``max_side`` pixels (a live view passes less, for speed);
    boxes and landmarks are always in the full image's pixels. ``thresholds``: MTCNN's three
    stages' (PNet, RNet, ONet; the last is also the lowest confidence kept), instead of the package's.
    """
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {', '.join(DETECTORS)}, got {detector!r}")
    if detector == "haar":
        found = [Detection(box, None, None, "haar") for box in detect_faces(to_gray(image), min_fraction=min_fraction)]
    else:
        found = _detect_mtcnn(to_rgb(image), min_fraction, max_side, thresholds)
    return found[:max_faces] if max_faces else found


def warm_up_detector(detector: str = DEFAULT_DETECTOR) -> None:
    """Trace the detector on two photo sizes, so the first real request does not pay for it (~0.5 s)."""
    rng = np.random.default_rng(0)
    for shape in ((512, 512, 3), (480, 640, 3)):
        detect(rng.integers(0, 255, shape, dtype=np.uint8), detector)


def _detect_mtcnn(rgb: np.ndarray, min_fraction: float, max_side: int = MTCNN_MAX_SIDE,
                  thresholds: tuple[float, float, float] | None = None) -> list[Detection]:
    thresholds = thresholds or (mtcnn_stages.PNET_THRESHOLD, mtcnn_stages.RNET_THRESHOLD, MTCNN_MIN_SCORE)
    height, width = rgb.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    small = rgb if scale == 1.0 else cv2.resize(rgb, (max(1, round(width * scale)), max(1, round(height * scale))),
                                                interpolation=cv2.INTER_AREA)
    min_face = max(20, int(min_fraction * min(small.shape[:2])))
    if min(small.shape[:2]) < min_face:
        return []
    with _mtcnn_lock:  # one detector, not promised thread-safe: calls take turns
        found = mtcnn_stages.detect_faces(np.ascontiguousarray(small), min_face_size=min_face, thresholds=thresholds)
    detections = []
    for item in found:
        score = float(item.get("confidence", 0.0))
        if score < thresholds[2]:
            continue
        x, y, w, h = (float(v) / scale for v in item["box"])
        if w < 2 or h < 2:
            continue
        points = item.get("keypoints") or {}
        landmarks = None
        if all(k in points for k in ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")):
            landmarks = Landmarks(*[tuple(float(v) / scale for v in points[k])
                                    for k in ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")])
        detections.append(Detection(Box(int(round(x)), int(round(y)), int(round(w)), int(round(h))), landmarks,
                                    score, "mtcnn"))
    return sorted(detections, key=lambda d: d.box.area, reverse=True)


def _haar(cascade: str = CASCADE_FILE) -> cv2.CascadeClassifier:
    """One cascade of each kind per thread: loaded once, and never shared between threads (OpenCV
    does not promise that is safe)."""
    loaded = getattr(_local, "cascades", None)
    if loaded is None:
        loaded = _local.cascades = {}
    detector = loaded.get(cascade)
    if detector is None:
        detector = cv2.CascadeClassifier(cv2.data.haarcascades + cascade)
        if detector.empty():
            raise RuntimeError(f"OpenCV's face cascade {cascade} could not be loaded from {cv2.data.haarcascades}")
        loaded[cascade] = detector
    return detector


def detect_faces(
    gray: np.ndarray,
    *,
    passes: tuple[tuple[int, float], ...] = DETECT_PASSES,
    min_neighbors: int = 5,
    min_fraction: float = 0.03,
    cascade: str = CASCADE_FILE,
) -> list[Box]:
    """Frontal faces by the Haar cascade in a grey image, largest first (or, with ``cascade``,
    what another of OpenCV's cascades finds).

    Detection first runs on a copy shrunk to ``passes[0][0]`` pixels (a big photo at full size
    takes seconds); only when that finds nothing does it look again at the next, larger size,
    because a small face in a big photo vanishes when shrunk. Faces smaller than
    ``min_fraction`` of the shorter side are ignored.
    """
    gray = to_gray(gray)
    height, width = gray.shape
    tried: set[float] = set()
    for max_side, scale_factor in passes:
        scale = min(1.0, max_side / max(height, width))
        if scale in tried:
            break
        tried.add(scale)
        boxes = _haar_at_scale(gray, scale, scale_factor, min_neighbors, min_fraction, cascade)
        if boxes or scale == 1.0:
            return boxes
    return []


def _haar_at_scale(gray: np.ndarray, scale: float, scale_factor: float, min_neighbors: int,
                   min_fraction: float, cascade: str = CASCADE_FILE) -> list[Box]:
    height, width = gray.shape
    if scale < 1.0:
        small = cv2.resize(gray, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
    else:
        small = gray
    min_side = max(MIN_FACE_PIXELS, int(min_fraction * min(small.shape)))
    if min(small.shape) < min_side:
        return []
    found = _haar(cascade).detectMultiScale(
        small, scaleFactor=scale_factor, minNeighbors=min_neighbors, minSize=(min_side, min_side)
    )
    boxes = [
        Box(int(round(x / scale)), int(round(y / scale)), int(round(w / scale)), int(round(h / scale)))
        for (x, y, w, h) in (found if len(found) else [])
    ]
    return sorted(boxes, key=lambda box: box.area, reverse=True)


def detect_profiles(gray: np.ndarray, *, min_fraction: float = 0.03) -> list[Detection]:
    """Faces seen from the side, by OpenCV's profile cascade on the photo and on its mirror image
    (the cascade knows faces looking one way), largest first; one face found both ways is kept once."""
    gray = to_gray(gray)
    width = gray.shape[1]
    boxes = detect_faces(gray, min_fraction=min_fraction, cascade=PROFILE_CASCADE_FILE)
    mirrored = detect_faces(np.ascontiguousarray(gray[:, ::-1]), min_fraction=min_fraction, cascade=PROFILE_CASCADE_FILE)
    boxes += [Box(width - box.x - box.w, box.y, box.w, box.h) for box in mirrored]
    kept: list[Box] = []
    for box in sorted(boxes, key=lambda b: b.area, reverse=True):
        if all(box.overlap(other) < 0.3 for other in kept):
            kept.append(box)
    return [Detection(box, None, None, PROFILE) for box in kept]


# ----------------------------------------------------------------------------- crops


def align_face(gray: np.ndarray, detection: Detection, framing: Framing | None = None,
               size: int = FACE_SIZE) -> np.ndarray:
    """The face warped into FER2013's framing: eyes level and where FER2013's eyes are.

    With eye landmarks, one similarity transform (rotation, scale, shift) maps the two eyes onto
    the framing's eye points; without them (Haar), the box is scaled and shifted to where that
    detector's boxes sit in FER2013 faces, with no rotation. Pixels outside the photo repeat the
    edge rather than adding black bars the models never saw. The warp renders at 4x and shrinks
    with area averaging, so a big face is not aliased.
    """
    gray = to_gray(gray)
    framing = framing or fer2013_framing()
    render = size * 4
    if detection.landmarks is not None:
        (lx, ly), (rx, ry) = detection.landmarks.left_eye, detection.landmarks.right_eye
        (tlx, tly), (trx, try_) = framing.left_eye, framing.right_eye
        source_dist = float(np.hypot(rx - lx, ry - ly))
        if source_dist >= 2:
            scale = float(np.hypot(trx - tlx, try_ - tly)) * render / source_dist
            angle = float(np.arctan2(ry - ly, rx - lx)) - float(np.arctan2(try_ - tly, trx - tlx))
            cos, sin = scale * np.cos(-angle), scale * np.sin(-angle)
            mid_src = ((lx + rx) / 2, (ly + ry) / 2)
            mid_dst = ((tlx + trx) / 2 * render, (tly + try_) / 2 * render)
            matrix = np.array([[cos, -sin, 0.0], [sin, cos, 0.0]])
            matrix[:, 2] = np.array(mid_dst) - matrix[:, :2] @ np.array(mid_src)
            return _warp(gray, matrix, render, size)
    cx, cy, fw, fh = framing.box_for(detection.detector)
    box = detection.box
    scale = render * (fw + fh) / (box.w + box.h)
    bx, by = box.centre
    matrix = np.array([[scale, 0.0, cx * render - scale * bx], [0.0, scale, cy * render - scale * by]])
    return _warp(gray, matrix, render, size)


def _warp(gray: np.ndarray, matrix: np.ndarray, render: int, size: int) -> np.ndarray:
    scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))
    if scale < 0.5:  # a big face: shrink the photo first so the warp does not skip pixels
        shrink = scale * 2
        small = cv2.resize(gray, (max(1, round(gray.shape[1] * shrink)), max(1, round(gray.shape[0] * shrink))),
                           interpolation=cv2.INTER_AREA)
        matrix = matrix.copy()
        matrix[:, :2] /= shrink
        gray = small
    warped = cv2.warpAffine(gray, matrix, (render, render), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return _resize(warped, size)


def crop_face(gray: np.ndarray, box: Box, margin: float = DEFAULT_MARGIN, size: int = FACE_SIZE) -> np.ndarray:
    """A square crop around ``box`` with ``margin`` on every side, shrunk to ``size`` x ``size`` (no alignment).

    The square is shifted to stay inside the photo where it fits; where it cannot (a face at the
    edge), the missing border repeats the edge pixels.
    """
    gray = to_gray(gray)
    height, width = gray.shape
    side = int(round(max(box.w, box.h) * (1 + 2 * margin)))
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    if side <= width:
        x0 = min(max(x0, 0), width - side)
    if side <= height:
        y0 = min(max(y0, 0), height - side)
    pad = max(0, -x0, -y0, x0 + side - width, y0 + side - height)
    if pad:
        gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0 = x0 + pad, y0 + pad
    square = gray[y0 : y0 + side, x0 : x0 + side]
    return _resize(square, size)


def whole_image_face(gray: np.ndarray, size: int = FACE_SIZE) -> np.ndarray:
    """The whole image as the face: padded to a square (edge pixels repeated) so nothing is squashed."""
    gray = to_gray(gray)
    height, width = gray.shape
    if height != width:
        extra = abs(height - width)
        before, after = extra // 2, extra - extra // 2
        if height > width:
            gray = cv2.copyMakeBorder(gray, 0, 0, before, after, cv2.BORDER_REPLICATE)
        else:
            gray = cv2.copyMakeBorder(gray, before, after, 0, 0, cv2.BORDER_REPLICATE)
    return _resize(gray, size)


def looks_like_face_crop(image: np.ndarray) -> bool:
    """A small, nearly square image (FER2013's are 48x48) is taken to be a face crop already."""
    height, width = np.asarray(image).shape[:2]
    return max(height, width) <= CROP_MAX_SIDE and 0.8 <= width / height <= 1.25


def no_face_reason(gray: np.ndarray) -> str:
    """Why a photo may show no face, where the pixels tell: too dark, too bright, or blank."""
    gray = to_gray(gray)
    mean, std = float(gray.mean()), float(gray.std())
    blank = "The image is nearly blank (one flat colour), so there is no face to find."
    if std < 1.5:
        return blank
    if mean < DARK_MEAN:
        return "The photo is very dark; try one with more light on the face."
    if mean > BRIGHT_MEAN:
        return "The photo is very bright (over-exposed); try one with less light."
    return blank if std < BLANK_STD else ""


# ----------------------------------------------------------------------------- the whole search


def find_faces(
    image: np.ndarray,
    detector: str = DEFAULT_DETECTOR,
    *,
    align: bool = True,
    normalize: str = DEFAULT_NORMALIZE,
    max_faces: int = MAX_FACES,
    try_rotations: bool = True,
    second_look: bool = True,
    profiles: bool = True,
    framing: Framing | None = None,
    size: int = FACE_SIZE,
) -> FaceSearch:
    """Every face (largest first, up to ``max_faces``) as a 48x48 crop the models can take.

    A small square image is used as it is (a face crop already). Where MTCNN finds nothing, or
    fails on the photo, the Haar cascade is asked too (they fail on different faces); with no face
    upright, the 90/180/270 degree turns are tried; where none finds one either, the profile
    cascade looks at the upright photo for faces seen from the side (``profiles``,
    :func:`detect_profiles`); then MTCNN takes a second look at the upright photo at lower
    thresholds (:data:`SECOND_LOOK_THRESHOLDS`, its most confident face only); with none at all,
    the whole image is the one "face" and :attr:`FaceSearch.reason` says why where it can tell.
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {normalize!r}")
    rgb = to_rgb(image)
    height, width = rgb.shape[:2]
    common = {"detector": detector, "aligned": align, "normalize": normalize}
    if looks_like_face_crop(rgb):  # the data's own kind of input: "tone" would move FER2013's own extremes
        crop = whole_image_face(rgb, size)
        crop = crop if normalize == "tone" else normalize_face(crop, normalize)
        return FaceSearch([Face(crop, None)], image_size=(width, height), whole_image=True, face_crop=True, **common)
    turns = (0, *ROTATIONS) if try_rotations else (0,)
    failed = False
    for rotation in turns:
        turned = _rotate(rgb, rotation)
        found, error = _detect_or_error(turned, detector)
        failed = failed or error
        if not found and detector == "mtcnn":  # a second opinion that fails differently, before turning the photo
            found = detect(turned, "haar")
        if found:
            return _search_result(turned, found, common, align=align, framing=framing, size=size, max_faces=max_faces,
                                  rotation=rotation, detector_failed=failed)
    if profiles:  # after the turns, which it would take sideways photos from (benchmarks/README.md)
        found = detect_profiles(rgb)
        if found:
            return _search_result(rgb, found, common, align=align, framing=framing, size=size, max_faces=max_faces,
                                  detector_failed=failed)
    if second_look and detector == "mtcnn" and not failed:  # the last chance before the whole image
        found = _second_look(rgb)
        if found:
            return _search_result(rgb, found, common, align=align, framing=framing, size=size, max_faces=max_faces,
                                  second_look=True)
    reason = no_face_reason(rgb)
    if not reason and try_rotations:
        reason = ("No face was found upright or turned by 90, 180 or 270 degrees; a face turned sideways "
                  "(in profile) or partly hidden is hard to find.")
    crop = normalize_face(whole_image_face(rgb, size), normalize)
    return FaceSearch([Face(crop, None)], image_size=(width, height), whole_image=True, reason=reason,
                      detector_failed=failed, **common)


def _search_result(rgb: np.ndarray, found: list[Detection], common: dict, *, align: bool, framing: Framing | None,
                   size: int, max_faces: int, **how: Any) -> FaceSearch:
    """The faces ``found`` in ``rgb``, cropped; ``how`` holds :class:`FaceSearch`'s fields on how they were found."""
    gray = to_gray(rgb)
    faces = []
    for detection in found[:max_faces]:
        crop = align_face(gray, detection, framing, size) if align else crop_face(gray, detection.box, size=size)
        faces.append(Face(normalize_face(crop, common["normalize"]), detection))
    return FaceSearch(faces, image_size=(rgb.shape[1], rgb.shape[0]), total_found=len(found), **how, **common)


def _second_look(rgb: np.ndarray) -> list[Detection]:
    """MTCNN's most confident face at :data:`SECOND_LOOK_THRESHOLDS`, or none."""
    found, _ = _detect_or_error(rgb, "mtcnn", SECOND_LOOK_THRESHOLDS)
    return [max(found, key=lambda d: d.score)] if found else []


def _detect_or_error(image: np.ndarray, detector: str,
                     thresholds: tuple[float, float, float] | None = None) -> tuple[list[Detection], bool]:
    """``detect`` and False; but where MTCNN fails on a photo (as it once did on every 4:3 phone
    photo), no faces and True, so that the Haar cascade looks instead of the photo being lost."""
    try:
        return detect(image, detector, thresholds=thresholds), False
    except Exception:  # noqa: BLE001 - any failure inside MTCNN's networks; the log keeps it whole
        if detector != "mtcnn":  # Haar, or an unknown name, which detect refuses
            raise
        log.exception("MTCNN failed on a %dx%d photo; the Haar cascade looks instead", image.shape[1], image.shape[0])
        return [], True


def rotate_image(image: np.ndarray, degrees_clockwise: int) -> np.ndarray:
    """The image turned by a multiple of 90 degrees clockwise (how :attr:`FaceSearch.rotation` reads)."""
    return _rotate(np.asarray(image), degrees_clockwise)


def _rotate(image: np.ndarray, degrees_clockwise: int) -> np.ndarray:
    codes = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}
    return image if degrees_clockwise % 360 == 0 else cv2.rotate(image, codes[degrees_clockwise % 360])


def locate_face(image: np.ndarray, margin: float = DEFAULT_MARGIN, size: int = FACE_SIZE,
                detector: str = "haar") -> FaceCrop:
    """The largest face only, cropped with a margin and not aligned (the pre-alignment pipeline).

    Kept for callers that want the old behaviour; new code uses :func:`find_faces`.
    """
    gray = to_gray(image)
    boxes = [d.box for d in detect(image, detector)]
    image_size = (gray.shape[1], gray.shape[0])
    if not boxes:
        return FaceCrop(whole_image_face(gray, size), None, [], image_size)
    return FaceCrop(crop_face(gray, boxes[0], margin, size), boxes[0], boxes, image_size)


# ----------------------------------------------------------------------------- drawing


def draw_faces(image: np.ndarray, search: FaceSearch, labels: list[str] | None = None, *,
               chosen: int = 0, max_side: int | None = 800) -> np.ndarray:
    """An RGB copy of the (turned) photo, shrunk to ``max_side``, each face boxed and numbered.

    ``labels[i]`` (for example the ensemble's answer) is written beside face ``i``'s number; face
    ``chosen`` is drawn in green, the others in orange.
    """
    rgb = to_rgb(_rotate(np.asarray(image), search.rotation))
    height, width = rgb.shape[:2]
    scale = 1.0 if max_side is None else min(1.0, max_side / max(height, width))
    if scale < 1.0:
        rgb = cv2.resize(rgb, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
    else:
        rgb = rgb.copy()
    thickness = max(2, round(max(rgb.shape[:2]) / 250))
    numbered = len(search.boxes) > 1 or bool(labels)
    for index in reversed(range(len(search.faces))):
        box = search.faces[index].box
        if box is None:
            continue
        colour = CHOSEN_COLOUR if index == chosen else OTHER_COLOUR
        p0 = (round(box.x * scale), round(box.y * scale))
        p1 = (round((box.x + box.w) * scale), round((box.y + box.h) * scale))
        cv2.rectangle(rgb, p0, p1, colour, thickness if index == chosen else max(1, thickness // 2))
        if numbered:
            text = f"#{index + 1}" + (f" {labels[index]}" if labels and index < len(labels) and labels[index] else "")
            _label(rgb, text, p0, colour, thickness)
    return rgb


def _label(rgb: np.ndarray, text: str, corner: tuple[int, int], colour: tuple[int, int, int], thickness: int) -> None:
    """Text on a filled strip above the box (inside it when the box touches the top)."""
    font_scale = max(0.45, thickness / 3.5)
    weight = max(1, thickness // 2)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, weight)
    x, y = corner
    top = y - th - base - 4 if y - th - base - 4 >= 0 else y
    cv2.rectangle(rgb, (x, top), (x + tw + 4, top + th + base + 4), colour, -1)
    cv2.putText(rgb, text, (x + 2, top + th + 2), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), weight, cv2.LINE_AA)


def draw_face_boxes(image: np.ndarray, crop: FaceCrop, max_side: int | None = 800) -> np.ndarray:
    """:func:`draw_faces` for a :class:`FaceCrop` (the largest face in green)."""
    search = crop.search or FaceSearch([Face(crop.face, Detection(b)) for b in crop.boxes], "haar", crop.image_size)
    return draw_faces(image, search, max_side=max_side)


def _resize(gray: np.ndarray, size: int) -> np.ndarray:
    """Shrink with area averaging (no aliasing); enlarge smoothly."""
    interpolation = cv2.INTER_AREA if gray.shape[0] >= size else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(gray, (size, size), interpolation=interpolation))
