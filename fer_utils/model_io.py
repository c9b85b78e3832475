"""Saving and loading models with their JSON model cards (:mod:`fer_utils.card`), atomically.

A model file is written next to its final name and renamed into place, so a crash or a
full disk never leaves a half-written model where a loader would find it. An ensemble
file holds only its trained head; its card names the member files it is assembled from
on load, so members' weights are never stored twice. A model's weights can be stored at half
precision (``weights_dtype="float16"``): half the file, loaded back into float32 layers.
"""

from __future__ import annotations

import datetime as _dt
import io
import os
import platform
import zipfile
from pathlib import Path
from typing import Any, Mapping

import h5py
import keras
import numpy as np

from .card import CARD_SUFFIX, ModelCard, card_path  # noqa: F401 (CARD_SUFFIX, card_path: re-exported)
from .files import atomic_write, file_sha256
from .models import build_ensemble, ensemble_combine, ensemble_parts

#: How a model file stores its weights: as trained, or rounded to half precision.
WEIGHTS_DTYPES = ("float32", "float16")
_FLOAT16_MAX = float(np.finfo(np.float16).max)


def save_model(
    model: keras.Model,
    path: str | os.PathLike,
    card: ModelCard | Mapping[str, Any] | None = None,
    *,
    weights_dtype: str = "float32",
) -> Path:
    """Save ``model`` (``.keras``) atomically, and its card beside it when given.

    The optimizer's state is left out: Adam keeps two more copies of every weight, which would
    triple the files we ship, and nothing resumes training from a shipped model (interrupted
    runs resume from ``train_model``'s backup instead). ``weights_dtype="float16"`` stores the
    weights at half precision, half the file; measure the model after ``round_weights`` so the
    card's figures are those of what is stored.
    """
    path = _keras_path(path)
    _check_weights_dtype(weights_dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, suffix=".keras") as partial:
        _without_optimizer(model).save(partial)
        if weights_dtype == "float16":
            _store_weights_as_float16(partial)
    if card is not None:
        write_model_card(path, _with_file_facts(card, model, path, weights_dtype))
    return path


def round_weights(model: keras.Model, weights_dtype: str) -> keras.Model:
    """Round the float32 weights, in place, to what a ``weights_dtype`` file holds.

    Evaluating the model afterwards measures exactly what ``save_model(..., weights_dtype=...)``
    writes and ``load_model`` reads back.
    """
    _check_weights_dtype(weights_dtype)
    if weights_dtype == "float16":
        for variable in model.weights:
            value = keras.ops.convert_to_numpy(variable)
            if value.dtype == np.float32:
                variable.assign(_as_float16(value, variable.path).astype(np.float32))
    return model


def stored_weights_dtypes(path: str | os.PathLike) -> set[str]:
    """The dtypes of the floating-point weights a ``.keras`` file holds."""
    with zipfile.ZipFile(path) as archive, h5py.File(io.BytesIO(archive.read("model.weights.h5"))) as weights:
        found: set[str] = set()
        weights.visititems(lambda _, item: found.add(str(item.dtype))
                           if isinstance(item, h5py.Dataset) and item.dtype.kind == "f" else None)
    return found


def _check_weights_dtype(weights_dtype: str) -> None:
    if weights_dtype not in WEIGHTS_DTYPES:
        raise ValueError(f"weights_dtype must be one of {', '.join(WEIGHTS_DTYPES)}; got {weights_dtype!r}")


def _as_float16(value: np.ndarray, name: str) -> np.ndarray:
    """Half precision, refusing values it cannot hold rather than storing infinities."""
    largest = float(np.max(np.abs(value), initial=0.0))
    if not np.isfinite(largest) or largest > _FLOAT16_MAX:
        raise ValueError(
            f"weight '{name}' holds {largest:g}, beyond float16's range (+-{_FLOAT16_MAX:g}); "
            "save this model with weights_dtype='float32'"
        )
    return value.astype(np.float16)


def _store_weights_as_float16(keras_file: Path) -> None:
    """Rewrite the file's float32 weight datasets as float16; Keras casts them back to the layers' dtype on load."""
    with zipfile.ZipFile(keras_file) as archive:
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(keras_file, "w") as archive:
        for info, content in entries:
            archive.writestr(info, _float16_h5(content) if info.filename.endswith(".weights.h5") else content)


def _float16_h5(content: bytes) -> bytes:
    buffer = io.BytesIO()
    with h5py.File(io.BytesIO(content), "r") as source, h5py.File(buffer, "w") as target:
        target.attrs.update(source.attrs)

        def copy(name: str, item: h5py.Group | h5py.Dataset) -> None:
            if isinstance(item, h5py.Group):
                target.require_group(name).attrs.update(item.attrs)
                return
            value = item[()]
            if getattr(value, "dtype", None) == np.float32:
                value = _as_float16(np.asarray(value), name)
            target.create_dataset(name, data=value).attrs.update(item.attrs)

        source.visititems(copy)
    return buffer.getvalue()


def _without_optimizer(model: keras.Model) -> keras.Model:
    """The same layers (shared, not copied) in a model that was never compiled."""
    if getattr(model, "optimizer", None) is None:
        return model
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    outputs = model.outputs[0] if len(model.outputs) == 1 else model.outputs
    return keras.Model(inputs, outputs, name=model.name)


def save_ensemble(
    ensemble: keras.Model,
    path: str | os.PathLike,
    member_paths: list[str | os.PathLike],
    card: ModelCard | Mapping[str, Any] | None = None,
) -> Path:
    """Save only the ensemble's head; the card lists the member files (relative paths)."""
    path = _keras_path(path)
    members, head = ensemble_parts(ensemble)
    if len(members) != len(member_paths):
        raise ValueError(f"the ensemble has {len(members)} members but {len(member_paths)} member paths were given")
    relative = [os.path.relpath(Path(p).resolve(), path.parent.resolve()) for p in member_paths]
    card = ModelCard.of(card).copy()
    card.ensemble = {
        "members": relative,
        "member_sha256": [file_sha256(p) for p in member_paths],
        "assembly": "load each member file, run them side by side on the same face, concatenate "
        "their probabilities in this order and apply this file's head (fer_utils.model_io.load_model does it)",
        "combine": ensemble_combine(head),
    }
    save_model(head, path)
    write_model_card(path, _with_file_facts(card, ensemble, path))
    return path


def check_archive(path: str | os.PathLike) -> None:
    """A truncated or foreign file is "damaged", not Keras's "File not found" for a file that exists."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path.name} is damaged: it is not a complete .keras archive (truncated, or not a "
                         "Keras model); copy or save it again")


def load_model(path: str | os.PathLike, *, check_members: bool = True) -> keras.Model:
    """Load a model in Keras safe mode; an ensemble is assembled from its members."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at '{path}'")
    model = _load_keras(path)
    card = ModelCard.read_if_present(path)
    if card is None or not card.is_ensemble:
        return model
    members = [load_model(member) for member in ensemble_member_paths(path, card, check=check_members)]
    return assemble_ensemble(model, members, card.model_name or path.stem)


def _load_keras(path: Path) -> keras.Model:
    check_archive(path)
    try:
        return keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as error:  # zip, h5 and config errors all surface here
        raise ValueError(f"'{path.name}' is not a loadable Keras model: {error}") from error


def load_ensemble_head(path: str | os.PathLike) -> keras.Model:
    """An ensemble file's head alone, for callers that already hold its members (the demo)."""
    return _load_keras(Path(path))


def ensemble_member_paths(path: str | os.PathLike, card: ModelCard | Mapping[str, Any], *, check: bool = True) -> list[Path]:
    """The member files an ensemble's card names, each checked: present, not damaged, and (``check``)
    the very file the head was trained on (its sha256). The one place these checks are made."""
    path = Path(path)
    card = ModelCard.of(card)
    member_files = card.ensemble_members
    if not member_files:
        raise ValueError(f"its card {card_path(path).name} does not list the ensemble's members")
    digests = card.member_sha256 or [None] * len(member_files)
    paths = []
    for member_file, digest in zip(member_files, digests):
        member_path = (path.parent / member_file).resolve()
        if not member_path.is_file():
            raise ValueError(f"its member {member_file} is missing")
        try:
            check_archive(member_path)  # a damaged member is named as such, not as "retrained"
        except ValueError as error:
            raise ValueError(f"its member {member_file} could not be loaded: {error}") from None
        if check and digest and file_sha256(member_path) != digest:
            raise ValueError(f"ensemble '{path.name}' was trained on a different '{member_file}' than the one on "
                             "disk; retrain the ensemble after retraining a member")
        paths.append(member_path)
    return paths


def assemble_ensemble(head: keras.Model, members: list[keras.Model], name: str = "ensemble") -> keras.Model:
    """Members + head as one model (sharing the members' weights); the head's shape must fit them."""
    k = {int(member.output_shape[-1]) for member in members}
    if len(k) != 1:
        raise ValueError("its members disagree on the number of classes")
    k = k.pop()
    expected = (None, k * len(members))
    if tuple(head.input_shape) != expected or tuple(head.output_shape) != (None, k):
        raise ValueError(f"its head takes {head.input_shape} and returns {head.output_shape}; "
                         f"expected {expected} -> (None, {k})")
    return build_ensemble(members, head=head, name=name)


def write_model_card(model_path: str | os.PathLike, card: ModelCard | Mapping[str, Any]) -> Path:
    """Write the card JSON atomically beside the model (a dict card is taken as a :class:`ModelCard`)."""
    return ModelCard.of(card).write(model_path)


def read_model_card(model_path: str | os.PathLike, missing_ok: bool = False) -> ModelCard | None:
    """The model's :class:`ModelCard` (``missing_ok``: None when it has none); a broken card says what is wrong."""
    return ModelCard.read_if_present(model_path) if missing_ok else ModelCard.read(model_path)


def verify_card(model_path: str | os.PathLike, card: ModelCard | Mapping[str, Any] | None, model: keras.Model | None = None) -> None:
    """Refuse a card that describes another file: its ``file_sha256`` (and parameter count) must match.

    Copying one model over another leaves the old card beside it; without this check the app
    would show the old model's accuracy, size and parameters for the new weights.
    """
    if not card:
        return
    card = ModelCard.of(card)
    path = Path(model_path)
    recorded = card.file_sha256
    if isinstance(recorded, str) and recorded and file_sha256(path) != recorded:
        raise ValueError(
            f"its card {card_path(path).name} describes another file than {path.name} (sha256 {recorded[:12]}... "
            f"recorded, {file_sha256(path)[:12]}... on disk): restore the matching model or card"
        )
    parameters = card.parameters_total
    if model is not None and not card.is_ensemble and isinstance(parameters, int) and model.count_params() != parameters:
        raise ValueError(
            f"its card {card_path(path).name} records {parameters:,} parameters but {path.name} has "
            f"{model.count_params():,}: restore the matching model or card"
        )


def library_versions() -> dict[str, str]:
    """Versions that decide whether a number reproduces."""
    import numpy
    import sklearn
    import tensorflow

    return {
        "python": platform.python_version(),
        "tensorflow": tensorflow.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "scikit-learn": sklearn.__version__,
    }


def describe_weights(weights: str | os.PathLike | None) -> str:
    """Where a model's initial weights came from, in words for the card and the README."""
    if weights is None or weights in ("None", "none", ""):
        return "random initialisation (weights=None): no ImageNet pretraining"
    if weights == "imagenet":
        return "ImageNet pretrained weights (keras.applications, weights='imagenet')"
    return f"weights file {Path(weights).name} (sha256 {file_sha256(weights)[:16]}...)"


def machine_description() -> dict[str, Any]:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "gpus": [gpu.name for gpu in gpus],
    }


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _with_file_facts(card: ModelCard | Mapping[str, Any], model: keras.Model, path: Path,
                     weights_dtype: str = "float32") -> ModelCard:
    """A copy of the card with the saved file's name, size, checksum, weights dtype and parameter count."""
    card = ModelCard.of(card).copy()
    if "name" not in card:
        card.name = path.stem
    card.file = path.name
    card.file_size_bytes = path.stat().st_size
    card.file_sha256 = file_sha256(path)
    card.weights_dtype = weights_dtype
    card.parameters_total = int(model.count_params())
    if "saved_at" not in card:
        card.saved_at = now_iso()
    if "versions" not in card:
        card.versions = library_versions()
    return card


def _keras_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"model files use the .keras format; got '{path.name}'")
    return path
