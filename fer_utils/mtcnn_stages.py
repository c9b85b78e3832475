"""PyPI ``mtcnn``'s three networks run on one photo, faster than ``MTCNN.detect_faces``, same faces.

``detect_faces`` is the package's own pipeline (PNet proposals on an image pyramid, RNet and ONet
refining them, its NMS and box helpers), run differently where that costs time on a CPU:

* the networks run as traced ``tf.function``s instead of eagerly (2-2.5x faster per photo);
* the photo is normalised once, in float32 (the package makes a float64 copy, so every later
  step moves twice the bytes), and converted to a tensor once for all three stages;
* each pyramid level is one traced call (the package's area resize, then PNet) instead of an
  eager resize and a network call, and the largest level runs in a second thread beside the
  others: 28 -> 21 ms for PNet on a 512x512 photo here;
* pyramid levels smaller than PNet's 12-pixel window are skipped: they can hold no face, and a
  call on one fails (the package then reports no face in the whole photo).

``tests/test_faces.py`` checks that the boxes and landmarks are the package's own.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

__all__ = ["detect_faces", "detector"]

# the package's own defaults (mtcnn 1.0 StagePNet/StageRNet/StageONet), kept as they are
SCALE_FACTOR = 0.709
PNET_THRESHOLD = 0.6
RNET_THRESHOLD = 0.7
ONET_THRESHOLD = 0.8
PNET_NMS_PER_LEVEL = 0.5
PNET_NMS_ACROSS_LEVELS = 0.7
PNET_WINDOW = 12  # PNet's receptive field: a pyramid level smaller than this has no window to score

_load_lock = threading.Lock()
_level_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fer-pnet")


def detector():
    """The package's ``MTCNN`` with its three networks traced (made once, thread-safe)."""
    found = getattr(detector, "instance", None)
    if found is None:
        with _load_lock:
            found = getattr(detector, "instance", None)
            if found is None:
                os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
                from mtcnn import MTCNN

                found = MTCNN()
                _trace_networks(found)
                detector.instance = found
    return found


def _trace_networks(mtcnn: Any) -> None:
    """Each stage's network as a traced graph. ``reduce_retracing`` lets the pyramid's many input
    sizes share one graph after the first few. (mtcnn 1.0.0, pinned in requirements.txt, keeps
    each stage's network in ``_model``.)"""
    import tensorflow as tf

    for stage in mtcnn.stages:
        network = stage._model
        stage._model = tf.function(lambda batch, network=network: network(batch), reduce_retracing=True)
    pnet = mtcnn.stages[0]._model  # one pyramid level in one call: the package's area resize, then PNet
    mtcnn.stages[0]._fer_level = tf.function(
        lambda image, size: pnet(tf.image.resize(image, size, method="area")),
        input_signature=[tf.TensorSpec((1, None, None, 3), tf.float32), tf.TensorSpec((2,), tf.int32)])


def detect_faces(rgb: np.ndarray, min_face_size: int = 20,
                 thresholds: tuple[float, float, float] = (PNET_THRESHOLD, RNET_THRESHOLD, ONET_THRESHOLD),
                 ) -> list[dict[str, Any]]:
    """Faces in an RGB uint8 photo, as ``MTCNN().detect_faces(rgb, min_face_size=...)`` returns them
    (box as x, y, width, height; confidence; keypoints). Not thread-safe: callers take turns."""
    import tensorflow as tf
    from mtcnn.utils.bboxes import limit_bboxes, to_json

    pnet, rnet, onet = detector().stages
    normalized = np.array(rgb, dtype=np.float32)  # a copy: the package's (x - 127.5) / 128, in float32, in place
    normalized -= 127.5
    normalized /= 128
    shapes = np.asarray([normalized.shape])
    images = tf.convert_to_tensor(normalized[None])
    boxes = _proposals(pnet, images, min_face_size, thresholds[0])
    if len(boxes) == 0:
        return []
    try:
        boxes = rnet(images_normalized=images, bboxes_batch=boxes, threshold_rnet=thresholds[1])
        if len(boxes) == 0:
            return []
        boxes = onet(images_normalized=images, bboxes_batch=boxes, threshold_onet=thresholds[2])
        if len(boxes) == 0:
            return []
    except tf.errors.InvalidArgumentError:  # how the package's stages say that nothing is left
        return []
    boxes = limit_bboxes(boxes, images_shapes=shapes, limit_landmarks=False)  # detect_faces' defaults
    found = to_json(boxes, images_count=1, output_as_width_height=True, input_as_width_height=False)
    return found[0] if found else []


def _proposals(pnet: Any, image: Any, min_face_size: int, threshold: float = PNET_THRESHOLD) -> np.ndarray:
    """PNet's candidate boxes over the image pyramid of ``image`` (1, H, W, 3): the package's StagePNet,
    each level one traced call."""
    import tensorflow as tf
    from mtcnn.utils.bboxes import generate_bounding_box, resize_to_square, smart_nms_from_bboxes, upscale_bboxes
    from mtcnn.utils.images import build_scale_pyramid

    height, width = int(image.shape[1]), int(image.shape[2])

    def levels(scales: list[float]) -> list[np.ndarray]:
        found = []
        for scale in scales:
            size = tf.constant([int(height * scale), int(width * scale)], tf.int32)  # as tf.image.resize truncates
            regression, scores = pnet._fer_level(image, size)
            boxes = upscale_bboxes(generate_bounding_box(regression, scores, threshold), np.asarray([scale]))
            found.append(smart_nms_from_bboxes(boxes, threshold=PNET_NMS_PER_LEVEL, method="union", initial_sort=False))
        return found

    scales = list(build_scale_pyramid(width, height, min_face_size=min_face_size, scale_factor=SCALE_FACTOR))
    # The package's pyramid rounds its level count, so its last level can be under PNet's window (9x12
    # for a 1280x960 photo). The traced call failed on that level, so every 4:3 photo from 1280 px up (a
    # phone's 4032x3024) and many square ones (1080x1080) failed; the package's own detect_faces fails on
    # it too and returns no face at all. Such a level can hold no face: skip it.
    scales = [scale for scale in scales if min(int(height * scale), int(width * scale)) >= PNET_WINDOW]
    # the largest level is about half the pyramid's pixels: it runs beside the others, which on two
    # cores beats one level after another (PNet's few channels keep one level from using both)
    largest = _level_pool.submit(levels, scales[:1]) if len(scales) > 1 else None
    rest = levels(scales[1:] if largest else scales)
    per_level = (largest.result() if largest else []) + rest
    boxes = np.concatenate(per_level, axis=0) if per_level else np.empty((0, 6))
    if len(boxes) == 0:
        return boxes
    boxes = smart_nms_from_bboxes(boxes, threshold=PNET_NMS_ACROSS_LEVELS, method="union", initial_sort=True)
    return resize_to_square(boxes)

