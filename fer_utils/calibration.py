"""Temperature scaling: probabilities that mean what they say.

A network trained with cross-entropy to high accuracy is usually over-confident: of the faces it
calls "happy, 0.9", far fewer than 90 % are happy. The demo shows those numbers to people, so they
should be honest. Temperature scaling (Guo et al., 2017, "On Calibration of Modern Neural
Networks") divides the logits by one scalar ``T`` fitted on held-out data: ``T > 1`` softens
over-confident outputs, ``T < 1`` sharpens timid ones. One parameter cannot over-fit 3,588
PublicTest faces, and dividing every logit by the same positive number keeps their order, so the
predicted class (and every accuracy figure in a card) is unchanged.

Our models end in a softmax and return probabilities, not logits. ``log p`` differs from the
logits only by a per-row constant, which the softmax ignores, so ``softmax(log p / T)`` is
exactly the temperature-scaled output of the original logits.

``T`` is fitted on PublicTest only (the split the notebooks already use for model selection);
PrivateTest is only measured, before and after, so its figures stay an honest test. A model
trained on FER+ labels never sees PublicTest's votes: its ``T`` is fitted on its own
validation slice of Training, and PrivateTest is measured by its FER+ labels.

``python -m fer_utils.calibration saved_models [--data CSV]`` fits ``T`` for every model with a
card, writes a ``calibration`` block into the card (the model files, their checksums and the
cards' metrics are not touched) and draws ``reports/<name>/reliability.png``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .card import ModelCard, read_cards
from .files import file_sha256

__all__ = [
    "BINS",
    "TARGET_ECE",
    "ReliabilityBins",
    "fit_temperature",
    "apply_temperature",
    "negative_log_likelihood",
    "reliability_bins",
    "expected_calibration_error",
    "reliability_diagram",
    "calibrate_model",
    "calibrate_folder",
    "reliability_grid",
    "main",
]

#: Equal-width confidence bins for ECE and the diagrams: the usual choice in the literature.
BINS = 15
#: PrivateTest ECE every shipped model must reach after scaling (issue "probabilities that mean what they say").
TARGET_ECE = 0.03
FITTED_ON = "PublicTest"
#: A FER+ model's selection split: no PublicTest vote may reach selection, calibration included.
FITTED_ON_FERPLUS = "a stratified 10 % of Training (FER+ labels)"

# log of the smallest positive float32: a probability a float32 softmax rounded to 0 was at most
# this small, so its logit is floored here rather than made -inf (which no T could fix in the NLL).
_LOG_FLOOR = float(np.log(np.finfo(np.float32).smallest_subnormal))
# T from 1/20 to 20: far wider than any network needs (1-3 is typical), yet keeps the search bounded.
_LOG_T_BOUNDS = (math.log(0.05), math.log(20.0))
_ROW_SUM_TOLERANCE = 1e-3


# --------------------------------------------------------------------------- temperature
def fitted_on(card: ModelCard) -> str:
    """Where a card's temperature is fitted: its selection split."""
    return FITTED_ON_FERPLUS if card.ferplus_csv else FITTED_ON


def _as_logits(values: Any, inputs: Literal["auto", "probabilities", "logits"] = "auto") -> np.ndarray:
    """Logits (float64, N x K) from probabilities (their log) or from logits as given."""
    z = np.asarray(values, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] == 0:
        raise ValueError(f"expected a non-empty (N, K) array of probabilities or logits, got shape {z.shape}")
    if not np.all(np.isfinite(z)):
        raise ValueError("probabilities or logits contain NaN or infinite values")
    if inputs == "auto":
        inputs = "probabilities" if _look_like_probabilities(z) else "logits"
    if inputs == "probabilities":
        if not _look_like_probabilities(z):
            raise ValueError("probabilities must lie in [0, 1] with rows summing to 1")
        with np.errstate(divide="ignore"):
            return np.maximum(np.log(np.clip(z, 0.0, None)), _LOG_FLOOR)
    if inputs != "logits":
        raise ValueError(f"inputs must be 'auto', 'probabilities' or 'logits'; got {inputs!r}")
    return z


def _look_like_probabilities(z: np.ndarray) -> bool:
    return bool(z.min() >= -1e-6 and z.max() <= 1 + 1e-6
                and np.abs(z.sum(axis=1) - 1.0).max() <= _ROW_SUM_TOLERANCE)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _nll_of_logits(z: np.ndarray, labels: np.ndarray) -> float:
    """Mean -log softmax(z)[label], computed stably (log-sum-exp)."""
    top = z.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(len(z)), labels]))


def _check_labels(labels: Any, n: int, k: int) -> np.ndarray:
    y = np.asarray(labels).reshape(-1)
    if len(y) != n:
        raise ValueError(f"{len(y)} labels for {n} rows of probabilities")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError("labels must be integer class indices")
    if n and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"labels must lie in 0..{k - 1}")
    return y.astype(np.int64)


def fit_temperature(
    probabilities_or_logits: Any,
    labels: Any,
    *,
    inputs: Literal["auto", "probabilities", "logits"] = "auto",
) -> float:
    """The temperature ``T`` that minimises the negative log-likelihood of ``softmax(z / T)``.

    ``z`` is ``log p`` for probabilities (what our softmax models return) or the logits
    themselves; ``inputs="auto"`` takes non-negative rows summing to 1 for probabilities. Fit it
    on held-out data the model never trained on (we use PublicTest), never on the test split it
    will be judged on. The NLL is minimised over ``log T`` (so ``T`` stays positive and the search
    treats halving and doubling alike) with a bounded scalar search over ``T`` in [0.05, 20]: the
    NLL of a temperature is convex in ``1/T``, so the minimum found is the minimum.
    """
    from scipy.optimize import minimize_scalar

    z = _as_logits(probabilities_or_logits, inputs)
    y = _check_labels(labels, *z.shape)
    result = minimize_scalar(lambda log_t: _nll_of_logits(z / math.exp(log_t), y),
                             bounds=_LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6})
    if not result.success:
        raise RuntimeError(f"temperature fit did not converge: {result.message}")
    return float(math.exp(result.x))


def apply_temperature(probabilities: Any, temperature: float) -> np.ndarray:
    """``softmax(log p / T)``: the model's probabilities as if its logits had been divided by ``T``.

    The order of the classes in every row is kept (so the predicted class is), and ``T = 1``
    returns ``p`` itself (renormalised). Returns float64.
    """
    temperature = float(temperature)
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a positive number, got {temperature}")
    return _softmax(_as_logits(probabilities, "probabilities") / temperature)


def negative_log_likelihood(probabilities: Any, labels: Any) -> float:
    """Mean ``-log p[label]`` (a zero probability counts as float32's smallest, not infinity)."""
    z = _as_logits(probabilities, "probabilities")
    return _nll_of_logits(z, _check_labels(labels, *z.shape))


# --------------------------------------------------------------------------- calibration error
@dataclass(frozen=True)
class ReliabilityBins:
    """Top-label confidence in equal-width bins: how many faces, how accurate, how confident.

    ``accuracy`` and ``confidence`` are ``nan`` for empty bins. These are aggregates (15 numbers
    each), so a card may keep them without redistributing FER2013's labels.
    """

    count: np.ndarray
    accuracy: np.ndarray
    confidence: np.ndarray

    @property
    def bins(self) -> int:
        return len(self.count)

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(0.0, 1.0, self.bins + 1)

    @property
    def ece(self) -> float:
        """Expected calibration error: sum over bins of (share of faces) x |accuracy - confidence|."""
        total = self.count.sum()
        filled = self.count > 0
        if total == 0:
            return 0.0
        gaps = np.abs(self.accuracy[filled] - self.confidence[filled])
        return float(np.sum(self.count[filled] / total * gaps))

    def to_dict(self) -> dict[str, list]:
        """Plain JSON: empty bins' accuracy and confidence as null."""
        def plain(values: np.ndarray) -> list:
            return [None if math.isnan(v) else float(v) for v in values]

        return {"count": [int(c) for c in self.count], "accuracy": plain(self.accuracy),
                "confidence": plain(self.confidence)}

    @classmethod
    def from_dict(cls, stored: Mapping[str, Sequence]) -> "ReliabilityBins":
        def array(values: Sequence) -> np.ndarray:
            return np.array([np.nan if v is None else v for v in values], dtype=np.float64)

        return cls(np.asarray(stored["count"], dtype=np.int64), array(stored["accuracy"]), array(stored["confidence"]))


def reliability_bins(probabilities: Any, labels: Any, bins: int = BINS) -> ReliabilityBins:
    """Bin each face by its top-label confidence into ``bins`` equal-width bins of [0, 1].

    Bins are closed on the right, ``(lo, hi]``, as in Guo et al.; the first also holds 0, so a
    confidence of exactly 1.0 falls in the last bin and none is lost at either edge.
    """
    bins = int(bins)
    if bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins}")
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0:
        raise ValueError(f"expected a non-empty (N, K) array of probabilities, got shape {p.shape}")
    y = _check_labels(labels, *p.shape)
    confidence = np.clip(p.max(axis=1), 0.0, 1.0)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    inner_edges = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    index = np.searchsorted(inner_edges, confidence, side="left")  # edges below it, strictly: (lo, hi]
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(index, weights=correct, minlength=bins) / count
        mean_confidence = np.bincount(index, weights=confidence, minlength=bins) / count
    return ReliabilityBins(count.astype(np.int64), accuracy, mean_confidence)


def expected_calibration_error(probabilities: Any, labels: Any, bins: int = BINS) -> float:
    """Top-label ECE with equal-width confidence bins (Naeini et al. 2015; Guo et al. 2017).

    The weighted mean gap between how often the predicted class is right and how confident the
    model was, over faces grouped by confidence: 0 for a model whose "0.8" is right 80 % of the
    time. 15 bins is the literature's default; fewer bins hide gaps, more make them noisy.
    """
    return reliability_bins(probabilities, labels, bins).ece


# --------------------------------------------------------------------------- figures
_BEFORE, _AFTER, _GAP = "#9e9e9e", "#1f77b4", "#d62728"


def _draw_reliability(ax: Axes, counts_ax: Axes | None, stats: ReliabilityBins, label: str, color: str) -> None:
    """Accuracy bars per bin, the gap to the bin's mean confidence in red, the diagonal, the counts."""
    edges = stats.edges
    width = edges[1] - edges[0]
    filled = stats.count > 0
    lefts = edges[:-1][filled]
    accuracy, confidence = stats.accuracy[filled], stats.confidence[filled]
    ax.plot([0, 1], [0, 1], linestyle="--", color="black", linewidth=1, label="perfect calibration")
    ax.bar(lefts, accuracy, width=width, align="edge", color=color, edgecolor="black", linewidth=0.6,
           label=f"{label}: accuracy (ECE {stats.ece:.3f})")
    ax.bar(lefts, confidence - accuracy, bottom=accuracy, width=width, align="edge", color=_GAP, alpha=0.35,
           edgecolor=_GAP, linewidth=0.6, hatch="//", label="gap to mean confidence")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize=8)
    if counts_ax is not None:
        counts_ax.bar(edges[:-1], stats.count, width=width, align="edge", color=color, edgecolor="black", linewidth=0.6)
        for left, count in zip(edges[:-1], stats.count):
            if count:
                counts_ax.text(left + width / 2, count, str(int(count)), ha="center", va="bottom", fontsize=6)
        counts_ax.set_xlim(0, 1)
        counts_ax.set_ylim(0, max(int(stats.count.max()), 1) * 1.25)
        counts_ax.set_xlabel("confidence (top-label probability)")
        counts_ax.set_ylabel("faces")
    else:
        ax.set_xlabel("confidence (top-label probability)")


def plot_reliability(before: ReliabilityBins, after: ReliabilityBins | None = None, title: str | None = None,
                     temperature: float | None = None) -> Figure:
    """Draw binned statistics: one panel, or before and after side by side."""
    panels = [("before", before, _BEFORE if after is not None else _AFTER)]
    if after is not None:
        after_label = "after" if temperature is None else f"after (T = {temperature:.3f})"
        panels.append((after_label, after, _AFTER))
    fig = Figure(figsize=(4.6 * len(panels), 6.0), layout="constrained")
    grid = fig.add_gridspec(2, len(panels), height_ratios=(3, 1))
    for column, (label, stats, color) in enumerate(panels):
        ax = fig.add_subplot(grid[0, column])
        counts_ax = fig.add_subplot(grid[1, column], sharex=ax)
        _draw_reliability(ax, counts_ax, stats, label, color)
        ax.set_title(label)
        ax.tick_params(labelbottom=False)
    if title:
        fig.suptitle(title)
    return fig


def reliability_diagram(
    probabilities: Any,
    labels: Any,
    bins: int = BINS,
    title: str | None = None,
    *,
    calibrated: Any | None = None,
    temperature: float | None = None,
) -> Figure:
    """Reliability diagram: accuracy per confidence bin against the diagonal of perfect calibration.

    Bars below the diagonal mean over-confidence (red gap bars show by how much), the lower panel
    counts the faces in each bin (a gap over 5 faces matters less than one over 1,000), and the
    legend gives the ECE. With ``calibrated`` (the same faces' probabilities after scaling) the
    figure shows before and after side by side.
    """
    before = reliability_bins(probabilities, labels, bins)
    after = None if calibrated is None else reliability_bins(calibrated, labels, bins)
    return plot_reliability(before, after, title, temperature)


# --------------------------------------------------------------------------- models and cards
def _test_probabilities(models_dir: Path, name: str, n: int, k: int) -> tuple[np.ndarray, np.ndarray | None, str] | None:
    """The shipped PrivateTest probabilities (plain, and mirrored where stored), when the predictions
    file holds them for this split."""
    from .experiment import load_predictions, predictions_path

    path = predictions_path(models_dir, name)
    if not path.is_file():
        return None
    stored = load_predictions(path)
    split = str(stored.get("split", "test"))
    proba, mirrored = stored.get("proba"), stored.get("proba_tta")
    if split != "test" or proba is None or proba.shape != (n, k):
        return None
    mirrored = mirrored.astype(np.float64) if mirrored is not None and mirrored.shape == (n, k) else None
    return proba.astype(np.float64), mirrored, file_sha256(path)


def _fit_and_measure(val_proba: np.ndarray, val_labels: np.ndarray, test_proba: np.ndarray, test_labels: np.ndarray,
                     bins: int, name: str) -> tuple[dict[str, Any], ReliabilityBins, ReliabilityBins]:
    """``T`` fitted on the selection split's probabilities, and both splits' ECE and NLL before and after."""
    temperature = fit_temperature(val_proba, val_labels, inputs="probabilities")
    val_after = apply_temperature(val_proba, temperature)
    test_after = apply_temperature(test_proba, temperature)
    if not np.array_equal(test_proba.argmax(axis=1), test_after.argmax(axis=1)):
        raise RuntimeError(f"{name}: temperature {temperature} changed a predicted class; this cannot happen for T > 0")
    before_bins = reliability_bins(test_proba, test_labels, bins)
    after_bins = reliability_bins(test_after, test_labels, bins)
    figures = {
        "temperature": temperature,
        "test_ece_before": before_bins.ece,
        "test_ece_after": after_bins.ece,
        "test_nll_before": negative_log_likelihood(test_proba, test_labels),
        "test_nll_after": negative_log_likelihood(test_after, test_labels),
        "val_ece_before": expected_calibration_error(val_proba, val_labels, bins),
        "val_ece_after": expected_calibration_error(val_after, val_labels, bins),
        "val_nll_before": negative_log_likelihood(val_proba, val_labels),
        "val_nll_after": negative_log_likelihood(val_after, val_labels),
        "test_accuracy": float(np.mean(test_proba.argmax(axis=1) == test_labels)),
    }
    return figures, before_bins, after_bins


def calibrate_model(
    model_path: str | os.PathLike,
    dataset: Any,
    *,
    bins: int = BINS,
    batch_size: int = 256,
    reports_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Fit ``T`` on PublicTest, measure PrivateTest before and after, write the card block and figure.

    ``dataset`` is a :class:`fer_utils.data.FerDataset` of the card's data (checked by checksum).
    PrivateTest probabilities come from ``<name>_predictions.npz`` when it holds them, else the
    model is run on PrivateTest too. Only the card's ``calibration`` key is written; the card's
    metrics and checksums stay as they are (the model file does not change). Returns the block.
    """
    from .evaluation import predict_proba
    from .plotting import save_figure
    from .model_io import load_model

    model_path = Path(model_path)
    card = ModelCard.read(model_path)
    name = card.model_name
    recorded = card.data_sha256
    if recorded and recorded != dataset.checksum:
        raise ValueError(f"{name} was measured on another copy of the data (sha256 {recorded[:12]}... in its "
                         f"card, {dataset.checksum[:12]}... given): calibrate it on the data it was measured on")
    if card.class_names is not None and list(card.class_names) != list(dataset.class_names):
        raise ValueError(f"{name} predicts {card.class_names}, the data has {list(dataset.class_names)}")
    k = len(dataset.class_names)
    model = load_model(model_path)
    val_proba = predict_proba(model, dataset.val.images, batch_size=batch_size).astype(np.float64)
    val_mirrored = predict_proba(model, dataset.val.images, batch_size=batch_size, tta="flip").astype(np.float64)
    shipped = _test_probabilities(model_path.parent, name, len(dataset.test), k)
    test_proba, test_mirrored, predictions_sha256 = shipped if shipped is not None else (None, None, None)
    if test_proba is None:
        test_proba = predict_proba(model, dataset.test.images, batch_size=batch_size).astype(np.float64)
    if test_mirrored is None:
        test_mirrored = predict_proba(model, dataset.test.images, batch_size=batch_size, tta="flip").astype(np.float64)
    del model

    where = fitted_on(card)
    labels = (dataset.val.labels, dataset.test.labels)
    plain, test_before_bins, test_after_bins = _fit_and_measure(val_proba, labels[0], test_proba, labels[1], bins, name)
    mirrored, _, _ = _fit_and_measure(val_mirrored, labels[0], test_mirrored, labels[1], bins, name)
    temperature = plain["temperature"]
    block = {
        "method": "temperature",
        "fitted_on": where,
        "bins": int(bins),
        **plain,
        "mirrored": mirrored,
        "test_probabilities": f"{name}_predictions.npz" if predictions_sha256 else "predicted from the model file",
        "predictions_sha256": predictions_sha256,
        "data_sha256": dataset.checksum,
        "target_test_ece": TARGET_ECE,
        "test_reliability": {"before": test_before_bins.to_dict(), "after": test_after_bins.to_dict()},
        "how": "p_T = softmax(log(p) / T) applied to the model's output probabilities (for an ensemble, its "
               f"head's); T minimises the negative log-likelihood on {where}; PrivateTest is only measured. "
               "The predicted class, and so every accuracy figure, is unchanged. 'mirrored' holds a second T, "
               "fitted the same way on the model's answers averaged over each face and its mirror image (flip "
               "TTA, what the photo path serves), which are softer than plain answers. "
               "Made by python -m fer_utils.calibration.",
    }
    card.calibration = block
    card.write(model_path)
    if reports_dir is not None:
        figure = plot_reliability(test_before_bins, test_after_bins,
                                  f"{card.label(name)}: PrivateTest reliability", temperature)
        save_figure(figure, Path(reports_dir) / name / "reliability.png")
    return block


def _cards(models_dir: Path) -> dict[str, ModelCard]:
    """The cards beside ``.keras`` files, the ensemble last (it runs its members again)."""
    return dict(sorted(read_cards(models_dir).items(), key=lambda item: (item[1].kind == "ensemble", item[0])))


def calibrate_folder(
    models_dir: str | os.PathLike,
    data_path: str | os.PathLike,
    *,
    reports_dir: str | os.PathLike | None = "reports",
    bins: int = BINS,
    batch_size: int = 256,
    only: Sequence[str] | None = None,
    out: Any = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Calibrate every model with a card in ``models_dir``; returns ``(blocks, errors)`` by model name.

    The ensemble comes last, after its members (it runs them all again on PublicTest).
    """
    from .experiment import load_card_data

    out = out or sys.stdout
    models_dir = Path(models_dir)
    datasets: dict[tuple, Any] = {}
    blocks, errors = {}, {}
    for name, card in _cards(models_dir).items():
        if only and name not in only:
            continue
        try:
            key = (card.class_set, card.ferplus_csv, card.ferplus_csv and card.split_seed)
            if key not in datasets:
                datasets[key] = load_card_data(card, data_path)
            print(f"{name}: fitting T on {fitted_on(card)} ({len(datasets[key].val)} faces)...", file=out, flush=True)
            blocks[name] = calibrate_model(models_dir / card.file_name, datasets[key], bins=bins,
                                           batch_size=batch_size, reports_dir=reports_dir)
        except (ValueError, FileNotFoundError, KeyError, RuntimeError) as error:
            errors[name] = str(error)
            print(f"{name}: FAILED: {error}", file=out, flush=True)
    return blocks, errors


def calibration_table(blocks: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown: T, PrivateTest ECE and NLL before -> after, and whether the target is met."""
    lines = ["| model | T | PrivateTest ECE before -> after | NLL before -> after | ECE where T was fitted, before -> after | accuracy | "
             "mirrored (flip TTA): T, PrivateTest ECE before -> after | target |",
             "|---|---|---|---|---|---|---|---|"]
    for name, b in blocks.items():
        m = b.get("mirrored") or {}
        missed = [what for what, ece in (("plain", b["test_ece_after"]), ("mirrored", m.get("test_ece_after"))) if ece and ece > TARGET_ECE]
        target = f"MISSED (> {TARGET_ECE}: {', '.join(missed)})" if missed else "ok"
        mirrored = f"{m['temperature']:.3f}, {m['test_ece_before']:.4f} -> {m['test_ece_after']:.4f}" if m else "-"
        lines.append(f"| {name} | {b['temperature']:.3f} | {b['test_ece_before']:.4f} -> {b['test_ece_after']:.4f} | "
                     f"{b['test_nll_before']:.4f} -> {b['test_nll_after']:.4f} | "
                     f"{b['val_ece_before']:.4f} -> {b['val_ece_after']:.4f} | {100 * b['test_accuracy']:.1f} % | {mirrored} | {target} |")
    return "\n".join(lines)


def reliability_grid(cards: Mapping[str, ModelCard], models_dir: str | os.PathLike,
                     ncols: int = 4) -> tuple[Figure | None, list[str]]:
    """PrivateTest reliability of every calibrated model, before (grey) and after (blue) its temperature.

    Drawn from each card's ``calibration`` block (binned accuracy and confidence: FER2013's labels
    are not shipped, so the predictions file alone cannot give accuracy). A model whose card has
    no block, or whose predictions file changed since it was calibrated, is left out with a note.
    Returns ``(figure or None, notes)``.
    """
    models_dir = Path(models_dir)
    panels, notes = [], []
    for name, card in cards.items():
        card = ModelCard.of(card)
        block = card.calibration
        if not isinstance(block, dict) or "test_reliability" not in block:
            notes.append(f"{name}: not calibrated (no calibration in its card): run python -m fer_utils.calibration")
            continue
        recorded = block.get("predictions_sha256")
        predictions = models_dir / f"{name}_predictions.npz"
        if recorded and (not predictions.is_file() or file_sha256(predictions) != recorded):
            notes.append(f"{name}: its predictions changed since it was calibrated: run python -m fer_utils.calibration again")
            continue
        panels.append((card.label(name), block))
    if not panels:
        return None, notes
    ncols = max(1, min(ncols, len(panels)))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(3.4 * ncols, 3.6 * nrows), layout="constrained")
    for i, (title, block) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.plot([0, 1], [0, 1], linestyle="--", color="black", linewidth=1)
        for key, color, label in (("before", _BEFORE, "before"), ("after", _AFTER, f"T = {block['temperature']:.2f}")):
            stats = ReliabilityBins.from_dict(block["test_reliability"][key])
            filled = stats.count > 0
            sizes = 8 + 120 * stats.count[filled] / max(int(stats.count.sum()), 1)
            ax.plot(stats.confidence[filled], stats.accuracy[filled], color=color, linewidth=1.2,
                    label=f"{label}: ECE {stats.ece:.3f}")
            ax.scatter(stats.confidence[filled], stats.accuracy[filled], s=sizes, color=color, zorder=3)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.legend(loc="upper left", fontsize=7)
    fig.suptitle("PrivateTest reliability, before and after temperature scaling (marker area: share of faces)")
    return fig, notes


# --------------------------------------------------------------------------- command line
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fer_utils.calibration",
        description="Fit a temperature per model on PublicTest, report PrivateTest calibration, update the cards.")
    parser.add_argument("models_dir", nargs="?", default="saved_models")
    parser.add_argument("--data", default=None, help="FER2013 CSV (default: FER2013_CSV)")
    parser.add_argument("--reports-dir", default="reports", help="where <name>/reliability.png goes")
    parser.add_argument("--bins", type=int, default=BINS)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--only", nargs="+", default=None, help="model names to calibrate (default: all)")
    args = parser.parse_args(argv)
    from .experiment import resolve_data_path

    try:
        data_path = resolve_data_path(args.data)
    except ValueError as error:
        parser.error(str(error))
    if not data_path.exists():
        parser.error(f"no FER2013 at '{data_path}'")
    models_dir = Path(args.models_dir)
    if not models_dir.is_dir():
        parser.error(f"no folder '{models_dir}'")
    blocks, errors = calibrate_folder(models_dir, data_path, reports_dir=args.reports_dir, bins=args.bins,
                                      batch_size=args.batch_size, only=args.only)
    if not blocks and not errors:
        print(f"no models with model cards in {models_dir}")
        return 1
    print()
    print(calibration_table(blocks))
    missed = [name for name, block in blocks.items()
              if max(block["test_ece_after"], (block.get("mirrored") or {}).get("test_ece_after", 0.0)) > TARGET_ECE]
    if missed:
        print(f"\nPrivateTest ECE after scaling is above {TARGET_ECE} for: {', '.join(missed)}")
    for name, error in errors.items():
        print(f"\n{name}: not calibrated: {error}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
