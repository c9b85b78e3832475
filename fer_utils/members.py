"""The members a new ensemble is built from, checked before anything is fitted on them.

05_ensemble names its members by model name. A missing file, a card that describes another file,
or a member trained on other classes (or taking other input) than this run's must fail before the
members' long pass over the data, and say what to do. ``model_io.ensemble_member_paths`` makes
the matching checks for a *saved* ensemble's members when it is loaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .card import ModelCard
from .data import IMAGE_SIZE
from .experiment import resolve_path
from .model_io import card_path, load_model, read_model_card, verify_card

#: What every member must take: the raw faces the ensemble feeds to each of them.
MEMBER_INPUT = (IMAGE_SIZE, IMAGE_SIZE, 1)


@dataclass
class Members:
    """Loaded, checked members: their names, files, models and cards, in the ensemble's order."""

    names: list[str]
    paths: list[Path]
    models: list[Any]  # keras.Model
    cards: list[ModelCard]

    def describe(self) -> str:
        """One line for the notebook: each member and its size."""
        return "members: " + ", ".join(f"{model.name} ({model.count_params():,} parameters)" for model in self.models)

    def weights_source(self, head_source: str) -> str:
        """The ensemble card's provenance: where the head's weights and each member's came from."""
        return f"{head_source}; members: " + "; ".join(
            f"{name}: {card.weights_source}" for name, card in zip(self.names, self.cards))

    def predicted_classes(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Each member's predicted class per face, to set beside the ensemble's (compare.fixes_and_breaks)."""
        from .evaluation import predict_proba

        return {name: predict_proba(model, images).argmax(axis=1) for name, model in zip(self.names, self.models)}


def find_members(names: Sequence[str], models_dir: str | os.PathLike) -> list[Path]:
    """The members' model files in ``models_dir``, each with its card; fails naming every one missing.

    Cheap (no model is loaded), so the notebook calls it first and a missing member fails at once.
    """
    models_dir = resolve_path(models_dir)
    paths = [models_dir / f"{name}.keras" for name in names]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"train the members first (notebooks 01-04, or the plan that trains them); missing: {missing}")
    no_card = [str(card_path(p)) for p in paths if not card_path(p).is_file()]
    if no_card:
        raise FileNotFoundError(f"members without a model card (their class names are unknown); missing: {no_card}")
    return paths


def load_members(paths: Sequence[str | os.PathLike], class_names: Sequence[str]) -> Members:
    """Load the members and check each: its card describes its file, it knows this run's classes and takes faces."""
    paths = [Path(p) for p in paths]
    models, cards = [], []
    for path in paths:
        model, card = load_model(path), read_model_card(path)
        verify_card(path, card, model)
        check_class_names(path.stem, card, class_names)
        check_input(path.stem, model)
        models.append(model)
        cards.append(card)
    return Members([p.stem for p in paths], paths, models, cards)


def check_class_names(name: str, card: ModelCard | dict[str, Any], class_names: Sequence[str]) -> None:
    """A member trained on other classes would vote for the wrong emotions."""
    card_classes = ModelCard.of(card).class_names
    if card_classes is None or tuple(card_classes) != tuple(class_names):
        raise ValueError(f"{name} was trained on classes {card_classes}, this run uses {list(class_names)}")


def check_input(name: str, model: Any) -> None:
    """Every member gets the same raw 48x48 grey face; the backbones resize it inside themselves."""
    shape = tuple(model.input_shape[1:])
    if shape != MEMBER_INPUT:
        raise ValueError(f"{name} takes input of shape {shape}, not the {MEMBER_INPUT} faces the ensemble feeds its members")
