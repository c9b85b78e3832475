"""The training input pipeline: tf.data over decoded faces, augmentation as Keras layers.

Faces are decoded once by :mod:`fer_utils.data`, kept as uint8 in the dataset cache,
and augmented per batch on the fly, so an epoch costs no file reads or Python loops.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import keras


@keras.saving.register_keras_serializable(package="fer_utils")
class RandomAffine(keras.layers.Layer):
    """Flip, rotation, shift and zoom fused into one random affine warp per image.

    Keras's RandomFlip/RandomRotation/RandomTranslation/RandomZoom each resample the
    batch; on a 2-core CPU four passes cost four times one, so this layer composes the
    four into a single matrix and resamples once (``ImageProjectiveTransformV3``, the op
    those layers use). Magnitudes follow ``ImageDataGenerator``: ``rotation`` in degrees,
    ``shift`` and ``zoom`` as fractions of the image. Inactive outside training.
    """

    def __init__(self, rotation=0.0, shift=0.0, zoom=0.0, flip=True, seed=None, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("rotation", rotation), ("shift", shift), ("zoom", zoom)):
            if value < 0:
                raise ValueError(f"augmentation {name} must be >= 0, got {value}")
        if shift >= 1 or zoom >= 1:
            raise ValueError(f"shift and zoom are fractions of the image (below 1), got shift={shift}, zoom={zoom}")
        self.rotation, self.shift, self.zoom, self.flip, self.seed = float(rotation), float(shift), float(zoom), bool(flip), seed

    def call(self, images, training=True):
        if not training:
            return images
        images = tf.convert_to_tensor(images)
        shape = tf.shape(images)
        n = shape[0]
        height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)

        def uniform(limit, offset=0.0):
            return offset + tf.random.uniform([n], -limit, limit, seed=self.seed)

        angle = uniform(self.rotation * np.pi / 180.0)
        scale = uniform(self.zoom, 1.0)
        mirror = tf.where(tf.random.uniform([n], seed=self.seed) < 0.5, -1.0, 1.0) if self.flip else tf.ones([n])
        dx, dy = uniform(self.shift) * width, uniform(self.shift) * height
        cx, cy = (width - 1) / 2, (height - 1) / 2
        # Output pixel -> input pixel: centre, mirror, zoom, rotate, uncentre, shift.
        a0 = tf.cos(angle) * scale * mirror
        a1 = -tf.sin(angle) * scale
        b0 = tf.sin(angle) * scale * mirror
        b1 = tf.cos(angle) * scale
        a2 = cx + dx - a0 * cx - a1 * cy
        b2 = cy + dy - b0 * cx - b1 * cy
        zeros = tf.zeros([n])
        transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=images, transforms=transforms, output_shape=shape[1:3], fill_value=0.0,
            interpolation="BILINEAR", fill_mode="NEAREST",
        )

    def get_config(self):
        return {**super().get_config(), "rotation": self.rotation, "shift": self.shift, "zoom": self.zoom,
                "flip": self.flip, "seed": self.seed}


@keras.saving.register_keras_serializable(package="fer_utils")
class RandomJpegQuality(keras.layers.Layer):
    """Re-encode a share of the faces as JPEG at a random quality, as photos on the web are.

    ``probability`` of each face is re-encoded at a quality drawn from ``lowest``-95.
    TensorFlow's JPEG codec works on one image at a time, so the batch is mapped; at 48x48
    this costs far less than a training step. Inactive outside training.
    """

    def __init__(self, lowest=30, probability=0.5, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 1 <= lowest <= 95:
            raise ValueError(f"the lowest JPEG quality must be 1-95, got {lowest}")
        if not 0 <= probability <= 1:
            raise ValueError(f"probability must be 0-1, got {probability}")
        self.lowest, self.probability, self.seed = int(lowest), float(probability), seed

    def call(self, images, training=True):
        if not training:
            return images
        images = tf.convert_to_tensor(images)
        n = tf.shape(images)[0]
        qualities = tf.random.uniform([n], self.lowest, 96, dtype=tf.int32, seed=self.seed)
        chosen = tf.random.uniform([n], seed=self.seed) < self.probability

        def one(args):
            image, quality, apply = args
            pixels = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
            degraded = tf.cast(tf.image.adjust_jpeg_quality(pixels, quality), image.dtype)
            return tf.where(apply, tf.reshape(degraded, tf.shape(image)), image)

        return tf.map_fn(one, (images, qualities, chosen), fn_output_signature=images.dtype)

    def get_config(self):
        return {**super().get_config(), "lowest": self.lowest, "probability": self.probability, "seed": self.seed}


def build_augmentation(
    rotation: float = 0.0,
    shift: float = 0.0,
    zoom: float = 0.0,
    flip: bool = True,
    seed: int | None = None,
    *,
    brightness: float = 0.0,
    contrast: float = 0.0,
    blur: float = 0.0,
    jpeg_quality: int = 0,
    occlusion: float = 0.0,
) -> keras.layers.Layer | None:
    """Training-time augmentation: the reference study's warps, optionally photo conditions.

    ``rotation`` is in degrees (as in the study's ``ImageDataGenerator``), ``shift`` and
    ``zoom`` are fractions of the image size. The rest move FER2013's faces toward faces cut
    from photos, each off at 0: ``brightness`` and ``contrast`` are Keras's factors (a random
    change of up to that fraction), ``blur`` the share of faces blurred (Gaussian, sigma
    0.2-1.5 px, as a small face scaled up is), ``jpeg_quality`` the lowest quality half the
    faces are re-encoded at, ``occlusion`` the share of faces with one rectangle (2-12 % of
    the face) erased, as by a hand or glasses. The photo conditions come first, then the
    warp, as a camera's image is degraded before a face is cut from it. Returns ``None`` when
    nothing is on, so callers can skip the step entirely.
    """
    for name, value in (("brightness", brightness), ("contrast", contrast), ("blur", blur), ("occlusion", occlusion)):
        if not 0 <= value <= 1:
            raise ValueError(f"augmentation {name} must be between 0 and 1, got {value}")
    layers: list[keras.layers.Layer] = []
    if brightness:
        layers.append(keras.layers.RandomBrightness(brightness, value_range=(0, 255), seed=seed))
    if contrast:
        # a tuple: Keras 3.15 reads a single float as (0, factor), so contrast would only ever grow
        layers.append(keras.layers.RandomContrast((contrast, contrast), value_range=(0, 255), seed=seed))
    if blur:
        layers.append(keras.layers.RandomGaussianBlur((blur, blur), kernel_size=5, sigma=(0.2, 1.5),
                                                      value_range=(0, 255), seed=seed))
    if jpeg_quality:
        layers.append(RandomJpegQuality(jpeg_quality, 0.5, seed=seed))
    if occlusion:
        layers.append(keras.layers.RandomErasing((occlusion, occlusion), scale=(0.02, 0.12),
                                                 value_range=(0, 255), seed=seed))
    warp = RandomAffine(rotation, shift, zoom, flip, seed=seed, name="augmentation") if rotation or shift or zoom or flip else None
    if not layers:
        return warp
    return keras.Sequential(layers + ([warp] if warp else []), name="augmentation")


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int = 64,
    *,
    training: bool = False,
    augmentation: keras.layers.Layer | None = None,
    num_classes: int | None = None,
    seed: int = 0,
    cache: bool = True,
) -> tf.data.Dataset:
    """Batches of (float32 0-255 faces, labels) ready for ``fit``/``evaluate``.

    Feature vectors (N, D), such as the ensemble's member probabilities, work too.

    ``training`` shuffles every epoch and applies ``augmentation``; ``num_classes`` turns
    labels into one-hot vectors (needed for label smoothing). ``labels`` may also be (N, C)
    target distributions, passed through as they are (distillation's soft targets).
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim not in (2, 4):
        raise ValueError(f"images must be shaped (N, H, W, 1) or (N, H, W) (or features (N, D)), got {images.shape}")
    labels = np.asarray(labels)
    # (N,) class indices, or (N, C) target distributions (distillation's soft targets)
    labels = labels.astype(np.float32) if labels.ndim == 2 else labels.astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if len(images) == 0:
        raise ValueError("cannot make a dataset from zero images")
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    if cache:
        dataset = dataset.cache()
    if training:
        dataset = dataset.shuffle(min(len(images), 20_000), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=False)

    def prepare(x, y):
        x = tf.cast(x, tf.float32)
        if training and augmentation is not None:
            x = augmentation(x, training=True)
        if num_classes is not None and y.shape.rank == 1:
            y = tf.one_hot(y, num_classes)
        return x, y

    dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)
