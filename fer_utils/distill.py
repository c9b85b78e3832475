"""Knowledge distillation: a compact network learns from a bigger model's probabilities.

The shipped ensemble is the strongest model but needs every member per face, too slow for a
live webcam. Distillation trains one network on targets that mix the hard label with the
teacher's probabilities for the same Training face ("dark knowledge": which wrong classes a
face resembles), softened by a temperature. The teacher's probabilities are computed once per
face, on the unaugmented Training images (with flip test-time augmentation), and reused for
every augmented view; they are cached by the teacher's file hash so a resumed run does not
recompute them.

Only Training faces are ever given to the teacher here: PublicTest stays the selection split
and PrivateTest the report split, as for every other model.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from .files import atomic_write, file_sha256


def soften(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log p / T)``: T > 1 spreads the teacher's mass over the runner-up classes."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    logits = np.log(np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, None)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    soft = np.exp(logits)
    return (soft / soft.sum(axis=1, keepdims=True)).astype(np.float32)


def mix_targets(labels: np.ndarray, teacher: np.ndarray, weight: float, temperature: float = 1.0) -> np.ndarray:
    """Training targets ``(1 - weight) * one_hot(labels) + weight * soften(teacher, T)``.

    Each row sums to 1, so the usual categorical cross-entropy trains on them; ``weight`` 0
    gives back the one-hot labels, 1 the teacher alone.
    """
    if not 0 <= weight <= 1:
        raise ValueError(f"distill_weight must be in [0, 1], got {weight}")
    labels = np.asarray(labels, dtype=np.int64)
    teacher = np.asarray(teacher, dtype=np.float32)
    if teacher.ndim != 2 or len(teacher) != len(labels):
        raise ValueError(f"teacher probabilities must be shaped ({len(labels)}, classes), got {teacher.shape}")
    one_hot = np.eye(teacher.shape[1], dtype=np.float32)[labels]
    return ((1 - weight) * one_hot + weight * soften(teacher, temperature)).astype(np.float32)


def teacher_probabilities(
    teacher_path: str | os.PathLike,
    images: np.ndarray,
    cache_dir: str | os.PathLike | None = None,
    *,
    batch_size: int = 256,
    tta: bool = True,
) -> np.ndarray:
    """The teacher's class probabilities for ``images`` (flip TTA by default), cached on disk.

    The cache file is named by the teacher's sha256 and checks the images' own hash, so a
    changed teacher or a changed split is recomputed instead of silently reused.
    """
    from .evaluation import predict_proba
    from .model_io import load_model

    teacher_path = Path(teacher_path)
    if not teacher_path.is_file():
        raise FileNotFoundError(f"teacher '{teacher_path}' does not exist; train or download it first")
    images = np.ascontiguousarray(images)
    images_hash = _array_hash(images)
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"teacher-{file_sha256(teacher_path)[:16]}-{'tta' if tta else 'plain'}.npz"
        if cache.is_file():
            with np.load(cache) as stored:
                if str(stored["images_hash"]) == images_hash:
                    return stored["probabilities"]
    probabilities = predict_proba(load_model(teacher_path), images, batch_size=batch_size, tta=tta).astype(np.float32)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(cache, suffix=".npz") as partial:
            np.savez(partial, probabilities=probabilities, images_hash=np.array(images_hash))
    return probabilities


def distillation_targets(
    teacher: str | os.PathLike | None,
    train,
    weight: float,
    temperature: float,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[np.ndarray | None, dict | None]:
    """The notebooks' ``teacher`` parameter turned into ``train_model``'s ``train_targets``.

    No teacher (``""`` or None) gives ``(None, None)``: ordinary training on the hard labels.
    Otherwise the mixed targets for ``train`` (a :class:`~fer_utils.data.Split` of Training)
    and the record the model card keeps: teacher file and hash, weight, temperature, and how
    often the teacher agrees with the Training labels.
    """
    if not teacher:
        return None, None
    teacher_path = Path(teacher)
    probabilities = teacher_probabilities(teacher_path, train.images, cache_dir)
    targets = mix_targets(train.labels, probabilities, weight, temperature)
    record = {
        "teacher": teacher_path.name,
        "teacher_sha256": file_sha256(teacher_path),
        "weight": float(weight),
        "temperature": float(temperature),
        "teacher_tta": True,
        "teacher_train_accuracy": float((probabilities.argmax(axis=1) == np.asarray(train.labels)).mean()),
    }
    return targets, record


def _array_hash(array: np.ndarray) -> str:
    digest = hashlib.sha256(array.tobytes())
    digest.update(str(array.shape).encode())
    return digest.hexdigest()
