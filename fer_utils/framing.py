"""Measure where FER2013's faces sit in their 48x48 frame, so real photos can be cropped the same way.

FER2013's faces were cropped by an unknown detector with an unknown margin. Rather than guess
it, this runs each of our detectors on FER2013 Training faces (enlarged, with the edge repeated
around them so a detector sees some context) and records, as fractions of the frame's side,
where MTCNN puts the two eyes and where each detector puts its box. :func:`fer_utils.faces.align_face`
then warps a real photo's face so its eyes (or its box) land on those medians.

    python -m fer_utils.framing --data ../shared/data/fer2013/fer2013.csv.gz [--limit 3000]

writes ``fer_utils/fer2013_framing.json`` (Training faces only: no test face is looked at).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from .faces import FRAMING_FILE, detect

UPSCALE = 4  # 48 -> 192 px: MTCNN's smallest face is 20 px and Haar's window 24 px
PAD = 0.5  # of the enlarged side, repeated edge on every side


def _context(face: np.ndarray) -> tuple[np.ndarray, float, int]:
    side = face.shape[0] * UPSCALE
    big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
    pad = int(side * PAD)
    return cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_REPLICATE), float(side), pad


def measure_framing(faces: np.ndarray) -> dict:
    """Median eye points (MTCNN) and boxes (MTCNN, Haar) in FER2013 frame fractions, with counts."""
    eyes: list[list[float]] = []
    boxes: dict[str, list[list[float]]] = {"mtcnn": [], "haar": []}
    for face in tqdm(np.asarray(faces, dtype=np.uint8), desc="framing", unit="face"):
        face = face.reshape(face.shape[0], face.shape[1])
        image, side, pad = _context(face)
        for name in boxes:
            found = detect(image, name)
            if not found:
                continue
            best = found[0]
            cx, cy = best.box.centre
            boxes[name].append([(cx - pad) / side, (cy - pad) / side, best.box.w / side, best.box.h / side])
            if name == "mtcnn" and best.landmarks is not None:
                (lx, ly), (rx, ry) = best.landmarks.left_eye, best.landmarks.right_eye
                eyes.append([(lx - pad) / side, (ly - pad) / side, (rx - pad) / side, (ry - pad) / side])
    if not eyes or not boxes["haar"]:
        raise ValueError("no face was found in the faces given; cannot measure a framing")
    eye = np.median(np.array(eyes), axis=0)
    level = round(float(eye[1] + eye[3]) / 2, 4)  # alignment makes the eyes level, so the targets are too
    return {
        "left_eye": [round(float(eye[0]), 4), level],
        "right_eye": [round(float(eye[2]), 4), level],
        "measured_eye_y": [round(float(eye[1]), 4), round(float(eye[3]), 4)],
        "mtcnn_box": [round(float(v), 4) for v in np.median(np.array(boxes["mtcnn"]), axis=0)],
        "haar_box": [round(float(v), 4) for v in np.median(np.array(boxes["haar"]), axis=0)],
        "faces_looked_at": int(len(faces)),
        "found": {"mtcnn": len(boxes["mtcnn"]), "mtcnn_with_eyes": len(eyes), "haar": len(boxes["haar"])},
        "spread_iqr": {
            "eyes": [round(float(v), 4) for v in np.subtract(*np.percentile(np.array(eyes), [75, 25], axis=0))],
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Measure FER2013's face framing on Training faces.")
    parser.add_argument("--data", default=os.environ.get("FER2013_CSV"), help="FER2013 CSV (default: $FER2013_CSV)")
    parser.add_argument("--limit", type=int, default=3000, help="Training faces to look at (stratified, seeded)")
    parser.add_argument("--out", type=Path, default=FRAMING_FILE)
    args = parser.parse_args(argv)
    if not args.data or not Path(args.data).exists():
        print("error: give --data (or set FER2013_CSV) to an existing FER2013 CSV", file=sys.stderr)
        return 2
    from .data import load_dataset

    dataset = load_dataset(args.data).subsample(args.limit, seed=0)
    result = measure_framing(dataset.train.images)
    result["measured_on"] = (f"{len(dataset.train)} FER2013 Training faces (data sha256 {dataset.checksum[:12]}), "
                             f"enlarged {UPSCALE}x with {PAD:.0%} repeated edge; eye heights levelled to their mean; "
                             "python -m fer_utils.framing")
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
