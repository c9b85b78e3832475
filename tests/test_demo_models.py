"""The models the demo serves: each model's tab and endpoint with its explanation, and the ensemble
(members loaded once, a fifth member, a mean head).

Every test needs the small models trained once per session (tests/demo_fixtures.py), and some the
launched app: the whole module is slow (tests/conftest.py's SLOW_MODULES).
"""

from __future__ import annotations

import pathlib
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from demo_fixtures import ALL_MODELS, CLASS_NAMES_7, MEMBERS, trained_models_dir  # noqa: E402
from synthetic import synthetic_face  # noqa: E402


# ----------------------------------------------------------------------------- the loaded models


def test_compare_all_runs_every_network_once_in_one_graph_with_the_same_answers(models):
    from fer_utils.serving import networks_to_run, predict, predict_all

    chosen = list(models)
    networks = networks_to_run(chosen)
    assert [n.key for n in networks] == list(MEMBERS), "each network once: the ensemble's members are the four"
    face = synthetic_face(2, np.random.default_rng(3))
    one_by_one = {n.key: predict(n, face).probabilities for n in networks}
    joint = models.joint_forward(networks)
    joint.warm_up()
    assert models.joint_forward(list(networks)) is joint, "made once per set of networks"
    together = {p.key: p for p in predict_all(models, face)}
    for key in MEMBERS:
        np.testing.assert_allclose(together[key].probabilities, one_by_one[key], atol=1e-5)
        assert "in one graph" in together[key].note
    ensemble = models.models["ensemble"]
    expected = ensemble.calibrated(ensemble.model(face[None, ..., None].astype("float32"), training=False).numpy()[0])
    np.testing.assert_allclose(together["ensemble"].probabilities, expected, atol=1e-5)
    single = predict_all(models, face, ["scratch_cnn"])  # one network: its own forward pass, no graph of one
    assert single[0].note == "" and not any(keys == ("scratch_cnn",) for keys, _ in models._joint)


def test_an_untraced_graph_is_not_traced_from_a_request(models):
    # A request (or a command-line run) before warm-up uses the networks' own passes and starts no
    # background trace: python -m fer_utils.predict used to exit in the middle of one and abort (-6).
    from fer_utils.serving import predict, predict_all

    face = synthetic_face(4, np.random.default_rng(5))
    answers = predict_all(models, face, ["scratch_cnn", "resnet50"])
    joint = models.joint_forward([models.models["scratch_cnn"], models.models["resnet50"]])
    assert not joint.traced and not joint._started
    for answer in answers:
        np.testing.assert_allclose(answer.probabilities, predict(models.models[answer.key], face).probabilities, atol=1e-5)
        assert "in one graph" not in answer.note


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


def test_photos_average_each_face_with_its_mirror_image_and_the_live_view_does_not(models):
    from fer_utils.faces import Box, Detection
    from fer_utils.serving import LiveTracker, analyse_image, face_tensor, networks_to_run, predict_all

    face = synthetic_face(3, np.random.default_rng(7))
    face[4:20, 2:14] = 255  # a bright patch on one side: the mirror image is another input
    mirror = face[:, ::-1]
    plain = {p.key: p for p in predict_all(models, face)}
    both = {p.key: p for p in predict_all(models, face, mirror=True)}
    for loaded in models:  # the members and the ensemble: the model's mean answer on the two views
        expected = np.mean([loaded.model(face_tensor(view), training=False).numpy()[0] for view in (face, mirror)], axis=0)
        np.testing.assert_allclose(both[loaded.key].uncalibrated, expected, atol=1e-5)
        assert both[loaded.key].mirrored and "face and mirror" in both[loaded.key].note
        assert not plain[loaded.key].mirrored
    assert max(np.abs(both[k].uncalibrated - plain[k].uncalibrated).max() for k in both) > 1e-3, "the mirror changed answers"
    joint = models.joint_forward(networks_to_run(list(models)), views=2)  # what warm-up traces: both views as one batch
    joint.warm_up()
    batched = {p.key: p for p in predict_all(models, face, mirror=True)}
    for key, answer in batched.items():
        np.testing.assert_allclose(answer.uncalibrated, both[key].uncalibrated, atol=1e-5)
        assert key == "ensemble" or "in one graph" in answer.note
    photo = analyse_image(models, np.stack([face] * 3, axis=-1))  # a 48x48 upload is a face crop
    assert photo.search.face_crop and all(p.mirrored for p in photo.faces[0].predictions)
    np.testing.assert_allclose(photo.faces[0].prediction("ensemble").probabilities, both["ensemble"].probabilities, atol=1e-6)
    assert photo.as_dict()["faces"][0]["models"]["ensemble"]["mirrored"] is True
    assert not any(p.mirrored for p in analyse_image(models, np.stack([face] * 3, axis=-1), mirror=False).faces[0].predictions)
    live = LiveTracker(models, "scratch_cnn", detect_every=1000, align=False)  # one pass per face, for speed
    live.frames, live._detections = 1, [Detection(Box(8, 8, 64, 64), None, None, "haar")]  # a face carried over
    frame = np.random.default_rng(1).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    answer = live.process(frame).faces[0].predictions[0]
    assert answer.key == "scratch_cnn" and not answer.mirrored


def test_the_demo_answers_with_the_mirror_image_only_when_started_with_mirror(models):
    # Off by default: it costs Compare-all about 25 ms with the shipped models, past its 150 ms target.
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    from demo import app

    photo = str(pathlib.Path(app.EXAMPLES_DIR) / "astronaut.jpg")
    plain = app.compare_values(models, photo)[-1]["faces"][0]["models"]
    mirrored = app.compare_values(models, photo, mirror=True)[-1]["faces"][0]["models"]
    assert not any(m["mirrored"] for m in plain.values()) and all(m["mirrored"] for m in mirrored.values())
    assert any(plain[k]["probabilities"] != mirrored[k]["probabilities"] for k in plain)
    assert app.parse_args(["--mirror"]).mirror and not app.parse_args([]).mirror
    assert app.build_demo(models=models, mirror=True).fer_mirror is True
    from demo.about import about_markdown

    assert "answered in one pass" in about_markdown(models)
    assert "answers the face and its mirror image" in about_markdown(models, mirror=True)


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


# ----------------------------------------------------------------------------- the launched app


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
