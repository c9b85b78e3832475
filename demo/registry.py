"""Find, load and warm up the five models once, so every request is only a forward pass.

Models are found by file name (``<name>.keras`` in the models folder) and loaded in Keras
safe mode. Each gets a ``tf.function`` for exactly one face (1, 48, 48, 1), traced once (at
load, or in the background once the app is serving): that skips ``model.predict``'s per-call
setup, which costs more than a small model's forward pass. The ensemble file holds only its
head; the head is applied to the members' outputs, and the members are the very models loaded
for their own columns, so no weights are loaded twice and, in the Compare tab, no member runs
twice.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from fer_utils.data import CLASS_SETS, IMAGE_SIZE, file_sha256
from fer_utils.experiment import DISPLAY_NAMES
from fer_utils.inference import TracedFunction
from fer_utils.model_io import load_model, read_model_card
from fer_utils.models import MODEL_NAMES, build_ensemble

log = logging.getLogger(__name__)


class _OneTracePerFunction(logging.Filter):
    """TensorFlow warns about "retracing" when several FastForward graphs (same Python code,
    one per model) are traced close together; each is traced once, so the warning is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not ("triggered tf.function retracing" in record.getMessage() and "FastForward" in record.getMessage())


tf.get_logger().addFilter(_OneTracePerFunction())

FACE_SPEC = tf.TensorSpec((1, IMAGE_SIZE, IMAGE_SIZE, 1), tf.float32)


class FastForward:
    """``model(batch)`` for one fixed input shape: eager until traced, then the traced graph.

    Tracing a big backbone and its first run cost seconds; until that is done (at load, or by a
    background thread), calls run eagerly, which is slower but answers at once.
    """

    def __init__(self, model: keras.Model, spec: tf.TensorSpec = FACE_SPEC):
        self.model = model
        self.spec = spec
        self._graph = TracedFunction(lambda batch: model(batch, training=False), [spec])
        self._started = False

    @property
    def traced(self) -> bool:
        return self._graph.traced

    def warm_up(self) -> None:
        """Trace and run once now (idempotent, thread-safe)."""
        self._graph.warm_up()

    def __call__(self, batch: tf.Tensor) -> tf.Tensor:
        if self._graph.traced:
            return self._graph(batch)
        _start_once(self, "_started", self.warm_up)
        return self.model(batch, training=False)


_START_LOCK = threading.Lock()


def _start_once(owner: Any, flag: str, task: Callable[[], None]) -> None:
    """Run ``task`` in a daemon thread unless ``owner.<flag>`` says it was already started."""
    with _START_LOCK:
        if getattr(owner, flag):
            return
        setattr(owner, flag, True)
    threading.Thread(target=task, name="fer-trace", daemon=True).start()


@dataclass
class LoadedModel:
    """One model ready to serve: its card, class names and a fast one-face forward pass."""

    key: str
    display_name: str
    path: Path
    card: dict[str, Any]
    class_names: tuple[str, ...]
    model: keras.Model  # face -> probabilities (for the ensemble: members + head, sharing the members)
    forward: FastForward | None  # None for the ensemble: members + head instead
    members: tuple["LoadedModel", ...] = ()  # ensemble only, in the head's input order
    head_forward: FastForward | None = None
    load_seconds: float = 0.0
    _explainer: Any = field(default=None, repr=False)
    _explainer_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _explainer_started: bool = field(default=False, repr=False)

    @property
    def is_ensemble(self) -> bool:
        return bool(self.members)

    def predict(self, face: np.ndarray) -> np.ndarray:
        """Class probabilities (K,) for one 48x48 face of raw 0-255 pixels."""
        if self.is_ensemble:
            return self.combine([member.predict(face) for member in self.members])
        return np.asarray(self.forward(face_tensor(face)))[0]

    def combine(self, member_probabilities: list[np.ndarray]) -> np.ndarray:
        """The ensemble's answer from its members' answers (in member order): only the head runs."""
        joined = np.concatenate(member_probabilities).astype(np.float32)[None, :]
        return np.asarray(self.head_forward(tf.constant(joined)))[0]

    def warm_up(self) -> None:
        """Trace the forward pass (the ensemble: its head and its members)."""
        for part in (self.head_forward, self.forward):
            if part is not None:
                part.warm_up()
        for member in self.members:
            member.warm_up()

    def explainer(self):
        """The compiled explainer (Grad-CAM or saliency), made on first use."""
        with self._explainer_lock:
            if self._explainer is None:
                from fer_utils.explain import CompiledExplainer

                self._explainer = CompiledExplainer(self.model)
            return self._explainer

    def warm_explainer(self) -> None:
        self.explainer().warm_up()

    def explain(self, face: np.ndarray, class_index: int) -> tuple[np.ndarray, str]:
        """Heatmap (48x48 in [0, 1]) and method for ``class_index``: compiled once traced, else
        ``fer_utils.explain.explain`` eagerly while the compiled one is traced in the background."""
        explainer = self._explainer
        if explainer is not None and explainer.traced:
            return explainer(face, class_index)
        _start_once(self, "_explainer_started", self.warm_explainer)
        from fer_utils.explain import explain

        return explain(self.model, np.asarray(face, dtype=np.float32), class_index=int(class_index))


@dataclass
class ModelSet:
    """The models that loaded, in the study's order, and why the others did not."""

    models_dir: Path
    models: dict[str, LoadedModel]
    missing: dict[str, str]  # key -> reason, for the banner

    def __bool__(self) -> bool:
        return bool(self.models)

    def __iter__(self):
        return iter(self.models.values())

    def __len__(self) -> int:
        return len(self.models)

    def warm_up(self, explainers: bool = True) -> float:
        """Trace every forward pass, then (``explainers``) every explainer; returns the seconds taken.

        The app calls this in a background thread once the server is up; until it is done,
        requests run the models eagerly (slower, but they answer at once).
        """
        started = time.perf_counter()
        for loaded in self:
            loaded.warm_up()
        for loaded in self if explainers else ():
            try:
                loaded.warm_explainer()
            except Exception:  # a failed warm-up only means requests keep explaining eagerly
                log.exception("warming up the explainer of %s failed", loaded.key)
        return time.perf_counter() - started


def default_models_dir() -> Path:
    """``saved_models/`` at the repository root, found from this file rather than the cwd."""
    return Path(__file__).resolve().parents[1] / "saved_models"


def face_tensor(face: np.ndarray) -> tf.Tensor:
    """One (48, 48) or (48, 48, 1) face as the (1, 48, 48, 1) float32 batch every model takes."""
    arr = np.asarray(face, dtype=np.float32).reshape(1, IMAGE_SIZE, IMAGE_SIZE, 1)
    return tf.constant(arr)


def compile_forward(model: keras.Model, spec: tf.TensorSpec = FACE_SPEC, warm_up: bool = True) -> FastForward:
    """A fast forward pass for one input shape, traced now (``warm_up``) or on first use.

    Tracing and the first run cost seconds for the big backbones; the app defers them to a
    background thread once the server is up, so it is ready sooner.
    """
    forward = FastForward(model, spec)
    if warm_up:
        forward.warm_up()
    return forward


def class_names_for(card: dict[str, Any], num_classes: int) -> tuple[str, ...]:
    """The card's class names when they fit the model, else the project's class set of that size."""
    names = card.get("class_names") if card else None
    if isinstance(names, (list, tuple)) and len(names) == num_classes and all(isinstance(n, str) for n in names):
        return tuple(names)
    if num_classes in CLASS_SETS:
        return CLASS_SETS[num_classes]
    return tuple(f"class {i}" for i in range(num_classes))


def find_model_files(models_dir: str | os.PathLike) -> dict[str, Path]:
    """``<name>.keras`` for each of the five model names that exists in ``models_dir``."""
    models_dir = Path(models_dir)
    return {key: models_dir / f"{key}.keras" for key in MODEL_NAMES if (models_dir / f"{key}.keras").is_file()}


def load_models(models_dir: str | os.PathLike, keys: tuple[str, ...] = MODEL_NAMES, *, warm_up: bool = True) -> ModelSet:
    """Load every model found; a model that is absent or fails to load is listed with the reason.

    With ``warm_up=False`` the forward passes are traced on first use or by :meth:`ModelSet.warm_up`.
    """
    models_dir = Path(models_dir).expanduser().resolve()
    found = find_model_files(models_dir) if models_dir.is_dir() else {}
    models: dict[str, LoadedModel] = {}
    missing: dict[str, str] = {}
    for key in keys:
        if key not in found:
            missing[key] = f"{key}.keras not found"
            continue
        started = time.perf_counter()
        try:
            if key == "ensemble":
                loaded = _load_ensemble(found[key], models, warm_up)
            else:
                loaded = _load_single(key, found[key], warm_up)
        except Exception as error:  # one broken file must not stop the others from being served
            log.warning("could not load %s: %s", found[key], error)
            missing[key] = f"{found[key].name} could not be loaded: {_short(error)}"
            continue
        loaded.load_seconds = time.perf_counter() - started
        models[key] = loaded
    return ModelSet(models_dir, models, missing)


def _load_single(key: str, path: Path, warm_up: bool = True) -> LoadedModel:
    card = read_model_card(path, missing_ok=True) or {}
    if "ensemble" in card:
        raise ValueError("its card describes an ensemble; an ensemble must be saved as ensemble.keras")
    model = load_model(path)  # safe mode
    num_classes = _check_shapes(model)
    return LoadedModel(
        key=key,
        display_name=_display_name(key, card),
        path=path,
        card=card,
        class_names=class_names_for(card, num_classes),
        model=model,
        forward=compile_forward(model, warm_up=warm_up),
    )


def _load_ensemble(path: Path, loaded: dict[str, LoadedModel], warm_up: bool = True) -> LoadedModel:
    """Load only the head, and take the members from the models already loaded."""
    card = read_model_card(path, missing_ok=True) or {}
    spec = card.get("ensemble") or {}
    member_files = spec.get("members") or []
    if not member_files:
        raise ValueError(f"its card {path.with_suffix('.json').name} does not list the ensemble's members")
    by_path = {model.path.resolve(): model for model in loaded.values()}
    digests = spec.get("member_sha256") or [None] * len(member_files)
    members = []
    for member_file, digest in zip(member_files, digests):
        member_path = (path.parent / member_file).resolve()
        if not member_path.is_file():
            raise ValueError(f"its member {member_file} is missing")
        if digest and file_sha256(member_path) != digest:
            raise ValueError(f"it was trained on a different {member_file} than the one on disk; retrain the ensemble")
        member = by_path.get(member_path)
        if member is None:  # a member kept outside the five files (not shown on its own)
            key = member_path.stem
            member = _load_single(key if key in DISPLAY_NAMES else f"member:{key}", member_path, warm_up)
        members.append(member)
    head = keras.models.load_model(path, safe_mode=True, compile=False)
    num_classes = {len(m.class_names) for m in members}
    if len(num_classes) != 1:
        raise ValueError("its members disagree on the number of classes")
    k = num_classes.pop()
    expected = (None, k * len(members))
    if tuple(head.input_shape) != expected or tuple(head.output_shape) != (None, k):
        raise ValueError(f"its head takes {head.input_shape} and returns {head.output_shape}; expected {expected} -> (None, {k})")
    model = build_ensemble([m.model for m in members], head=head, name="ensemble")  # shares the members' weights
    return LoadedModel(
        key="ensemble",
        display_name=_display_name("ensemble", card),
        path=path,
        card=card,
        class_names=class_names_for(card, k) if card.get("class_names") else members[0].class_names,
        model=model,
        forward=None,
        members=tuple(members),
        head_forward=compile_forward(head, tf.TensorSpec((1, k * len(members)), tf.float32), warm_up=warm_up),
    )


def _check_shapes(model: keras.Model) -> int:
    """The demo feeds one 48x48x1 face and reads (1, K) probabilities; say so if a file differs."""
    input_shape = tuple(model.input_shape)
    if input_shape != (None, IMAGE_SIZE, IMAGE_SIZE, 1):
        raise ValueError(f"it takes inputs of shape {input_shape}; the demo feeds (None, 48, 48, 1) faces")
    output_shape = tuple(model.output_shape)
    if len(output_shape) != 2 or not output_shape[1] or output_shape[1] < 2:
        raise ValueError(f"it returns {output_shape}; expected class probabilities (None, K)")
    return int(output_shape[1])


def _display_name(key: str, card: dict[str, Any]) -> str:
    name = card.get("display_name") if card else None
    return name if isinstance(name, str) and name.strip() else DISPLAY_NAMES.get(key, key)


def _short(error: Exception, limit: int = 160) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
