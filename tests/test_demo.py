"""Tests of the Gradio demo (demo/app.py) against the launched app, with gradio_client.

The models are small ones trained or built here on synthetic faces and saved to a temporary
folder, so the tests never depend on the shipped models: a scratch CNN trained for a few epochs
(it learns the synthetic classes), tiny untrained ResNet50 / MobileNetV2 / InceptionV3 and an
ensemble of all four. They are made once per session (see :func:`trained_models_dir`).
"""

from __future__ import annotations

import atexit
import functools
import io
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

TESTS = pathlib.Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from synthetic import CLASS_NAMES_7, synthetic_face, synthetic_faces  # noqa: E402

EXAMPLES = ROOT / "demo" / "examples"
MEMBERS = ("scratch_cnn", "resnet50", "mobilenetv2", "inceptionv3")
ALL_MODELS = (*MEMBERS, "ensemble")


# ----------------------------------------------------------------------------- shared set-up
# Plain cached functions rather than session fixtures, so tests/test_demo_browser.py can reuse
# the same trained models without training them twice.


@functools.lru_cache(maxsize=None)
def trained_models_dir() -> pathlib.Path:
    """Five small models with cards in a temporary folder (removed at exit)."""
    import keras

    from fer_utils.model_io import describe_weights, save_ensemble, save_model
    from fer_utils.models import build_ensemble, build_model

    folder = pathlib.Path(tempfile.mkdtemp(prefix="fer_demo_models_"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    keras.utils.set_random_seed(0)
    images, labels = synthetic_faces(100, seed=1)
    scratch = build_model("scratch_cnn", 7, filters=(16, 32, 64), dense_units=(64,), dropout=0.2, l2=0.0)
    scratch.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy")
    started = time.perf_counter()
    scratch.fit(images.astype("float32"), labels, epochs=8, batch_size=32, verbose=0)
    models = {"scratch_cnn": scratch}
    sizes = {"resnet50": 32, "mobilenetv2": 32, "inceptionv3": 75}
    for kind, size in sizes.items():
        models[kind] = build_model(kind, 7, weights=None, image_size=size)
    paths = []
    for key in MEMBERS:
        card = {
            "name": key,
            "class_names": list(CLASS_NAMES_7),
            "weights_source": describe_weights(None),
            "metrics": {"test": {"plain": {"accuracy": 0.625, "macro_f1": 0.5}, "tta": {"accuracy": 0.64}}},
            "training": {"duration_s": round(time.perf_counter() - started, 1), "epochs_run": 8 if key == "scratch_cnn" else 0},
            "parameters": {"image_size": sizes.get(key, 48)},
        }
        if key == "mobilenetv2":
            card = {"name": key}  # a sparse card: the app must cope with missing keys
        storage = "float16" if key == "scratch_cnn" else "float32"  # the app serves half-precision files too
        paths.append(save_model(models[key], folder / f"{key}.keras", card, weights_dtype=storage))
    ensemble = build_ensemble([models[key] for key in MEMBERS])
    save_ensemble(ensemble, folder / "ensemble.keras", paths, {"name": "ensemble", "class_names": list(CLASS_NAMES_7)})
    return folder


@functools.lru_cache(maxsize=None)
def loaded_models():
    from fer_utils.serving import load_models

    return load_models(trained_models_dir())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@functools.lru_cache(maxsize=None)
def running_app() -> str:
    """Launch the app once per session on loopback; returns its URL."""
    from demo.app import build_demo, launch

    blocks = build_demo(models=loaded_models())
    launch(blocks, host="127.0.0.1", port=free_port(), prevent_thread_lock=True, quiet=True, warm_up=False)
    atexit.register(blocks.close)
    return blocks.local_url


@pytest.fixture(scope="session")
def models():
    return loaded_models()


@pytest.fixture(scope="session")
def app_url() -> str:
    return running_app()


@pytest.fixture(scope="session")
def client(app_url, tmp_path_factory):
    from gradio_client import Client

    # ssl_verify=False: plain HTTP on loopback; verification only costs a CA-bundle load per call
    return Client(app_url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")), ssl_verify=False)


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> dict[str, pathlib.Path]:
    """Good and bad uploads, written once."""
    folder = tmp_path_factory.mktemp("photos")
    astronaut = Image.open(EXAMPLES / "astronaut.jpg").convert("RGB")
    files: dict[str, pathlib.Path] = {}

    def put(name: str, data: bytes) -> None:
        files[name] = folder / name
        files[name].write_bytes(data)

    def save(name: str, image: Image.Image, **options) -> None:
        buffer = io.BytesIO()
        image.save(buffer, format=options.pop("format", None) or name.rsplit(".", 1)[1].replace("jpg", "jpeg"), **options)
        put(name, buffer.getvalue())

    put("not_an_image.jpg", b"GIF89a? no: this is plain text pretending to be a photo\n" * 20)
    jpeg = (EXAMPLES / "astronaut.jpg").read_bytes()
    put("truncated.jpg", jpeg[: len(jpeg) // 3])
    put("empty.png", b"")
    save("one_pixel.png", Image.new("RGB", (1, 1), (200, 150, 100)))
    save("bomb.png", Image.new("L", (9000, 9000)))  # 81 MP of zeros: a few hundred KB compressed
    put("huge_file.png", b"\x89PNG\r\n\x1a\n" + os.urandom(11 * 1024 * 1024))  # over the 10 MB upload cap
    grey16 = (np.asarray(astronaut.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    save("sixteen_bit.png", Image.fromarray(grey16))
    save("cmyk.jpg", astronaut.convert("CMYK"))
    save("palette.png", astronaut.convert("P", palette=Image.Palette.ADAPTIVE, colors=64))
    rgba = astronaut.convert("RGBA")
    rgba.putalpha(Image.new("L", rgba.size, 200))
    save("rgba.png", rgba)
    frames = [astronaut, Image.open(EXAMPLES / "coffee_no_face.jpg").convert("RGB").resize(astronaut.size)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=200, loop=0)
    put("animated.gif", buffer.getvalue())
    sideways = astronaut.transpose(Image.Transpose.ROTATE_90)  # stored lying on its side...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...with the EXIF tag that says "turn 90 degrees clockwise to view"
    save("exif_rotated.jpg", sideways, exif=exif)
    save("sideways_no_exif.jpg", sideways)
    save("grey.jpg", astronaut.convert("L"))
    files["no_face.jpg"] = EXAMPLES / "coffee_no_face.jpg"
    files["two_faces.jpg"] = EXAMPLES / "two_portraits.jpg"
    files["astronaut.jpg"] = EXAMPLES / "astronaut.jpg"
    happy = _undetected_synthetic_face(emotion=3)
    save("synthetic_happy.png", Image.fromarray(happy, mode="L"))
    return files


def _undetected_synthetic_face(emotion: int) -> np.ndarray:
    """A synthetic face the cascade does not fire on, so the app uses it whole, as trained."""
    from fer_utils.faces import detect_faces

    rng = np.random.default_rng(123)
    for _ in range(50):
        face = synthetic_face(emotion, rng)
        if not detect_faces(face):
            return face
    raise AssertionError("every synthetic face was detected by the cascade")


def compare(client, path):
    from gradio_client import handle_file

    return client.predict(handle_file(str(path)), api_name="/compare")


def details(result) -> dict:
    """The /compare result's last output: the JSON summary."""
    value = result[-1]
    return json.loads(pathlib.Path(value).read_text()) if isinstance(value, str) else value


# ----------------------------------------------------------------------------- pure functions


def test_faces_finds_the_astronaut_and_crops_48x48():
    from fer_utils.faces import draw_face_boxes, locate_face

    rgb = np.asarray(Image.open(EXAMPLES / "astronaut.jpg").convert("RGB"))
    crop = locate_face(rgb)
    assert crop.found and len(crop.boxes) == 1
    x, y, w, h = crop.box.as_list()
    assert 150 <= x <= 200 and 40 <= y <= 90 and 80 <= w <= 120  # her face, not the helmet or the flag
    assert crop.face.shape == (48, 48) and crop.face.dtype == np.uint8
    boxed = draw_face_boxes(rgb, crop)
    assert boxed.shape == rgb.shape and not np.array_equal(boxed, rgb)
    assert np.array_equal(rgb, np.asarray(Image.open(EXAMPLES / "astronaut.jpg").convert("RGB")))  # a copy


def test_faces_small_face_in_big_photo_is_found():
    from fer_utils.faces import locate_face

    crop = locate_face(np.asarray(Image.open(EXAMPLES / "small_face.jpg").convert("RGB")))
    assert crop.found and crop.box.w < 120 and crop.image_size == (1600, 1067)


def test_faces_whole_image_when_no_face():
    from fer_utils.faces import locate_face

    crop = locate_face(np.asarray(Image.open(EXAMPLES / "coffee_no_face.jpg").convert("RGB")))
    assert not crop.found and crop.face.shape == (48, 48)
    assert "No face found" in crop.note and "whole image" in crop.note


def test_faces_crop_at_the_edge_stays_square():
    from fer_utils.faces import Box, crop_face

    gray = np.arange(100 * 80, dtype=np.uint32).reshape(100, 80).astype(np.uint8)
    assert crop_face(gray, Box(60, 0, 30, 30)).shape == (48, 48)
    assert crop_face(gray, Box(0, 0, 80, 100)).shape == (48, 48)


def test_decode_rejects_bad_files_with_clear_messages(photos):
    from fer_utils.imaging import ImageInputError, decode_image

    expected = {
        "not_an_image.jpg": "not an image",
        "truncated.jpg": "truncated",
        "empty.png": "empty",
        "one_pixel.png": "only 1x1 pixels",
        "bomb.png": "too many pixels",
        "huge_file.png": "the limit is 10 MB",
    }
    for name, message in expected.items():
        with pytest.raises(ImageInputError, match=message):
            decode_image(photos[name])


def test_decode_normalises_odd_but_valid_images(photos):
    from fer_utils.imaging import decode_image

    for name in ("sixteen_bit.png", "cmyk.jpg", "palette.png", "rgba.png", "animated.gif", "exif_rotated.jpg", "grey.jpg"):
        decoded = decode_image(photos[name])
        assert decoded.rgb.dtype == np.uint8 and decoded.rgb.shape == (512, 512, 3), name
    assert np.asarray(decode_image(photos["sixteen_bit.png"]).rgb).max() > 200  # scaled, not clipped to black
    assert any("first one" in note for note in decode_image(photos["animated.gif"]).notes)
    assert any("EXIF" in note for note in decode_image(photos["exif_rotated.jpg"]).notes)
    assert decode_image(photos["rgba.png"]).rgb.mean() > decode_image(photos["astronaut.jpg"]).rgb.mean()  # white behind


def test_ensemble_reuses_members_and_matches_the_full_model(models):
    from fer_utils.serving import predict_all
    from fer_utils.serving import face_tensor

    ensemble = models.models["ensemble"]
    assert [m.key for m in ensemble.members] == list(MEMBERS)
    assert all(member is models.models[member.key] for member in ensemble.members)  # not loaded twice
    face = synthetic_face(5, np.random.default_rng(0))
    by_key = {p.key: p for p in predict_all(models, face)}
    full = ensemble.model(face_tensor(face), training=False).numpy()[0]
    np.testing.assert_allclose(by_key["ensemble"].probabilities, full, atol=1e-5)
    assert "members' outputs" in by_key["ensemble"].note
    for key in MEMBERS:
        expected = models.models[key].model(face_tensor(face), training=False).numpy()[0]
        np.testing.assert_allclose(by_key[key].probabilities, expected, atol=1e-5)


def test_demo_explainer_matches_fer_utils_explain(models):
    from fer_utils.explain import explain

    face = synthetic_face(3, np.random.default_rng(1)).astype(np.float32)
    for key in ("scratch_cnn", "ensemble"):
        loaded = models.models[key]
        predicted = int(np.argmax(loaded.predict(face)))
        heat, method = loaded.explainer()(face, predicted)
        reference, reference_method = explain(loaded.model, face, class_index=predicted)
        assert method == reference_method == ("grad_cam" if key == "scratch_cnn" else "saliency")
        np.testing.assert_allclose(heat, reference, atol=1e-4)


def test_agreement_line_names_who_disagrees():
    from fer_utils.serving import Prediction, agreement_line

    def prediction(name, index):
        probs = np.full(7, 0.01)
        probs[index] = 0.94
        return Prediction(name, name, tuple(CLASS_NAMES_7), probs, 0.001)

    assert agreement_line([prediction("A", 3), prediction("B", 3)]) == "**All 2 models agree: happy.**"
    line = agreement_line([prediction("A", 3), prediction("B", 3), prediction("C", 4)])
    assert line.startswith("2 of 3 models say **happy**") and "**sad**: C" in line


def test_about_panel_reads_cards_and_tolerates_missing_keys(models):
    from demo.about import about_markdown

    text = about_markdown(models)
    assert "PrivateTest" in text and "62.5% (64.0% with TTA)" in text
    assert "random initialisation (weights=None)" in text
    mobilenet_row = next(line for line in text.splitlines() if line.startswith("| MobileNetV2"))
    assert "not evaluated" in mobilenet_row and "not recorded" in mobilenet_row
    rows = {name: next(line for line in text.splitlines() if line.startswith(f"| {name} |")) for name in ("Scratch CNN", "ResNet50")}
    assert "weights stored as float16" in rows["Scratch CNN"] and "float16" not in rows["ResNet50"]


def test_an_ensemble_member_outside_the_five_runs_inside_the_ensemble_only(tmp_path):
    """A fifth member (a second scratch CNN) gets no tab of its own but counts in the ensemble's answer."""
    import keras

    from demo.about import about_markdown
    from fer_utils.serving import predict_all
    from fer_utils.serving import MODEL_NAMES, face_tensor, load_models
    from fer_utils.experiment import display_name
    from fer_utils.model_io import load_model, save_ensemble, save_model
    from fer_utils.models import build_ensemble, build_model, ensemble_parts

    for key in MEMBERS:
        shutil.copy(trained_models_dir() / f"{key}.keras", tmp_path)
        if (trained_models_dir() / f"{key}.json").exists():
            shutil.copy(trained_models_dir() / f"{key}.json", tmp_path)
    keras.utils.set_random_seed(3)
    extra = build_model("scratch_cnn", 7, filters=(8, 16), dense_units=(16,), dropout=0.0, l2=0.0)
    name = "scratch_cnn_small"
    extra_path = save_model(extra, tmp_path / f"{name}.keras", {
        "name": name, "kind": "scratch_cnn", "display_name": display_name(name, "scratch_cnn"),
        "class_names": list(CLASS_NAMES_7)})
    member_paths = [tmp_path / f"{key}.keras" for key in MEMBERS] + [extra_path]
    members = [load_model(path) for path in member_paths]
    save_ensemble(build_ensemble(members), tmp_path / "ensemble.keras", member_paths,
                  {"name": "ensemble", "class_names": list(CLASS_NAMES_7)})

    loaded = load_models(tmp_path)
    assert list(loaded.models) == list(MODEL_NAMES) and not loaded.missing  # still five tabs
    ensemble = loaded.models["ensemble"]
    assert [m.key for m in ensemble.members] == [*MEMBERS, f"member:{name}"]
    assert ensemble.members[-1].display_name == "Scratch CNN (scratch_cnn_small)"
    face = synthetic_face(2, np.random.default_rng(4))
    by_key = {p.key: p for p in predict_all(loaded, face)}
    assert set(by_key) == set(MODEL_NAMES)
    full = build_ensemble(members, head=ensemble_parts(ensemble.model)[1])  # the files, loaded afresh
    np.testing.assert_allclose(by_key["ensemble"].probabilities, full(face_tensor(face), training=False).numpy()[0], atol=1e-5)
    without_extra = ensemble.combine([by_key[key].probabilities for key in MEMBERS] + [np.full(7, 1 / 7, np.float32)])
    assert not np.allclose(by_key["ensemble"].probabilities, without_extra, atol=1e-4), "the fifth member must count"
    assert "Scratch CNN (scratch_cnn_small)" in about_markdown(loaded)


def test_a_mean_ensemble_serves_the_average_of_its_members_and_says_so(tmp_path):
    from demo.about import about_markdown
    from fer_utils.serving import predict_all
    from fer_utils.serving import load_models
    from fer_utils.model_io import load_model, save_ensemble
    from fer_utils.models import build_ensemble, build_ensemble_head

    for key in MEMBERS:
        shutil.copy(trained_models_dir() / f"{key}.keras", tmp_path)
    member_paths = [tmp_path / f"{key}.keras" for key in MEMBERS]
    head = build_ensemble_head(len(MEMBERS), 7, combine="mean")
    save_ensemble(build_ensemble([load_model(p) for p in member_paths], head=head), tmp_path / "ensemble.keras",
                  member_paths, {"name": "ensemble", "class_names": list(CLASS_NAMES_7),
                                 "training": {"val_accuracy_by_combine": {"learned": 0.6, "mean": 0.62}}})
    loaded = load_models(tmp_path)
    by_key = {p.key: p for p in predict_all(loaded, synthetic_face(5, np.random.default_rng(8)))}
    expected = np.mean([by_key[key].probabilities for key in MEMBERS], axis=0)
    np.testing.assert_allclose(by_key["ensemble"].probabilities, expected, atol=1e-6)
    row = next(line for line in about_markdown(loaded).splitlines() if line.startswith("| Ensemble"))
    assert "the mean of the probabilities of" in row and "kept over a trained head" in row


def test_missing_models_are_listed_and_none_at_all_exits_1(tmp_path, capsys):
    from demo.app import build_demo, main
    from fer_utils.serving import load_models

    (tmp_path / "partial").mkdir()
    shutil.copy(trained_models_dir() / "scratch_cnn.keras", tmp_path / "partial")
    (tmp_path / "partial" / "resnet50.keras").write_bytes(b"not a keras file")
    partial = load_models(tmp_path / "partial")
    assert list(partial.models) == ["scratch_cnn"]
    assert "could not be loaded" in partial.missing["resnet50"]
    assert partial.missing["ensemble"] == "ensemble.keras not found"
    assert build_demo(models=partial) is not None

    (tmp_path / "empty").mkdir()
    assert main(["--models-dir", str(tmp_path / "empty")]) == 1
    assert "No models found" in capsys.readouterr().err
    assert build_demo(tmp_path / "empty") is not None  # the page still builds, with a message


def test_module_level_demo_imports_with_an_empty_models_dir(tmp_path, monkeypatch):
    import gradio as gr

    import demo.app as app

    monkeypatch.setattr(app, "default_models_dir", lambda: tmp_path)
    monkeypatch.setattr(app, "_lazy_demo", None)
    assert isinstance(app.demo, gr.Blocks)
    assert "No models found" in json.dumps(app.demo.config)


def test_auth_flag_parsing():
    from demo.app import parse_auth

    assert parse_auth("ann:s3cr:et") == ("ann", "s3cr:et")
    assert parse_auth(None) is None
    with pytest.raises(ValueError):
        parse_auth("no-colon")


def test_default_models_dir_is_next_to_the_repo_not_the_cwd():
    from fer_utils.serving import default_models_dir

    assert default_models_dir() == ROOT / "saved_models"


# ----------------------------------------------------------------------------- the launched app


def test_api_lists_compare_and_one_endpoint_per_model(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) == {"/compare", "/video", "/live_frame", *(f"/{key}" for key in ALL_MODELS)}


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


def test_compare_astronaut_crop_is_48x48_and_box_is_drawn(client, photos):
    result = compare(client, photos["astronaut.jpg"])
    summary = details(result)
    assert summary["face"]["found"] and summary["face"]["faces_found"] == 1
    assert summary["face"]["crop_size"] == [48, 48]
    assert summary["detector"] == "mtcnn" and "MTCNN" in result[2]  # the UI says which detector ran
    assert Image.open(result[1]).size == (48, 48)
    assert Image.open(result[0]).size == (512, 512)
    assert "agree" in result[3] or "say" in result[3] or "majority" in result[3]


@pytest.mark.parametrize("key", ALL_MODELS)
def test_each_model_endpoint_predicts_and_explains(client, photos, key):
    from gradio_client import handle_file

    label, heatmap, info = client.predict(handle_file(str(photos["astronaut.jpg"])), api_name=f"/{key}")
    assert label["label"] in CLASS_NAMES_7 and len(label["confidences"]) == 3
    overlay = np.asarray(Image.open(heatmap))
    assert overlay.shape == (192, 192, 3)
    assert ("Grad-CAM" if key != "ensemble" else "Saliency") in info
    if key == "scratch_cnn":
        face_only, _, _ = client.predict(handle_file(str(photos["synthetic_happy.png"])), api_name="/scratch_cnn")
        assert face_only["label"] == "happy"


BAD_INPUTS = {
    "not_an_image.jpg": "This file is not an image we can read",
    "truncated.jpg": "truncated or damaged",
    "empty.png": "The file is empty",
    "one_pixel.png": "only 1x1 pixels",
    "bomb.png": "too many pixels",
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_inputs_get_a_specific_message(client, photos, name):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=BAD_INPUTS[name]):
        compare(client, photos[name])


def test_oversized_upload_is_refused_and_the_server_keeps_serving(app_url, client, photos):
    import httpx

    with pytest.raises(Exception, match="exceeds the maximum file size"):  # gradio_client checks first...
        compare(client, photos["huge_file.png"])
    with open(photos["huge_file.png"], "rb") as stream:  # ...and the server refuses it anyway
        response = httpx.post(f"{app_url}gradio_api/upload", files={"files": ("huge.png", stream)}, timeout=60)
    assert response.status_code == 413
    assert details(compare(client, photos["astronaut.jpg"]))["face"]["found"]


@pytest.mark.parametrize(
    "name", ["sixteen_bit.png", "cmyk.jpg", "palette.png", "rgba.png", "animated.gif", "exif_rotated.jpg", "grey.jpg"]
)
def test_odd_images_are_decoded_and_the_face_found(client, photos, name):
    summary = details(compare(client, photos[name]))
    assert summary["face"]["found"], summary["notes"]
    assert summary["face"]["image_size_wh"] == [512, 512]
    assert set(summary["models"]) == set(ALL_MODELS)


def test_exif_rotation_turns_the_photo_and_a_sideways_photo_is_tried_turned(client, photos):
    sideways = compare(client, photos["sideways_no_exif.jpg"])
    summary = details(sideways)
    # no EXIF: the face is found only after trying the quarter turns, and the note says so
    assert summary["face"]["found"] and summary["rotation_degrees"] in (90, 270)
    assert "turned" in sideways[2] and not any("EXIF" in note for note in summary["notes"])
    summary = details(compare(client, photos["exif_rotated.jpg"]))
    assert summary["face"]["found"] and summary["rotation_degrees"] == 0
    assert any("EXIF" in note for note in summary["notes"])


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


def test_compare_picks_the_face_asked_for(client, photos):
    from gradio_client import handle_file

    first = details(compare(client, photos["two_faces.jpg"]))
    second = details(client.predict(handle_file(str(photos["two_faces.jpg"])), "#2", api_name="/compare"))
    assert first["face"]["number"] == 1 and second["face"]["number"] == 2
    assert second["face"]["box_xywh"] == first["faces"][1]["box_xywh"]
    # the per-model summary is that face's
    for key in ALL_MODELS:
        assert second["models"][key]["label"] == first["faces"][1]["models"][key]["label"]


def test_the_app_serves_no_files_outside_its_own(app_url):
    import httpx

    model_file = trained_models_dir() / "scratch_cnn.keras"
    for path in ("/etc/passwd", str(model_file), str(ROOT / "pyproject.toml"), str(pathlib.Path(__file__))):
        for url in (f"{app_url}gradio_api/file={path}", f"{app_url}file={path}"):
            response = httpx.get(url, timeout=10)
            assert response.status_code in (403, 404), (url, response.status_code)
            assert b"root:" not in response.content and b"[project]" not in response.content
    # nor reads a server path that an API client names instead of uploading a file
    secret = trained_models_dir() / "mobilenetv2.json"
    file_data = {"path": str(secret), "meta": {"_type": "gradio.FileData"}}
    event_id = httpx.post(f"{app_url}gradio_api/call/compare", json={"data": [file_data]}, timeout=10).json()["event_id"]
    answer = httpx.get(f"{app_url}gradio_api/call/compare/{event_id}", timeout=30).text
    assert "event: error" in answer and "event: complete" not in answer


def test_concurrent_clients_get_no_errors(app_url, photos):
    from gradio_client import Client, handle_file

    errors: list[BaseException] = []
    labels: list[str] = []

    def one_client(index: int) -> None:
        try:
            own = Client(app_url, verbose=False, download_files=False, ssl_verify=False)
            for request in range(3):
                if (index + request) % 4 == 0:
                    result = own.predict(handle_file(str(photos["astronaut.jpg"])), api_name="/scratch_cnn")
                    labels.append(result[0]["label"])
                else:
                    result = own.predict(handle_file(str(photos["two_faces.jpg"])), api_name="/compare")
                    labels.append(result[4]["label"])
        except BaseException as error:  # noqa: BLE001 - collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=one_client, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors[:3]
    assert len(labels) == 24


def test_cli_serves_present_models_lists_missing_and_survives_a_failed_share_link(tmp_path):
    """``python demo/app.py`` for real: two of five models, --share without internet, auth from the environment."""
    import httpx
    from gradio_client import Client, handle_file

    for key in ("scratch_cnn", "mobilenetv2"):
        shutil.copy(trained_models_dir() / f"{key}.keras", tmp_path)
        shutil.copy(trained_models_dir() / f"{key}.json", tmp_path)
    port = free_port()
    env = {**os.environ, "FER_DEMO_AUTH": "ann:s3cret", "TF_CPP_MIN_LOG_LEVEL": "2"}
    log = tmp_path / "app.log"
    with open(log, "w") as stream:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "demo" / "app.py"), "--models-dir", str(tmp_path), "--port", str(port), "--share"],
            stdout=stream, stderr=subprocess.STDOUT, env=env, cwd=tempfile.gettempdir(),
        )
    try:
        deadline = time.monotonic() + 150
        while "Ready in" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        output = log.read_text()
        assert "Loaded 2 model(s)" in output and "Missing: ResNet50: resnet50.keras not found" in output
        share_created = "Running on public URL" in output
        assert share_created or "Could not create a public share link; still serving locally" in output
        url = f"http://127.0.0.1:{port}/"
        assert httpx.get(f"{url}config", timeout=10).status_code == 401  # auth is on
        client = Client(url, auth=("ann", "s3cret"), verbose=False, download_files=False, ssl_verify=False)
        result = client.predict(handle_file(str(EXAMPLES / "astronaut.jpg")), api_name="/compare")
        assert set(result[-1]["models"]) == {"scratch_cnn", "mobilenetv2"}
    finally:
        process.terminate()
        process.wait(timeout=30)
