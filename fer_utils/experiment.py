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
from .card import ModelCard
from .model_io import describe_weights, library_versions, load_model, machine_description, now_iso

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


FERPLUS_FILE = "fer2013new.csv.gz"


def load_card_data(
    card: ModelCard,
    data_path: str | os.PathLike,
    ferplus_csv: str | os.PathLike | None = None,
) -> FerDataset:
    """The data a card's figures were measured on: its class set and, for a FER+ model, its labels and split.

    A FER+ model's votes file is ``ferplus_csv`` when given, else the one its card names, else
    ``fer2013new.csv.gz`` beside ``data_path``.
    """
    if not card.ferplus_csv:
        return load_dataset(data_path, card.class_set)
    candidates = [Path(ferplus_csv)] if ferplus_csv else [resolve_path(card.ferplus_csv), Path(data_path).with_name(FERPLUS_FILE)]
    found = next((path for path in candidates if path.is_file()), None)
    if found is None:
        raise FileNotFoundError(f"{card.model_name} was trained on FER+ labels, but no FER+ votes file was found "
                                f"(tried {', '.join(str(path) for path in candidates)})")
    return load_dataset(data_path, card.class_set, ferplus_csv=found, seed=card.split_seed)


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
    """The JSON record beside a model: recipe, data, metrics, time, versions, provenance.

    Built as a :class:`~fer_utils.card.ModelCard` and returned as its dict, which a notebook may
    still add to before ``save_model`` (the file facts are added there).
    """
    return ModelCard(
        name=name,
        kind=kind,
        display_name=display_name(name, kind),
        class_names=list(dataset.class_names),
        input="batch of 48x48x1 grayscale faces, raw 0-255 values (float32)",
        weights_source=describe_weights(weights),
        parameters=parameters,
        data={
            "source": Path(dataset.source).name,
            "sha256": dataset.checksum,
            "split_sizes": dataset.split_sizes(),
            "dropped": dataset.dropped,
            "notes": dataset.notes,
        },
        metrics=metrics,
        training=training or {},
        machine=machine_description(),
        versions=library_versions(),
        created=now_iso(),
        notes=notes or [],
    ).to_dict()


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
        card = ModelCard.read_if_present(path) or ModelCard()
        if card.is_ensemble:
            raise ValueError(f"init_model '{self.init_model}' is an ensemble; continue its members instead")
        self.init_model = path
        self.lineage = {"file": path.name, "sha256": file_sha256(path), **card.lineage()}

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
    return ModelCard(training=training).training_totals()


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


# --------------------------------------------------------------------------- the end of a run

#: The figures :func:`finish_run` can draw, in the order it draws them; each is saved as
#: ``<reports_dir>/<model_name>/<name>.png``, the files the notebooks have always written.
STANDARD_FIGURES = (
    "training_curves", "confusion_matrix", "confusion_matrix_normalized", "roc_curves",
    "explanations", "confident_mistakes",
)
#: What the explanations figure shows beside each face.
EXPLANATION_METHODS = ("saliency", "grad_cam", "occlusion")
#: How many of the surest wrong answers the confident-mistakes gallery shows.
CONFIDENT_MISTAKES = 16


@dataclass(repr=False)
class RunRecord:
    """What :func:`finish_run` measured and wrote: the notebook shows it, tests and scripts read it."""

    evaluations: dict[str, Any]  # "val" (PublicTest) and "test" (PrivateTest): evaluation.Evaluation
    model_path: Path
    predictions_path: Path
    reports: Path  # the folder holding this model's figures
    figures: dict[str, Any] = field(default_factory=dict)  # name -> matplotlib Figure, in drawing order
    skipped: dict[str, str] = field(default_factory=dict)  # name -> why that figure was not drawn
    report: Any = None  # per-class precision, recall and F1 on PrivateTest (a DataFrame)
    result: dict[str, Any] = field(default_factory=dict)  # what record_result told the batch runner

    @property
    def card_path(self) -> Path:
        from .model_io import card_path

        return card_path(self.model_path)

    @property
    def test_metrics(self) -> dict[str, Any]:
        """PrivateTest without TTA: the figure tables and the batch summary quote."""
        return self.evaluations["test"].metrics["plain"]

    def figure_path(self, name: str) -> Path:
        return self.reports / f"{name}.png"

    def show(self, *names: str) -> None:
        """Display the named figures (all, when none are named) inline; say why one is missing.

        Shows the saved PNG: a bare ``matplotlib.figure.Figure`` displays as the text
        ``<Figure size ...>`` in a kernel that never drew with pyplot, which papermill's never does.
        """
        from IPython.display import Image, display

        for name in names or tuple(self.figures):
            if name in self.figures:
                display(Image(filename=str(self.figure_path(name))))
            else:
                print(f"{name}: not drawn ({self.skipped.get(name, 'not one of the figures asked for')})")

    def __repr__(self) -> str:  # the default would print every probability and figure
        return (f"RunRecord({self.model_path.name}: PrivateTest accuracy {self.test_metrics['accuracy']:.4f}, "
                f"figures {', '.join(self.figures) or 'none'} in {self.reports})")


def finish_run(
    result: Any,
    data: FerDataset,
    *,
    model_name: str,
    kind: str,
    parameters: dict[str, Any],
    output_dir: str | os.PathLike = "saved_models",
    reports_dir: str | os.PathLike = "reports",
    weights: str | None = None,
    training: dict[str, Any] | None = None,
    strategy: Any = None,
    weights_dtype: str = "float32",
    tta: bool = True,
    explain_faces: int = 6,
    figures: tuple[str, ...] | list[str] = STANDARD_FIGURES,
    member_paths: list[str | os.PathLike] | None = None,
    weights_source: str | None = None,
) -> RunRecord:
    """Everything a training notebook does after ``fit``, the same way for every model.

    ``result`` is what trained the model (``training.train_model``'s ``TrainResult`` or
    ``fit_ensemble``'s ``EnsembleFit``: its ``.model``, ``.history`` and ``.summary()``). The
    weights are rounded to ``weights_dtype`` before anything is measured, so the card's figures
    are those of the saved file. Then: PublicTest and PrivateTest metrics (with flip TTA when
    ``tta``), the ``figures`` under ``<reports_dir>/<model_name>/``, the model and its card
    (``parameters``, ``weights`` and ``training``, default ``result.summary()``, as
    :func:`model_card` takes them; ``weights_source`` replaces what ``weights`` would say), the
    PrivateTest predictions and the key metric for the batch runner. ``member_paths`` saves an
    ensemble's head only (``training.save_on_chief``).
    """
    from .training import save_on_chief

    _check_figure_names(figures)
    output_dir, reports = resolve_path(output_dir), resolve_path(reports_dir) / model_name
    evaluations = evaluate_splits(result.model, data, weights_dtype=weights_dtype, tta=tta)
    drawn, skipped = draw_figures(result.model, result.history, data, evaluations["test"], model_name,
                                  reports, names=figures, explain_faces=explain_faces)
    card = model_card(
        model_name, kind, dataset=data, weights=weights, parameters=parameters,
        metrics={split: evaluation.metrics for split, evaluation in evaluations.items()},
        training=result.summary() if training is None else training,
    )
    if weights_source is not None:
        card = _with_weights_source(card, weights_source)
    model_path = save_on_chief(result.model, output_dir / f"{model_name}.keras", card, strategy=strategy,
                               weights_dtype=weights_dtype, member_paths=member_paths)
    test = evaluations["test"]
    predictions = save_predictions(predictions_path(output_dir, model_name), test.proba, test.proba_tta, data.class_names)
    record = RunRecord(evaluations, model_path, predictions, reports, drawn, skipped,
                       report=_classification_report(data, test))
    record.result = record_result("test_accuracy", record.test_metrics["accuracy"],
                                  [model_path, record.card_path, predictions, reports],
                                  macro_f1=record.test_metrics["macro_f1"])
    return record


def evaluate_splits(model: Any, data: FerDataset, *, weights_dtype: str = "float32", tta: bool = True) -> dict[str, Any]:
    """PublicTest (model selection) and PrivateTest (reported once) metrics of the weights as they will be stored."""
    from .evaluation import evaluate_model
    from .model_io import round_weights

    round_weights(model, weights_dtype)  # measure the weights the saved file will hold
    evaluations = {split: evaluate_model(model, getattr(data, split).images, getattr(data, split).labels,
                                         data.class_names, tta=tta)
                   for split in ("val", "test")}
    print("validation (val):  ", evaluations["val"].summary())  # PublicTest, or a FER+ run's slice of Training
    print("PrivateTest (test):", evaluations["test"].summary())
    return evaluations


def draw_figures(
    model: Any,
    history: Any,
    data: FerDataset,
    test: Any,
    model_name: str,
    reports: str | os.PathLike,
    *,
    names: tuple[str, ...] | list[str] = STANDARD_FIGURES,
    explain_faces: int = 6,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Draw and save the ``names`` of :data:`STANDARD_FIGURES` for a model and its PrivateTest evaluation.

    Returns the figures by name and, for those that could not be drawn (no training history, no
    mistakes, no faces to explain), why not: a run without them is still a run.
    """
    from .plotting import save_figure

    _check_figure_names(names)
    makers = {
        "training_curves": lambda: _training_curves(history),
        "confusion_matrix": lambda: _confusion_matrix(test, data.class_names, model_name, normalize=False),
        "confusion_matrix_normalized": lambda: _confusion_matrix(test, data.class_names, model_name, normalize=True),
        "roc_curves": lambda: _roc_curves(test, data, model_name),
        "explanations": lambda: _explanations(model, data, explain_faces),
        "confident_mistakes": lambda: _confident_mistakes(test, data),
    }
    drawn, skipped = {}, {}
    for name in (name for name in STANDARD_FIGURES if name in names):
        figure = makers[name]()
        if isinstance(figure, str):
            skipped[name] = figure
            print(f"{name}: {figure}")
            continue
        save_figure(figure, Path(reports) / f"{name}.png")
        drawn[name] = figure
    return drawn, skipped


def _check_figure_names(names) -> None:
    unknown = [name for name in names if name not in STANDARD_FIGURES]
    if unknown:
        raise ValueError(f"unknown figure(s) {unknown}; choose from {', '.join(STANDARD_FIGURES)}")


def _training_curves(history) -> Any:
    """Loss and accuracy per epoch; an ensemble that only averages was never trained."""
    from .plotting import plot_training_curves

    if history is None or len(history) == 0:
        return "no training history (nothing was trained)"
    return plot_training_curves(history)


def _confusion_matrix(test, class_names, model_name: str, *, normalize: bool) -> Any:
    from .plotting import plot_confusion_matrix

    title = f"{model_name} on PrivateTest" + (" (row-normalised)" if normalize else "")
    return plot_confusion_matrix(test.metrics["plain"]["confusion_matrix"], class_names, normalize=normalize, title=title)


def _roc_curves(test, data: FerDataset, model_name: str) -> Any:
    from .plotting import plot_roc_curves

    return plot_roc_curves(data.test.labels, test.proba, data.class_names, title=f"{model_name}: one-vs-rest ROC")


def _explanations(model, data: FerDataset, faces: int) -> Any:
    """What the model looks at on the first test faces, by each of :data:`EXPLANATION_METHODS`."""
    from .explain import plot_explanations

    if faces < 1:
        return "explain_faces is 0"
    few = slice(0, faces)
    return plot_explanations(model, data.test.images[few], data.test.labels[few], data.class_names,
                             methods=EXPLANATION_METHODS)


def _confident_mistakes(test, data: FerDataset) -> Any:
    """The test faces the model got wrong with the highest confidence, with true and predicted class."""
    from .evaluation import confident_mistakes, prediction_titles
    from .plotting import plot_image_grid

    mistakes = confident_mistakes(data.test.labels, test.proba, top=CONFIDENT_MISTAKES)
    if not len(mistakes):
        return "no mistakes on the test split"
    return plot_image_grid(data.test.images[mistakes],
                           prediction_titles(data.test.labels, test.proba, mistakes, data.class_names))


def _classification_report(data: FerDataset, test) -> Any:
    from .evaluation import classification_report_frame

    return classification_report_frame(data.test.labels, test.proba, data.class_names)


def _with_weights_source(card, text: str):
    """An ensemble's weights are its head's and its members': ``model_card`` only knows one ``weights``."""
    card["weights_source"] = text
    return card
