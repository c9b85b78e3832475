"""One training function for every model: compile, fit with the usual callbacks, resume.

A run writes into its own work folder: a Keras ``CSVLogger`` history and a
``BackupAndRestore`` checkpoint, so a killed run started again with the same folder
resumes from its last finished epoch instead of from scratch.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import keras
import tensorflow as tf
from sklearn.metrics import accuracy_score
from tqdm.auto import tqdm

from .data import Split, balanced_class_weights
from .models import ENSEMBLE_COMBINES
from .pipeline import make_dataset

OPTIMIZERS = ("adam", "rmsprop", "sgd", "adamw")
LR_SCHEDULES = ("plateau", "cosine")


@dataclass
class TrainConfig:
    """Everything about a training run that is not the model or the data."""

    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.9  # sgd only
    nesterov: bool = True  # sgd only
    weight_decay: float = 0.0  # adamw only
    label_smoothing: float = 0.0
    class_weights: bool = False
    early_stopping_patience: int | None = 5
    reduce_lr_patience: int | None = 3
    reduce_lr_factor: float = 0.5
    min_learning_rate: float = 1e-6
    # "plateau": ReduceLROnPlateau on `monitor`; "cosine": decay to 1 % of learning_rate over `epochs`
    # (no plateau reductions, whose noisy PublicTest readings can cut the rate too early)
    lr_schedule: str = "plateau"
    monitor: str = "val_accuracy"
    seed: int = 42
    mixed_precision: bool = False  # bfloat16 compute; worth it on CPUs with AVX512_BF16 and on GPUs
    jit_compile: bool | str = "auto"  # XLA: Keras's "auto" turns it on; on a 2-core CPU it can be slower
    time_limit_minutes: float | None = None  # stop before an epoch that would end past this wall time
    verbose: int = 2

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got '{self.optimizer}'")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got '{self.lr_schedule}'")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be positive, got {self.epochs} and {self.batch_size}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.time_limit_minutes is not None and not self.time_limit_minutes > 0:
            raise ValueError(f"time_limit_minutes must be positive or None, got {self.time_limit_minutes}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    model: keras.Model
    history: pd.DataFrame
    duration_s: float
    epochs_run: int
    best_epoch: int | None
    resumed: bool
    log_csv: Path
    notes: list[str] = field(default_factory=list)
    weights_epoch: int | None = None  # the epoch whose weights the model holds: the best one, or the last

    def summary(self) -> dict[str, Any]:
        """The training facts a model card records."""
        best = None
        if self.best_epoch is not None and not self.history.empty:
            row = self.history.iloc[self.best_epoch - 1]
            best = {k: float(v) for k, v in row.items() if k != "epoch"}
        return {
            "duration_s": round(self.duration_s, 1),
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "weights_from_epoch": self.weights_epoch,
            "best_epoch_metrics": best,
            "resumed": self.resumed,
            "notes": self.notes,
        }


def make_optimizer(config: TrainConfig, decay_steps: int | None = None) -> keras.optimizers.Optimizer:
    """The configured optimizer; with the cosine schedule it needs the run's length in steps."""
    learning_rate = config.learning_rate
    if config.lr_schedule == "cosine":
        if not decay_steps:
            raise ValueError("the cosine schedule needs decay_steps (batches per epoch x epochs)")
        learning_rate = keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps, alpha=0.01)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=config.weight_decay)
    if config.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate)
    return keras.optimizers.SGD(learning_rate, momentum=config.momentum, nesterov=config.nesterov)


def compile_model(model: keras.Model, config: TrainConfig, decay_steps: int | None = None) -> keras.Model:
    """Sparse cross-entropy, or categorical with label smoothing (which needs one-hot labels)."""
    if config.label_smoothing:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
    model.compile(optimizer=make_optimizer(config, decay_steps), loss=loss, metrics=["accuracy"],
                  jit_compile=config.jit_compile)
    return model


def distribution_strategy() -> tf.distribute.Strategy:
    """Mirror across GPUs when there are several; the default strategy otherwise."""
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


@contextlib.contextmanager
def precision_policy(mixed: bool):
    """Build layers under ``mixed_bfloat16`` for the block, then restore the old policy."""
    previous = keras.mixed_precision.global_policy()
    if mixed:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def train_model(
    model: keras.Model | Callable[[], keras.Model],
    train: Split,
    val: Split,
    config: TrainConfig,
    work_dir: str | os.PathLike,
    *,
    augmentation: keras.layers.Layer | None = None,
    extra_callbacks: list[keras.callbacks.Callback] | None = None,
) -> TrainResult:
    """Fit ``model`` (or build it from a factory, inside the distribution scope) on a split.

    Uses EarlyStopping on ``config.monitor`` restoring the best weights, ReduceLROnPlateau (or a
    cosine decay over the whole run), CSVLogger and BackupAndRestore; class weights and label
    smoothing are options.
    Calling it again with the same ``work_dir`` after a crash resumes the run.
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    strategy = distribution_strategy()
    decay_steps = math.ceil(len(train) / config.batch_size) * config.epochs
    with strategy.scope():
        if callable(model) and not isinstance(model, keras.Model):
            with precision_policy(config.mixed_precision):
                model = model()
        compile_model(model, config, decay_steps)
    num_classes = int(model.output.shape[-1])
    _check_labels(train, num_classes, "train")
    _check_labels(val, num_classes, "val")

    one_hot = num_classes if config.label_smoothing else None
    train_data = make_dataset(
        train.images, train.labels, config.batch_size, training=True,
        augmentation=augmentation, num_classes=one_hot, seed=config.seed,
    )
    val_data = make_dataset(val.images, val.labels, config.batch_size, num_classes=one_hot)
    class_weight = balanced_class_weights(train.labels, num_classes) if config.class_weights else None

    backup_dir = work_dir / "backup"
    resumed = backup_dir.exists() and any(backup_dir.iterdir())
    log_csv = work_dir / "history.csv"
    callbacks = [
        keras.callbacks.BackupAndRestore(str(backup_dir), delete_checkpoint=True),
        keras.callbacks.CSVLogger(str(log_csv), append=resumed),
    ]
    if config.reduce_lr_patience and config.lr_schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor=config.monitor, factor=config.reduce_lr_factor, patience=config.reduce_lr_patience,
            min_lr=config.min_learning_rate, verbose=1 if config.verbose else 0,
        ))
    if config.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=config.monitor, patience=config.early_stopping_patience, restore_best_weights=True,
            verbose=1 if config.verbose else 0,
        ))
    time_limit = None
    if config.time_limit_minutes:
        time_limit = TimeLimit(config.time_limit_minutes * 60)
        callbacks.append(time_limit)
    callbacks.extend(extra_callbacks or [])

    started = time.perf_counter()
    keras_history = model.fit(
        train_data, validation_data=val_data, epochs=config.epochs, class_weight=class_weight,
        callbacks=callbacks, verbose=config.verbose,
    )
    duration = time.perf_counter() - started
    history = pd.read_csv(log_csv) if log_csv.exists() else pd.DataFrame(keras_history.history)
    best_epoch = _best_epoch(history, config.monitor)
    notes = []
    if resumed:
        notes.append(f"resumed from the backup in {backup_dir}; duration counts only the resumed part")
    if time_limit is not None and time_limit.stopped_epoch is not None:
        notes.append(f"stopped after epoch {time_limit.stopped_epoch} by the {config.time_limit_minutes:g}-minute time limit")
    shutil.rmtree(backup_dir, ignore_errors=True)
    # EarlyStopping restores the best epoch's weights; without it the model keeps the last epoch's
    weights_epoch = best_epoch if config.early_stopping_patience else len(history)
    return TrainResult(model, history, duration, len(history), best_epoch, resumed, log_csv, notes, weights_epoch)


class TimeLimit(keras.callbacks.Callback):
    """Stop training before an epoch that would end past a wall-clock budget.

    Runs here must fit a session; the next epoch is assumed to take as long as the slowest so far.
    """

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.stopped_epoch: int | None = None
        self._started = 0.0
        self._epoch_started = 0.0
        self._slowest = 0.0

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        now = time.perf_counter()
        self._slowest = max(self._slowest, now - self._epoch_started)
        if now - self._started + self._slowest > self.seconds:
            self.stopped_epoch = epoch + 1
            self.model.stop_training = True
            print(f"Epoch {epoch + 1}: time limit of {self.seconds / 60:g} min reached; stopping")


def _best_epoch(history: pd.DataFrame, monitor: str) -> int | None:
    if history.empty or monitor not in history:
        return None
    values = history[monitor].to_numpy()
    index = int(np.nanargmin(values) if "loss" in monitor else np.nanargmax(values))
    return index + 1


def _check_labels(split: Split, num_classes: int, name: str) -> None:
    if len(split) == 0:
        raise ValueError(f"the {name} split is empty")
    if split.labels.min() < 0 or split.labels.max() >= num_classes:
        raise ValueError(
            f"{name} labels run from {split.labels.min()} to {split.labels.max()} but the model has "
            f"{num_classes} outputs; build the model with num_classes={split.labels.max() + 1}?"
        )


ENSEMBLE_CHOICES = (*ENSEMBLE_COMBINES, "auto")


@dataclass
class EnsembleFit:
    """The assembled ensemble, which head it got, and the PublicTest readings that decided it."""

    model: keras.Model
    combine: str  # the head it got: "learned" or "mean"
    val_accuracy: dict[str, float]  # accuracy on the selection split of each head considered
    training: TrainResult | None  # the learned head's run; None where only the mean was considered
    duration_s: float  # members' forward passes included: they cost more than the head

    @property
    def history(self) -> pd.DataFrame | None:
        return None if self.training is None else self.training.history

    @property
    def head_source(self) -> str:
        """Where the head's weights come from, for the model card."""
        if self.combine == "mean":
            return "mean of the members' probabilities (no weights)"
        return "head trained here on the members' outputs"

    def summary(self) -> dict[str, Any]:
        """The training facts a model card records, with the choice of head."""
        if self.training is not None:
            facts = self.training.summary()
        else:
            facts = {"epochs_run": 0, "best_epoch": None, "weights_from_epoch": None,
                     "best_epoch_metrics": None, "resumed": False, "notes": []}
        readings = ", ".join(f"{name} {accuracy:.4f}" for name, accuracy in self.val_accuracy.items())
        return {
            **facts,
            "duration_s": round(self.duration_s, 1),
            "combine": self.combine,
            "val_accuracy_by_combine": {name: round(value, 4) for name, value in self.val_accuracy.items()},
            "notes": [*facts["notes"], f"head: {self.combine} (selection-split accuracy: {readings})"],
        }


def fit_ensemble(
    members: list[keras.Model],
    train: Split,
    val: Split,
    config: TrainConfig,
    work_dir: str | os.PathLike,
    combine: str = "learned",
) -> EnsembleFit:
    """Put a head on frozen members: the reference study's trained Dense softmax ("learned"),
    the mean of their probabilities ("mean"), or whichever of the two reads higher on ``val``
    ("auto"; a tie goes to the mean, which has nothing to overfit).

    Only the head learns and the ensemble uses no augmentation, so the head trains on the
    members' probabilities computed once per face instead of once per epoch. The mean needs
    no training faces at all, which skips the members' pass over the training split.
    """
    from .evaluation import predict_proba
    from .models import build_ensemble, build_ensemble_head

    if combine not in ENSEMBLE_CHOICES:
        raise ValueError(f"combine must be one of {', '.join(ENSEMBLE_CHOICES)}, got '{combine}'")
    start = time.monotonic()

    def features(split: Split, name: str) -> Split:
        probabilities = [
            predict_proba(member, split.images, batch_size=config.batch_size * 4)
            for member in tqdm(members, desc=f"members on {name} ({len(split):,} faces)", unit="model",
                               disable=not config.verbose)
        ]
        return Split(np.concatenate(probabilities, axis=1), split.labels)

    num_classes = int(members[0].output.shape[-1])
    val_features = features(val, "val")
    heads: dict[str, keras.Model] = {}
    training = None
    if combine in ("learned", "auto"):
        build = lambda: build_ensemble_head(len(members), num_classes)  # noqa: E731
        training = train_model(build, features(train, "train"), val_features, config, work_dir)
        heads["learned"] = training.model
    if combine in ("mean", "auto"):
        heads["mean"] = build_ensemble_head(len(members), num_classes, combine="mean")
    accuracy = {
        name: float(accuracy_score(val.labels, np.asarray(head(val_features.images, training=False)).argmax(axis=1)))
        for name, head in heads.items()
    }
    chosen = max(heads, key=lambda name: (accuracy[name], name == "mean"))
    ensemble = build_ensemble(members, head=heads[chosen])
    return EnsembleFit(ensemble, chosen, accuracy, training, time.monotonic() - start)
