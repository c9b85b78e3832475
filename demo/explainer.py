"""Grad-CAM and saliency for one face, compiled once per model so a request does not pay for tracing.

The maths is ``fer_utils.explain``'s (the app's tests check that both give the same map);
only the packaging differs: ``fer_utils.explain.grad_cam`` rebuilds its twin model and runs
eagerly on every call, which takes about a second for ResNet50 on two CPU cores, while here
the twin is built once and the gradient runs as a traced graph.
"""

from __future__ import annotations

import threading

import cv2
import keras
import numpy as np
import tensorflow as tf

from fer_utils.data import IMAGE_SIZE
from fer_utils.explain import find_last_conv_layer

from .registry import FACE_SPEC, face_tensor

METHOD_NAMES = {"grad_cam": "Grad-CAM", "saliency": "saliency map"}


class Explainer:
    """``explainer(face, class_index) -> (heatmap 48x48 in [0, 1], method)``, as ``fer_utils.explain.explain``."""

    def __init__(self, model: keras.Model):
        self.layer_name = find_last_conv_layer(model)
        self.method = "grad_cam" if self.layer_name else "saliency"
        self._lock = threading.Lock()
        if self.layer_name:
            twin = keras.Model(model.inputs, [model.get_layer(self.layer_name).output, model.outputs[0]])
            self._fn = tf.function(_grad_cam_graph(twin), input_signature=[FACE_SPEC, tf.TensorSpec((), tf.int32)])
        else:
            self._fn = tf.function(_saliency_graph(model), input_signature=[FACE_SPEC, tf.TensorSpec((), tf.int32)])
        self._warm = threading.Event()

    @property
    def traced(self) -> bool:
        return self._warm.is_set()

    def warm_up(self) -> None:
        """Trace the graph now rather than on the first request."""
        with self._lock:
            if not self._warm.is_set():
                self._fn(tf.zeros(FACE_SPEC.shape), tf.constant(0))
                self._warm.set()

    def __call__(self, face: np.ndarray, class_index: int) -> tuple[np.ndarray, str]:
        if not self._warm.is_set():
            self.warm_up()
        raw = self._fn(face_tensor(face), tf.constant(int(class_index), tf.int32)).numpy()
        if self.method == "grad_cam":
            raw = cv2.resize(raw.astype(np.float32), (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_LINEAR)
        return scale_to_unit(raw), self.method


def scale_to_unit(heat: np.ndarray) -> np.ndarray:
    """Divide by the maximum so maps are comparable; an all-zero map stays zero (as fer_utils.explain does)."""
    heat = np.maximum(np.nan_to_num(np.asarray(heat, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0), 0.0)
    peak = float(heat.max()) if heat.size else 0.0
    if peak <= 0.0:
        return np.zeros_like(heat, dtype=np.float32)
    return np.clip(heat / peak, 0.0, 1.0).astype(np.float32)


def _grad_cam_graph(twin: keras.Model):
    def grad_cam(batch, target):
        with tf.GradientTape() as tape:
            maps, probs = twin(batch, training=False)
            score = tf.gather(probs, target, axis=1)
        grads = tape.gradient(score, maps)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)  # one weight per channel
        return tf.nn.relu(tf.reduce_sum(weights * maps, axis=-1))[0]

    return grad_cam


def _saliency_graph(model: keras.Model):
    def saliency(batch, target):
        with tf.GradientTape() as tape:
            tape.watch(batch)
            probs = model(batch, training=False)
            score = tf.gather(probs, target, axis=1)
        grads = tape.gradient(score, batch)
        return tf.reduce_max(tf.abs(grads[0]), axis=-1)

    return saliency
