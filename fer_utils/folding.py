"""Inference copies of Keras models with each batch normalisation folded into the convolution before it.

At inference a BatchNormalization is a fixed per-channel scale and shift, so after a convolution
with no activation it can be multiplied into that convolution's kernel and bias. The copy then
runs one layer where there were two, and TensorFlow's graph optimiser can fuse the convolution
with the bias and activation that follow. On this 2-core CPU at batch 1 that makes ResNet50,
InceptionV3 and MobileNetV2 10-35 % faster (12.5 -> 10.8, 12.4 -> 10.8 and 5.7 -> 3.9 ms a face;
benchmarks/README.md, "Demo latency"); the answers agree
to float rounding (``fold_batch_norms`` checks them on a random face and keeps the original model
where they do not).

The copy has its own weights: serving keeps the original for explanations (Grad-CAM looks at a
convolution's own output, before its batch normalisation) and for training.
"""

from __future__ import annotations

import logging

import keras
import numpy as np

__all__ = ["fold_batch_norms", "foldable_pairs"]

log = logging.getLogger(__name__)
CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
AGREE_TO = 1e-4  # largest difference in any probability accepted between the original and the copy


def foldable_pairs(model: keras.Model) -> dict[str, str]:
    """Batch normalisation name -> the convolution it can fold into: a functional model's BN on the
    channel axis whose one input is a convolution with no activation, used by nothing else, each called once."""
    if isinstance(model, keras.Sequential) or not hasattr(model, "_operations"):
        return {}
    pairs = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization) or len(layer._inbound_nodes) != 1:
            continue
        if layer.axis not in (-1, 3):
            continue
        parents = layer._inbound_nodes[0].parent_nodes
        if len(parents) != 1:
            continue
        conv = parents[0].operation
        if (isinstance(conv, CONVOLUTIONS) and len(conv._inbound_nodes) == 1 and len(conv._outbound_nodes) == 1
                and conv.activation is keras.activations.linear):
            pairs[layer.name] = conv.name
    return pairs


def fold_batch_norms(model: keras.Model, check: bool = True) -> keras.Model:
    """A copy of ``model`` with every foldable batch normalisation folded (the model itself when none is)."""
    pairs = foldable_pairs(model)
    if not pairs:
        return model
    bn_of = {conv: bn for bn, conv in pairs.items()}

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        if layer.name in pairs:
            return _FoldedAway(name=layer.name)
        config = layer.get_config()
        if layer.name in bn_of:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    folded = keras.models.clone_model(model, clone_function=clone)
    by_name = {layer.name: layer for layer in model.layers}
    for layer in folded.layers:
        source = by_name.get(layer.name)  # None for the clone's new input layer, which has no weights
        if source is None or layer.name in pairs:
            continue
        if layer.name in bn_of:
            layer.set_weights(_folded_weights(source, by_name[bn_of[layer.name]]))
        elif source.weights:
            layer.set_weights(source.get_weights())
    if check and not _agrees(model, folded):
        log.warning("folding %s's batch normalisations changed its answers; serving it unfolded", model.name)
        return model
    return folded


class _FoldedAway(keras.layers.Layer):
    """Where a folded batch normalisation was: hands its input on (taking the BN's call arguments)."""

    def call(self, inputs, training=None, mask=None):
        return inputs


def _folded_weights(conv: keras.layers.Layer, bn: keras.layers.BatchNormalization) -> list[np.ndarray]:
    """The convolution's kernel and bias with ``bn``'s inference-time scale and shift multiplied in."""
    weights = conv.get_weights()
    kernel = np.asarray(weights[0], dtype=np.float64)
    depthwise = isinstance(conv, keras.layers.DepthwiseConv2D)  # kernel (h, w, in, multiplier): channel in * m + j
    channels = kernel.shape[2] * kernel.shape[3] if depthwise else kernel.shape[3]  # Conv2D: (h, w, in, out)
    bias = np.asarray(weights[1], dtype=np.float64) if conv.use_bias else np.zeros(channels)
    mean = np.asarray(bn.moving_mean, dtype=np.float64)
    variance = np.asarray(bn.moving_variance, dtype=np.float64)
    gamma = np.asarray(bn.gamma, dtype=np.float64) if bn.scale else np.ones_like(mean)
    beta = np.asarray(bn.beta, dtype=np.float64) if bn.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(variance + bn.epsilon)
    kernel = kernel * (scale.reshape(kernel.shape[2], kernel.shape[3]) if depthwise else scale)
    bias = (bias - mean) * scale + beta
    return [kernel.astype(weights[0].dtype), bias.astype(weights[0].dtype)]


def _agrees(model: keras.Model, folded: keras.Model) -> bool:
    shape = [1 if d is None else d for d in model.input_shape]
    face = np.random.default_rng(0).uniform(0, 255, shape).astype("float32")
    ours = np.asarray(folded(face, training=False))
    theirs = np.asarray(model(face, training=False))
    return ours.shape == theirs.shape and float(np.max(np.abs(ours - theirs))) <= AGREE_TO
