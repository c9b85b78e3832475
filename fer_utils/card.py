"""A trained model's card, the JSON record beside ``<name>.keras``, read and written in one place.

Every module that needs a fact from a card (serving, the demo's About panel, the results tables,
conversion, calibration, continued training) asks a :class:`ModelCard` for it, so each figure is
parsed and formatted once and two tables cannot disagree. A card keeps every key it was read with,
known or not, in its order: reading and writing one changes nothing but what was set.

File sizes are decimal megabytes everywhere (1 MB = 1,000,000 bytes): the README, ``python -m
fer_utils.compare`` and the demo show the same figure in the same unit.

``python -m fer_utils.card readme`` rewrites the README's results table from the cards (its
``ms / face`` cells are measured by ``python -m fer_utils.compare``, not recorded in cards, so they
are kept as the table has them); ``--check`` exits 1 when the table differs from the cards.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Sequence

from .files import atomic_write
from .names import MODEL_NAMES

__all__ = [
    "CARD_COLUMNS", "CARD_SUFFIX", "Headline", "ModelCard", "RESULT_COLUMNS", "card_path", "headline_metrics",
    "megabytes", "percent", "read_cards", "readme_table", "replace_results_table", "results_cell", "results_line",
    "results_markdown", "results_table_text", "table_cell", "table_latencies",
]

CARD_SUFFIX = ".json"
BYTES_PER_MB = 1_000_000  # decimal megabytes, in every table and panel
README_START = "<!-- results-table:start -->"
README_END = "<!-- results-table:end -->"
#: The results table's columns and their headers; ``latency_ms`` is measured on a machine, not in cards.
RESULT_COLUMNS = {
    "accuracy": "PrivateTest acc.", "macro_f1": "macro-F1", "accuracy_tta": "acc. (flip TTA)",
    "macro_f1_tta": "macro-F1 (TTA)", "parameters": "parameters", "size_mb": "file MB",
    "latency_ms": "ms / face", "training_min": "training min",
}
#: The columns whose figures come from the cards alone.
CARD_COLUMNS = tuple(column for column in RESULT_COLUMNS if column != "latency_ms")


def card_path(path: str | os.PathLike) -> Path:
    """Where a model's card lives: beside it, same name, ``.json`` (a card's own path stays as it is)."""
    return Path(path).with_suffix(CARD_SUFFIX)


def megabytes(size_bytes: int) -> float:
    """Decimal MB (1,000,000 bytes), one decimal, two below 1 MB: the ensemble's head-only file must not read as 0."""
    size = size_bytes / BYTES_PER_MB
    return round(size, 1 if size >= 1 else 2)


def percent(fraction: float) -> str:
    """An accuracy as every table shows it: percent, one decimal, no sign (``0.6634`` -> ``"66.3"``)."""
    return f"{100 * fraction:.1f}"


def headline_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Accuracy and macro-F1 per split and mode of an evaluation's metrics: what tables and cards compare."""
    return {split: {mode: {key: values[key] for key in ("accuracy", "macro_f1")} for mode, values in modes.items()}
            for split, modes in metrics.items()}


def table_cell(text: Any) -> str:
    """Markdown-table-safe text: no pipes or newlines."""
    return " ".join(str(text).replace("|", "/").split())


@dataclass(frozen=True)
class Headline:
    """A split's accuracy and macro-F1, plain and with flip TTA (None where the card has no figure)."""

    accuracy: float | None = None
    macro_f1: float | None = None
    accuracy_tta: float | None = None
    macro_f1_tta: float | None = None


@dataclass(repr=False)
class ModelCard(Mapping):
    """A model card: typed fields for the keys the project writes, ``extra`` for any other key.

    ``None`` means "the card does not have this key" (an older card lacks ``calibration``,
    ``storage``, ``weights_dtype``...); the methods give the defaults. Keys keep the order they
    were read or first set in, as a dict's would. The card is also a read-only mapping of its
    JSON form, for notebooks written against the dict cards; code in ``fer_utils`` uses the
    attributes and methods.
    """

    name: str | None = None
    kind: str | None = None
    display_name: str | None = None
    class_names: list[str] | None = None
    input: str | None = None
    weights_source: str | None = None
    parameters: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    machine: dict[str, Any] | None = None
    versions: dict[str, str] | None = None
    created: str | None = None
    notes: list[str] | None = None
    ensemble: dict[str, Any] | None = None
    file: str | None = None
    file_size_bytes: int | None = None
    file_sha256: str | None = None
    weights_dtype: str | None = None
    parameters_total: int | None = None
    saved_at: str | None = None
    storage: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys this class does not know, kept as read
    card_file: Path | None = field(default=None, compare=False)  # where it was read from

    # ------------------------------------------------------------------ reading and writing
    def __post_init__(self) -> None:
        object.__setattr__(self, "_order", [key for key in CARD_KEYS if getattr(self, key) is not None] + list(self.extra))

    def __setattr__(self, key: str, value: Any) -> None:
        """A key set for the first time goes last, as in a dict, so a rewritten card moves no other key."""
        object.__setattr__(self, key, value)
        order = self.__dict__.get("_order")
        if order is not None and key in _KEY_SET and value is not None and key not in order:
            order.append(key)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], card_file: str | os.PathLike | None = None) -> ModelCard:
        """A card from its JSON object; unknown keys go to ``extra``, and the key order is kept."""
        card = cls(**{key: value for key, value in values.items() if key in _KEY_SET},
                   extra={key: value for key, value in values.items() if key not in _KEY_SET},
                   card_file=Path(card_file) if card_file is not None else None)
        object.__setattr__(card, "_order", list(values))
        return card

    @classmethod
    def of(cls, card: ModelCard | Mapping[str, Any] | None) -> ModelCard:
        """The card itself, or one made from a dict card (``None``: an empty card, as for a model without one)."""
        return card if isinstance(card, ModelCard) else cls.from_dict(card or {})

    @classmethod
    def read(cls, path: str | os.PathLike) -> ModelCard:
        """Read the card of a model (``x.keras``) or the card file itself; a broken card says what is wrong."""
        target = card_path(path)
        if not target.is_file():
            raise FileNotFoundError(f"no model card at '{target}'")
        try:
            with open(target) as stream:
                values = json.load(stream)
        except json.JSONDecodeError as error:
            raise ValueError(f"its card {target.name} is not valid JSON ({error.msg} at line {error.lineno}, "
                             f"column {error.colno}); fix the card or delete it") from None
        except UnicodeDecodeError:
            raise ValueError(f"its card {target.name} is not a text file; fix the card or delete it") from None
        if not isinstance(values, dict):
            raise ValueError(f"its card {target.name} holds a JSON {type(values).__name__}, not an object; "
                             "fix the card or delete it")
        return cls.from_dict(values, target)

    @classmethod
    def read_if_present(cls, path: str | os.PathLike) -> ModelCard | None:
        """The card beside a model, or None when it has none (a broken card still raises)."""
        return cls.read(path) if card_path(path).is_file() else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, keys in their order (nested blocks are shared, not copied)."""
        return {key: getattr(self, key) if key in _KEY_SET else self.extra[key] for key in self._keys()}

    def to_json(self) -> str:
        """The card file's text: what :meth:`write` writes."""
        return json.dumps(self.to_dict(), indent=2, default=_jsonable) + "\n"

    def write(self, path: str | os.PathLike) -> Path:
        """Write the card atomically beside a model (``x.keras`` -> ``x.json``), or to a ``.json`` path."""
        target = card_path(path)
        with atomic_write(target) as partial:
            partial.write_text(self.to_json())
        return target

    def copy(self) -> ModelCard:
        """A card a writer may change without changing this one (nested blocks shared, as ``dict(card)``)."""
        return ModelCard.from_dict(self.to_dict(), self.card_file)

    def _keys(self) -> list[str]:
        keys = [key for key in self._order if key in _KEY_SET or key in self.extra]
        return keys + [key for key in self.extra if key not in keys]

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    def __repr__(self) -> str:
        return f"ModelCard(name={self.name!r}, kind={self.kind!r}, file={self.file!r})"

    # ------------------------------------------------------------------ which model
    @property
    def model_name(self) -> str:
        """Its ``name``, else its card file's name (an early card may lack the key)."""
        if isinstance(self.name, str) and self.name:
            return self.name
        return self.card_file.stem if self.card_file else ""

    def label(self, default: str | None = None) -> str:
        """How people see it: ``display_name``, else ``default``, else its name."""
        if isinstance(self.display_name, str) and self.display_name.strip():
            return self.display_name
        return default if default is not None else self.model_name

    @property
    def file_name(self) -> str:
        """The model file it describes: its ``file``, else the ``.keras`` beside the card."""
        if isinstance(self.file, str) and self.file:
            return self.file
        return f"{self.card_file.stem if self.card_file else self.model_name}.keras"

    @property
    def is_ensemble(self) -> bool:
        return "ensemble" in self._keys()

    def fitting_class_names(self, num_classes: int) -> tuple[str, ...] | None:
        """Its class names when they fit a model with ``num_classes`` outputs, else None."""
        names = self.class_names
        if isinstance(names, (list, tuple)) and len(names) == num_classes and all(isinstance(n, str) for n in names):
            return tuple(names)
        return None

    @property
    def class_set(self) -> int:
        """The class set it was trained on (its data parameters, else the number of its class names)."""
        recorded = _dig(self.parameters, "data", "class_set")
        if recorded:
            return int(recorded)
        if isinstance(self.class_names, list) and self.class_names:
            return len(self.class_names)
        raise ValueError(f"the card of {self.model_name or 'this model'} records neither its class set nor its class names")

    @property
    def ferplus_csv(self) -> str | None:
        """The FER+ votes file its labels came from (notebook parameter ``ferplus_csv``), else None."""
        value = _dig(self.parameters, "data", "ferplus_csv")
        return value if isinstance(value, str) and value else None

    @property
    def split_seed(self) -> int:
        """The seed its data was split with (a FER+ model's validation slice of Training depends on it)."""
        for keys in (("data", "seed"), ("training", "seed")):
            value = _dig(self.parameters, *keys)
            if isinstance(value, int):
                return value
        return 42

    @property
    def data_sha256(self) -> str | None:
        """The checksum of the data its figures were measured on."""
        value = _dig(self.data, "sha256")
        return value if isinstance(value, str) and value else None

    # ------------------------------------------------------------------ figures
    def metric(self, split: str, mode: str, name: str) -> float | None:
        """One figure, e.g. ``("test", "tta", "accuracy")``; None where the card does not record it.

        A split without ``plain``/``tta`` blocks (the earliest layout) holds the plain figures itself.
        """
        block = _dig(self.metrics, split)
        if not isinstance(block, dict):
            return None
        values = block.get(mode)
        if mode == "plain" and not isinstance(block.get("plain"), dict):
            values = block
        value = values.get(name) if isinstance(values, dict) else None
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def split_metrics(self, split: str = "test", mode: str = "plain") -> dict[str, Any]:
        """Every figure of one split and mode (confusion matrix, per-class, ...): what the comparison
        figures draw; empty where the card does not record them."""
        block = _dig(self.metrics, split)
        if not isinstance(block, dict):
            return {}
        values = block.get(mode) if isinstance(block.get(mode), dict) else (block if mode == "plain" else None)
        return dict(values) if isinstance(values, dict) else {}

    def headline(self, split: str = "test") -> Headline:
        """Accuracy and macro-F1 of a split, plain and with flip TTA."""
        return Headline(*(self.metric(split, mode, name) for mode in ("plain", "tta") for name in ("accuracy", "macro_f1")))

    def headline_metrics(self) -> dict[str, Any]:
        """Accuracy and macro-F1 per split and mode: what a re-measured card keeps of its earlier figures."""
        return headline_metrics(self.metrics or {})

    @property
    def measured_with_tta(self) -> bool:
        return isinstance(_dig(self.metrics, "test"), dict) and "tta" in self.metrics["test"]

    def record_remeasure(self, metrics: dict[str, Any], storage: dict[str, Any], note: str) -> None:
        """New figures replace the card's; the earlier headline ones stay under ``storage["before"]["metrics"]``."""
        storage["before"]["metrics"] = self.headline_metrics()
        self.metrics = metrics
        self.storage = storage
        self.notes = [*(self.notes or []), note]

    # ------------------------------------------------------------------ size
    @property
    def size_mb(self) -> float | None:
        """The model file's size in decimal MB (see :func:`megabytes`); None where not recorded."""
        size = self.file_size_bytes
        return megabytes(size) if isinstance(size, int) and not isinstance(size, bool) else None

    def size_text(self) -> str:
        """``"97.1 MB"``: the figure every table shows, with its unit (empty where not recorded)."""
        return f"{_number(self.size_mb)} MB" if self.size_mb is not None else ""

    # ------------------------------------------------------------------ training and lineage
    def training_totals(self) -> tuple[Any, Any]:
        """Epochs and seconds over every stage of its training (one stage if it was not continued)."""
        training = self.training if isinstance(self.training, dict) else {}
        return (training.get("total_epochs", training.get("epochs_run")),
                training.get("total_duration_s", training.get("duration_s")))

    @property
    def training_minutes(self) -> float:
        """Minutes over every stage, one decimal (0 where not recorded): the results tables' column."""
        return round((self.training_totals()[1] or 0) / 60, 1)

    @property
    def stages(self) -> list[dict[str, Any]]:
        """The earlier stages a continued model built on (empty for a model trained in one go)."""
        stages = _dig(self.training, "stages")
        return stages if isinstance(stages, list) else []

    def as_stage(self) -> dict[str, Any]:
        """This card's run as one earlier stage of a run that continues it."""
        training = self.training if isinstance(self.training, dict) else {}
        parameters = self.parameters if isinstance(self.parameters, dict) else {}
        return {
            "epochs_run": training.get("epochs_run"),
            "duration_s": training.get("duration_s"),
            "training": parameters.get("training", {}),
            "model": parameters.get("model", {}),
            "created": self.created,
        }

    def lineage(self) -> dict[str, Any]:
        """What a run that continues this model records of it: start, totals, PublicTest accuracy, stages."""
        epochs, seconds = self.training_totals()
        return {
            "weights_source": self.weights_source if "weights_source" in self._keys() else "unknown (no model card)",
            "epochs": epochs,
            "duration_s": seconds,
            "val_accuracy": self.metric("val", "plain", "accuracy"),
            "stages": [*self.stages, self.as_stage()],
        }

    def recipe(self) -> dict[str, Any]:
        """Its parameters flattened: model, then training, then the top-level ones (which win)."""
        parameters = self.parameters if isinstance(self.parameters, dict) else {}
        nested = [parameters.get(key) for key in ("model", "training")]
        return {**{k: v for block in nested if isinstance(block, dict) for k, v in block.items()}, **parameters}

    # ------------------------------------------------------------------ provenance
    @property
    def stored_weights_dtype(self) -> str:
        """How the file stores its weights; cards from before half precision are float32."""
        return self.weights_dtype if isinstance(self.weights_dtype, str) and self.weights_dtype else "float32"

    @property
    def converted_from_sha256(self) -> str | None:
        """The file this one was converted from (``storage.before``), if it was."""
        return _dig(self.storage, "before", "file_sha256")

    def provenance(self) -> dict[str, Any]:
        """Where the weights came from and what made them: weights source and dtype, data, versions, machine."""
        return {
            "weights_source": self.weights_source if isinstance(self.weights_source, str) else None,
            "weights_dtype": self.stored_weights_dtype,
            "data_sha256": self.data_sha256,
            "versions": dict(self.versions) if isinstance(self.versions, dict) else {},
            "machine": dict(self.machine) if isinstance(self.machine, dict) else {},
        }

    # ------------------------------------------------------------------ ensemble
    @property
    def ensemble_members(self) -> list[str]:
        """The member files an ensemble's card names, relative to it."""
        members = _dig(self.ensemble, "members")
        return list(members) if isinstance(members, list) else []

    @property
    def member_sha256(self) -> list[str | None] | None:
        """The checksums of the member files the ensemble's head was trained on."""
        digests = _dig(self.ensemble, "member_sha256")
        return list(digests) if isinstance(digests, list) and digests else None

    @property
    def ensemble_combine(self) -> str | None:
        return _dig(self.ensemble, "combine")

    def record_member_sha256(self, digests: Sequence[str]) -> None:
        """The ensemble now runs these member files (after they were re-stored)."""
        self.ensemble = {**(self.ensemble or {}), "member_sha256": list(digests)}

    # ------------------------------------------------------------------ calibration
    @property
    def temperature(self) -> float:
        """The temperature its calibration block records (fitted on PublicTest), else 1."""
        return self.temperature_for(mirrored=False)

    def temperature_for(self, mirrored: bool = False) -> float:
        """The temperature for plain answers, or for answers averaged with the mirror image (flip TTA,
        softer, so they get their own ``T``; an older card without one falls back to the plain ``T``)."""
        block = self.calibration if isinstance(self.calibration, dict) else {}
        if block.get("method") != "temperature":
            return 1.0
        source = block.get("mirrored") if mirrored and isinstance(block.get("mirrored"), dict) else block
        value = source.get("temperature")
        return float(value) if isinstance(value, (int, float)) and value > 0 else 1.0

    def calibration_ece(self, mirrored: bool = False) -> tuple[float | None, float | None]:
        """PrivateTest ECE before and after the temperature (None where not calibrated), of plain or mirrored answers."""
        block = self.calibration if isinstance(self.calibration, dict) else {}
        if mirrored:
            block = block.get("mirrored") if isinstance(block.get("mirrored"), dict) else {}
        values = [block.get(key) for key in ("test_ece_before", "test_ece_after")]
        before, after = (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None for v in values)
        return before, after

    # ------------------------------------------------------------------ table rows
    def results_row(self, split: str = "test") -> dict[str, Any]:
        """The results table's figures (compare's DataFrame, the README): accuracy, F1, size, training."""
        headline = self.headline(split)
        return {
            "accuracy": headline.accuracy,
            "macro_f1": headline.macro_f1,
            "accuracy_tta": headline.accuracy_tta,
            "macro_f1_tta": headline.macro_f1_tta,
            "parameters": self.parameters_total,
            "size_mb": self.size_mb if self.size_mb is not None else megabytes(0),
            "training_min": self.training_minutes,
            "weights": self.weights_source if self.weights_source is not None else "",
        }

    def readme_row(self, latency_ms: float | None = None) -> str:
        """This model's line of the README's results table (with ``ms / face`` when a latency is given)."""
        columns = RESULT_COLUMNS if latency_ms is not None else CARD_COLUMNS
        return results_line(self.label(), {**self.results_row(), "latency_ms": latency_ms}, columns)

    def about_row(self, display_name: str, members: Sequence[str] | None = None) -> str:
        """This model's line of the demo's About panel; ``members``: an ensemble's members' names."""
        cells = (display_name, self._about_metric("accuracy"), self._about_metric("macro_f1"),
                 self._weights_text(members), self._training_text(), self._size_summary(), self._calibration_text())
        return "| " + " | ".join(table_cell(cell) for cell in cells) + " |"

    def _about_metric(self, name: str) -> str:
        plain, tta = self.metric("test", "plain", name), self.metric("test", "tta", name)
        if plain is None:
            return "not evaluated"
        return f"{percent(plain)}%" + (f" ({percent(tta)}% with TTA)" if tta is not None else "")

    def _weights_text(self, members: Sequence[str] | None) -> str:
        if members is not None:
            names = ", ".join(members)
            if self.ensemble_combine == "mean":
                return f"the mean of the probabilities of {names} (members frozen; no weights of its own)"
            return f"a trained head on the probabilities of {names} (members frozen)"
        source = self.weights_source
        return source if isinstance(source, str) and source else "not recorded"

    def _training_text(self) -> str:
        if self.ensemble_combine == "mean":
            compared = isinstance(_dig(self.training, "val_accuracy_by_combine"), dict) and \
                "learned" in self.training["val_accuracy_by_combine"]
            return "nothing to train: the mean of its members" + (
                ", kept over a trained head for its higher PublicTest accuracy" if compared else "")
        parts = []
        epochs, duration = self.training_totals()
        if isinstance(epochs, int):
            parts.append(f"{epochs} epochs")
        if isinstance(duration, (int, float)):
            parts.append(f"{duration / 60:.0f} min" if duration >= 60 else f"{duration:.0f} s")
        if self.stages:
            parts.append(f"in {len(self.stages) + 1} stages")
        recipe = self.recipe()
        for key in ("image_size", "trainable", "optimizer", "learning_rate", "lr_schedule", "batch_size"):
            value = recipe.get(key)
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                parts.append(f"{key.replace('_', ' ')} {value}")
        return ", ".join(parts) if parts else "not recorded"

    def _size_summary(self) -> str:
        parts = []
        params = self.parameters_total
        if isinstance(params, int):
            parts.append(f"{params / 1e6:.1f} M params" if params >= 100_000 else f"{params:,} params")
        if self.size_mb is not None:
            parts.append(self.size_text())
        if self.weights_dtype == "float16":
            parts.append("weights stored as float16")
        return ", ".join(parts)

    def _calibration_text(self) -> str:
        before, after = self.calibration_ece()
        if self.temperature == 1.0 or before is None or after is None:
            return "as the model gives them (not calibrated)"
        text = f"calibrated, T = {self.temperature:.2f}: ECE {before:.3f} -> {after:.3f}"
        mirrored_before, mirrored_after = self.calibration_ece(mirrored=True)
        if mirrored_before is None or mirrored_after is None:
            return text
        return (text + f"; photos (face and mirror averaged), T = {self.temperature_for(mirrored=True):.2f}: "
                       f"ECE {mirrored_before:.3f} -> {mirrored_after:.3f}")


CARD_KEYS = tuple(f.name for f in fields(ModelCard) if f.name not in ("extra", "card_file"))
_KEY_SET = frozenset(CARD_KEYS)


# ---------------------------------------------------------------------- tables of many cards
def read_cards(models_dir: str | os.PathLike) -> dict[str, ModelCard]:
    """Every card beside a ``.keras`` file in a folder, by model name, in the study's order of kinds."""
    cards = {}
    for card_file in sorted(Path(models_dir).glob(f"*{CARD_SUFFIX}")):
        if card_file.with_suffix(".keras").is_file():
            card = ModelCard.read(card_file)
            cards[card.model_name] = card
    order = {kind: i for i, kind in enumerate(MODEL_NAMES)}
    return dict(sorted(cards.items(), key=lambda item: (order.get(str(item[1].kind), 99), item[0])))


def results_cell(column: str, value: Any) -> str:
    """One results-table cell: accuracies in percent, F1 to three places, sizes in decimal MB."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if column in ("accuracy", "accuracy_tta"):
        return f"{percent(value)} %"
    if column in ("macro_f1", "macro_f1_tta"):
        return f"{value:.3f}"
    if column == "parameters":
        return f"{int(value):,}"
    return _number(value)


def results_line(model: str, row: Mapping[str, Any], columns: Sequence[str]) -> str:
    """One model's Markdown line of the results table."""
    return f"| {model} | " + " | ".join(results_cell(column, row.get(column)) for column in columns) + " |"


def results_markdown(rows: Sequence[tuple[str, Mapping[str, Any]]], columns: Sequence[str] = CARD_COLUMNS) -> str:
    """The results table in Markdown: a header, then one :func:`results_line` per ``(model, row)``."""
    lines = ["| model | " + " | ".join(RESULT_COLUMNS[column] for column in columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    return "\n".join(lines + [results_line(model, row, columns) for model, row in rows])


def readme_table(cards: Mapping[str, ModelCard], latency_ms: Mapping[str, float] | None = None) -> str:
    """The README's results table: each card's figures, and ``ms / face`` where ``latency_ms`` has the model's."""
    latency_ms = latency_ms or {}
    columns = RESULT_COLUMNS if latency_ms else CARD_COLUMNS
    return results_markdown([(card.label(), {**card.results_row(), "latency_ms": latency_ms.get(card.label())})
                             for card in cards.values()], tuple(columns))


def results_table_text(text: str) -> str:
    """What stands between the results-table markers of a README."""
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"it has no {README_START} ... {README_END} markers around the results table")
    return text[start + len(README_START): end]


def table_latencies(table: str) -> dict[str, float]:
    """The ``ms / face`` figure of each model in a results table (measured, so the table is their record)."""
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in table.splitlines() if line.strip().startswith("|")]
    if not rows or RESULT_COLUMNS["latency_ms"] not in rows[0]:
        return {}
    column = rows[0].index(RESULT_COLUMNS["latency_ms"])
    latencies = {}
    for cells in rows[1:]:
        try:
            latencies[cells[0]] = float(cells[column])
        except (IndexError, ValueError):  # the |---| line, or no figure for that model
            continue
    return latencies


def replace_results_table(text: str, cards: Mapping[str, ModelCard]) -> str:
    """``text`` with the table between its results-table markers written from ``cards`` (latencies kept)."""
    table = readme_table(cards, table_latencies(results_table_text(text)))
    start, end = text.find(README_START), text.find(README_END)
    return f"{text[: start + len(README_START)]}\n{table}\n{text[end:]}"


# ---------------------------------------------------------------------- command line
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer_utils.card", description="Model cards.")
    commands = parser.add_subparsers(dest="command", required=True)
    readme = commands.add_parser("readme", help="rewrite the README's results table from the model cards")
    readme.add_argument("--models-dir", default="saved_models")
    readme.add_argument("--readme", default="README.md")
    readme.add_argument("--check", action="store_true", help="change nothing; exit 1 if the table differs from the cards")
    args = parser.parse_args(argv)
    cards = read_cards(args.models_dir)
    if not cards:
        print(f"no models with model cards in {args.models_dir}", file=sys.stderr)
        return 2
    path = Path(args.readme)
    try:
        text = path.read_text(encoding="utf-8")
        updated = replace_results_table(text, cards)
    except (OSError, ValueError) as error:
        print(f"{path}: {error}", file=sys.stderr)
        return 2
    if updated == text:
        print(f"{path}: the results table matches the {len(cards)} cards in {args.models_dir}")
        return 0
    if args.check:
        print(f"{path}: the results table differs from the cards in {args.models_dir}; "
              "run python -m fer_utils.card readme", file=sys.stderr)
        return 1
    with atomic_write(path) as partial:
        partial.write_text(updated, encoding="utf-8")
    print(f"{path}: results table rewritten from the {len(cards)} cards in {args.models_dir}")
    return 0


# ---------------------------------------------------------------------- helpers
def _dig(block: Any, *keys: str) -> Any:
    """A nested value, or None where a level is missing or not a mapping."""
    for key in keys:
        if not isinstance(block, dict):
            return None
        block = block.get(key)
    return block


def _number(value: float) -> str:
    return f"{value:g}"


def _jsonable(value: Any) -> Any:
    """numpy scalars and arrays, paths and sets in cards become plain JSON."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (Path, os.PathLike)):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


if __name__ == "__main__":
    raise SystemExit(main())
