"""FER2013 loading: the original CSV, the Kaggle image folders and the 6-class folder layout.

Every loader returns a :class:`FerDataset` of uint8 faces shaped (N, 48, 48, 1) with labels
remapped to the chosen class set, so the rest of the package never sees a file format.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.utils.class_weight import compute_class_weight

from .files import atomic_write, file_sha256

IMAGE_SIZE = 48

#: FER2013's label order: the ``emotion`` column is an index into this tuple.
EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

#: The class sets the project supports; each keeps FER2013's order.
CLASS_SETS: dict[int, tuple[str, ...]] = {
    7: EMOTIONS,
    6: ("angry", "fear", "happy", "sad", "surprise", "neutral"),
    4: ("happy", "sad", "surprise", "neutral"),
}

#: FER2013 ``Usage`` values and the split names used everywhere else.
USAGE_TO_SPLIT = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
SPLITS = ("train", "val", "test")

# Folder and FER+ spellings of the emotions, all lower case.
_SYNONYMS = {
    "anger": "angry",
    "disgusted": "disgust",
    "disgust": "disgust",
    "fearful": "fear",
    "happiness": "happy",
    "sadness": "sad",
    "suprise": "surprise",  # the common misspelling in published folder layouts
    "surprised": "surprise",
}
_IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm"}
_SPLIT_DIR_NAMES = {
    "train": ("train", "training"),
    "val": ("val", "validation", "valid", "publictest"),
    "test": ("test", "testing", "privatetest"),
}
# FER+ vote columns in ``fer2013new.csv`` that are FER2013 emotions.
_FERPLUS_EMOTIONS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")


@dataclass
class Split:
    """One split: faces and their labels in the dataset's class set."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class FerDataset:
    """Faces by split, the class names their labels index, and where they came from."""

    splits: dict[str, Split]
    class_names: tuple[str, ...]
    source: str
    checksum: str
    dropped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def train(self) -> Split:
        return self.splits["train"]

    @property
    def val(self) -> Split:
        return self.splits["val"]

    @property
    def test(self) -> Split:
        return self.splits["test"]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split_sizes(self) -> dict[str, int]:
        return {name: len(split) for name, split in self.splits.items()}

    def class_counts(self) -> pd.DataFrame:
        """Images per class (rows) and split (columns), for tables and bar charts."""
        counts = {
            name: np.bincount(split.labels, minlength=self.num_classes)
            for name, split in self.splits.items()
        }
        return pd.DataFrame(counts, index=list(self.class_names))

    def class_weights(self, split: str = "train") -> dict[int, float]:
        """Balanced class weights, so rare classes (disgust) are not ignored in training."""
        return balanced_class_weights(self.splits[split].labels, self.num_classes)

    def subsample(self, limit: int | None, seed: int = 0) -> "FerDataset":
        """At most ``limit`` images per split, stratified, for quick runs; ``None`` keeps all."""
        if limit is None:
            return self
        if limit < self.num_classes:
            raise ValueError(f"limit={limit} is smaller than the number of classes ({self.num_classes})")
        splits = {}
        for name, split in self.splits.items():
            if len(split) <= limit:
                splits[name] = split
                continue
            keep = _stratified_indices(split.labels, limit, seed)
            splits[name] = Split(split.images[keep], split.labels[keep])
        return FerDataset(
            splits, self.class_names, self.source, self.checksum, dict(self.dropped),
            self.notes + [f"subsampled to at most {limit} images per split (seed {seed})"],
        )

    def summary(self) -> str:
        sizes = ", ".join(f"{k} {v:,}" for k, v in self.split_sizes().items())
        dropped = ", ".join(f"{k} {v:,}" for k, v in self.dropped.items() if v) or "none"
        return f"{self.num_classes} classes ({', '.join(self.class_names)}); {sizes}; dropped: {dropped}"


# ----------------------------------------------------------------------------- class sets


def class_names_for(class_set: int | str | Iterable[str]) -> tuple[str, ...]:
    """The class names of a class set given as 7, 6, 4 (or "7"), or as an explicit list."""
    if isinstance(class_set, str) and class_set.strip().isdigit():
        class_set = int(class_set)
    if isinstance(class_set, int):
        if class_set not in CLASS_SETS:
            raise ValueError(f"class_set must be one of {sorted(CLASS_SETS)}, got {class_set}")
        return CLASS_SETS[class_set]
    names = tuple(canonical_emotion(name) for name in class_set)
    if len(set(names)) != len(names) or len(names) < 2:
        raise ValueError(f"class_set needs at least two distinct emotions, got {list(class_set)}")
    return tuple(e for e in EMOTIONS if e in names)


def canonical_emotion(name: str) -> str:
    """Map a folder or column spelling (``Suprise``, ``happiness``) to a FER2013 emotion."""
    key = name.strip().lower()
    key = _SYNONYMS.get(key, key)
    if key not in EMOTIONS:
        raise ValueError(f"'{name}' is not a FER2013 emotion; expected one of {', '.join(EMOTIONS)}")
    return key


def remap_labels(emotions: np.ndarray, class_names: tuple[str, ...]) -> np.ndarray:
    """FER2013 emotion indices to class-set indices; -1 marks emotions outside the set."""
    lookup = np.full(len(EMOTIONS), -1, dtype=np.int64)
    for new_index, name in enumerate(class_names):
        lookup[EMOTIONS.index(name)] = new_index
    return lookup[np.asarray(emotions, dtype=np.int64)]


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """scikit-learn's balanced weights as the dict Keras ``fit(class_weight=...)`` takes."""
    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    result = {int(c): 1.0 for c in range(num_classes)}
    result.update({int(c): float(w) for c, w in zip(present, weights)})
    return result


# ----------------------------------------------------------------------------- entry point


def load_dataset(
    path: str | os.PathLike,
    class_set: int | str | Iterable[str] = 7,
    *,
    ferplus_csv: str | os.PathLike | None = None,
    val_fraction: float = 0.1,
    seed: int = 42,
    drop_blank: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> FerDataset:
    """Load FER2013 from a CSV (``.csv``/``.csv.gz``) or an image-folder root.

    Splits are ``train`` (Training), ``val`` (PublicTest, for model selection) and ``test``
    (PrivateTest, reported once). Folder layouts without a validation split get a
    deterministic stratified one of ``val_fraction`` of train.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"FER2013 not found at '{path}'. Download fer2013.csv from Kaggle "
            "(challenges-in-representation-learning-facial-expression-recognition-challenge) "
            "and point FER2013_CSV or the data path parameter at it."
        )
    if path.is_dir():
        return load_image_folders(path, class_set, val_fraction=val_fraction, seed=seed, drop_blank=drop_blank)
    if path.name.endswith((".csv", ".csv.gz")):
        return load_fer2013_csv(
            path, class_set, ferplus_csv=ferplus_csv, val_fraction=val_fraction, seed=seed,
            drop_blank=drop_blank, cache_dir=cache_dir,
        )
    raise ValueError(f"'{path}' is neither a .csv/.csv.gz file nor a folder of images")


# ----------------------------------------------------------------------------- CSV


def load_fer2013_csv(
    path: str | os.PathLike,
    class_set: int | str | Iterable[str] = 7,
    *,
    ferplus_csv: str | os.PathLike | None = None,
    val_fraction: float = 0.1,
    seed: int = 42,
    drop_blank: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> FerDataset:
    """Load the original ``emotion,pixels,Usage`` CSV; optionally relabel by FER+ majority vote.

    With FER+ labels no PublicTest face is used: its votes must not reach model selection, so
    validation is a stratified ``val_fraction`` of Training (FER+ labels, ``seed``), and the
    test split is PrivateTest by its FER+ majority vote.
    """
    path = Path(path)
    checksum = file_sha256(path)
    emotions, images, usages = _read_fer_csv_cached(path, checksum, cache_dir)
    class_names = class_names_for(class_set)
    dropped: dict[str, int] = {}
    notes: list[str] = []

    if ferplus_csv is None:
        return _assemble(images, emotions, usages, class_names, str(path), checksum, dropped, notes, drop_blank)
    ferplus = ferplus_majority_labels(ferplus_csv, expected_rows=len(emotions))
    public = usages == "PublicTest"
    dropped["ferplus_no_majority"] = int(((ferplus < 0) & ~public).sum())
    dropped["ferplus_publictest_unused"] = int(public.sum())
    notes.append(f"labels: FER+ majority vote from {Path(ferplus_csv).name}; PublicTest unused")
    keep = (ferplus >= 0) & ~public
    dataset = _assemble(
        images[keep], ferplus[keep], usages[keep], class_names, str(path), checksum, dropped, notes,
        drop_blank, allow_missing_val=True,
    )
    return split_validation(dataset, val_fraction, seed)


def read_fer_csv(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse and validate the CSV: (emotion indices, uint8 faces (N,48,48,1), Usage strings).

    Raises ``ValueError`` naming the first malformed row (1-based, counting the header as
    row 1, so it matches a text editor's line number).
    """
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (UnicodeDecodeError, pd.errors.ParserError, OSError, EOFError) as error:
        raise ValueError(f"'{path}' could not be read as a FER2013 CSV: {error}") from error
    frame.columns = [c.strip() for c in frame.columns]
    missing = {"emotion", "pixels", "Usage"} - set(frame.columns)
    if missing:
        raise ValueError(
            f"'{path}' lacks the column(s) {sorted(missing)}; FER2013's CSV has emotion,pixels,Usage "
            f"(found {list(frame.columns)})"
        )
    n = len(frame)
    if n == 0:
        raise ValueError(f"'{path}' has a header but no rows")
    emotions = np.empty(n, dtype=np.int64)
    images = np.empty((n, IMAGE_SIZE * IMAGE_SIZE), dtype=np.uint8)
    expected = IMAGE_SIZE * IMAGE_SIZE
    for i, (emotion, pixels, usage) in enumerate(zip(frame["emotion"], frame["pixels"], frame["Usage"])):
        line = i + 2
        if not emotion.strip().isdigit() or int(emotion) >= len(EMOTIONS):
            raise ValueError(f"'{path}' line {line}: emotion '{emotion}' is not an integer 0-6")
        if usage not in USAGE_TO_SPLIT:
            raise ValueError(
                f"'{path}' line {line}: Usage '{usage}' is not one of {', '.join(USAGE_TO_SPLIT)}"
            )
        values = pixels.split()
        if len(values) != expected:
            raise ValueError(f"'{path}' line {line}: {len(values)} pixel values, expected {expected}")
        try:
            row = np.array(values, dtype=np.int64)
        except ValueError as error:
            raise ValueError(f"'{path}' line {line}: pixels are not all integers ({error})") from None
        if row.min() < 0 or row.max() > 255:
            raise ValueError(f"'{path}' line {line}: pixel values outside 0-255")
        emotions[i] = int(emotion)
        images[i] = row
    usages = frame["Usage"].to_numpy(dtype=str)
    return emotions, images.reshape(n, IMAGE_SIZE, IMAGE_SIZE, 1), usages


def _read_fer_csv_cached(
    path: Path, checksum: str, cache_dir: str | os.PathLike | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parsing 35,887 text rows takes a while; keep the decoded arrays keyed by the file's hash."""
    cache = Path(cache_dir or os.environ.get("FER_UTILS_CACHE", Path.home() / ".cache" / "fer_utils"))
    cached = cache / f"fer2013-{checksum[:16]}.npz"
    if cached.exists():
        try:
            with np.load(cached, allow_pickle=False) as stored:
                return stored["emotions"], stored["images"], stored["usages"]
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is rebuilt below
    arrays = read_fer_csv(path)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with atomic_write(cached, suffix=".npz") as partial:
            np.savez(partial, emotions=arrays[0], images=arrays[1], usages=arrays[2])
    except OSError:
        pass  # a read-only home only costs speed
    return arrays


def ferplus_majority_labels(path: str | os.PathLike, expected_rows: int | None = None) -> np.ndarray:
    """FER+ majority-vote labels as FER2013 emotion indices; -1 where no emotion wins.

    No winner means: the most votes went to contempt, unknown or not-a-face, or two
    emotions tie. Rows are in ``fer2013.csv`` order.
    """
    path = Path(path)
    try:
        frame = pd.read_csv(path)
    except (UnicodeDecodeError, pd.errors.ParserError, OSError, EOFError) as error:
        raise ValueError(f"'{path}' could not be read as fer2013new.csv: {error}") from error
    columns = list(_FERPLUS_EMOTIONS) + ["unknown", "NF"]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"'{path}' lacks the FER+ vote column(s) {missing}")
    if expected_rows is not None and len(frame) != expected_rows:
        raise ValueError(
            f"'{path}' has {len(frame)} rows but the FER2013 CSV has {expected_rows}; "
            "FER+ labels only line up with the full original file"
        )
    votes = frame[columns].to_numpy(dtype=np.float64)
    best = votes.max(axis=1)
    winner = votes.argmax(axis=1)
    tie = (votes == best[:, None]).sum(axis=1) > 1
    labels = np.full(len(frame), -1, dtype=np.int64)
    for column_index, name in enumerate(_FERPLUS_EMOTIONS):
        if name == "contempt":
            continue
        labels[(winner == column_index) & ~tie & (best > 0)] = EMOTIONS.index(canonical_emotion(name))
    return labels


# ----------------------------------------------------------------------------- folders


def load_image_folders(
    root: str | os.PathLike,
    class_set: int | str | Iterable[str] = 7,
    *,
    val_fraction: float = 0.1,
    seed: int = 42,
    drop_blank: bool = True,
) -> FerDataset:
    """Load ``train|Training/<class>/*`` and ``test|Testing/<class>/*`` image folders.

    Kaggle's test files named ``PublicTest_*`` become the validation split and
    ``PrivateTest_*`` the test split; otherwise validation is split from train.
    """
    root = Path(root)
    split_dirs = _find_split_dirs(root)
    class_names = class_names_for(class_set)
    per_split: dict[str, tuple[list[np.ndarray], list[int]]] = {}
    skipped = 0
    checksum = hashlib.sha256()
    for split_name, directory in split_dirs.items():
        faces, emotions, usages, n_skipped = _read_class_folders(directory, checksum)
        skipped += n_skipped
        if split_name == "test" and "val" not in split_dirs and any(u == "PublicTest" for u in usages):
            for usage, face, emotion in zip(usages, faces, emotions):
                target = "val" if usage == "PublicTest" else "test"
                per_split.setdefault(target, ([], []))
                per_split[target][0].append(face)
                per_split[target][1].append(emotion)
        else:
            per_split[split_name] = (faces, emotions)

    images = []
    emotions_all = []
    usages_all = []
    split_to_usage = {v: k for k, v in USAGE_TO_SPLIT.items()}
    for split_name, (faces, emotions) in per_split.items():
        images.extend(faces)
        emotions_all.extend(emotions)
        usages_all.extend([split_to_usage[split_name]] * len(faces))
    notes = [f"image folders: {', '.join(f'{k}={v.name}' for k, v in split_dirs.items())}"]
    if skipped:
        notes.append(f"skipped {skipped} non-image file(s)")
    dataset = _assemble(
        np.stack(images) if images else np.empty((0, IMAGE_SIZE, IMAGE_SIZE, 1), np.uint8),
        np.asarray(emotions_all, dtype=np.int64),
        np.asarray(usages_all),
        class_names,
        str(root),
        checksum.hexdigest(),
        {"non_image_files": skipped},
        notes,
        drop_blank,
        allow_missing_val=True,
    )
    if len(dataset.val) == 0:
        dataset = split_validation(dataset, val_fraction, seed)
    return dataset


def split_validation(dataset: FerDataset, val_fraction: float, seed: int) -> FerDataset:
    """Carve a deterministic stratified validation split out of train."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    train = dataset.train
    train_idx, val_idx = train_test_split(
        np.arange(len(train)), test_size=val_fraction, random_state=seed, stratify=train.labels
    )
    splits = dict(dataset.splits)
    splits["train"] = Split(train.images[train_idx], train.labels[train_idx])
    splits["val"] = Split(train.images[val_idx], train.labels[val_idx])
    notes = dataset.notes + [f"validation: stratified {val_fraction:.0%} of train (seed {seed})"]
    return FerDataset(
        {k: splits[k] for k in SPLITS}, dataset.class_names, dataset.source, dataset.checksum,
        dataset.dropped, notes,
    )


def _find_split_dirs(root: Path) -> dict[str, Path]:
    if not root.is_dir():
        raise ValueError(f"'{root}' is not a folder")
    children = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    found = {}
    for split, names in _SPLIT_DIR_NAMES.items():
        for name in names:
            if name in children:
                found[split] = children[name]
                break
    if "train" not in found or "test" not in found:
        raise ValueError(
            f"'{root}' does not look like a FER image-folder dataset: expected sub-folders "
            f"train/ and test/ (or Training/ and Testing/) holding one folder per emotion; "
            f"found {sorted(p.name for p in children.values()) or 'no folders'}"
        )
    return found


def _read_class_folders(directory: Path, checksum) -> tuple[list[np.ndarray], list[int], list[str], int]:
    """Faces, emotions and Usage prefixes below ``directory``; feeds every file's relative
    path and decoded pixels to ``checksum``, so model cards name the exact data."""
    from concurrent.futures import ThreadPoolExecutor

    files, emotions, usages = [], [], []
    skipped = 0
    class_dirs = sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise ValueError(f"'{directory}' holds no class folders")
    for class_dir in class_dirs:
        try:
            emotion = EMOTIONS.index(canonical_emotion(class_dir.name))
        except ValueError:
            raise ValueError(
                f"class folder '{class_dir}' is not a FER2013 emotion; expected one of "
                f"{', '.join(EMOTIONS)} (any case)"
            ) from None
        for file in sorted(class_dir.iterdir()):
            if file.is_dir() or file.name.startswith(".") or file.suffix.lower() not in _IMAGE_EXTENSIONS:
                skipped += 1
                continue
            files.append(file)
            emotions.append(emotion)
            usage = re.match(r"(PublicTest|PrivateTest|Training)_", file.name)
            usages.append(usage.group(1) if usage else "")
    # Pillow releases the GIL while decoding, so threads use every core.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        faces = list(pool.map(_read_face, files, chunksize=256))
    for file, face in zip(files, faces):
        checksum.update(str(file.relative_to(directory.parent)).encode())
        checksum.update(face.tobytes())
    return faces, emotions, usages, skipped


def _read_face(file: Path) -> np.ndarray:
    """OpenCV decodes small PNG/JPEG files several times faster than Pillow; Pillow covers
    the rest (GIF) and explains what is wrong with a broken file."""
    import cv2
    from PIL import Image, UnidentifiedImageError

    gray = cv2.imread(str(file), cv2.IMREAD_GRAYSCALE)
    if gray is not None:
        if gray.shape != (IMAGE_SIZE, IMAGE_SIZE):
            gray = cv2.resize(gray, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA)
        return gray[:, :, None]
    try:
        with Image.open(file) as image:
            return _to_face(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"image '{file}' could not be read: {error}") from None


def _to_face(image) -> np.ndarray:
    """Any PIL image to a 48x48 grayscale uint8 face (N.B. FER files are already 48x48)."""
    from PIL import Image

    image.load()
    gray = image.convert("L")
    if gray.size != (IMAGE_SIZE, IMAGE_SIZE):
        gray = gray.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    return np.asarray(gray, dtype=np.uint8)[:, :, None]


# ----------------------------------------------------------------------------- shared


def _assemble(
    images: np.ndarray,
    emotions: np.ndarray,
    usages: np.ndarray,
    class_names: tuple[str, ...],
    source: str,
    checksum: str,
    dropped: dict[str, int],
    notes: list[str],
    drop_blank: bool,
    allow_missing_val: bool = False,
) -> FerDataset:
    labels = remap_labels(emotions, class_names)
    keep = labels >= 0
    dropped = dict(dropped)
    dropped["outside_class_set"] = int((~keep).sum())
    if drop_blank:
        blank = np.ptp(images.reshape(len(images), -1), axis=1) == 0 if len(images) else np.zeros(0, bool)
        dropped["blank"] = int((blank & keep).sum())
        keep &= ~blank
    splits = {}
    for usage, split_name in USAGE_TO_SPLIT.items():
        mask = keep & (usages == usage)
        splits[split_name] = Split(images[mask], labels[mask])
    if len(splits["train"]) == 0:
        raise ValueError(f"'{source}' has no training images in the class set {list(class_names)}")
    if len(splits["val"]) == 0 and not allow_missing_val:
        raise ValueError(f"'{source}' has no PublicTest (validation) rows")
    counts = np.bincount(splits["train"].labels, minlength=len(class_names))
    empty = [name for name, count in zip(class_names, counts) if count == 0]
    if empty:
        hint = " (a 6-class dataset without disgust needs class_set=6)" if empty == ["disgust"] else ""
        raise ValueError(f"'{source}' has no training images of {empty}{hint}")
    return FerDataset(splits, class_names, source, checksum, dropped, notes)


def _stratified_indices(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    counts = Counter(labels.tolist())
    stratify = labels if min(counts.values()) >= 2 else None
    keep, _ = train_test_split(np.arange(len(labels)), train_size=limit, random_state=seed, stratify=stratify)
    return np.sort(keep)




def count_duplicates(images: np.ndarray) -> int:
    """How many images are exact copies of an earlier one (FER2013 has a few hundred)."""
    seen: set[bytes] = set()
    duplicates = 0
    for image in images:
        key = hashlib.blake2b(image.tobytes(), digest_size=16).digest()
        duplicates += key in seen
        seen.add(key)
    return duplicates
