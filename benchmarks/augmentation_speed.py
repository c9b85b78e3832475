"""Faces/s of the training input pipeline with the study's warps alone and with photo conditions.

    python benchmarks/augmentation_speed.py [--faces 2048] [--passes 3]

The photo conditions (``fer_utils.pipeline.build_augmentation``: brightness, contrast, blur,
JPEG re-encoding, occlusion) cost the pipeline speed; this says how much, on random faces held
in memory, after one warm-up pass (tracing, caching). Training consumes about 170 faces/s on
2 CPU cores (``benchmarks/training_speed.py``), so any figure well above that costs no time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from fer_utils.pipeline import build_augmentation, make_dataset  # noqa: E402

WARPS = dict(rotation=10.0, shift=0.1, zoom=0.1, flip=True)  # the deep CNNs' plans
PHOTO = dict(brightness=0.3, contrast=0.3, blur=0.25, jpeg_quality=30, occlusion=0.25)  # plans/photo_conditions.yaml


def faces_per_second(faces: np.ndarray, options: dict, passes: int) -> float:
    labels = np.zeros(len(faces), dtype=np.int64)
    data = make_dataset(faces, labels, 64, training=True, augmentation=build_augmentation(**options, seed=0))
    for _ in data:  # warm-up
        pass
    started = time.perf_counter()
    for _ in range(passes):
        for _ in data:
            pass
    return passes * len(faces) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=int, default=2048)
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args(argv)
    faces = np.random.default_rng(0).integers(0, 256, (args.faces, 48, 48, 1), dtype=np.uint8)
    for name, options in (("warps", WARPS), ("warps + photo conditions", {**WARPS, **PHOTO})):
        print(f"{name}: {faces_per_second(faces, options, args.passes):,.0f} faces/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
