"""The app's logic without Gradio: upload -> RGB -> face -> 48x48 crop -> predictions -> explanation.

Each step is a plain function so tests (and notebooks) can run it without a server or a browser.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from fer_utils.explain import overlay_heatmap
from fer_utils.faces import FaceCrop, draw_face_boxes, locate_face

from .imaging import DecodedImage, decode_image
from .registry import LoadedModel, ModelSet

TOP_K = 3
# Models run side by side on one face: a single 48x48 face keeps neither core busy inside one
# model, so overlapping them shortens Compare-all (benchmarks/demo_latency.py measures it).
MODEL_THREADS = int(os.environ.get("FER_DEMO_MODEL_THREADS", "4"))
_pool = ThreadPoolExecutor(max_workers=max(1, MODEL_THREADS), thread_name_prefix="fer-model")


@dataclass
class Prepared:
    """The decoded photo and the face the models will see."""

    decoded: DecodedImage
    crop: FaceCrop

    @property
    def face(self) -> np.ndarray:
        return self.crop.face

    @property
    def notes(self) -> list[str]:
        return [self.crop.note, *self.decoded.notes]

    def annotated(self) -> np.ndarray:
        """The photo with the face boxes drawn on a copy (shrunk for display)."""
        return draw_face_boxes(self.decoded.rgb, self.crop)


@dataclass
class Prediction:
    """One model's answer for one face."""

    key: str
    display_name: str
    class_names: tuple[str, ...]
    probabilities: np.ndarray
    seconds: float
    note: str = ""

    @property
    def label(self) -> str:
        return self.class_names[int(np.argmax(self.probabilities))]

    @property
    def class_index(self) -> int:
        return int(np.argmax(self.probabilities))

    def confidences(self, k: int | None = TOP_K) -> dict[str, float]:
        """The top-k classes and their probabilities, best first (what gr.Label shows)."""
        order = np.argsort(-self.probabilities)[: k or len(self.class_names)]
        return {self.class_names[i]: float(self.probabilities[i]) for i in order}

    def timing(self) -> str:
        text = f"{self.seconds * 1000:.1f} ms"
        return f"{text} ({self.note})" if self.note else text


@dataclass
class Explanation:
    prediction: Prediction
    overlay: np.ndarray  # RGB uint8, enlarged for display
    heatmap: np.ndarray  # 48x48 in [0, 1]
    method: str
    seconds: float


@dataclass
class Comparison:
    prepared: Prepared
    predictions: list[Prediction] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # where the time went: "face", "models"

    @property
    def agreement(self) -> str:
        return agreement_line(self.predictions)


def prepare(source: str | os.PathLike | bytes) -> Prepared:
    """Decode the upload and find the face; raises imaging.ImageInputError for bad uploads."""
    decoded = decode_image(source)
    return Prepared(decoded, locate_face(decoded.rgb))


def predict(loaded: LoadedModel, face: np.ndarray) -> Prediction:
    """One model on one face, timed."""
    started = time.perf_counter()
    probabilities = loaded.predict(face)
    seconds = time.perf_counter() - started
    note = f"{len(loaded.members)} members + head" if loaded.is_ensemble else ""
    return Prediction(loaded.key, loaded.display_name, loaded.class_names, probabilities, seconds, note)


def predict_all(models: ModelSet, face: np.ndarray) -> list[Prediction]:
    """Every model on the same face; the ensemble's head reuses the members' answers instead of rerunning them."""
    standalone = [loaded for loaded in models if not loaded.is_ensemble]
    if MODEL_THREADS > 1 and len(standalone) > 1:
        running = {loaded.key: _pool.submit(predict, loaded, face) for loaded in standalone}
        done: dict[str, Prediction] = {key: future.result() for key, future in running.items()}
    else:
        done = {loaded.key: predict(loaded, face) for loaded in standalone}
    for loaded in models:
        if not loaded.is_ensemble:
            continue
        member_results = []
        member_seconds = 0.0
        for member in loaded.members:
            result = done.get(member.key) or predict(member, face)  # a member not shown on its own
            member_results.append(result.probabilities)
            member_seconds += result.seconds
        started = time.perf_counter()
        probabilities = loaded.combine(member_results)
        seconds = time.perf_counter() - started
        note = f"head only, on the members' outputs; {(seconds + member_seconds) * 1000:.0f} ms with members"
        done[loaded.key] = Prediction(loaded.key, loaded.display_name, loaded.class_names, probabilities, seconds, note)
    return [done[key] for key in models.models]


def compare(models: ModelSet, source: str | os.PathLike | bytes) -> Comparison:
    """The Compare tab: one photo, every model."""
    started = time.perf_counter()
    prepared = prepare(source)
    face_done = time.perf_counter()
    predictions = predict_all(models, prepared.face)
    seconds = {"decode_and_face": face_done - started, "models": time.perf_counter() - face_done}
    return Comparison(prepared, predictions, seconds)


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
