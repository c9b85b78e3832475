"""The five models of the reference study, every one taking raw 48x48x1 faces (0-255).

Resizing, gray-to-RGB and each backbone's own input scaling are layers inside the
model, so one preprocessed face feeds every model and a saved file needs no outside
code. Transfer models are flat (the backbone's layers sit directly in ``model.layers``),
which keeps Grad-CAM and layer freezing simple.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import keras
from keras import layers

from .data import IMAGE_SIZE
from .names import MODEL_NAMES  # noqa: F401  (re-exported: the one list lives in names)


class WeightsUnavailableError(RuntimeError):
    """ImageNet weights could not be downloaded (no internet, proxy, firewall)."""


@dataclass(frozen=True)
class Backbone:
    """What differs between the three ImageNet backbones."""

    constructor: Callable[..., keras.Model]
    min_size: int
    default_size: int
    # ``(scale, offset)`` of the backbone's own preprocess_input, as a Rescaling layer.
    scale: float
    offset: float | tuple[float, float, float]
    weights_file: str


BACKBONES: dict[str, Backbone] = {
    # caffe mode: RGB->BGR and ImageNet mean subtraction (BGR order is moot for gray faces).
    "resnet50": Backbone(
        keras.applications.ResNet50, 32, 224, 1.0, (-103.939, -116.779, -123.68),
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    # tf mode: scale to [-1, 1].
    "mobilenetv2": Backbone(
        keras.applications.MobileNetV2, 32, 224, 1 / 127.5, -1.0,
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{size}_no_top.h5",
    ),
    "inceptionv3": Backbone(
        keras.applications.InceptionV3, 75, 299, 1 / 127.5, -1.0,
        "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
}


# ----------------------------------------------------------------------------- scratch CNN


def build_scratch_cnn(
    num_classes: int = 7,
    *,
    filters: Sequence[int] = (32, 64, 128),
    convs_per_stage: int = 1,
    kernel_size: int = 3,
    batch_norm: bool = False,
    dropout: float = 0.4,
    dense_units: Sequence[int] = (256,),
    l2: float = 0.001,
    image_size: int = IMAGE_SIZE,
    name: str = "scratch_cnn",
) -> keras.Model:
    """Conv/MaxPool stages, Dropout, Flatten, L2-regularised Dense, softmax.

    The reference study's CNN is the default; ``filters=(64, 128, 256, 512),
    convs_per_stage=2, batch_norm=True`` gives the VGG-style variant.
    """
    _check_num_classes(num_classes)
    if not filters or convs_per_stage < 1:
        raise ValueError("the scratch CNN needs at least one stage with at least one convolution")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    regularizer = keras.regularizers.L2(l2) if l2 else None
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 1), name="face")
    x = layers.Rescaling(1 / 255.0, name="scale_0_1")(inputs)
    if image_size != IMAGE_SIZE:
        x = layers.Resizing(image_size, image_size, name="resize")(x)
    for stage, width in enumerate(filters, start=1):
        for conv in range(1, convs_per_stage + 1):
            x = layers.Conv2D(
                width, kernel_size, padding="same", use_bias=not batch_norm,
                kernel_regularizer=regularizer, name=f"stage{stage}_conv{conv}",
            )(x)
            if batch_norm:
                x = layers.BatchNormalization(name=f"stage{stage}_bn{conv}")(x)
            x = layers.Activation("relu", name=f"stage{stage}_relu{conv}")(x)
        x = layers.MaxPooling2D(2, name=f"stage{stage}_pool")(x)
        if batch_norm and dropout:
            x = layers.Dropout(dropout / 2, name=f"stage{stage}_dropout")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    for i, units in enumerate(dense_units, start=1):
        x = layers.Dense(units, activation="relu", kernel_regularizer=regularizer, name=f"dense{i}")(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"dense{i}_bn")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"dense{i}_dropout")(x)
    outputs = _softmax(x, num_classes)
    return keras.Model(inputs, outputs, name=name)


# ----------------------------------------------------------------------------- transfer models


def build_transfer_model(
    backbone: str,
    num_classes: int = 7,
    *,
    image_size: int | None = None,
    weights: str | os.PathLike | None = "imagenet",
    trainable: str = "all",
    head: Sequence[str] = (),
    dense_units: int = 256,
    dropout: float = 0.5,
    freeze_batchnorm: bool = True,
    name: str | None = None,
) -> keras.Model:
    """A keras.applications backbone on 48x48x1 faces with a small classification head.

    ``trainable`` says which backbone layers learn: ``"all"``, ``"none"``, ``"last:N"``,
    ``"first:N"`` or ``"after:N"`` (all but the first N). ``head`` lists the layers after
    global average pooling, from ``"dense"``, ``"batchnorm"`` and ``"dropout"``; the
    softmax layer always ends it. With pretrained weights, BatchNorm layers of a
    partly trainable backbone stay frozen (the keras-io fine-tuning recipe).
    """
    _check_num_classes(num_classes)
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone '{backbone}'; choose one of {', '.join(BACKBONES)}")
    spec = BACKBONES[backbone]
    size = image_size or spec.default_size
    if size < spec.min_size:
        raise ValueError(f"{backbone} needs image_size >= {spec.min_size}, got {size}")
    weights = _check_weights(weights)

    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 1), name="face")
    x = inputs
    if size != IMAGE_SIZE:
        x = layers.Resizing(size, size, interpolation="bilinear", name="resize")(x)
    x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
    x = layers.Rescaling(spec.scale, offset=spec.offset, name=f"{backbone}_preprocess")(x)
    preprocessing = 4  # input, resize, gray_to_rgb, preprocess: not backbone layers
    if size == IMAGE_SIZE:
        preprocessing -= 1
    base = _load_backbone(backbone, spec, x, size, weights)
    backbone_layers = base.layers[preprocessing:]
    if weights is None:
        _speed_up_batchnorm_statistics(backbone_layers)
    set_trainable(backbone_layers, trainable, freeze_batchnorm=freeze_batchnorm and weights is not None)

    x = layers.GlobalAveragePooling2D(name="avg_pool")(base.output)
    for i, kind in enumerate(head, start=1):
        if kind == "dense":
            x = layers.Dense(dense_units, activation="relu", name=f"head_dense{i}")(x)
        elif kind == "batchnorm":
            x = layers.BatchNormalization(name=f"head_bn{i}")(x)
        elif kind == "dropout":
            x = layers.Dropout(dropout, name=f"head_dropout{i}")(x)
        else:
            raise ValueError(f"unknown head layer '{kind}'; use dense, batchnorm or dropout")
    outputs = _softmax(x, num_classes)
    return keras.Model(inputs, outputs, name=name or backbone)


def build_resnet50(num_classes: int = 7, **options) -> keras.Model:
    """The study's ResNet50: GAP, Dense, BatchNorm, Dropout, softmax; last 35 layers learn."""
    options = {"image_size": 224, "trainable": "last:35", "head": ("dense", "batchnorm", "dropout"), **options}
    return build_transfer_model("resnet50", num_classes, **options)


def build_mobilenetv2(num_classes: int = 7, **options) -> keras.Model:
    """The study's MobileNetV2: GAP and a Dense softmax; first 30 layers frozen."""
    options = {"image_size": 224, "trainable": "after:30", "head": (), **options}
    return build_transfer_model("mobilenetv2", num_classes, **options)


def build_inceptionv3(num_classes: int = 7, **options) -> keras.Model:
    """The study's InceptionV3: GAP, Dropout, Dense, Dropout, softmax; first 90 layers learn."""
    options = {
        "image_size": 299, "trainable": "first:90", "head": ("dropout", "dense", "dropout"),
        "dense_units": 1024, **options,
    }
    return build_transfer_model("inceptionv3", num_classes, **options)


def set_trainable(model_layers: Sequence[keras.layers.Layer], spec: str, *, freeze_batchnorm: bool = False) -> None:
    """Apply a ``trainable`` spec ("all", "none", "last:N", "first:N", "after:N") to layers."""
    kind, _, count = str(spec).partition(":")
    n = len(model_layers)
    if kind in ("all", "none") and not count:
        flags = [kind == "all"] * n
    elif kind in ("last", "first", "after") and count.isdigit():
        k = int(count)
        if k > n:
            raise ValueError(f"trainable='{spec}' asks for {k} layers but the backbone has {n}")
        if kind == "last":
            flags = [i >= n - k for i in range(n)]
        elif kind == "first":
            flags = [i < k for i in range(n)]
        else:
            flags = [i >= k for i in range(n)]
    else:
        raise ValueError(f"trainable must be 'all', 'none', 'last:N', 'first:N' or 'after:N', got '{spec}'")
    for layer, flag in zip(model_layers, flags):
        if freeze_batchnorm and isinstance(layer, layers.BatchNormalization) and not all(flags):
            flag = False
        layer.trainable = flag


def _speed_up_batchnorm_statistics(model_layers: Sequence[keras.layers.Layer], momentum: float = 0.99) -> None:
    """Let BatchNorm's moving statistics follow a from-scratch backbone within an epoch or two.

    keras.applications' MobileNetV2 uses momentum 0.999, tuned for long ImageNet runs: on
    FER2013 (449 batches per epoch) the statistics still carry a quarter of their initial
    values after three epochs, so validation accuracy sat at the majority class while training
    accuracy rose. 0.99, Keras's default and what ResNet50 and InceptionV3 use, catches up in
    a few hundred steps.
    """
    for layer in model_layers:
        if isinstance(layer, layers.BatchNormalization) and layer.momentum > momentum:
            layer.momentum = momentum


def _load_backbone(name: str, spec: Backbone, tensor, size: int, weights) -> keras.Model:
    try:
        return spec.constructor(include_top=False, weights=weights, input_tensor=tensor, input_shape=(size, size, 3))
    except Exception as error:  # keras.utils.get_file raises a bare Exception on network failure
        if weights != "imagenet" or "URL fetch failure" not in str(error):
            raise
        file_name = spec.weights_file.format(size=size if size in (96, 128, 160, 192, 224) else 224)
        raise WeightsUnavailableError(
            f"ImageNet weights for {name} could not be downloaded ({error}).\n"
            f"Either download {file_name} on a machine with internet and place it in "
            f"{Path.home() / '.keras' / 'models'}/ (or pass its path as weights=...), "
            f"or train from random initialisation with weights=None."
        ) from None


def _check_weights(weights):
    if weights in (None, "None", "none", ""):
        return None
    if weights == "imagenet":
        return weights
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ValueError(f"weights must be 'imagenet', None or the path of a weights file; '{weights}' does not exist")
    return str(path)


def input_size(model: keras.Model) -> int:
    """The size ``model`` resizes faces to before its first convolution (48 without a resize layer)."""
    try:
        return int(model.get_layer("resize").height)
    except ValueError:
        return IMAGE_SIZE


def transfer_weights(source: keras.Model, target: keras.Model) -> keras.Model:
    """``target`` with ``source``'s weights: the same network built for another input size."""
    try:
        target.set_weights(source.get_weights())
    except ValueError as error:
        raise ValueError(
            f"cannot carry '{source.name}' ({input_size(source)} px) over to {input_size(target)} px: its layers "
            "differ in more than the input size (a Flatten layer, or other model options such as head or "
            "dense_units); keep the saved model's options, or set image_size to its size"
        ) from error
    return target


# ----------------------------------------------------------------------------- ensemble


ENSEMBLE_COMBINES = ("learned", "mean")


def build_ensemble_head(
    num_members: int, num_classes: int, name: str = "ensemble_head", combine: str = "learned"
) -> keras.Model:
    """The members' concatenated probabilities to one answer.

    ``"learned"`` is the reference study's Dense softmax, trained on the members' outputs;
    ``"mean"`` averages their probabilities, has nothing to train and so cannot learn the
    members' overconfidence on the faces they were trained on (FER2013's best ensembles average).
    """
    if combine not in ENSEMBLE_COMBINES:
        raise ValueError(f"unknown ensemble combine '{combine}'; use one of {', '.join(ENSEMBLE_COMBINES)}")
    inputs = keras.Input((num_members * num_classes,), name="member_probabilities")
    if combine == "learned":
        return keras.Model(inputs, _softmax(inputs, num_classes), name=name)
    per_member = layers.Reshape((num_members, num_classes), name="per_member")(inputs)
    mean = layers.GlobalAveragePooling1D(dtype="float32", name="predictions")(per_member)
    return keras.Model(inputs, mean, name=name)


def ensemble_combine(head: keras.Model) -> str:
    """Which of :data:`ENSEMBLE_COMBINES` a head does: only the learned one has weights."""
    return "learned" if head.weights else "mean"


def build_ensemble(
    members: Sequence[keras.Model],
    head: keras.Model | None = None,
    name: str = "ensemble",
) -> keras.Model:
    """Frozen members side by side, their outputs concatenated, then the head's softmax."""
    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least two members, got {len(members)}")
    num_classes = {int(m.output.shape[-1]) for m in members}
    if len(num_classes) != 1:
        raise ValueError(f"ensemble members disagree on the number of classes: {sorted(num_classes)}")
    k = num_classes.pop()
    head = head or build_ensemble_head(len(members), k)
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 1), name="face")
    outputs = []
    names: set[str] = set()
    for index, member in enumerate(members):
        member.trainable = False
        if member.name in names:  # two models of one kind (another seed or width): Keras needs unique names
            member = keras.Model(member.input, member.output, name=f"{member.name}_{index + 1}")  # same layers
        names.add(member.name)
        outputs.append(member(inputs, training=False))
    x = layers.Concatenate(name="member_probabilities")(outputs)
    return keras.Model(inputs, head(x), name=name)


def ensemble_parts(ensemble: keras.Model) -> tuple[list[keras.Model], keras.Model]:
    """The members and the head of a model made by :func:`build_ensemble`."""
    nested = [layer for layer in ensemble.layers if isinstance(layer, keras.Model)]
    if len(nested) < 3:
        raise ValueError(f"'{ensemble.name}' is not an ensemble built by build_ensemble")
    return nested[:-1], nested[-1]


# ----------------------------------------------------------------------------- registry


BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "scratch_cnn": build_scratch_cnn,
    "resnet50": build_resnet50,
    "mobilenetv2": build_mobilenetv2,
    "inceptionv3": build_inceptionv3,
}


def build_model(kind: str, num_classes: int = 7, **options) -> keras.Model:
    """Build any of the four single models by name (the ensemble needs trained members)."""
    if kind not in BUILDERS:
        raise ValueError(f"unknown model '{kind}'; choose one of {', '.join(BUILDERS)}")
    return BUILDERS[kind](num_classes, **options)


def _softmax(x, num_classes: int):
    # float32 output keeps the softmax stable under a mixed-precision policy.
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)


def _check_num_classes(num_classes: int) -> None:
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
