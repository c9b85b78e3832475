"""One training function for every model: compile, fit with the usual callbacks, resume.

A run writes into its own work folder: a Keras ``CSVLogger`` history and a
``BackupAndRestore`` checkpoint, so a killed run started again with the same folder
resumes from its last finished epoch instead of from scratch.

Distributed training: :func:`make_strategy` turns the notebooks' ``distribute`` parameter
into a ``tf.distribute`` strategy (several GPUs of one machine, or several machines through
``TF_CONFIG``), ``train_model`` builds and compiles the model inside its scope, and
:func:`save_on_chief` writes the model only on the chief. See docs/distributed_training.md.
"""

from __future__ import annotations

import contextlib
import json
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
#: The notebooks' ``distribute`` parameter: see :func:`make_strategy`.
DISTRIBUTE_CHOICES = ("auto", "mirrored", "multi_worker", "none")


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
    # Polyak averaging: with a momentum in (0, 1) the optimizer keeps an exponential moving average of
    # the weights (Keras's use_ema), validation reads the averaged weights and the model ends with
    # them; 0 trains as usual. Averaging the last epochs of a run at a steady learning rate usually
    # generalises better than its last weights (Izmailov et al., 2018, "Averaging Weights Leads to
    # Wider Optima"); it needs no early stopping, which would restore un-averaged weights.
    ema_momentum: float = 0.0
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
        if not 0 <= self.ema_momentum < 1:
            raise ValueError(f"ema_momentum must be in [0, 1) (0: no weight averaging), got {self.ema_momentum}")
        if self.ema_momentum and self.early_stopping_patience:
            raise ValueError("ema_momentum needs early_stopping_patience 0: early stopping would restore the "
                             "un-averaged weights of its best epoch")

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
    distribution: dict[str, Any] | None = None  # the strategy and replicas; None without distribution

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
            **({"distribution": self.distribution} if self.distribution else {}),
        }


def make_optimizer(config: TrainConfig, decay_steps: int | None = None) -> keras.optimizers.Optimizer:
    """The configured optimizer; with the cosine schedule it needs the run's length in steps."""
    learning_rate = config.learning_rate
    if config.lr_schedule == "cosine":
        if not decay_steps:
            raise ValueError("the cosine schedule needs decay_steps (batches per epoch x epochs)")
        learning_rate = keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps, alpha=0.01)
    averaging = {"use_ema": True, "ema_momentum": config.ema_momentum} if config.ema_momentum else {}
    if config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate, **averaging)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=config.weight_decay, **averaging)
    if config.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate, **averaging)
    return keras.optimizers.SGD(learning_rate, momentum=config.momentum, nesterov=config.nesterov, **averaging)


def compile_model(
    model: keras.Model, config: TrainConfig, decay_steps: int | None = None, *, soft_targets: bool = False
) -> keras.Model:
    """Sparse cross-entropy, or categorical with label smoothing or soft (distillation) targets,
    which both need target vectors."""
    if config.label_smoothing or soft_targets:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
    model.compile(optimizer=make_optimizer(config, decay_steps), loss=loss, metrics=["accuracy"],
                  jit_compile=config.jit_compile)
    return model


_MULTI_WORKER: dict[str, tf.distribute.Strategy] = {}  # one per process and TF_CONFIG: TF allows no second


def make_strategy(distribute: str = "auto") -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy the notebooks' ``distribute`` parameter names.

    * ``"auto"``: ``"multi_worker"`` when ``TF_CONFIG`` is set, else ``MirroredStrategy`` when more
      than one GPU is visible, else the default strategy (one device; what a CPU run gets).
    * ``"mirrored"``: ``MirroredStrategy`` over this machine's GPUs, or over its logical CPU
      devices where it has none (one replica per device, gradients summed every step).
    * ``"multi_worker"``: ``MultiWorkerMirroredStrategy`` over the machines ``TF_CONFIG`` lists
      (each machine runs the same command with its own ``task.index``; index 0 is the chief).
    * ``"none"``: the default strategy, whatever the machine.

    A multi-worker strategy must be made before TensorFlow runs anything in the process (the
    notebooks make it first thing in their setup cell); it is made once and handed out again.
    """
    if distribute not in DISTRIBUTE_CHOICES:
        raise ValueError(f"distribute must be one of {', '.join(DISTRIBUTE_CHOICES)}, got {distribute!r}")
    tf_config = os.environ.get("TF_CONFIG", "").strip()
    if distribute == "auto":
        if tf_config:
            distribute = "multi_worker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            return tf.distribute.MirroredStrategy()
        else:
            return tf.distribute.get_strategy()
    if distribute == "none":
        return tf.distribute.get_strategy()
    if distribute == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    if not tf_config:
        raise ValueError("distribute='multi_worker' needs TF_CONFIG, e.g. "
                         '{"cluster": {"worker": ["host0:12345", "host1:12345"]}, "task": {"type": "worker", "index": 0}} '
                         "on the first machine, index 1 on the second (docs/distributed_training.md)")
    if tf_config not in _MULTI_WORKER:
        _check_tf_config(tf_config)
        try:
            _MULTI_WORKER[tf_config] = tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as error:
            if "startup" not in str(error):
                raise
            raise RuntimeError(
                "MultiWorkerMirroredStrategy must be made before TensorFlow runs anything in this process: "
                "call make_strategy('multi_worker') first (the notebooks do so at the top of their setup cell)"
            ) from error
    return _MULTI_WORKER[tf_config]


def distribution_strategy() -> tf.distribute.Strategy:
    """Mirror across GPUs when there are several; the default strategy otherwise (``make_strategy("auto")``)."""
    return make_strategy("auto")


def _check_tf_config(text: str) -> None:
    """A one-line error for a TF_CONFIG that TensorFlow would misread or silently ignore."""
    try:
        value = json.loads(text)
    except ValueError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}): {text[:200]}") from None
    cluster = value.get("cluster") if isinstance(value, dict) else None
    task = value.get("task") if isinstance(value, dict) else None
    if not isinstance(cluster, dict) or not any(isinstance(cluster.get(job), list) and cluster[job]
                                                for job in ("worker", "chief")):
        raise ValueError(f"TF_CONFIG needs a cluster with a 'worker' (and optionally 'chief') list of host:port, got {text[:200]}")
    if not isinstance(task, dict) or task.get("type") not in ("worker", "chief") or not isinstance(task.get("index"), int):
        raise ValueError(f"TF_CONFIG needs a task such as {{\"type\": \"worker\", \"index\": 0}}, got {text[:200]}")
    hosts = cluster.get(task["type"]) or []
    if not 0 <= task["index"] < len(hosts):
        raise ValueError(f"TF_CONFIG task index {task['index']} is not in its cluster's {len(hosts)} {task['type']}(s)")


def is_multi_worker(strategy: tf.distribute.Strategy | None) -> bool:
    """Whether ``strategy`` spans more than one process (machine)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    return bool(strategy.cluster_resolver.cluster_spec().as_dict())


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """True unless this process is a non-chief worker of a multi-worker run (it must not write results)."""
    if not is_multi_worker(strategy):
        return True
    return bool(strategy.extended.should_checkpoint)


def worker_path(path: str | os.PathLike, strategy: tf.distribute.Strategy | None = None) -> Path:
    """Where this process writes ``path``: ``path`` itself on the chief and without distribution;
    on another worker the same name in a temporary folder beside it (``.worker-<index>/``), which
    the worker deletes after writing: the standard Keras multi-worker saving pattern."""
    path = Path(path)
    return path if is_chief(strategy) else path.parent / _worker_folder(strategy) / path.name


def _worker_folder(strategy: tf.distribute.Strategy) -> str:
    resolver = strategy.cluster_resolver
    return f".{resolver.task_type}-{resolver.task_id}"


def save_on_chief(
    model: keras.Model,
    path: str | os.PathLike,
    card: dict[str, Any] | None = None,
    *,
    strategy: tf.distribute.Strategy | None = None,
    weights_dtype: str = "float32",
    member_paths: list[str | os.PathLike] | None = None,
) -> Path:
    """``model_io.save_model`` (``save_ensemble`` with ``member_paths``) on the chief only.

    Every worker of a multi-worker run calls it; the others save into their temporary
    :func:`worker_path` and delete it, so one model results. Returns where the chief saves it.
    """
    from .model_io import save_ensemble, save_model

    target = worker_path(path, strategy)
    if member_paths is not None:
        saved = save_ensemble(model, target, member_paths, card)
    else:
        saved = save_model(model, target, card, weights_dtype=weights_dtype)
    if target != Path(path):
        shutil.rmtree(target.parent, ignore_errors=True)
        return Path(path).with_name(saved.name)
    return saved


def _describe_strategy(strategy: tf.distribute.Strategy, batch_size: int) -> dict[str, Any] | None:
    """What a model card records of the distribution; None for the default strategy (a plain run)."""
    if not tf.distribute.has_strategy() and strategy is tf.distribute.get_strategy():
        return None
    replicas = int(strategy.num_replicas_in_sync)
    name = "MultiWorkerMirroredStrategy" if is_multi_worker(strategy) else type(strategy).__name__
    facts = {"strategy": name, "replicas": replicas, "global_batch_size": batch_size,
             "per_replica_batch_size": batch_size / replicas}
    if is_multi_worker(strategy):
        cluster = strategy.cluster_resolver.cluster_spec().as_dict()
        facts["workers"] = sum(len(cluster.get(job, [])) for job in ("chief", "worker"))
    return facts


@contextlib.contextmanager
def _multi_worker_fit(model: keras.Model, strategy: tf.distribute.Strategy, train_data: tf.data.Dataset):
    """Let Keras 3's ``fit`` run under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585).

    Two of its steps fail there. Before the first batch, ``fit`` (and each validation pass)
    averages a distributed batch across the workers only to learn its shapes, and that reduce
    fails on the (faces, labels) pair ("Attempt to convert a value (PerReplica...)"); so the
    model, loss, metrics and optimizer are built here, in the scope, from one local batch, and
    that step is skipped. After every step it averages each replica's metrics with
    ``strategy.reduce("MEAN", value, axis=0)``, which fails on scalars ("Invalid reduction
    dimension 0 for input with 0 dimensions"); so the steps hand their metrics over as
    one-element vectors, which that reduce turns back into the cross-replica mean.
    """
    if not is_multi_worker(strategy):
        yield
        return
    with strategy.scope():
        model._symbolic_build(data_batch=next(iter(train_data)))
    train_step, test_step = model.train_step, model.test_step
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    model.train_step = lambda data: _as_vectors(train_step(data))
    model.test_step = lambda data: _as_vectors(test_step(data))
    try:
        yield
    finally:
        for name in ("_maybe_symbolic_build", "train_step", "test_step"):
            model.__dict__.pop(name, None)


def _as_vectors(logs: dict[str, Any]) -> dict[str, Any]:
    return {name: tf.reshape(value, [1]) for name, value in logs.items()}


def _local_copy(model: keras.Model) -> keras.Model:
    """The trained model outside the strategy: one worker's ``predict`` must not shard its faces
    across the other machines, nor wait for them."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


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
    strategy: tf.distribute.Strategy | None = None,
    train_targets: np.ndarray | None = None,
) -> TrainResult:
    """Fit ``model`` (or build it from a factory, inside the distribution scope) on a split.

    Uses EarlyStopping on ``config.monitor`` restoring the best weights, ReduceLROnPlateau (or a
    cosine decay over the whole run), CSVLogger and BackupAndRestore; class weights, label
    smoothing and weight averaging (``config.ema_momentum``, validated on the averaged weights) are options.
    Calling it again with the same ``work_dir`` after a crash resumes the run.

    ``strategy`` (from :func:`make_strategy`; default ``make_strategy("auto")``) is where the
    factory builds and compiles the model; ``config.batch_size`` is the global batch, split over
    its replicas. A model that is passed in ready-made must have been built in that scope. In a
    multi-worker run a non-chief worker keeps its log and backup in ``work_dir/.worker-<index>``
    and every worker gets back a single-device copy of the trained model to evaluate and save.

    ``train_targets`` (N, classes), when given, replaces ``train.labels`` as what the model
    fits: the soft targets of :mod:`fer_utils.distill`. Selection on ``val`` still uses its labels.
    """
    if strategy is None:
        strategy = make_strategy("auto")  # first: a multi-worker strategy must precede every other TF call
    work_dir = Path(work_dir)
    if not is_chief(strategy):
        work_dir = work_dir / _worker_folder(strategy)  # its own log and backup, also on a shared disk
    work_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    decay_steps = math.ceil(len(train) / config.batch_size) * config.epochs
    with strategy.scope():
        if callable(model) and not isinstance(model, keras.Model):
            with precision_policy(config.mixed_precision):
                model = model()
        compile_model(model, config, decay_steps, soft_targets=train_targets is not None)
    num_classes = int(model.output.shape[-1])
    _check_labels(train, num_classes, "train")
    _check_labels(val, num_classes, "val")
    if train_targets is not None and np.shape(train_targets) != (len(train), num_classes):
        raise ValueError(f"train_targets must be shaped ({len(train)}, {num_classes}), got {np.shape(train_targets)}")

    one_hot = num_classes if config.label_smoothing or train_targets is not None else None
    train_data = make_dataset(
        train.images, train.labels if train_targets is None else train_targets, config.batch_size, training=True,
        augmentation=augmentation, num_classes=one_hot, seed=config.seed,
    )
    val_data = make_dataset(val.images, val.labels, config.batch_size, num_classes=one_hot)
    if is_multi_worker(strategy):
        # Every worker holds all the faces; each trains on its share (from_tensor_slices has no files to split).
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        train_data, val_data = train_data.with_options(options), val_data.with_options(options)
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
    if config.ema_momentum:  # validation reads the averaged weights; fit ends by assigning them to the model
        callbacks.append(keras.callbacks.SwapEMAWeights())
    time_limit = None
    if config.time_limit_minutes:
        time_limit = TimeLimit(config.time_limit_minutes * 60, strategy=strategy)
        callbacks.append(time_limit)
    callbacks.extend(extra_callbacks or [])

    started = time.perf_counter()
    with _multi_worker_fit(model, strategy, train_data):
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
    distribution = _describe_strategy(strategy, config.batch_size)
    if is_multi_worker(strategy):
        model = _local_copy(model)
    return TrainResult(model, history, duration, len(history), best_epoch, resumed, log_csv, notes, weights_epoch,
                       distribution)


class TimeLimit(keras.callbacks.Callback):
    """Stop training before an epoch that would end past a wall-clock budget.

    Runs here must fit a session; the next epoch is assumed to take as long as the slowest so far.
    In a multi-worker run the workers stop together, when any of them would overrun (one that
    stopped alone would leave the others waiting for it forever).
    """

    def __init__(self, seconds: float, strategy: tf.distribute.Strategy | None = None) -> None:
        super().__init__()
        self.seconds = seconds
        self.strategy = strategy
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
        if self._agreed(now - self._started + self._slowest > self.seconds):
            self.stopped_epoch = epoch + 1
            self.model.stop_training = True
            print(f"Epoch {epoch + 1}: time limit of {self.seconds / 60:g} min reached; stopping")

    def _agreed(self, stop: bool) -> bool:
        if not is_multi_worker(self.strategy):
            return stop
        strategy = self.strategy
        votes = strategy.run(lambda: tf.constant(1.0 if stop else 0.0))
        return bool(strategy.reduce(tf.distribute.ReduceOp.SUM, votes, axis=None).numpy() > 0)  # any worker


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
    *,
    strategy: tf.distribute.Strategy | None = None,
) -> EnsembleFit:
    """Put a head on frozen members: the reference study's trained Dense softmax ("learned"),
    the mean of their probabilities ("mean"), or whichever of the two reads higher on ``val``
    ("auto"; a tie goes to the mean, which has nothing to overfit). The learned head trains under
    ``strategy`` (see :func:`train_model`).

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
        training = train_model(build, features(train, "train"), val_features, config, work_dir, strategy=strategy)
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
