"""Visual explanations for the package's expression classifiers.

Every model here takes a batch (N, 48, 48, 1) of raw 0-255 float32 pixels and
returns softmax probabilities, so each method below works on a single raw
face and returns a (48, 48) float32 heatmap scaled to [0, 1] (1 = most
important).  Saliency and occlusion only need the model's inputs and outputs,
so they also work for ensembles of nested sub-models; Grad-CAM needs a
convolution layer at the top level of a flat functional model.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import keras
import matplotlib
import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure

from .inference import TracedFunction

__all__ = [
    "METHODS",
    "saliency_map",
    "occlusion_map",
    "find_last_conv_layer",
    "resolve_method",
    "grad_cam",
    "CompiledExplainer",
    "explain",
    "overlay_heatmap",
    "plot_explanations",
]

METHODS = ("auto", "saliency", "occlusion", "grad_cam")
_PROB_NOISE = 1e-6  # probability changes below this are float rounding between batch sizes
_CONV_TYPES = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)


# --------------------------------------------------------------------------- helpers


def _face_batch(image) -> np.ndarray:
    """Turn one face in any accepted layout into the (1, H, W, 1) float32 batch models expect."""
    arr = np.asarray(image)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ValueError(
            f"Expected one grey face of shape (48, 48) or (48, 48, 1), got shape {arr.shape}. "
            "Pass a single image, not a batch or an RGB image."
        )
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"Expected numeric pixel values 0-255, got dtype {arr.dtype}.")
    return arr.astype(np.float32)[None, :, :, None]


def _predict(model, batch: np.ndarray) -> np.ndarray:
    """Call the model directly (not model.predict) to avoid progress bars and per-call setup cost."""
    return np.asarray(model(tf.convert_to_tensor(batch), training=False), dtype=np.float32)


def _check_class_index(class_index, n_classes: int) -> int:
    """Fail early with the valid range instead of a cryptic gather/index error."""
    if isinstance(class_index, (bool, np.bool_)) or not isinstance(class_index, (int, np.integer)):
        raise ValueError(f"class_index must be an int or None, got {class_index!r}.")
    if not 0 <= int(class_index) < n_classes:
        raise ValueError(f"class_index={class_index} is out of range for a model with {n_classes} classes (0..{n_classes - 1}).")
    return int(class_index)


def _resolve_class(probs: np.ndarray, class_index: int | None) -> int:
    """Explain the predicted class unless the caller asks for a specific one."""
    probs = np.asarray(probs)
    if probs.ndim != 2:
        raise ValueError(f"Expected the model to output (N, K) probabilities, got shape {probs.shape}.")
    if class_index is None:
        return int(np.argmax(probs[0]))
    return _check_class_index(class_index, probs.shape[-1])


def _scale_to_unit(heat: np.ndarray) -> np.ndarray:
    """Scale a non-negative map by its maximum so maps from different methods are comparable; all-zero stays zero."""
    heat = np.nan_to_num(np.asarray(heat, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    heat = np.maximum(heat, 0.0)
    peak = float(heat.max()) if heat.size else 0.0
    if peak <= 0.0:
        return np.zeros_like(heat, dtype=np.float32)
    return np.clip(heat / peak, 0.0, 1.0).astype(np.float32)


def _patch_starts(length: int, patch: int, stride: int) -> list[int]:
    """Patch offsets that step by `stride` and always include the far edge, so every pixel is covered."""
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] != length - patch:
        starts.append(length - patch)
    return starts


# --------------------------------------------------------------------------- methods


def saliency_map(model, image, class_index: int | None = None) -> np.ndarray:
    """Pixels whose small changes move the class score most; needs only inputs and outputs, so nested models work."""
    target = _target(model, class_index)
    heat, _ = _saliency_core(model, tf.convert_to_tensor(_face_batch(image)), tf.constant(target, tf.int32))
    return _scale_to_unit(heat.numpy())


def _target(model, class_index: int | None) -> int:
    """The class to explain as the cores take it: its index, or -1 for the predicted class."""
    if class_index is None:
        return -1
    return _check_class_index(class_index, int(model.outputs[0].shape[-1]))


def _target_or_prediction(probs: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    return tf.where(target < 0, tf.argmax(probs[0], output_type=tf.int32), target)


def _saliency_core(model, batch: tf.Tensor, target: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Raw saliency and the explained class; the same code runs eagerly and traced (CompiledExplainer)."""
    with tf.GradientTape() as tape:
        tape.watch(batch)
        probs = model(batch, training=False)
        target = _target_or_prediction(probs, target)
        score = tf.gather(probs, target, axis=1)
    grads = tape.gradient(score, batch)
    if grads is None:
        raise ValueError(
            f"Model '{getattr(model, 'name', model)}' output is not differentiable with respect to its input; "
            "use method='occlusion' instead."
        )
    return tf.reduce_max(tf.abs(grads[0]), axis=-1), target


def occlusion_map(
    model,
    image,
    class_index: int | None = None,
    patch: int = 8,
    stride: int = 4,
    fill: float | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """Regions whose removal lowers the class probability most; gradient-free, so it also works on saturated models."""
    batch = _face_batch(image)
    height, width = batch.shape[1:3]
    if not isinstance(patch, (int, np.integer)) or not 1 <= patch <= min(height, width):
        raise ValueError(f"patch must be an int between 1 and {min(height, width)}, got {patch!r}.")
    if not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ValueError(f"stride must be a positive int, got {stride!r}.")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    fill_value = float(batch.mean()) if fill is None else float(fill)

    base_probs = _predict(model, batch)
    target = _resolve_class(base_probs, class_index)
    base = float(base_probs[0, target])

    boxes = [(y, x) for y in _patch_starts(height, patch, stride) for x in _patch_starts(width, patch, stride)]
    drops = np.empty(len(boxes), dtype=np.float32)
    for first in range(0, len(boxes), batch_size):
        chunk = boxes[first : first + batch_size]
        occluded = np.repeat(batch, len(chunk), axis=0)
        for i, (y, x) in enumerate(chunk):
            occluded[i, y : y + patch, x : x + patch, :] = fill_value
        drops[first : first + len(chunk)] = base - _predict(model, occluded)[:, target]

    drops[np.abs(drops) < _PROB_NOISE] = 0.0  # batch-size-dependent float jitter, not evidence
    total = np.zeros((height, width), dtype=np.float32)
    count = np.zeros((height, width), dtype=np.float32)
    for (y, x), drop in zip(boxes, drops):
        total[y : y + patch, x : x + patch] += drop
        count[y : y + patch, x : x + patch] += 1.0
    return _scale_to_unit(total / np.maximum(count, 1.0))


def find_last_conv_layer(model) -> str | None:
    """Grad-CAM's default layer: the deepest top-level convolution still has spatial maps with high-level features."""
    for layer in reversed(getattr(model, "layers", [])):
        if not isinstance(layer, _CONV_TYPES):
            continue
        try:
            rank = len(layer.output.shape)
        except (AttributeError, ValueError, RuntimeError):  # never called, or shared by several calls
            continue
        if rank == 4:
            return layer.name
    return None


def resolve_method(model, method: str = "auto") -> str:
    """The method ``method`` means for ``model``: 'auto' is Grad-CAM where the model has a
    convolution layer at top level (:func:`find_last_conv_layer`), else saliency (ensembles of
    nested models); any other method in :data:`METHODS` is itself. The one place 'auto' is decided:
    :func:`explain`, :class:`CompiledExplainer` and the demo's tabs all ask here."""
    if method not in METHODS:
        raise ValueError(f"Unknown explanation method {method!r}; choose one of {', '.join(METHODS)}.")
    if method == "auto":
        return "grad_cam" if find_last_conv_layer(model) is not None else "saliency"
    return method


def _grad_cam_model(model, layer_name: str) -> keras.Model:
    """A twin model exposing the conv maps next to the prediction, sharing the original weights."""
    try:
        layer = model.get_layer(layer_name)
    except ValueError as err:
        raise ValueError(f"Model '{model.name}' has no layer named '{layer_name}' at top level.") from err
    try:
        output = layer.output
    except (AttributeError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"Layer '{layer_name}' of model '{model.name}' has no single symbolic output; "
            "Grad-CAM needs a flat functional model built with keras.Input."
        ) from err
    if len(output.shape) != 4:
        raise ValueError(f"Grad-CAM needs a layer with 4-D (N, H, W, C) output; '{layer_name}' outputs shape {output.shape}.")
    try:
        return keras.Model(model.inputs, [output, model.outputs[0]], name=f"{model.name}__grad_cam__{layer_name}")
    except (AttributeError, ValueError, TypeError) as err:
        raise ValueError(
            f"Could not build a Grad-CAM model for '{model.name}': it needs a functional model built with keras.Input ({err})."
        ) from err


def grad_cam(model, image, class_index: int | None = None, layer_name: str | None = None) -> np.ndarray:
    """Coarse class-discriminative map: conv channels weighted by how much they raise the class score."""
    batch = _face_batch(image)
    cam_model = _grad_cam_model(model, layer_name or _require_conv_layer(model))
    cam, _ = _grad_cam_core(cam_model, tf.convert_to_tensor(batch), tf.constant(_target(model, class_index), tf.int32))
    return _grad_cam_to_face(cam.numpy(), batch.shape[1:3])


def _require_conv_layer(model) -> str:
    layer_name = find_last_conv_layer(model)
    if layer_name is None:
        raise ValueError(
            f"Model '{getattr(model, 'name', model)}' has no Conv2D/DepthwiseConv2D/SeparableConv2D layer at top level, "
            "so Grad-CAM cannot be computed; use saliency_map or occlusion_map (or explain(method='auto'))."
        )
    return layer_name


def _grad_cam_core(cam_model: keras.Model, batch: tf.Tensor, target: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Raw Grad-CAM at the layer's resolution and the explained class; runs eagerly and traced."""
    with tf.GradientTape() as tape:
        maps, probs = cam_model(batch, training=False)
        target = _target_or_prediction(probs, target)
        score = tf.gather(probs, target, axis=1)
    grads = tape.gradient(score, maps)
    if grads is None:
        raise ValueError(f"The prediction of '{cam_model.name}' does not depend on its Grad-CAM layer.")
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)  # one weight per channel
    return tf.nn.relu(tf.reduce_sum(weights * maps, axis=-1))[0], target


def _grad_cam_to_face(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    height, width = shape
    cam = cv2.resize(cam.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return _scale_to_unit(cam)


class CompiledExplainer:
    """``explain`` for one model, traced once: an app explaining many faces pays for tracing only once.

    The eager functions above rebuild the Grad-CAM twin and run op by op on every call (about a
    second for ResNet50 on two CPU cores); this builds it once and runs the same core as a graph.
    Safe to call from several threads.
    """

    def __init__(self, model: keras.Model, method: str = "auto"):
        if method not in ("auto", "grad_cam", "saliency"):
            raise ValueError(f"CompiledExplainer supports 'auto', 'grad_cam' and 'saliency', not {method!r}.")
        method = resolve_method(model, method)
        self.model = model
        self.method = method
        self.num_classes = int(model.outputs[0].shape[-1])
        spec = [tf.TensorSpec((1, *model.inputs[0].shape[1:]), tf.float32), tf.TensorSpec((), tf.int32)]
        if method == "grad_cam":
            cam_model = _grad_cam_model(model, _require_conv_layer(model))
            self._fn = TracedFunction(lambda batch, target: _grad_cam_core(cam_model, batch, target), spec)
        else:
            self._fn = TracedFunction(lambda batch, target: _saliency_core(model, batch, target), spec)

    @property
    def traced(self) -> bool:
        return self._fn.traced

    def warm_up(self) -> None:
        """Trace now rather than on the first face (apps do it in the background)."""
        self._fn.warm_up()

    def __call__(self, image, class_index: int | None = None) -> tuple[np.ndarray, str]:
        """(48x48 heatmap in [0, 1], method) for one face, like ``explain``."""
        batch = _face_batch(image)
        target = -1 if class_index is None else _check_class_index(class_index, self.num_classes)
        self._fn.warm_up()
        raw, _ = self._fn(tf.constant(batch), tf.constant(target, tf.int32))
        if self.method == "grad_cam":
            return _grad_cam_to_face(raw.numpy(), batch.shape[1:3]), self.method
        return _scale_to_unit(raw.numpy()), self.method


def explain(model, image, method: str = "auto", class_index: int | None = None) -> tuple[np.ndarray, str]:
    """One entry point for apps: 'auto' uses Grad-CAM where possible and falls back to saliency for ensembles."""
    method = resolve_method(model, method)
    if method == "grad_cam":
        return grad_cam(model, image, class_index=class_index), method
    if method == "occlusion":
        return occlusion_map(model, image, class_index=class_index), method
    return saliency_map(model, image, class_index=class_index), method


# --------------------------------------------------------------------------- display


def _grey_face(image) -> np.ndarray:
    """A 2-D float face in 0-255, whatever the accepted input layout."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ValueError(f"Expected a grey face of shape (H, W) or (H, W, 1), got shape {arr.shape}.")
    return np.clip(arr.astype(np.float32), 0.0, 255.0)


def overlay_heatmap(
    image, heatmap, alpha: float = 0.45, colormap: str = "jet", size: int | None = None
) -> np.ndarray:
    """Blend the heatmap over the face so the highlighted region can be seen in context (optionally enlarged for apps)."""
    face = _grey_face(image)
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.ndim == 3 and heat.shape[-1] == 1:
        heat = heat[..., 0]
    if heat.shape != face.shape:
        raise ValueError(f"heatmap shape {heat.shape} does not match image shape {face.shape}.")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}.")
    try:
        cmap = matplotlib.colormaps[colormap]
    except KeyError as err:
        raise ValueError(f"Unknown matplotlib colormap {colormap!r} (try 'jet', 'inferno' or 'viridis').") from err
    heat = np.clip(np.nan_to_num(heat, nan=0.0), 0.0, 1.0)

    if size is not None:
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"size must be a positive int or None, got {size!r}.")
        face = np.clip(cv2.resize(face, (int(size), int(size)), interpolation=cv2.INTER_CUBIC), 0.0, 255.0)
        heat = np.clip(cv2.resize(heat, (int(size), int(size)), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)

    colour = cmap(heat)[..., :3] * 255.0
    grey = np.repeat(face[..., None], 3, axis=-1)
    blended = (1.0 - float(alpha)) * grey + float(alpha) * colour
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def plot_explanations(
    model,
    images,
    labels,
    class_names: Sequence[str],
    methods: Sequence[str] = ("saliency", "occlusion"),
) -> Figure:
    """A grid for reports: each face next to what each method says the model looked at."""
    faces = [np.asarray(img) for img in images]
    if not faces:
        raise ValueError("images is empty; pass at least one face.")
    if isinstance(methods, str):
        methods = (methods,)
    methods = tuple(methods)
    bad = [m for m in methods if m not in METHODS]
    if not methods or bad:
        raise ValueError(f"methods must be a non-empty selection of {', '.join(METHODS)}; got {list(methods)}.")
    true = None
    if labels is not None:
        true = np.asarray(labels)
        if true.ndim == 2:  # one-hot labels
            true = true.argmax(axis=1)
        true = true.reshape(-1).astype(int)
        if len(true) != len(faces):
            raise ValueError(f"Got {len(faces)} images but {len(true)} labels.")
        if true.min() < 0 or true.max() >= len(class_names):
            raise ValueError(f"labels must be class indices 0..{len(class_names) - 1}, got {sorted(set(true.tolist()))}.")

    batch = np.concatenate([_face_batch(face) for face in faces], axis=0)
    probs = _predict(model, batch)
    if probs.shape[-1] > len(class_names):
        raise ValueError(f"The model has {probs.shape[-1]} classes but only {len(class_names)} class_names were given.")

    rows, cols = len(faces), 1 + len(methods)
    fig = Figure(figsize=(2.3 * cols, 2.5 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for row, face in enumerate(faces):
        pred = int(np.argmax(probs[row]))
        grey = _grey_face(face)
        title = f"pred: {class_names[pred]} ({probs[row, pred]:.2f})"
        if true is not None:
            title = f"true: {class_names[true[row]]}\n" + title
        axes[row, 0].imshow(grey, cmap="gray", vmin=0, vmax=255)
        axes[row, 0].set_title(title, fontsize=8)
        for col, method in enumerate(methods, start=1):
            heat, used = explain(model, face, method=method, class_index=pred)
            axes[row, col].imshow(overlay_heatmap(grey, heat))
            axes[row, col].set_title(used if used == method else f"{method} -> {used}", fontsize=8)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    return fig
