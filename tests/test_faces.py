"""Face finding, FER2013-framed alignment and every-face search, on public-domain example photos."""

from __future__ import annotations

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from fer_utils.faces import (  # noqa: E402
    MAX_FACES,
    Box,
    Detection,
    Landmarks,
    align_face,
    detect,
    draw_faces,
    fer2013_framing,
    find_faces,
    normalize_face,
)

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "demo" / "examples"


def photo(name: str) -> np.ndarray:
    return np.asarray(Image.open(EXAMPLES / name).convert("RGB"))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(float).ravel(), b.astype(float).ravel())[0, 1])


def rotate_about(image: np.ndarray, centre: tuple[float, float], degrees: float) -> np.ndarray:
    matrix = cv2.getRotationMatrix2D(centre, degrees, 1.0)
    return cv2.warpAffine(image, matrix, (image.shape[1], image.shape[0]), borderMode=cv2.BORDER_REPLICATE)


@pytest.mark.parametrize("detector", ["mtcnn", "haar"])
def test_both_detectors_find_the_astronaut(detector):
    found = detect(photo("astronaut.jpg"), detector)
    assert len(found) == 1
    x, y, w, h = found[0].box.as_list()
    assert 150 <= x <= 200 and 40 <= y <= 90 and 75 <= w <= 120  # her face, not the helmet or the flag
    if detector == "mtcnn":
        marks = found[0].landmarks
        assert marks is not None and found[0].score > 0.9
        # eyes in the upper half of the box, left of right, mouth below the eyes
        assert x < marks.left_eye[0] < marks.right_eye[0] < x + w
        assert y < marks.left_eye[1] < y + h / 2 and marks.mouth_left[1] > marks.left_eye[1] + h / 5
    else:
        assert found[0].landmarks is None


def test_framing_is_measured_and_plausible():
    framing = fer2013_framing()
    (lx, ly), (rx, ry) = framing.left_eye, framing.right_eye
    assert ly == ry and 0.3 < ly < 0.45  # level, in the upper part of the frame
    assert 0.25 < lx < 0.4 and 0.6 < rx < 0.75 and abs((lx + rx) / 2 - 0.5) < 0.05
    assert "FER2013 Training" in framing.measured_on


def test_alignment_puts_the_eyes_where_fer2013_has_them():
    """Two dots as "eyes" at a tilt: after alignment they sit, level, at the framing's eye points."""
    image = np.full((400, 400), 120, np.uint8)
    left, right = (150.0, 210.0), (250.0, 170.0)  # 22 degrees tilt
    for x, y in (left, right):
        cv2.circle(image, (int(x), int(y)), 6, 255, -1)
    marks = Landmarks(left, right, (200, 230), (170, 260), (230, 250))
    crop = align_face(image, Detection(Box(120, 120, 160, 180), marks, 0.99, "mtcnn"))
    assert crop.shape == (48, 48) and crop.dtype == np.uint8
    framing = fer2013_framing()
    for (fx, fy), half in ((framing.left_eye, slice(0, 24)), (framing.right_eye, slice(24, 48))):
        region = crop[:, half].astype(float)
        ys, xs = np.nonzero(region > 180)
        assert len(xs), "the dot vanished"
        cx, cy = xs.mean() + half.start, ys.mean()
        assert abs(cx - fx * 48) < 1.5 and abs(cy - fy * 48) < 1.5, (cx, cy, fx * 48, fy * 48)


def test_alignment_undoes_a_tilted_head():
    rgb = photo("astronaut.jpg")
    upright = find_faces(rgb).faces[0]
    centre = upright.box.centre
    tilted = find_faces(rotate_about(rgb, centre, 20)).faces[0]
    unaligned = find_faces(rotate_about(rgb, centre, 20), align=False).faces[0]
    assert tilted.landmarks is not None
    eyes = tilted.landmarks
    assert abs(eyes.right_eye[1] - eyes.left_eye[1]) > 8  # the eyes really are tilted in the photo
    assert correlation(tilted.crop, upright.crop) > 0.9
    assert correlation(tilted.crop, upright.crop) > correlation(unaligned.crop, upright.crop) + 0.05


def test_every_face_is_found_largest_first_and_drawn_with_its_label():
    rgb = photo("two_portraits.jpg")
    search = find_faces(rgb)
    assert len(search.faces) == 2 and search.found and search.detector == "mtcnn"
    first, second = search.faces
    assert first.box.area > second.box.area and first.box.x > 512  # Grace Hopper, on the right
    assert all(face.crop.shape == (48, 48) for face in search.faces)
    assert "2 faces found by MTCNN" in search.note
    plain = draw_faces(rgb, search, max_side=None)
    labelled = draw_faces(rgb, search, ["happy", "sad"], max_side=None)
    assert plain.shape == rgb.shape and not np.array_equal(plain, rgb)
    x, y = second.box.x, second.box.y
    strip = (slice(max(0, y - 30), y), slice(x, x + 80))
    assert not np.array_equal(labelled[strip], plain[strip])  # the label is written above box #2


def test_up_to_twenty_faces_are_kept():
    face = cv2.resize(photo("astronaut.jpg")[40:220, 140:320], (100, 100), interpolation=cv2.INTER_AREA)
    grid = np.vstack([np.hstack([face] * 6)] * 4)  # 24 faces
    search = find_faces(grid, try_rotations=False)
    assert search.total_found > MAX_FACES
    assert len(search.faces) == MAX_FACES and "20 largest are shown" in search.note
    areas = [f.box.area for f in search.faces]
    assert areas == sorted(areas, reverse=True)


def test_a_sideways_photo_is_found_after_turning_it():
    rgb = np.ascontiguousarray(np.rot90(photo("astronaut.jpg")))  # turned 90 degrees anticlockwise
    assert not detect(rgb)
    search = find_faces(rgb)
    assert search.found and search.rotation == 90
    assert "turned 90 degrees clockwise" in search.note
    assert search.image_size == (512, 512)


def test_no_face_says_why_where_it_can():
    coffee = photo("coffee_no_face.jpg")
    search = find_faces(coffee)
    assert search.whole_image and not search.face_crop and search.faces[0].crop.shape == (48, 48)
    assert "No face found" in search.note and "turned by 90, 180 or 270" in search.note
    dark = find_faces((coffee * 0.08).astype(np.uint8))
    assert dark.whole_image and "very dark" in dark.note
    blank = find_faces(np.full((300, 400, 3), 200, np.uint8))
    assert blank.whole_image and "blank" in blank.note


def test_a_face_crop_upload_is_used_as_it_is_without_a_warning():
    face = cv2.cvtColor(photo("astronaut.jpg")[50:190, 160:300], cv2.COLOR_RGB2GRAY)
    small = cv2.resize(face, (48, 48), interpolation=cv2.INTER_AREA)
    search = find_faces(small)
    assert search.face_crop and search.whole_image
    assert "face crop already" in search.note and "No face found" not in search.note
    np.testing.assert_array_equal(search.faces[0].crop, small)  # used as it is


def test_normalisation_steps():
    rng = np.random.default_rng(0)
    flat = rng.integers(100, 140, (48, 48)).astype(np.uint8)  # a low-contrast crop
    assert np.array_equal(normalize_face(flat, "none"), flat)
    equalised = normalize_face(flat, "equalize")
    assert equalised.max() - equalised.min() > 200
    clahe = normalize_face(flat, "clahe")
    assert clahe.std() > flat.std() and clahe.shape == (48, 48)
    with pytest.raises(ValueError, match="normalize must be one of"):
        normalize_face(flat, "gamma")
    search = find_faces(photo("astronaut.jpg"), normalize="equalize")
    assert search.normalize == "equalize" and search.faces[0].crop.max() == 255


def test_unknown_detector_is_a_clear_error():
    with pytest.raises(ValueError, match="detector must be one of mtcnn, haar"):
        find_faces(photo("astronaut.jpg"), "dlib")


@pytest.mark.skipif(not os.environ.get("FER2013_CSV"), reason="set FER2013_CSV to the FER2013 CSV for this test")
def test_fer2013_test_faces_are_taken_as_face_crops_not_warned_about():
    from fer_utils.data import load_dataset

    test = load_dataset(os.environ["FER2013_CSV"]).test
    faces = test.images[:60].reshape(-1, 48, 48).astype(np.uint8)
    searches = [find_faces(face) for face in faces]
    assert all(search.face_crop for search in searches)
    assert not any("No face found" in search.note for search in searches)
    for face, search in zip(faces, searches):
        np.testing.assert_array_equal(search.faces[0].crop, face)


def test_where_mtcnn_finds_nothing_the_haar_cascade_is_asked(monkeypatch):
    import fer_utils.faces as faces

    monkeypatch.setattr(faces, "_detect_mtcnn", lambda *args, **kwargs: [])
    search = find_faces(photo("astronaut.jpg"))
    assert search.found and search.rotation == 0 and search.faces[0].detection.detector == "haar"
    assert "Haar cascade (MTCNN found none)" in search.note


def test_the_traced_mtcnn_finds_what_the_eager_one_finds():
    """fer_utils.mtcnn_stages runs the package's networks traced, on a float32 photo, with its pyramid
    levels as single calls and the largest in a second thread: the boxes, landmarks and scores must
    still be the package's own, for one face, two faces, a tall and a wide photo, a small face and none."""
    from mtcnn import MTCNN

    import fer_utils.faces as faces
    from fer_utils import mtcnn_stages

    eager = MTCNN()
    for name in ("astronaut.jpg", "two_portraits.jpg", "grace_hopper.jpg", "small_face.jpg", "coffee_no_face.jpg"):
        rgb = photo(name)
        theirs = eager.detect_faces(rgb)
        raw = mtcnn_stages.detect_faces(rgb)
        assert len(raw) == len(theirs), name
        for mine, reference in zip(sorted(raw, key=lambda d: d["box"]), sorted(theirs, key=lambda d: d["box"])):
            assert np.allclose(mine["box"], reference["box"], atol=1), name
            assert abs(mine["confidence"] - reference["confidence"]) < 1e-4, name
        if max(rgb.shape[:2]) > faces.MTCNN_MAX_SIDE:
            continue  # faces.detect looks at a shrunk copy of a big photo
        ours = faces.detect(rgb, "mtcnn")
        theirs = sorted((d for d in theirs if d["confidence"] >= faces.MTCNN_MIN_SCORE),
                        key=lambda d: d["box"][2] * d["box"][3], reverse=True)
        assert len(ours) == len(theirs) and (len(ours) > 0) == (name != "coffee_no_face.jpg"), name
        for mine, reference in zip(ours, theirs):
            assert np.allclose(mine.box.as_list(), reference["box"], atol=1)
            assert np.allclose(mine.landmarks.left_eye, reference["keypoints"]["left_eye"], atol=1)


@pytest.mark.parametrize("size", [(1280, 960), (960, 1280), (1080, 1080), (1080, 1350), (4032, 3024)],
                         ids=lambda size: f"{size[0]}x{size[1]}")
def test_mtcnn_finds_the_face_in_photos_whose_pyramid_ends_below_pnets_window(size, monkeypatch):
    """For these shapes (4:3 and 3:4 from 1280 px up, as phones take them; square and 4:5, as the web
    posts them) mtcnn 1.0's pyramid ends in a level under PNet's 12 pixels. The traced call failed on
    it, so the photo failed; the package's own eager detect_faces fails on it too, and hides that by
    finding no face at all. The faces must be the package's once that empty level is left out."""
    from mtcnn import MTCNN
    from mtcnn.stages import stage_pnet

    import fer_utils.faces as faces
    from fer_utils import mtcnn_stages

    rgb = cv2.resize(photo("grace_hopper.jpg"), size, interpolation=cv2.INTER_CUBIC)
    search = find_faces(rgb, "mtcnn")
    assert not search.whole_image and search.faces[0].detection.detector == "mtcnn"
    assert 0.25 < search.faces[0].detection.box.w / size[0] < 0.75, "the portrait's face, not a false find"
    if max(size) <= faces.MTCNN_MAX_SIDE:  # the package itself, on the photo MTCNN looks at
        pyramid = stage_pnet.build_scale_pyramid

        def without_empty_levels(width, height, min_face_size, scale_factor, min_size=12):
            scales = pyramid(width, height, min_face_size, scale_factor, min_size)
            return np.asarray([s for s in scales if min(int(height * s), int(width * s)) >= min_size])

        monkeypatch.setattr(stage_pnet, "build_scale_pyramid", without_empty_levels)
        min_face = max(20, int(0.03 * min(rgb.shape[:2])))
        theirs = MTCNN().detect_faces(rgb, min_face_size=min_face)
        mine = mtcnn_stages.detect_faces(rgb, min_face_size=min_face)
        assert len(mine) == len(theirs) >= 1
        for ours, reference in zip(sorted(mine, key=lambda d: d["box"]), sorted(theirs, key=lambda d: d["box"])):
            assert np.allclose(ours["box"], reference["box"], atol=1)
            assert abs(ours["confidence"] - reference["confidence"]) < 1e-4


def test_a_photo_mtcnn_fails_on_goes_to_the_haar_cascade_and_the_note_says_so(monkeypatch, caplog):
    """A detector error on one photo (such as the sub-window pyramid level above) must not lose the photo."""
    import tensorflow as tf

    from fer_utils import mtcnn_stages

    def broken(*args, **kwargs):
        raise tf.errors.InvalidArgumentError(None, None, "Incompatible shapes: [1,1,32] vs. [1,2,3,16]")

    monkeypatch.setattr(mtcnn_stages, "detect_faces", broken)
    with caplog.at_level("ERROR", logger="fer_utils.faces"):
        search = find_faces(photo("grace_hopper.jpg"), "mtcnn")
    assert search.found and search.detector_failed and search.faces[0].detection.detector == "haar"
    assert search.note.startswith("One face found by the Haar cascade (MTCNN failed on this photo)")
    assert "Incompatible shapes" in caplog.text, "the log keeps the error"
    nothing = find_faces(photo("coffee_no_face.jpg"), "mtcnn")
    assert nothing.whole_image and "MTCNN failed on this photo" in nothing.note
    with pytest.raises(ValueError, match="detector must be one of"):
        find_faces(photo("grace_hopper.jpg"), "yolo")


def test_where_neither_detector_finds_a_face_upright_mtcnn_looks_again_at_lower_thresholds(monkeypatch):
    """A hard face (here: the first pass made to demand more than this face's 0.99 and the Haar
    cascade made blind), found neither upright nor turned, is found by the second look instead of
    the whole image being answered."""
    import fer_utils.faces as faces

    rgb = photo("grace_hopper.jpg")
    [plain] = faces.detect(rgb, "mtcnn")
    monkeypatch.setattr(faces, "MTCNN_MIN_SCORE", 0.999)
    monkeypatch.setattr(faces, "detect_faces", lambda *args, **kwargs: [])  # the Haar cascade
    assert faces.detect(rgb, "mtcnn") == []
    search = find_faces(rgb, "mtcnn")
    assert search.found and search.second_look and search.rotation == 0 and len(search.faces) == 1
    found = search.faces[0].detection
    assert found.detector == "mtcnn" and found.landmarks is not None and found.score == pytest.approx(plain.score, abs=0.01)
    assert found.box.overlap(plain.box) > 0.8, "the same face as the first pass finds unhindered"
    assert "MTCNN at lower thresholds (a second look; confidence 0.99), so it may not be a face" in search.note
    assert search.found_by(search.faces[0]) == "mtcnn second look"
    without = find_faces(rgb, "mtcnn", second_look=False)
    assert not without.second_look and (without.whole_image or without.rotation), "without it, nothing upright"


def test_mtcnn_on_photos_with_nothing_to_propose_finds_nothing_without_an_error():
    from fer_utils import mtcnn_stages

    assert mtcnn_stages.detect_faces(np.full((240, 320, 3), 128, np.uint8)) == []  # blank: no PNet proposal
    assert mtcnn_stages.detect_faces(np.full((14, 14, 3), 128, np.uint8)) == []  # one pyramid level at most
    float_photo = np.full((64, 64, 3), 200.0, np.float32)
    mtcnn_stages.detect_faces(float_photo)
    assert np.all(float_photo == 200.0), "the caller's photo is not normalised in place"


def test_box_overlap_is_intersection_over_union():
    box = Box(10, 10, 20, 20)
    assert box.overlap(box) == 1.0 and box.overlap(Box(100, 100, 5, 5)) == 0.0
    assert box.overlap(Box(20, 10, 20, 20)) == pytest.approx(1 / 3), "half of each: 200 shared of 600"


def test_the_profile_cascade_is_asked_only_where_no_frontal_face_is_found(monkeypatch):
    """A frontal face is found as before, without the profile cascade's cost; a photo with no face
    stays a whole-image answer (the cascade finds no false face in it)."""
    import fer_utils.faces as faces

    assert faces.detect_profiles(photo("coffee_no_face.jpg")) == []
    assert find_faces(photo("coffee_no_face.jpg"), "mtcnn").whole_image
    monkeypatch.setattr(faces, "detect_profiles", lambda *args, **kwargs: pytest.fail("asked for a frontal face"))
    search = find_faces(photo("grace_hopper.jpg"), "mtcnn")
    assert search.found and search.found_by(search.faces[0]) == "mtcnn"


#: PublicTest faces turned from the camera that neither MTCNN nor the frontal cascade finds when
#: pasted into a plain photo (found by scanning PublicTest's first 1,500 faces so).
TURNED_AWAY = (35, 893, 1484)


def pasted_into_grey(face: np.ndarray) -> tuple[np.ndarray, Box]:
    """A 48x48 face enlarged to 144 px in the middle of a plain 480x360 photo, and where it is."""
    canvas = np.full((360, 480), 128, np.uint8)
    canvas[108:252, 168:312] = cv2.resize(face, (144, 144), interpolation=cv2.INTER_CUBIC)
    return np.stack([canvas] * 3, axis=-1), Box(168, 108, 144, 144)


def test_a_face_seen_from_the_side_is_found_by_the_profile_cascade_both_ways(fer2013_csv):
    """Real faces turned away, which the frontal detectors miss (without the profile step they are
    answered on the whole image), are found where they are, and so are their mirror images: the
    cascade knows faces looking one way, so it also looks at the mirrored photo and maps boxes back."""
    from fer_utils.data import load_dataset
    from fer_utils.faces import detect_profiles

    val = load_dataset(fer2013_csv).val
    for index in TURNED_AWAY:
        rgb, truth = pasted_into_grey(val.images[index].reshape(48, 48).astype(np.uint8))
        without = find_faces(rgb, "mtcnn", profiles=False, try_rotations=False, second_look=False)
        assert without.whole_image, f"PublicTest face {index}: found without the profile cascade"
        search = find_faces(rgb, "mtcnn")
        assert search.found and search.rotation == 0 and search.found_by(search.faces[0]) == "haar_profile", index
        assert search.faces[0].box.overlap(truth) >= 0.25, f"PublicTest face {index}: found elsewhere"
        assert "Haar profile cascade (no frontal face was found), seen from the side" in search.note
        assert search.faces[0].crop.shape == (48, 48) and search.faces[0].crop.std() > 10, "a real crop of the face"
        width = rgb.shape[1]
        mirrored = {(width - b.box.x - b.box.w, b.box.y, b.box.w, b.box.h)
                    for b in detect_profiles(np.ascontiguousarray(rgb[:, ::-1]))}
        assert mirrored == {(b.box.x, b.box.y, b.box.w, b.box.h) for b in detect_profiles(rgb)}, index
