"""What the notebooks share around a training run: paths, model cards, predictions, results.

A notebook trains and evaluates with :mod:`fer_utils.training` and
:mod:`fer_utils.evaluation`; this module turns the outcome into files other notebooks,
the batch runner and the demo read: ``<name>.keras`` + ``<name>.json`` (the model card),
``<name>_predictions.npz`` and figures under a reports folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import models
from .names import DISPLAY_NAMES
from .data import FerDataset, load_dataset
from .files import atomic_write, file_sha256
from .model_io import describe_weights, library_versions, load_model, machine_description, now_iso, read_model_card

#: The batch runner sets this to the file where a notebook records its key result.
RESULT_FILE_ENV = "FER_LAB_RESULT_FILE"

def display_name(name: str, kind: str) -> str:
    """A second model of a kind (another seed or width) must not look like the first in tables."""
    if name in DISPLAY_NAMES:
        return DISPLAY_NAMES[name]
    return f"{DISPLAY_NAMES[kind]} ({name})" if kind in DISPLAY_NAMES else name


def project_root() -> Path:
    """The checkout holding ``notebooks/``; notebooks and plans give paths relative to it."""
    candidate = Path(__file__).resolve().parents[1]
    return candidate if (candidate / "notebooks").is_dir() else Path.cwd()


def resolve_path(path: str | os.PathLike) -> Path:
    """Absolute paths stay; relative ones are taken from the project root, not the cwd."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_root() / path


def resolve_data_path(data_path: str | os.PathLike | None) -> Path:
    """An explicit data path, or ``FER2013_CSV`` when none is given."""
    value = str(data_path or "") or os.environ.get("FER2013_CSV", "")
    if not value:
        raise ValueError(
            "No FER2013 data given: set the notebook's data_path parameter or the FER2013_CSV "
            "environment variable to fer2013.csv(.gz) or an image-folder root."
        )
    return resolve_path(value)


def load_data(
    data_path: str | os.PathLike | None,
    class_set: int | str = 7,
    limit: int | None = None,
    seed: int = 42,
    ferplus_csv: str | os.PathLike | None = None,
) -> FerDataset:
    """Load, subsample for quick runs (``limit`` images per split, 0 = all) and report."""
    dataset = load_dataset(
        resolve_data_path(data_path), class_set, seed=seed,
        ferplus_csv=resolve_path(ferplus_csv) if ferplus_csv else None,
    )
    dataset = dataset.subsample(limit or None, seed)
    print(dataset.summary())
    return dataset


def model_card(
    name: str,
    kind: str,
    *,
    dataset: FerDataset,
    parameters: dict[str, Any],
    weights: str | None,
    metrics: dict[str, Any],
    training: dict[str, Any] | None = None,
    notes: list[str] | None = None,
) -> dict[str, Any]:
    """The JSON record beside a model: recipe, data, metrics, time, versions, provenance."""
    return {
        "name": name,
        "kind": kind,
        "display_name": display_name(name, kind),
        "class_names": list(dataset.class_names),
        "input": "batch of 48x48x1 grayscale faces, raw 0-255 values (float32)",
        "weights_source": describe_weights(weights),
        "parameters": parameters,
        "data": {
            "source": Path(dataset.source).name,
            "sha256": dataset.checksum,
            "split_sizes": dataset.split_sizes(),
            "dropped": dataset.dropped,
            "notes": dataset.notes,
        },
        "metrics": metrics,
        "training": training or {},
        "machine": machine_description(),
        "versions": library_versions(),
        "created": now_iso(),
        "notes": notes or [],
    }


@dataclass
class StartingPoint:
    """Where a training run starts: a new model, or a saved one that it keeps training.

    Continuing lets a schedule that needs more than one session's time be run in stages (the
    later stages with a lower learning rate). The saved model's file and card are read when this
    is made, before the run writes over them, so the new card can say what it built on.
    """

    init_model: str | os.PathLike | None = None
    lineage: dict[str, Any] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not self.init_model:
            self.init_model = None
            return
        path = resolve_path(self.init_model)
        if not path.is_file():
            raise FileNotFoundError(f"init_model '{self.init_model}' does not exist; train that model first, or set init_model = \"\"")
        card = read_model_card(path, missing_ok=True) or {}
        if "ensemble" in card:
            raise ValueError(f"init_model '{self.init_model}' is an ensemble; continue its members instead")
        training = card.get("training", {})
        epochs, seconds = training_totals(training)
        self.init_model = path
        self.lineage = {
            "file": path.name,
            "sha256": file_sha256(path),
            "weights_source": card.get("weights_source", "unknown (no model card)"),
            "epochs": epochs,
            "duration_s": seconds,
            "val_accuracy": card.get("metrics", {}).get("val", {}).get("plain", {}).get("accuracy"),
            "stages": training.get("stages", []) + [_stage(card)],
        }

    def factory(self, build: Callable[[], Any], image_size: int | None = None) -> Callable[[], Any]:
        """What ``train_model`` builds the model with: ``build`` for a new one, else a load.

        Where the saved model resizes faces to another size than ``image_size``, its weights go
        into the model ``build`` makes (progressive resizing: a later stage at a larger input, for
        the backbones whose layers do not depend on it).
        """
        if self.init_model is None:
            return build
        path = self.init_model

        def load():
            model = load_model(path)
            if image_size is None or models.input_size(model) == image_size:
                return model
            return models.transfer_weights(model, build())

        return load

    def training_record(self, result) -> dict[str, Any]:
        """``result.summary()``, plus the earlier stages and the totals over all of them."""
        record = result.summary()
        if self.lineage is None:
            return record
        record["continued_from"] = {k: v for k, v in self.lineage.items() if k != "stages"}
        record["stages"] = self.lineage["stages"]
        record["total_epochs"] = (self.lineage["epochs"] or 0) + record["epochs_run"]
        record["total_duration_s"] = round((self.lineage["duration_s"] or 0) + record["duration_s"], 1)
        return record


def training_totals(training: dict[str, Any]) -> tuple[Any, Any]:
    """Epochs and seconds over every stage of a card's training record (one stage if not continued)."""
    return (training.get("total_epochs", training.get("epochs_run")),
            training.get("total_duration_s", training.get("duration_s")))


def _stage(card: dict[str, Any]) -> dict[str, Any]:
    """One earlier stage of a continued run, as its card told it."""
    training = card.get("training", {})
    return {
        "epochs_run": training.get("epochs_run"),
        "duration_s": training.get("duration_s"),
        "training": card.get("parameters", {}).get("training", {}),
        "model": card.get("parameters", {}).get("model", {}),
        "created": card.get("created"),
    }


def save_predictions(
    path: str | os.PathLike,
    proba: np.ndarray,
    proba_tta: np.ndarray | None,
    class_names: tuple[str, ...] | list[str],
    split: str = "test",
) -> Path:
    """Test-set probabilities, so comparison notebooks need not run every model again.

    The labels are not stored: they are part of FER2013, which must not be redistributed with
    the shipped models; notebooks take them from the data.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"proba": np.asarray(proba, np.float32), "class_names": np.asarray(class_names), "split": np.asarray(split)}
    if proba_tta is not None:
        arrays["proba_tta"] = np.asarray(proba_tta, np.float32)
    with atomic_write(path, suffix=".npz") as partial:
        np.savez_compressed(partial, **arrays)
    return path


def load_predictions(path: str | os.PathLike) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as stored:
        return {key: stored[key] for key in stored.files}


def predictions_path(output_dir: str | os.PathLike, name: str) -> Path:
    return Path(output_dir) / f"{name}_predictions.npz"


def record_result(key_metric: str, value: float | None, outputs: list[str | os.PathLike] | None = None, **extra) -> dict:
    """Tell the batch runner (if any) this notebook's key metric and the files it wrote."""
    result = {"key_metric": key_metric, "value": value, "outputs": [str(p) for p in outputs or []], **extra}
    target = os.environ.get(RESULT_FILE_ENV)
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(json.dumps(result, indent=2, default=str))
    print(f"{key_metric}: {value}")
    return result
