"""The Compare tab: the /compare API of the launched app (every model on one photo, the face picker,
bad and odd uploads) and the agreement line it shows.

The tests marked slow use the app launched once per session (tests/demo_fixtures.py).
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from demo_fixtures import ALL_MODELS, CLASS_NAMES_7, compare, details  # noqa: E402


# ----------------------------------------------------------------------------- pure functions


def test_agreement_line_names_who_disagrees():
    from fer_utils.serving import Prediction, agreement_line

    def prediction(name, index):
        probs = np.full(7, 0.01)
        probs[index] = 0.94
        return Prediction(name, name, tuple(CLASS_NAMES_7), probs, 0.001)

    assert agreement_line([prediction("A", 3), prediction("B", 3)]) == "**All 2 models agree: happy.**"
    line = agreement_line([prediction("A", 3), prediction("B", 3), prediction("C", 4)])
    assert line.startswith("2 of 3 models say **happy**") and "**sad**: C" in line


# ----------------------------------------------------------------------------- the launched app


@pytest.mark.slow
def test_compare_synthetic_happy_face_is_happy_for_the_scratch_cnn(client, photos):
    result = compare(client, photos["synthetic_happy.png"])
    summary = details(result)
    assert summary["models"]["scratch_cnn"]["label"] == "happy"
    assert set(summary["models"]) == set(ALL_MODELS)
    # a 48x48 face is a face crop already: used as it is, without the no-face warning
    assert summary["face"]["found"] is False and summary["face_crop_upload"] is True
    assert "face crop already" in result[2] and "No face found" not in result[2] and "⚠" not in result[2]
    crop = Image.open(result[1])
    assert crop.size == (48, 48)
    # outputs: boxed photo, crop, face note, agreement, then (label, time) per model, the face picker, then JSON
    assert len(result) == 4 + 2 * len(ALL_MODELS) + 2
    scratch_label, scratch_time = result[4], result[5]
    assert scratch_label["label"] == "happy" and len(scratch_label["confidences"]) == 3
    assert scratch_time.startswith("Inference:") and "ms" in scratch_time
    assert "head only" in result[4 + 2 * 4 + 1]  # the ensemble reuses the members' outputs


@pytest.mark.slow
def test_compare_astronaut_crop_is_48x48_and_box_is_drawn(client, photos):
    result = compare(client, photos["astronaut.jpg"])
    summary = details(result)
    assert summary["face"]["found"] and summary["face"]["faces_found"] == 1
    assert summary["face"]["crop_size"] == [48, 48]
    assert summary["detector"] == "mtcnn" and "MTCNN" in result[2]  # the UI says which detector ran
    assert Image.open(result[1]).size == (48, 48)
    assert Image.open(result[0]).size == (512, 512)
    assert "agree" in result[3] or "say" in result[3] or "majority" in result[3]


BAD_INPUTS = {
    "not_an_image.jpg": "This file is not an image we can read",
    "truncated.jpg": "truncated or damaged",
    "empty.png": "The file is empty",
    "one_pixel.png": "only 1x1 pixels",
    "bomb.png": "too many pixels",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_inputs_get_a_specific_message(client, photos, name):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=BAD_INPUTS[name]):
        compare(client, photos[name])


@pytest.mark.slow
def test_oversized_upload_is_refused_and_the_server_keeps_serving(app_url, client, photos):
    import httpx

    with pytest.raises(Exception, match="exceeds the maximum file size"):  # gradio_client checks first...
        compare(client, photos["huge_file.png"])
    with open(photos["huge_file.png"], "rb") as stream:  # ...and the server refuses it anyway
        response = httpx.post(f"{app_url}gradio_api/upload", files={"files": ("huge.png", stream)}, timeout=60)
    assert response.status_code == 413
    assert details(compare(client, photos["astronaut.jpg"]))["face"]["found"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["sixteen_bit.png", "cmyk.jpg", "palette.png", "rgba.png", "animated.gif", "exif_rotated.jpg", "grey.jpg"]
)
def test_odd_images_are_decoded_and_the_face_found(client, photos, name):
    summary = details(compare(client, photos[name]))
    assert summary["face"]["found"], summary["notes"]
    assert summary["face"]["image_size_wh"] == [512, 512]
    assert set(summary["models"]) == set(ALL_MODELS)


@pytest.mark.slow
def test_exif_rotation_turns_the_photo_and_a_sideways_photo_is_tried_turned(client, photos):
    sideways = compare(client, photos["sideways_no_exif.jpg"])
    summary = details(sideways)
    # no EXIF: the face is found only after trying the quarter turns, and the note says so
    assert summary["face"]["found"] and summary["rotation_degrees"] in (90, 270)
    assert "turned" in sideways[2] and not any("EXIF" in note for note in summary["notes"])
    summary = details(compare(client, photos["exif_rotated.jpg"]))
    assert summary["face"]["found"] and summary["rotation_degrees"] == 0
    assert any("EXIF" in note for note in summary["notes"])


@pytest.mark.slow
def test_no_face_and_several_faces_are_explained(client, photos):
    none = compare(client, photos["no_face.jpg"])
    assert not details(none)["face"]["found"] and "No face found" in none[2] and "whole image" in none[2]
    several = compare(client, photos["two_faces.jpg"])
    summary = details(several)
    assert summary["face"]["faces_found"] == 2
    assert "2 faces found by MTCNN, numbered largest first" in several[2]
    box, other = summary["face"]["all_boxes_xywh"]
    assert summary["face"]["box_xywh"] == box and box[2] > other[2] and box[0] > 512  # Grace Hopper, on the right
    # the API returns every face, with its box and each model's probabilities
    assert [face["face"] for face in summary["faces"]] == [1, 2]
    for face, expected_box in zip(summary["faces"], (box, other)):
        assert face["box_xywh"] == expected_box and set(face["landmarks"]) >= {"left_eye", "right_eye"}
        assert set(face["models"]) == set(ALL_MODELS)
        for answer in face["models"].values():
            assert set(answer["probabilities"]) == set(CLASS_NAMES_7)
            assert abs(sum(answer["probabilities"].values()) - 1) < 1e-3
    assert several[-2]["choices"] if isinstance(several[-2], dict) else several[-2]  # the face picker


@pytest.mark.slow
def test_compare_picks_the_face_asked_for(client, photos):
    from gradio_client import handle_file

    first = details(compare(client, photos["two_faces.jpg"]))
    second = details(client.predict(handle_file(str(photos["two_faces.jpg"])), "#2", api_name="/compare"))
    assert first["face"]["number"] == 1 and second["face"]["number"] == 2
    assert second["face"]["box_xywh"] == first["faces"][1]["box_xywh"]
    # the per-model summary is that face's
    for key in ALL_MODELS:
        assert second["models"][key]["label"] == first["faces"][1]["models"][key]["label"]
