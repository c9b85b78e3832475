"""Store trained models' weights at half precision, and measure them again.

``python -m fer_utils.convert saved_models/scratch_cnn.keras ...`` rewrites each model with
float16 weights (half the file) and re-evaluates what is now stored on the data its card was
measured on: the card's metrics, its ``_predictions.npz`` and its confusion-matrix and ROC
figures are replaced, and the card keeps the figures from before under ``storage``. Every
ensemble beside a converted member is then re-measured with the members now on disk and its
card's member checksums are updated (its file, the head, does not change).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .card import ModelCard, headline_metrics
from .data import FerDataset, load_dataset
from .files import file_sha256
from .evaluation import evaluate_model
from .plotting import plot_confusion_matrix, plot_roc_curves, save_figure
from .experiment import load_predictions, predictions_path, resolve_data_path, resolve_path, save_predictions
from .model_io import WEIGHTS_DTYPES, load_model, now_iso, round_weights, save_model

DataLoader = Callable[[int], FerDataset]


def convert_model(
    path: str | os.PathLike,
    data_for: DataLoader,
    weights_dtype: str = "float16",
    reports_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Re-store one saved model with ``weights_dtype`` weights; its card's figures become those of the stored weights."""
    path = Path(path)
    card = ModelCard.read(path)
    if card.is_ensemble:
        raise ValueError(f"'{path.name}' is an ensemble: its file holds only the head; convert its members")
    if card.stored_weights_dtype == weights_dtype:
        raise ValueError(f"'{path.name}' already stores its weights as {weights_dtype}")
    data = _data_of(card, data_for, path)
    model = round_weights(load_model(path), weights_dtype)
    evaluations = _evaluate(model, data, card)
    before = {"weights_dtype": card.stored_weights_dtype, "file_size_bytes": card.file_size_bytes,
              "file_sha256": card.file_sha256}
    _record(card, evaluations, {"weights_dtype": weights_dtype, "converted_at": now_iso(), "before": before},
            f"Weights stored as {weights_dtype} after training (fer_utils.convert); the metrics were measured again on the stored weights.")
    save_model(model, path, card, weights_dtype=weights_dtype)
    moved = _write_results(path, card, evaluations["test"], data, reports_dir)
    return _change(card.model_name, before["metrics"], card.metrics, moved)


def refresh_ensemble(
    path: str | os.PathLike, data_for: DataLoader, reports_dir: str | os.PathLike | None = None,
) -> dict[str, Any] | None:
    """Re-measure an ensemble whose member files changed; ``None`` when none did."""
    path = Path(path)
    card = ModelCard.read(path)
    members = [(path.parent / member).resolve() for member in card.ensemble_members]
    digests = [file_sha256(member) for member in members]
    recorded = card.member_sha256 or digests
    if digests == recorded:
        return None
    for member, digest, trained_on in zip(members, digests, recorded):
        converted_from = (ModelCard.read_if_present(member) or ModelCard()).converted_from_sha256
        if digest != trained_on and converted_from != trained_on:
            raise ValueError(f"ensemble '{path.name}' was trained on a different '{member.name}', not one this command "
                             "converted; retrain the ensemble after retraining a member")
    data = _data_of(card, data_for, path)
    evaluations = _evaluate(load_model(path, check_members=False), data, card)
    before = {"member_sha256": recorded}
    card.record_member_sha256(digests)
    _record(card, evaluations, {"members_changed_at": now_iso(), "before": before},
            "Members re-stored (fer_utils.convert); the head is unchanged and the metrics were measured again with the members on disk.")
    card.write(path)
    moved = _write_results(path, card, evaluations["test"], data, reports_dir)
    return _change(card.model_name, before["metrics"], card.metrics, moved)


def _record(card: ModelCard, evaluations: dict[str, Any], storage: dict[str, Any], note: str) -> None:
    """The new figures go in; the card keeps the earlier headline ones under ``storage.before``."""
    card.record_remeasure({split: evaluation.metrics for split, evaluation in evaluations.items()}, storage, note)


def _data_of(card: ModelCard, data_for: DataLoader, path: Path) -> FerDataset:
    data = data_for(card.class_set)
    recorded = card.data_sha256
    if recorded is None:
        raise ValueError(f"'{path.name}': its card does not record the data it was measured on (data.sha256)")
    if data.checksum != recorded:
        raise ValueError(f"'{path.name}' was measured on another copy of the data (sha256 {recorded[:12]}...); "
                         f"point --data at that one, not {Path(data.source).name} ({data.checksum[:12]}...)")
    if list(data.class_names) != card.class_names:
        raise ValueError(f"'{path.name}' predicts {card.class_names}, the data has {list(data.class_names)}")
    return data


def _evaluate(model, data: FerDataset, card: ModelCard) -> dict[str, Any]:
    tta = card.measured_with_tta
    return {split: evaluate_model(model, getattr(data, split).images, getattr(data, split).labels, data.class_names, tta=tta)
            for split in ("val", "test")}


def _write_results(path: Path, card: ModelCard, test, data: FerDataset, reports_dir) -> int | None:
    """The prediction file and the figures the model's notebook wrote, where they exist.

    Returns on how many test faces the predicted class moved, from the prediction file it replaces.
    """
    name = card.model_name
    predictions = predictions_path(path.parent, name)
    moved = None
    if predictions.exists():
        earlier = load_predictions(predictions)["proba"]
        if earlier.shape == test.proba.shape:
            moved = int(np.sum(earlier.argmax(axis=1) != test.proba.argmax(axis=1)))
        save_predictions(predictions, test.proba, test.proba_tta, data.class_names)
    reports = Path(reports_dir) / name if reports_dir else None
    if reports is None or not reports.is_dir():
        return moved
    matrix = test.metrics["plain"]["confusion_matrix"]
    for normalize, figure_name in ((False, "confusion_matrix.png"), (True, "confusion_matrix_normalized.png")):
        if (reports / figure_name).exists():
            title = f"{name} on PrivateTest" + (" (row-normalised)" if normalize else "")
            save_figure(plot_confusion_matrix(matrix, data.class_names, normalize=normalize, title=title), reports / figure_name)
    if (reports / "roc_curves.png").exists():
        figure = plot_roc_curves(data.test.labels, test.proba, data.class_names, title=f"{name}: one-vs-rest ROC")
        save_figure(figure, reports / "roc_curves.png")
    return moved


def _change(name: str, before: dict[str, Any], after: dict[str, Any], moved: int | None) -> dict[str, Any]:
    """Accuracy before and after, per split and mode, and the test faces whose class moved: what the command prints."""
    now = headline_metrics(after)
    return {"model": name, "moved": moved,
            "accuracy": {f"{split} {mode}": (before[split][mode]["accuracy"], now[split][mode]["accuracy"])
                         for split in ("val", "test") for mode in now[split]}}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help=".keras files to re-store (not ensembles: their members)")
    parser.add_argument("--weights-dtype", default="float16", choices=[d for d in WEIGHTS_DTYPES if d != "float32"])
    parser.add_argument("--data", default="", help="the FER2013 the cards were measured on (default: $FER2013_CSV)")
    parser.add_argument("--reports-dir", default="reports",
                        help="figures to redraw live in <this>/<model name>/ (relative to the repository root)")
    args = parser.parse_args(argv)
    args.reports_dir = resolve_path(args.reports_dir)
    try:
        data_path = resolve_data_path(args.data)
    except ValueError as error:
        parser.error(str(error))
    if not data_path.exists():
        parser.error(f"no FER2013 at '{data_path}': pass --data or set FER2013_CSV")
    loaded: dict[int, FerDataset] = {}

    def data_for(class_set: int) -> FerDataset:
        if class_set not in loaded:
            loaded[class_set] = load_dataset(data_path, class_set)
        return loaded[class_set]

    failures = 0

    def attempt(message: str, action: Callable[[], dict[str, Any] | None]) -> bool:
        """One model at a time: a bad file is reported and the others still run."""
        nonlocal failures
        print(message, flush=True)
        try:
            change = action()
        except (OSError, ValueError, KeyError) as error:
            failures += 1
            print(f"  failed: {error}", flush=True)
            return False
        if change:
            _print_change(change)
        else:
            print("  its members are unchanged", flush=True)
        return True

    converted = [model for model in args.models if attempt(
        f"{model}: storing weights as {args.weights_dtype} and measuring again ...",
        lambda: convert_model(model, data_for, args.weights_dtype, args.reports_dir))]
    for folder in dict.fromkeys(model.parent for model in converted):
        for ensemble in sorted(folder.glob("*.keras")):
            if (ModelCard.read_if_present(ensemble) or ModelCard()).is_ensemble:
                attempt(f"{ensemble}: measuring again with its members on disk ...",
                        lambda: refresh_ensemble(ensemble, data_for, args.reports_dir))
    return 1 if failures else 0


def _print_change(change: dict[str, Any]) -> None:
    for view, (before, after) in change["accuracy"].items():
        print(f"  {view} accuracy {100 * before:.2f} % -> {100 * after:.2f} % ({100 * (after - before):+.2f})", flush=True)
    if change["moved"] is not None:
        print(f"  predicted class changed on {change['moved']} test faces", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
