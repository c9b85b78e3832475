"""Bring a face's brightness and contrast into the range FER2013's faces have, and no further.

The networks learned from FER2013 crops, whose brightness (mean grey level) and contrast
(standard deviation) span a wide but bounded range. A face from a dim room, a film still or an
over-exposed phone photo can fall outside it, and there the networks do worse: on FER2013
PublicTest faces made darker or flatter the shipped networks lose 4-9 points (measured by
``benchmarks/photo_pipeline.py --lighting``). Histogram equalisation fixes the light but changes
every face, and costs 3.5-6.5 points on ordinary crops.

:func:`match_tone` is the smallest change that helps: a face whose mean and standard deviation
both lie inside FER2013 Training's central 90 % (:class:`Tone`, measured, not guessed) is left
exactly as it is; any other face is stretched linearly (one gain, one offset) to the nearest
mean and standard deviation inside that range. The gain is capped (:data:`MAX_GAIN`), so a blank
wall is not blown up into noise.

    python -m fer_utils.tone --data ../shared/data/fer2013/fer2013.csv.gz

measures the range on every Training face and writes ``fer_utils/fer2013_tone.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["Tone", "TONE_FILE", "PERCENTILES", "MAX_GAIN", "fer2013_tone", "measure_tone", "match_tone", "main"]

TONE_FILE = Path(__file__).with_name("fer2013_tone.json")
#: The central 90 % of Training faces: the usual 5th-95th percentile band, not fitted to any photo set.
PERCENTILES = (5.0, 95.0)
#: At most 4x contrast: enough for a face at a quarter of FER2013's lowest contrast, not for a blank wall.
MAX_GAIN = 4.0


@dataclass(frozen=True)
class Tone:
    """The range of FER2013 faces' mean grey level and standard deviation (0-255 scale)."""

    mean: tuple[float, float]
    std: tuple[float, float]
    measured_on: str = ""

    @classmethod
    def load(cls, path: str | Path = TONE_FILE) -> "Tone":
        data = json.loads(Path(path).read_text())
        return cls(tuple(data["mean"]), tuple(data["std"]), data.get("measured_on", ""))


@lru_cache(maxsize=1)
def fer2013_tone() -> Tone:
    """The shipped range, measured on FER2013 Training (see :class:`Tone`)."""
    return Tone.load()


def measure_tone(faces: np.ndarray, percentiles: tuple[float, float] = PERCENTILES) -> dict:
    """The ``percentiles`` of the faces' per-face mean and standard deviation, with the count."""
    faces = np.asarray(faces, dtype=np.float64)
    if not len(faces) or not faces.size:
        raise ValueError("no faces given; cannot measure a tone range")
    flat = faces.reshape(len(faces), -1)
    means, stds = flat.mean(axis=1), flat.std(axis=1)
    return {
        "mean": [round(float(v), 2) for v in np.percentile(means, percentiles)],
        "std": [round(float(v), 2) for v in np.percentile(stds, percentiles)],
        "percentiles": list(percentiles),
        "faces": int(len(flat)),
    }


def match_tone(face: np.ndarray, tone: Tone | None = None) -> np.ndarray:
    """``face`` (grey uint8) with its mean and standard deviation moved into ``tone``'s range.

    A face already inside the range comes back unchanged (the same array). Otherwise each pixel
    becomes ``(x - mean) * gain + new_mean``, where ``new_mean`` and ``mean * gain``'s standard
    deviation are the nearest values inside the range and ``gain`` is at most :data:`MAX_GAIN`.
    """
    tone = tone or fer2013_tone()
    pixels = np.asarray(face)
    values = pixels.astype(np.float32)
    mean, std = float(values.mean()), float(values.std())
    new_mean = min(max(mean, tone.mean[0]), tone.mean[1])
    new_std = min(max(std, tone.std[0]), tone.std[1])
    if new_mean == mean and new_std == std:
        return pixels
    gain = min(new_std / std, MAX_GAIN) if std > 0 else 1.0
    return np.clip(np.rint((values - mean) * gain + new_mean), 0, 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Measure FER2013 Training faces' brightness and contrast range.")
    parser.add_argument("--data", default=os.environ.get("FER2013_CSV"), help="FER2013 CSV (default: $FER2013_CSV)")
    parser.add_argument("--out", type=Path, default=TONE_FILE)
    args = parser.parse_args(argv)
    if not args.data or not Path(args.data).exists():
        print("error: give --data (or set FER2013_CSV) to an existing FER2013 CSV", file=sys.stderr)
        return 2
    from .data import load_dataset

    dataset = load_dataset(args.data)
    result = measure_tone(dataset.train.images)
    result["measured_on"] = (f"all {len(dataset.train)} FER2013 Training faces (data sha256 {dataset.checksum[:12]}); "
                             "python -m fer_utils.tone")
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
