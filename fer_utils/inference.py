"""Fast single-face inference: one traced call instead of ``model.predict``'s per-call setup."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import keras
import tensorflow as tf

from .data import IMAGE_SIZE


def compiled_predictor(model: keras.Model, warm_up: bool = True) -> Callable[[np.ndarray], np.ndarray]:
    """A function from faces (N,48,48,1) to probabilities, traced once for any N."""
    signature = [tf.TensorSpec((None, IMAGE_SIZE, IMAGE_SIZE, 1), tf.float32)]
    call = tf.function(lambda faces: model(faces, training=False), input_signature=signature)

    def predict(faces: np.ndarray) -> np.ndarray:
        faces = np.asarray(faces, dtype=np.float32)
        if faces.ndim == 3:
            faces = faces[None]
        return call(tf.constant(faces)).numpy()

    if warm_up:
        predict(np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 1), np.float32))
    return predict


def measure_latency(predict: Callable[[np.ndarray], np.ndarray], repeats: int = 50, face: np.ndarray | None = None) -> dict[str, float]:
    """Median and 95th-percentile milliseconds for one face, after two warm-up calls."""
    face = np.full((1, IMAGE_SIZE, IMAGE_SIZE, 1), 128, np.float32) if face is None else face
    for _ in range(2):
        predict(face)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        predict(face)
        times.append((time.perf_counter() - started) * 1000)
    return {"median_ms": float(np.median(times)), "p95_ms": float(np.percentile(times, 95)), "repeats": repeats}
