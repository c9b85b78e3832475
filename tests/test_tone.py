"""The "tone" step: a face inside FER2013's brightness and contrast range is left exactly as it is,
one outside it is moved to the range's edge, a blank wall is not blown up into noise, and the
shipped range is the one measured on FER2013 Training."""

from __future__ import annotations

import json
import os
import pathlib
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

TESTS = pathlib.Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(ROOT / "benchmarks"))

from fer_utils.faces import DEFAULT_NORMALIZE, find_faces, normalize_face  # noqa: E402
from fer_utils.tone import MAX_GAIN, TONE_FILE, Tone, fer2013_tone, match_tone, measure_tone  # noqa: E402
from synthetic import write_fer_csv  # noqa: E402

EXAMPLES = ROOT / "demo" / "examples"
TONE = Tone(mean=(70.0, 180.0), std=(30.0, 75.0))


def face_like(mean: float, std: float, seed: int = 0) -> np.ndarray:
    """A 48x48 crop with a face's structure (the astronaut's) at the given mean and standard deviation."""
    rgb = np.asarray(Image.open(EXAMPLES / "astronaut.jpg").convert("RGB"))
    grey = cv2.resize(cv2.cvtColor(rgb[50:190, 160:300], cv2.COLOR_RGB2GRAY), (48, 48)).astype(np.float32)
    grey = (grey - grey.mean()) / grey.std()
    return np.clip(np.rint(grey * std + mean), 0, 255).astype(np.uint8)


def within(face: np.ndarray, tone: Tone, slack: float = 1.0) -> bool:
    mean, std = float(face.mean()), float(face.std())
    return (tone.mean[0] - slack <= mean <= tone.mean[1] + slack) and (tone.std[0] - slack <= std <= tone.std[1] + slack)


def test_a_face_inside_the_range_is_left_exactly_as_it_is():
    face = face_like(120, 50)
    assert within(face, TONE, slack=0)
    assert match_tone(face, TONE) is face


@pytest.mark.parametrize("mean, std, where", [
    (30, 15, "dark"),           # an under-exposed face
    (125, 12, "flat"),          # low contrast
    (215, 25, "bright"),        # over-exposed
    (120, 95, "harsh"),         # too much contrast
])
def test_a_face_outside_the_range_is_moved_to_its_nearest_edge(mean, std, where):
    face = face_like(mean, std)
    moved = match_tone(face, TONE)
    assert moved.dtype == np.uint8 and moved.shape == face.shape
    assert within(moved, TONE), (where, moved.mean(), moved.std())
    # only as far as the edge: the mean and contrast that were inside stay where they were
    if TONE.mean[0] <= face.mean() <= TONE.mean[1]:
        assert abs(moved.mean() - face.mean()) < 1.5, where
    if TONE.std[0] <= face.std() <= TONE.std[1]:
        assert abs(moved.std() - face.std()) < 1.5, where
    # a linear stretch keeps the face: its pixels' order and correlation with the original
    assert np.corrcoef(face.ravel(), moved.ravel())[0, 1] > 0.99, where


def test_a_blank_wall_is_not_blown_up_into_noise():
    rng = np.random.default_rng(1)
    wall = np.clip(rng.normal(60, 2, (48, 48)), 0, 255).astype(np.uint8)
    moved = match_tone(wall, TONE)
    assert moved.std() <= MAX_GAIN * wall.std() + 0.5
    assert TONE.mean[0] - 1 <= moved.mean() <= TONE.mean[0] + 1, "still brought up to the range's brightness"
    flat = np.full((48, 48), 20, np.uint8)
    assert np.all(match_tone(flat, TONE) == round(TONE.mean[0]))


def test_measure_tone_reports_the_percentiles_of_each_faces_mean_and_contrast():
    faces = np.stack([face_like(m, s) for m, s in [(60, 20), (100, 40), (140, 60), (180, 80), (120, 50)]])
    measured = measure_tone(faces, (0.0, 100.0))
    means, stds = faces.reshape(5, -1).mean(axis=1), faces.reshape(5, -1).std(axis=1)
    assert measured["mean"] == [round(float(means.min()), 2), round(float(means.max()), 2)]
    assert measured["std"] == [round(float(stds.min()), 2), round(float(stds.max()), 2)]
    assert measured["faces"] == 5
    with pytest.raises(ValueError, match="no faces"):
        measure_tone(np.zeros((0, 48, 48)))


def test_the_tone_command_measures_training_faces_only(tmp_path):
    from fer_utils.tone import main

    train = [face_like(60 + 12 * i, 25 + 5 * i) for i in range(7)]
    tests = [face_like(5, 3), face_like(250, 2)]  # far outside: they would move the range if they were read
    csv = write_fer_csv(tmp_path / "fer.csv", np.stack(train + tests), [0, 1, 2, 3, 4, 5, 6, 3, 3],
                        ["Training"] * 7 + ["PublicTest", "PrivateTest"])
    out = tmp_path / "tone.json"
    assert main(["--data", str(csv), "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written == {**measure_tone(np.stack(train)), "measured_on": written["measured_on"]}
    assert "7 FER2013 Training faces" in written["measured_on"]
    assert Tone.load(out).mean == tuple(written["mean"])
    assert main(["--data", str(tmp_path / "missing.csv"), "--out", str(out)]) == 2


def test_the_photo_path_brings_a_dark_photos_face_into_the_range_and_leaves_a_well_lit_one():
    tone = fer2013_tone()
    assert DEFAULT_NORMALIZE == "tone"
    rgb = np.asarray(Image.open(EXAMPLES / "grace_hopper.jpg").convert("RGB"))
    lit_raw = find_faces(rgb, normalize="none").faces[0].crop
    lit = find_faces(rgb).faces[0].crop
    if within(lit_raw, tone, slack=0):
        np.testing.assert_array_equal(lit, lit_raw)
    dark_rgb = np.clip(rgb.astype(np.float32) * 0.3 + 5, 0, 255).astype(np.uint8)
    dark = find_faces(dark_rgb)
    assert dark.found, "MTCNN still finds the face in the darkened photo"
    raw = find_faces(dark_rgb, normalize="none").faces[0].crop
    assert not within(raw, tone), "the darkened crop is outside FER2013's range"
    assert within(dark.faces[0].crop, tone) and dark.normalize == "tone"
    assert np.array_equal(normalize_face(raw, "tone"), dark.faces[0].crop)


def test_the_photo_benchmark_relights_photos_and_crops():
    from photo_pipeline import LIGHTING, relight

    face = face_like(120, 50)
    assert relight(face, "as_taken") is face
    assert relight(face, "dark").mean() < 0.4 * face.mean() + 1
    assert relight(face, "flat").std() < 0.45 * face.std()
    assert relight(face, "bright").mean() > face.mean() + 60
    assert set(LIGHTING) == {"as_taken", "dark", "flat", "bright", "dim_flat"}


@pytest.mark.skipif(not os.environ.get("FER2013_CSV"), reason="FER2013_CSV is not set (the real data's path)")
def test_the_shipped_tone_range_is_fer2013_trainings():
    from fer_utils.data import load_dataset

    dataset = load_dataset(os.environ["FER2013_CSV"])
    measured = measure_tone(dataset.train.images)
    shipped = json.loads(TONE_FILE.read_text())
    assert shipped["mean"] == measured["mean"] and shipped["std"] == measured["std"]
    assert shipped["faces"] == len(dataset.train) and dataset.checksum[:12] in shipped["measured_on"]
