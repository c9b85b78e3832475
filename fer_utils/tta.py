"""Test-time augmentation report: plain, flip and ten-crop accuracy of the shipped models.

The strong published FER2013 recipes report ten-crop test-time augmentation (four corners and
the centre, each mirrored); the model cards and the results table keep plain and flip figures,
so ten-crop is measured here and reported separately:

    python -m fer_utils.tta saved_models [--data CSV] [--split test] [--out reports/comparison/tta.md]

An ensemble is measured from its members' answers on each view (its head on their
concatenated probabilities, as the ensemble itself computes), so every member runs once per
view instead of once for itself and again inside the ensemble.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, f1_score
from tqdm.auto import tqdm

from .card import ModelCard, percent, read_cards
from .evaluation import predict_proba, ten_crops
from .files import atomic_write

VIEWS = ("plain", "flip", "ten_crop")


def view_probabilities(model, images: np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Probabilities per test-time view: ``plain``, ``flip`` (with the mirror) and ``ten_crop``."""
    x = np.asarray(images, dtype=np.float32).reshape(len(images), *np.shape(images)[1:3], 1)
    plain = predict_proba(model, x, batch_size)
    mirrored = predict_proba(model, x[:, :, ::-1], batch_size)
    crops = [predict_proba(model, view, batch_size) for view in ten_crops(x)]
    return {"plain": plain, "flip": (plain + mirrored) / 2, "ten_crop": np.mean(crops, axis=0), "_crops": crops,
            "_mirror": mirrored}


def _ensemble_views(head, member_views: list[dict[str, np.ndarray]], batch_size: int) -> dict[str, np.ndarray]:
    def on(parts: list[np.ndarray]) -> np.ndarray:
        return np.asarray(head.predict(np.concatenate(parts, axis=1).astype(np.float32), batch_size=batch_size,
                                       verbose=0))

    plain = on([v["plain"] for v in member_views])
    mirrored = on([v["_mirror"] for v in member_views])
    crops = [on([v["_crops"][i] for v in member_views]) for i in range(len(member_views[0]["_crops"]))]
    return {"plain": plain, "flip": (plain + mirrored) / 2, "ten_crop": np.mean(crops, axis=0)}


def measure(models_dir: str | Path, images: np.ndarray, labels: np.ndarray, batch_size: int = 256,
            only: Sequence[str] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """``{model: {view: {"accuracy", "macro_f1"}}}`` for every model with a card in ``models_dir``."""
    from .model_io import ensemble_member_paths, load_ensemble_head, load_model

    models_dir = Path(models_dir)
    cards = read_cards(models_dir)
    if only:
        cards = {name: card for name, card in cards.items() if name in only}
    views: dict[str, dict[str, np.ndarray]] = {}

    def member_views(path: Path) -> dict[str, np.ndarray]:
        name = path.stem
        if name not in views:
            views[name] = view_probabilities(load_model(path), images, batch_size)
        return views[name]

    results = {}
    for name, card in tqdm(cards.items(), desc="models", unit="model"):
        path = models_dir / card.file_name
        if card.is_ensemble:
            members = [member_views(member) for member in ensemble_member_paths(path, card)]
            probabilities = _ensemble_views(load_ensemble_head(path), members, batch_size)
        else:
            probabilities = member_views(path)
        results[name] = {
            view: {"accuracy": float(accuracy_score(labels, probabilities[view].argmax(axis=1))),
                   "macro_f1": float(f1_score(labels, probabilities[view].argmax(axis=1), average="macro"))}
            for view in VIEWS
        }
    return results


def table(results: dict[str, dict[str, dict[str, float]]], cards: dict[str, ModelCard], split_name: str) -> str:
    """A Markdown table: accuracy and macro-F1 per view, and what ten-crop adds over flip."""
    lines = [f"| model | {split_name} plain | flip TTA | ten-crop TTA | ten-crop - flip | macro-F1 plain / flip / ten-crop |",
             "|---|---|---|---|---|---|"]
    for name, result in results.items():
        acc = {view: result[view]["accuracy"] for view in VIEWS}
        f1 = " / ".join(f"{result[view]['macro_f1']:.3f}" for view in VIEWS)
        label = cards[name].label() if name in cards else name
        lines.append(f"| {label} | {percent(acc['plain'])} % | {percent(acc['flip'])} % | {percent(acc['ten_crop'])} % | "
                     f"{(acc['ten_crop'] - acc['flip']) * 100:+.1f} pts | {f1} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer_utils.tta", description=__doc__.split("\n\n")[0])
    parser.add_argument("models_dir", nargs="?", default="saved_models")
    parser.add_argument("--data", default=None, help="FER2013 CSV (default: $FER2013_CSV)")
    parser.add_argument("--split", choices=("test", "val"), default="test", help="test = PrivateTest, val = PublicTest")
    parser.add_argument("--only", nargs="+", default=None, help="model names (default: every card)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", default=None, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    from .experiment import load_data

    try:
        data = load_data(args.data, 7)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    split = data.test if args.split == "test" else data.val
    results = measure(args.models_dir, split.images, split.labels, args.batch_size, args.only)
    text = table(results, read_cards(args.models_dir), "PrivateTest" if args.split == "test" else "PublicTest")
    print(text)
    if args.out:
        with atomic_write(args.out) as partial:
            partial.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
