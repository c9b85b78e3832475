"""Fast single-face inference: one traced call instead of ``model.predict``'s per-call setup."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import numpy as np
import keras
import tensorflow as tf

from .data import IMAGE_SIZE


class TracedFunction:
    """A ``tf.function`` with a fixed signature whose tracing happens once, when asked for.

    Tracing a big backbone costs seconds, so apps trace at load or in a background thread and
    check ``traced`` before relying on the fast path. Calling before ``warm_up`` still works
    (TensorFlow traces then). Safe to warm up from several threads.
    """

    def __init__(self, fn: Callable[..., Any], input_signature: list[tf.TensorSpec]):
        self.input_signature = list(input_signature)
        self._fn = tf.function(fn, input_signature=self.input_signature)
        self._lock = threading.Lock()
        self._traced = threading.Event()

    @property
    def traced(self) -> bool:
        return self._traced.is_set()

    def warm_up(self) -> None:
        """Trace and run once on zeros (unknown dimensions as 1); later calls return at once."""
        if self._traced.is_set():
            return
        with self._lock:
            if not self._traced.is_set():
                self._fn(*[tf.zeros([1 if d is None else d for d in spec.shape], spec.dtype)
                           for spec in self.input_signature])
                self._traced.set()

    def __call__(self, *args: Any) -> Any:
        return self._fn(*args)


def compiled_predictor(model: keras.Model, warm_up: bool = True) -> Callable[[np.ndarray], np.ndarray]:
    """A function from faces (N,48,48,1) to probabilities, traced once for any N."""
    call = TracedFunction(lambda faces: model(faces, training=False),
                          [tf.TensorSpec((None, IMAGE_SIZE, IMAGE_SIZE, 1), tf.float32)])

    def predict(faces: np.ndarray) -> np.ndarray:
        faces = np.asarray(faces, dtype=np.float32)
        if faces.ndim == 3:
            faces = faces[None]
        return call(tf.constant(faces)).numpy()

    if warm_up:
        call.warm_up()
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
