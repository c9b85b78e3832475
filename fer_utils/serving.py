"""Serving: load the models once, and turn photos, video frames and faces into predictions.

One module for every way a face reaches a model: the demo's tabs, ``python -m fer_utils.predict``,
the video and live-webcam paths and notebook 06's latency column all call it, so they give the
same answer for the same face.

Models are found by file name (``<name>.keras`` in the models folder) and loaded in Keras safe
mode. Each gets a ``tf.function`` for exactly one face (1, 48, 48, 1), traced once (at load, or
in the background once the app is serving): that skips ``model.predict``'s per-call setup, which
costs more than a small model's forward pass. The ensemble file holds only its head; the head is
applied to the members' outputs, and the members are the very models loaded for their own
columns, so no weights are loaded twice and no member runs twice on one face.

A photo goes: decode (:mod:`fer_utils.imaging`) -> every face, aligned (:func:`fer_utils.faces.find_faces`)
-> every model on every face (:func:`analyse_photo`), by default also on its mirror image with the
two answers averaged (flip TTA, the cards' TTA figures) -> each model's temperature for such
answers. The demo passes once unless started with ``--mirror``, and the live view always does.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from .card import ModelCard
from .data import CLASS_SETS, IMAGE_SIZE
from .explain import overlay_heatmap
from .faces import (
    DEFAULT_DETECTOR, DEFAULT_NORMALIZE, DETECTORS, MAX_FACES, Face, FaceSearch, align_face, crop_face, detect, draw_faces, find_faces,
    normalize_face, to_gray, warm_up_detector,
)
from .folding import fold_batch_norms
from .imaging import DecodedImage, decode_image
from .inference import TracedFunction
from .model_io import (
    assemble_ensemble, ensemble_member_paths, load_ensemble_head, load_model, verify_card,
)

from .names import DISPLAY_NAMES, MODEL_NAMES

log = logging.getLogger(__name__)


class _OneTracePerFunction(logging.Filter):
    """TensorFlow warns about "retracing" when several FastForward graphs (same Python code,
    one per model) are traced close together; each is traced once, so the warning is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not ("triggered tf.function retracing" in record.getMessage() and "FastForward" in record.getMessage())


tf.get_logger().addFilter(_OneTracePerFunction())

FACE_SPEC = tf.TensorSpec((1, IMAGE_SIZE, IMAGE_SIZE, 1), tf.float32)


class _BackgroundTraced:
    """A traced graph that can be traced now (``warm_up``) or, on first use, in a background thread."""

    def __init__(self, graph: TracedFunction):
        self._graph = graph
        self._started = False

    @property
    def traced(self) -> bool:
        return self._graph.traced

    def warm_up(self) -> None:
        """Trace and run once now (idempotent, thread-safe)."""
        self._graph.warm_up()

    def start(self) -> None:
        """Trace in a background thread, once."""
        _start_once(self, "_started", self.warm_up)


class FastForward(_BackgroundTraced):
    """``model(batch)`` for one fixed input shape: eager until traced, then the traced graph.

    Tracing a big backbone and its first run cost seconds; until that is done (at load, or by a
    background thread), calls run eagerly, which is slower but answers at once. The traced graph
    runs a copy of the model with its batch normalisations folded into the convolutions
    (:func:`fer_utils.folding.fold_batch_norms`): the same answers to float rounding, ResNet50,
    InceptionV3 and MobileNetV2 10-35 % faster here, for a second copy of the weights in memory.
    """

    def __init__(self, model: keras.Model, spec: tf.TensorSpec = FACE_SPEC):
        super().__init__(TracedFunction(lambda batch: self.serving_model()(batch, training=False), [spec]))
        self.model = model
        self.spec = spec
        self._folded: keras.Model | None = None
        self._fold_lock = threading.Lock()

    def serving_model(self) -> keras.Model:
        """The copy the traced graph runs (folded once, before tracing: a trace must not make weights)."""
        with self._fold_lock:
            if self._folded is None:
                self._folded = fold_batch_norms(self.model)
            return self._folded

    def warm_up(self) -> None:
        self.serving_model()
        super().warm_up()

    def __call__(self, batch: tf.Tensor) -> tf.Tensor:
        if self.traced:
            return self._graph(batch)
        self.start()
        return self.model(batch, training=False)


class JointForward(_BackgroundTraced):
    """Several networks on one face (``views=2``: the face and its mirror, as one batch) in one
    traced graph, for Compare-all and videos.

    Run one by one (or from a thread pool), each network pays Python's and TensorFlow's call
    overhead and they fight over the two cores' thread pools; in one graph TensorFlow's executor
    schedules their independent layers itself (benchmarks/demo_latency.py measures the result).
    It runs the networks' folded copies, as their own forward passes do. Until
    :meth:`ModelSet.warm_up` has traced it, callers use the networks' own forward passes.
    """

    def __init__(self, networks: tuple["LoadedModel", ...], views: int = 1):
        forwards = [network.forward for network in networks]
        spec = tf.TensorSpec((views, IMAGE_SIZE, IMAGE_SIZE, 1), tf.float32)  # a face, or a face and its mirror
        super().__init__(TracedFunction(lambda batch: [f.serving_model()(batch, training=False) for f in forwards],
                                        [spec]))
        self.keys = tuple(network.key for network in networks)
        self.views = views
        self._forwards = forwards

    def warm_up(self) -> None:
        for forward in self._forwards:
            forward.serving_model()
        super().warm_up()

    def __call__(self, views: tuple[np.ndarray, ...]) -> list[list[np.ndarray]]:
        """Each network's answer (K,) on each view, the views run as one batch."""
        return [list(np.asarray(output)) for output in self._graph(face_tensor(*views))]


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
    card: ModelCard  # empty for a model without one
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

    @property
    def temperature(self) -> float:
        """The temperature its card's calibration block records (fitted on PublicTest), else 1."""
        return ModelCard.of(self.card).temperature

    def calibrated(self, probabilities: np.ndarray, mirrored: bool = False) -> np.ndarray:
        """The model's probabilities after its temperature: what people are shown (same predicted class).

        ``mirrored``: the probabilities are averaged over the face and its mirror image, which are
        softer than one pass's, so the card's second temperature (fitted on such answers) applies.
        """
        temperature = ModelCard.of(self.card).temperature_for(mirrored)
        if temperature == 1.0:
            return probabilities
        from .calibration import apply_temperature

        return apply_temperature(probabilities[None], temperature)[0].astype(np.float32)

    def predict(self, face: np.ndarray, mirror: bool = False) -> np.ndarray:
        """Raw class probabilities (K,) for one 48x48 face of raw 0-255 pixels (an ensemble's head
        is trained on its members' raw outputs, so calibration is applied only for display).

        ``mirror``: the mean of the answers on the face and on its mirror image (flip TTA; for the
        ensemble, of its answers on each, as its card's TTA figures are measured).
        """
        views = face_views(face, mirror)
        if self.is_ensemble:
            answers = [self.combine([member.predict(view) for member in self.members]) for view in views]
        else:
            answers = [np.asarray(self.forward(face_tensor(view)))[0] for view in views]
        return _average(answers)

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
    _joint: dict[tuple[tuple[str, ...], int], JointForward] = field(default_factory=dict, repr=False)
    _joint_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __bool__(self) -> bool:
        return bool(self.models)

    def __iter__(self):
        return iter(self.models.values())

    def __len__(self) -> int:
        return len(self.models)

    def networks(self) -> dict[str, "LoadedModel"]:
        """Every single network, ensemble members kept outside the five included (for the live view)."""
        found: dict[str, LoadedModel] = {}
        for loaded in self:
            for candidate in (loaded, *loaded.members):
                if not candidate.is_ensemble:
                    found.setdefault(candidate.key, candidate)
        return found

    def joint_forward(self, networks: list["LoadedModel"], views: int = 1) -> JointForward:
        """The one-graph forward pass of these networks on ``views`` faces at once (made once per set)."""
        key = (tuple(network.key for network in networks), views)
        with self._joint_lock:
            if key not in self._joint:
                self._joint[key] = JointForward(tuple(networks), views)
            return self._joint[key]

    def warm_up(self, explainers: bool = True, detectors: tuple[str, ...] = DETECTORS,
                views: tuple[int, ...] = (1, 2)) -> float:
        """Trace every forward pass, then (``explainers``) every explainer; returns the seconds taken.

        ``views``: the Compare-all graphs to trace, for one face (1) and for a face with its mirror (2);
        a caller that serves only one of them passes it alone.

        The app calls this in a background thread once the server is up; until it is done,
        requests run the models eagerly (slower, but they answer at once).
        """
        started = time.perf_counter()
        for detector in detectors:  # traced once, so the first photo does not pay for it
            warm_up_detector(detector)
        for loaded in self:
            loaded.warm_up()
        if len(self.networks()) > 1:  # Compare-all: every shown model and every ensemble member
            for count in views:
                self.joint_forward(networks_to_run(list(self)), views=count).warm_up()
        for loaded in self if explainers else ():
            try:
                loaded.warm_explainer()
            except Exception:  # a failed warm-up only means requests keep explaining eagerly
                log.exception("warming up the explainer of %s failed", loaded.key)
        return time.perf_counter() - started


def default_models_dir() -> Path:
    """``saved_models/`` at the repository root, found from this file rather than the cwd."""
    return Path(__file__).resolve().parents[1] / "saved_models"


def face_views(face: np.ndarray, mirror: bool = False) -> tuple[np.ndarray, ...]:
    """The face, and with ``mirror`` its mirror image too: a face flipped left to right shows the
    same expression, and averaging the two answers is the flip TTA the cards report (about one
    point on FER2013 PrivateTest for every shipped model)."""
    face = np.asarray(face)
    return (face, np.ascontiguousarray(face[:, ::-1])) if mirror else (face,)


def _average(answers: list[np.ndarray]) -> np.ndarray:
    """The mean of the answers on a face's views (one view: that answer itself)."""
    return answers[0] if len(answers) == 1 else np.mean(answers, axis=0).astype(np.float32)


def face_tensor(*faces: np.ndarray) -> tf.Tensor:
    """(48, 48) or (48, 48, 1) faces as the (n, 48, 48, 1) float32 batch every model takes."""
    arr = np.stack([np.asarray(face, dtype=np.float32).reshape(IMAGE_SIZE, IMAGE_SIZE, 1) for face in faces])
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


def card_class_names(card: ModelCard | None, num_classes: int) -> tuple[str, ...]:
    """The card's class names when they fit the model, else the project's class set of that size."""
    names = ModelCard.of(card).fitting_class_names(num_classes)
    if names is not None:
        return names
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
            # visitors see this: name files relative to the models folder, never the server's paths
            reason = _short(error).replace(f"{models_dir}{os.sep}", "").replace(str(models_dir), ".")
            missing[key] = f"{found[key].name} could not be loaded: {reason}"
            continue
        loaded.load_seconds = time.perf_counter() - started
        models[key] = loaded
    return ModelSet(models_dir, models, missing)


def _load_single(key: str, path: Path, warm_up: bool = True) -> LoadedModel:
    """One network; a broken card or one that describes another file refuses it (a missing card does not)."""
    card = ModelCard.read_if_present(path) or ModelCard()
    if card.is_ensemble:
        raise ValueError("its card describes an ensemble; an ensemble must be saved as ensemble.keras")
    model = load_model(path)  # safe mode
    verify_card(path, card, model)
    num_classes = _check_shapes(model)
    return LoadedModel(
        key=key,
        display_name=_display_name(key, card),
        path=path,
        card=card,
        class_names=card_class_names(card, num_classes),
        model=model,
        forward=compile_forward(model, warm_up=warm_up),
    )


def _load_ensemble(path: Path, loaded: dict[str, LoadedModel], warm_up: bool = True) -> LoadedModel:
    """Load only the head, and take the members from the models already loaded."""
    card = ModelCard.read_if_present(path) or ModelCard()
    by_path = {model.path.resolve(): model for model in loaded.values()}
    members = []
    for member_path in ensemble_member_paths(path, card):
        member = by_path.get(member_path)
        if member is None:  # a member kept outside the five files, or one that failed to load on its own
            key = member_path.stem
            try:
                member = _load_single(key if key in DISPLAY_NAMES else f"member:{key}", member_path, warm_up)
            except Exception as error:
                raise ValueError(f"its member {member_path.name} could not be loaded: {_short(error)}") from error
        members.append(member)
    verify_card(path, card)
    head = load_ensemble_head(path)
    model = assemble_ensemble(head, [m.model for m in members])  # shares the members' weights
    k = int(head.output_shape[-1])
    return LoadedModel(
        key="ensemble",
        display_name=_display_name("ensemble", card),
        path=path,
        card=card,
        class_names=card_class_names(card, k) if card.class_names else members[0].class_names,
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


def _display_name(key: str, card: ModelCard) -> str:
    return card.label(DISPLAY_NAMES.get(key, key))


def _short(error: Exception, limit: int = 160) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------- predictions

TOP_K = 3
# Models run side by side on one face: a single 48x48 face keeps neither core busy inside one
# model, so overlapping them shortens Compare-all (benchmarks/demo_latency.py measures it).
MODEL_THREADS = int(os.environ.get("FER_DEMO_MODEL_THREADS", "4"))
_pool = ThreadPoolExecutor(max_workers=max(1, MODEL_THREADS), thread_name_prefix="fer-model")


@dataclass
class Prediction:
    """One model's answer for one face: ``probabilities`` calibrated (shown), ``raw`` as the model gave them."""

    key: str
    display_name: str
    class_names: tuple[str, ...]
    probabilities: np.ndarray
    seconds: float
    note: str = ""
    raw: np.ndarray | None = None  # before temperature scaling; None when the model has none
    mirrored: bool = False  # averaged over the face and its mirror image (flip TTA)

    @property
    def uncalibrated(self) -> np.ndarray:
        return self.probabilities if self.raw is None else self.raw

    @property
    def label(self) -> str:
        return self.class_names[int(np.argmax(self.probabilities))]

    @property
    def class_index(self) -> int:
        return int(np.argmax(self.probabilities))

    @property
    def confidence(self) -> float:
        return float(np.max(self.probabilities))

    def confidences(self, k: int | None = TOP_K) -> dict[str, float]:
        """The top-k classes and their probabilities, best first (what gr.Label shows)."""
        order = np.argsort(-self.probabilities)[: k or len(self.class_names)]
        return {self.class_names[i]: float(self.probabilities[i]) for i in order}

    def probability_dict(self) -> dict[str, float]:
        """Every class's probability, in the model's class order (for CSV and JSON)."""
        return {name: round(float(p), 6) for name, p in zip(self.class_names, self.probabilities)}

    def timing(self) -> str:
        text = f"{self.seconds * 1000:.1f} ms"
        return f"{text} ({self.note})" if self.note else text


@dataclass
class FaceResult:
    """One face of a photo or frame, with every model's answer on it."""

    number: int  # 1 = the largest face
    face: Face
    predictions: list[Prediction]

    @property
    def crop(self) -> np.ndarray:
        return self.face.crop

    def prediction(self, key: str | None = None) -> Prediction | None:
        """The answer of model ``key``; by default the ensemble's, else the first model's."""
        if not self.predictions:
            return None
        by_key = {p.key: p for p in self.predictions}
        if key is not None:
            return by_key.get(key)
        return by_key.get("ensemble", self.predictions[0])

    @property
    def agreement(self) -> str:
        return agreement_line(self.predictions)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the box, landmarks, detector score and each model's probabilities."""
        detection = self.face.detection
        return {
            "face": self.number,
            "box_xywh": detection.box.as_list() if detection else None,
            "landmarks": detection.landmarks.as_dict() if detection and detection.landmarks else None,
            "detector_score": round(detection.score, 4) if detection and detection.score is not None else None,
            "label": self.prediction().label if self.predictions else None,
            "models": {
                p.key: {"name": p.display_name, "label": p.label, "probabilities": p.probability_dict(),
                        "calibrated": p.raw is not None, "mirrored": p.mirrored,
                        "inference_ms": round(p.seconds * 1000, 2)}
                for p in self.predictions
            },
        }


@dataclass
class Analysis:
    """A photo (or a video frame): the faces found and every model's answer on each."""

    image: np.ndarray  # RGB as decoded (before any turn the face search made)
    search: FaceSearch
    faces: list[FaceResult]
    notes: list[str] = field(default_factory=list)  # from decoding
    seconds: dict[str, float] = field(default_factory=dict)  # where the time went

    @property
    def all_notes(self) -> list[str]:
        return [self.search.note, *self.notes]

    def face(self, number: int = 1) -> FaceResult:
        """Face ``number`` (1 = largest); a number past the last face gives the largest."""
        return self.faces[number - 1] if 1 <= number <= len(self.faces) else self.faces[0]

    def annotated(self, chosen: int = 1, key: str | None = None, max_side: int | None = 800) -> np.ndarray:
        """The photo with every face boxed, numbered and labelled by ``key``'s answer (default: the ensemble)."""
        labels = []
        for result in self.faces:
            prediction = result.prediction(key)
            labels.append(prediction.label if prediction else "")
        return draw_faces(self.image, self.search, labels if self.search.found else None, chosen=chosen - 1,
                          max_side=max_side)

    def as_dict(self) -> dict[str, Any]:
        search = self.search
        return {
            "detector": search.detector,
            "aligned": search.aligned,
            "normalize": search.normalize,
            "faces_found": len(search.boxes),
            "whole_image_used": search.whole_image,
            "face_crop_upload": search.face_crop,
            "rotation_degrees": search.rotation,
            "image_size_wh": list(search.image_size),
            "notes": self.all_notes,
            "faces": [{**result.as_dict(), "found_by": search.found_by(result.face)} for result in self.faces],
            "server_ms": {step: round(seconds * 1000, 1) for step, seconds in self.seconds.items()},
        }


ROW_FACE_COLUMNS = ("face", "faces_in_image", "whole_image", "box_x", "box_y", "box_w", "box_h", "rotation", "detector",
                    "found_by", "detector_score")


def row_columns(models: ModelSet, keys: list[str] | tuple[str, ...], context: tuple[str, ...] = ()) -> list[str]:
    """The columns :func:`analysis_rows` fills, in order: ``context``, the face's, then per model its
    label and class probabilities (a CSV header can be written before the first row)."""
    columns = [*context, *ROW_FACE_COLUMNS]
    for loaded in select(models, keys):
        columns += [f"{loaded.key}_label", *(f"{loaded.key}_{name}" for name in loaded.class_names)]
    return columns


def analysis_rows(analysis: Analysis, **context: Any) -> list[dict[str, Any]]:
    """One flat row per face (CSV/JSONL): ``context`` first (file, frame, time...), then the face,
    its box, the detector asked for, the step that found the face and its score (``found_by``:
    ``haar_profile`` marks a face seen from the side, ``mtcnn second look`` one found at lower
    thresholds, perhaps not one), and per model
    ``<key>_label`` and ``<key>_<class>`` probabilities."""
    rows = []
    search = analysis.search
    for result in analysis.faces:
        box, score = result.face.box, result.face.detection.score if result.face.detection else None
        row: dict[str, Any] = dict(context)
        values = (result.number, len(search.boxes), search.whole_image, *(box.as_list() if box else [None] * 4),
                  search.rotation, search.detector, search.found_by(result.face),
                  round(score, 4) if score is not None else None)
        row.update(zip(ROW_FACE_COLUMNS, values))
        for prediction in result.predictions:
            row[f"{prediction.key}_label"] = prediction.label
            for name, value in prediction.probability_dict().items():
                row[f"{prediction.key}_{name}"] = value
        rows.append(row)
    return rows


def predict(loaded: LoadedModel, face: np.ndarray, mirror: bool = False) -> Prediction:
    """One model on one face (``mirror``: and on its mirror image, averaged), timed."""
    started = time.perf_counter()
    raw = loaded.predict(face, mirror)
    seconds = time.perf_counter() - started
    note = f"{len(loaded.members)} members + head" if loaded.is_ensemble else ""
    return _prediction(loaded, raw, seconds, note, mirror)


def _prediction(loaded: LoadedModel, raw: np.ndarray, seconds: float, note: str = "", mirrored: bool = False) -> Prediction:
    shown = loaded.calibrated(raw, mirrored)
    if mirrored:
        note = f"{note}; face and mirror" if note else "face and mirror"
    return Prediction(loaded.key, loaded.display_name, loaded.class_names, shown, seconds, note,
                      raw if shown is not raw else None, mirrored)


def select(models: ModelSet, keys: list[str] | tuple[str, ...] | None) -> list[LoadedModel]:
    """The loaded models named by ``keys`` (all shown models when None; ensemble members kept outside
    the five can be named too, as ``member:<name>``); an unknown name is a ValueError."""
    if keys is None:
        return list(models)
    known = {**models.networks(), **models.models}
    unknown = [key for key in keys if key not in known]
    if unknown:
        raise ValueError(f"unknown or unloaded model(s): {', '.join(unknown)}; loaded: {', '.join(known)}")
    return [known[key] for key in keys]


def networks_to_run(chosen: list[LoadedModel]) -> list[LoadedModel]:
    """The single networks that answering ``chosen`` needs: each chosen one and each ensemble's
    members, every network once (an ensemble reuses its members' answers)."""
    needed: dict[str, LoadedModel] = {}
    for loaded in chosen:
        for network in (loaded.members if loaded.is_ensemble else (loaded,)):
            needed.setdefault(network.key, network)
    return list(needed.values())


@dataclass
class _NetworkAnswers:
    """Each network's raw answers on each view of a face, and how long each took."""

    raw: dict[str, list[np.ndarray]]  # key -> one (K,) answer per view
    seconds: dict[str, float]
    note: str
    total_seconds: float


def _run_networks(models: ModelSet, networks: list[LoadedModel], views: tuple[np.ndarray, ...]) -> _NetworkAnswers:
    """Each network's raw answer on each view of a face (the face, and maybe its mirror).

    Several networks run in one traced graph once :meth:`ModelSet.warm_up` has traced it
    (:class:`JointForward`); each answer then carries the time of the whole graph, since the
    networks ran side by side. Before that, and for a single network, each runs its own forward pass.
    """
    started = time.perf_counter()
    joint = models.joint_forward(networks, len(views)) if len(networks) > 1 else None
    if joint is not None and joint.traced:
        outputs = joint(views)
        seconds = time.perf_counter() - started
        raw = {network.key: answers for network, answers in zip(networks, outputs)}
        return _NetworkAnswers(raw, dict.fromkeys(raw, seconds), f"with the other {len(networks) - 1} networks in one graph",
                               seconds)

    def timed(network: LoadedModel) -> tuple[list[np.ndarray], float]:
        begun = time.perf_counter()
        answers = [network.predict(view) for view in views]
        return answers, time.perf_counter() - begun

    # Not traced yet (the app traces it in ModelSet.warm_up): run the networks on their own. No
    # background trace from here: a command-line run could exit in the middle of one, which aborts.
    if MODEL_THREADS > 1 and len(networks) > 1:
        running = {network.key: _pool.submit(timed, network) for network in networks}
        done = {key: future.result() for key, future in running.items()}
    else:
        done = {network.key: timed(network) for network in networks}
    return _NetworkAnswers({key: answers for key, (answers, _) in done.items()},
                           {key: seconds for key, (_, seconds) in done.items()}, "", time.perf_counter() - started)


def predict_all(models: ModelSet, face: np.ndarray, keys: list[str] | tuple[str, ...] | None = None,
                mirror: bool = False) -> list[Prediction]:
    """Every model (or those named) on one face; an ensemble's head reuses its members' answers.

    ``mirror``: each model answers the face and its mirror image, and the two answers are averaged
    (an ensemble's head runs on its members' answers to each, then those two are averaged).
    """
    chosen = select(models, keys)
    views = face_views(face, mirror)
    networks = networks_to_run(chosen)
    answers = _run_networks(models, networks, views)
    done = {network.key: _prediction(network, _average(answers.raw[network.key]), answers.seconds[network.key],
                                     answers.note, mirror)
            for network in networks}
    for loaded in chosen:
        if not loaded.is_ensemble:
            continue
        started = time.perf_counter()  # the head was trained on the members' raw outputs
        probabilities = _average([loaded.combine([answers.raw[member.key][i] for member in loaded.members])
                                  for i in range(len(views))])
        seconds = time.perf_counter() - started
        note = f"head only, on the members' outputs; {(seconds + answers.total_seconds) * 1000:.0f} ms with members"
        done[loaded.key] = _prediction(loaded, probabilities, seconds, note, mirror)
    return [done[loaded.key] for loaded in chosen]


def analyse_image(models: ModelSet, image: np.ndarray, *, keys: list[str] | tuple[str, ...] | None = None,
                  detector: str = DEFAULT_DETECTOR, align: bool = True, normalize: str = DEFAULT_NORMALIZE,
                  max_faces: int = MAX_FACES, try_rotations: bool = True, second_look: bool = True,
                  profiles: bool = True, search: FaceSearch | None = None, notes: list[str] | None = None,
                  mirror: bool = True) -> Analysis:
    """Every face in an RGB image, each through every model named (all when None).

    Pass ``search`` to reuse faces already found (the live tab carries them between frames).
    ``mirror`` (the default here and in ``fer_utils.predict``; the demo passes ``False`` unless started
    with ``--mirror``, for speed): every answer averages the face and its mirror image, which the
    cards' TTA figures measure (the ensemble: 71.0 % on PrivateTest against 70.5 % for one pass),
    shown with the temperature fitted for such answers; the live view passes once.
    """
    started = time.perf_counter()
    if search is None:
        search = find_faces(image, detector, align=align, normalize=normalize, max_faces=max_faces,
                            try_rotations=try_rotations, second_look=second_look, profiles=profiles)
    found = time.perf_counter()
    faces = [FaceResult(number, face, predict_all(models, face.crop, keys, mirror=mirror))
             for number, face in enumerate(search.faces, start=1)]
    seconds = {"faces": found - started, "models": time.perf_counter() - found}
    return Analysis(np.asarray(image), search, faces, list(notes or []), seconds)


def analyse_photo(models: ModelSet, source: str | os.PathLike | bytes, **options: Any) -> Analysis:
    """Decode an upload or file (bad ones raise :class:`fer_utils.imaging.ImageInputError`) and analyse it."""
    started = time.perf_counter()
    decoded: DecodedImage = decode_image(source)
    decoded_at = time.perf_counter()
    analysis = analyse_image(models, decoded.rgb, notes=decoded.notes, **options)
    analysis.seconds = {"decode": decoded_at - started, **analysis.seconds}
    return analysis


def card_accuracy(card: ModelCard | None) -> float | None:
    """PrivateTest accuracy (plain) from a card, or None where the card does not record it."""
    return ModelCard.of(card).metric("test", "plain", "accuracy")


def fastest_model(models: ModelSet, within: float = 0.02, repeats: int = 20) -> str:
    """The live view's default: the fastest single network within ``within`` of the best one's PrivateTest accuracy.

    Accuracy comes from the cards; speed is measured here (median of ``repeats`` one-face calls,
    after tracing), so it holds for this machine. Ensemble members count as single networks.
    """
    networks = models.networks()
    if not networks:
        raise ValueError("no single model is loaded; the live view needs one")
    scored = {key: card_accuracy(loaded.card) for key, loaded in networks.items()}
    known = [value for value in scored.values() if value is not None]
    if known:
        best = max(known)
        candidates = [key for key, value in scored.items() if value is not None and value >= best - within]
    else:
        candidates = list(networks)
    from .inference import measure_latency

    face = np.full((IMAGE_SIZE, IMAGE_SIZE), 128, np.float32)
    speed = {}
    for key in candidates:
        networks[key].warm_up()
        speed[key] = measure_latency(lambda f, m=networks[key]: m.predict(f), repeats, face)["median_ms"]
    return min(candidates, key=lambda key: (speed[key], networks[key].model.count_params()))


LIVE_DETECT_EVERY = 4  # the detector runs on every 4th frame; the faces are carried in between
LIVE_DETECT_SIDE = 480  # MTCNN looks at a copy of the frame shrunk to this many pixels
LIVE_FPS_WINDOW = 20  # frames/s: over the last 20 frames answered
LIVE_PAUSE_S = 2.0  # a longer gap between frames (stream stopped, started again) restarts the count


class LiveTracker:
    """A webcam stream's faces: detected every ``detect_every`` frames, carried in between.

    Detection is the slow step (MTCNN ~130 ms on a 640x480 frame on the 2-core machine, on a copy
    shrunk to ``detect_side``); the one fast model then runs on every frame's faces, cropped from
    the new frame at the carried boxes and landmarks (~5 ms). One tracker per stream: it is
    stateful, counts its own frames/s, and ``busy`` lets a caller drop a frame that arrives while
    the previous one is still being answered.
    """

    def __init__(self, models: ModelSet, key: str, *, detector: str = DEFAULT_DETECTOR,
                 detect_every: int = LIVE_DETECT_EVERY, detect_side: int = LIVE_DETECT_SIDE, align: bool = True,
                 normalize: str = DEFAULT_NORMALIZE, max_faces: int = 5):
        self.loaded = select(models, [key])[0]  # an unknown name fails here, not on the first frame
        if detect_every < 1:
            raise ValueError(f"detect_every must be at least 1, got {detect_every}")
        self.models, self.key, self.detector = models, key, detector
        self.detect_every, self.detect_side, self.align, self.normalize = detect_every, detect_side, align, normalize
        self.max_faces = max_faces
        self.frames = 0
        self.errors = 0  # frames a caller could not analyse (it counts them here)
        self.busy = threading.Lock()
        self._detections: list = []
        self._answered: deque[float] = deque(maxlen=LIVE_FPS_WINDOW)
        self._seconds: deque[float] = deque(maxlen=LIVE_FPS_WINDOW)

    def fps(self) -> float | None:
        """Frames answered per second over the last frames (None before two)."""
        if len(self._answered) < 2 or self._answered[-1] <= self._answered[0]:
            return None
        return (len(self._answered) - 1) / (self._answered[-1] - self._answered[0])

    @property
    def frames_counted(self) -> int:
        return len(self._answered)

    def mean_ms(self) -> float | None:
        """Server time per frame over the same window."""
        return sum(self._seconds) / len(self._seconds) * 1000 if self._seconds else None

    def process(self, frame: np.ndarray) -> Analysis:
        """One frame: faces (fresh or carried) and the model's answer on each."""
        started = time.perf_counter()
        if self._answered and started - self._answered[-1] > LIVE_PAUSE_S:  # a new stream: count anew
            self._answered.clear()
            self._seconds.clear()
        rgb = np.asarray(frame)
        if self.frames % self.detect_every == 0:
            self._detections = detect(rgb, self.detector, max_faces=self.max_faces, max_side=self.detect_side)
        self.frames += 1
        gray = to_gray(rgb)
        faces = []
        for detection in self._detections:
            crop = align_face(gray, detection) if self.align else crop_face(gray, detection.box)
            faces.append(Face(normalize_face(crop, self.normalize), detection))
        height, width = rgb.shape[:2]
        if faces:
            search = FaceSearch(faces, self.detector, (width, height), self.align, self.normalize,
                                total_found=len(faces))
        else:
            search = FaceSearch([], self.detector, (width, height), self.align, self.normalize, whole_image=True,
                                reason="No face in view.")
        found = time.perf_counter()
        results = [FaceResult(n, face, predict_all(self.models, face.crop, [self.key], mirror=False))
                   for n, face in enumerate(faces, start=1)]
        done = time.perf_counter()
        self._answered.append(done)
        self._seconds.append(done - started)
        return Analysis(rgb, search, results, [], {"faces": found - started, "models": done - found})

    def as_dict(self, analysis: Analysis) -> dict[str, Any]:
        """A frame's answer as JSON: every face's box and label, frames/s, the settings."""
        faces = []
        for result in analysis.faces:
            prediction = result.prediction(self.key)
            box = result.face.box
            faces.append({
                "face": result.number,
                "box_xywh": box.as_list() if box else None,
                "label": prediction.label if prediction else None,
                "confidence": round(prediction.confidence, 4) if prediction else None,
                "probabilities": prediction.probability_dict() if prediction else None,
            })
        fps = self.fps()
        return {
            "faces_found": len(faces),
            "faces": faces,
            "boxes_xywh": [face["box_xywh"] for face in faces],
            "label": faces[0]["label"] if faces else None,  # the largest face's
            "fps": round(fps, 2) if fps else None,
            "frame": self.frames,
            "model": self.key,
            "model_name": self.loaded.display_name,
            "detector": self.detector,
            "detect_every": self.detect_every,
            "image_size_wh": list(analysis.search.image_size),
            "server_ms": {step: round(seconds * 1000, 1) for step, seconds in analysis.seconds.items()},
        }


@dataclass
class Explanation:
    """A heatmap over one face for one model's predicted class."""

    prediction: Prediction
    overlay: np.ndarray  # RGB uint8, enlarged for display
    heatmap: np.ndarray  # 48x48 in [0, 1]
    method: str
    seconds: float


def explain_prediction(loaded: LoadedModel, face: np.ndarray, prediction: Prediction | None = None) -> Explanation:
    """Predict (unless given) and explain the predicted class with Grad-CAM or saliency."""
    prediction = prediction or predict(loaded, face)
    started = time.perf_counter()
    heatmap, method = loaded.explain(face, prediction.class_index)
    overlay = overlay_heatmap(face, heatmap, alpha=0.45, size=192)
    return Explanation(prediction, overlay, heatmap, method, time.perf_counter() - started)


def agreement_line(predictions: list[Prediction]) -> str:
    """Where the models agree and where they do not, in one Markdown line."""
    if not predictions:
        return "No model has answered yet."
    if len(predictions) == 1:
        only = predictions[0]
        return f"Only one model is loaded: {only.display_name} says **{only.label}**."
    votes = Counter(p.label for p in predictions)
    ranked = votes.most_common()
    if len(ranked) == 1:
        return f"**All {len(predictions)} models agree: {ranked[0][0]}.**"
    groups = []
    for label, count in ranked:
        names = ", ".join(p.display_name for p in predictions if p.label == label)
        groups.append(f"**{label}**: {names}")
    top_label, top_count = ranked[0]
    if top_count > ranked[1][1]:
        head = f"{top_count} of {len(predictions)} models say **{top_label}**; they disagree on the rest."
    else:
        head = f"No majority: the {len(predictions)} models split {'/'.join(str(c) for _, c in ranked)}."
    return f"{head} " + "; ".join(groups) + "."
