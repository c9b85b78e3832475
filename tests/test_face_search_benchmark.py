"""benchmarks/face_search.py on a FER2013-format CSV the test writes from the public-domain example
faces: every pasted face is counted once per setting, found where it plainly is, and neither the
second look nor the profile cascade changes anything on photos the first pass already answers."""

from __future__ import annotations

import pathlib
import re
import sys

import numpy as np
import pytest
from PIL import Image

TESTS = pathlib.Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(ROOT / "benchmarks"))

from synthetic import write_fer_csv  # noqa: E402
from test_video import small_models_dir  # noqa: E402

pytest.importorskip("skimage", reason="the benchmark's face-free photos come from scikit-image (requirements.txt)")


def face_crops() -> np.ndarray:
    """The example photos' faces, framed as FER2013 frames its faces, 48x48 grey."""
    from fer_utils.faces import find_faces

    crops = []
    for name in ("astronaut.jpg", "grace_hopper.jpg"):
        rgb = np.asarray(Image.open(ROOT / "demo" / "examples" / name).convert("RGB"))
        crops.append(find_faces(rgb, "mtcnn").faces[0].crop)
    return np.stack(crops)


def rows(printed: str, title: str) -> dict[str, list[str]]:
    """The printed table under ``title``: its header's cells, and each setting's cells."""
    block = printed.split(title, 1)[1].strip().split("\n\n")[0].splitlines()
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in block if line.startswith("|")]
    return {row[0]: row[1:] for row in [cells[0], *cells[2:]]}


def test_the_face_search_benchmark_counts_every_pasted_face_once_per_setting(tmp_path, capsys):
    import face_search

    crops = face_crops()
    pick = [0, 1] * 5 + [0]  # 7 Training faces (one per class, as the loader asks), 2 PublicTest, 2 PrivateTest
    usages = ["Training"] * 7 + ["PublicTest"] * 2 + ["PrivateTest"] * 2
    csv = write_fer_csv(tmp_path / "fer.csv", crops[pick], [0, 1, 2, 3, 4, 5, 6, 3, 6, 3, 6], usages)
    model = small_models_dir() / "scratch_cnn.keras"
    assert face_search.main(["--fer-csv", str(csv), "--faces", "2", "--turned", "2", "--no-face", "3",
                             "--model", str(model), "--thresholds", "0.5", "0.5", "0.5"]) == 0
    printed = capsys.readouterr().out
    upright = rows(printed, "upright photos (2):")
    header = upright.pop("search")
    assert list(upright) == ["second look at 0.5/0.5/0.5 (default, PNet/RNet/ONet)",
                             "second look at 0.5/0.5/0.5 (default, PNet/RNet/ONet), without the profile cascade",
                             "without the second look"]
    for cells in upright.values():
        counts = dict(zip(header, cells))
        assert counts["mtcnn: the pasted face"] == "2", "two plain frontal faces, each found where it was pasted"
        assert sum(int(counts[k]) for k in header[:-3]) == 2, "each photo counted once"
        assert re.fullmatch(r"\d+/3", counts["false faces in face-free photos"])
        assert re.fullmatch(r"\d+\.\d%", counts["accuracy"])
    first, *others = upright.values()
    for other in others:
        assert first[:-2] == other[:-2], "where the first pass finds the face, neither later step runs"
    turned = rows(printed, "turned photos (2):")
    header = turned.pop("search")
    for cells in turned.values():
        assert dict(zip(header, cells))["a face in a turned copy"] == "2", "a sideways face is found by turning the photo"
