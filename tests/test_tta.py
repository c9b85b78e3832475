"""Ten-crop test-time augmentation: the views are the published recipe's, predictions average
them, and the report measures an ensemble from its members as the ensemble computes itself."""

from __future__ import annotations

import numpy as np
import pytest

from fer_utils.evaluation import predict_proba, ten_crops


def test_ten_crops_are_four_corners_and_the_centre_each_with_its_mirror():
    face = np.arange(48 * 48, dtype=np.float32).reshape(1, 48, 48, 1)
    views = ten_crops(face, side=44)
    assert len(views) == 10 and all(view.shape == (1, 48, 48, 1) for view in views)
    for plain, mirrored in zip(views[0::2], views[1::2]):
        np.testing.assert_array_equal(mirrored, plain[:, :, ::-1])
    top_left, bottom_right, centre = views[0][0, ..., 0], views[6][0, ..., 0], views[8][0, ..., 0]
    # the top-left crop starts at pixel (0, 0), the bottom-right one ends at (47, 47)
    assert top_left[0, 0] == pytest.approx(face[0, 0, 0, 0], abs=1)
    assert bottom_right[-1, -1] == pytest.approx(face[0, 47, 47, 0], abs=1)
    assert top_left.mean() < centre.mean() < bottom_right.mean()
    with pytest.raises(ValueError, match="crop side"):
        ten_crops(face, side=60)


def test_ten_crop_averages_the_ten_views_of_a_model():
    # A "model" that reads the brightness of the face's top-left quarter: its ten-crop answer must be
    # the mean of its answers on the ten views, which differ from the plain one.
    def model(batch):
        value = np.asarray(batch)[:, :24, :24, 0].mean(axis=(1, 2)) / 255.0
        return np.stack([value, 1 - value], axis=1)

    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, size=(5, 48, 48, 1)).astype(np.float32)
    expected = np.mean([model(view) for view in ten_crops(faces)], axis=0)
    np.testing.assert_allclose(predict_proba(model, faces, tta="ten_crop"), expected, rtol=1e-6)
    assert not np.allclose(predict_proba(model, faces, tta="ten_crop"), predict_proba(model, faces))
    np.testing.assert_allclose(predict_proba(model, faces, tta=True), predict_proba(model, faces, tta="flip"))
    with pytest.raises(ValueError, match="tta must be"):
        predict_proba(model, faces, tta="five_crop")


@pytest.mark.slow  # trains
def test_the_report_measures_an_ensemble_from_its_members_as_the_ensemble_computes_itself():
    from demo_fixtures import trained_models_dir
    from synthetic import synthetic_faces

    from fer_utils import model_io
    from fer_utils.tta import measure, table
    from fer_utils.card import read_cards

    folder = trained_models_dir()
    images, labels = synthetic_faces(4, seed=5)
    results = measure(folder, images, labels, batch_size=16, only=["scratch_cnn", "ensemble"])
    assert set(results) == {"scratch_cnn", "ensemble"}
    ensemble = model_io.load_model(folder / "ensemble.keras")
    for view in ("plain", "flip", "ten_crop"):
        answers = predict_proba(ensemble, images, tta=False if view == "plain" else view).argmax(axis=1)
        assert results["ensemble"][view]["accuracy"] == pytest.approx((answers == labels).mean())
    scratch = model_io.load_model(folder / "scratch_cnn.keras")
    answers = predict_proba(scratch, images, tta="ten_crop").argmax(axis=1)
    assert results["scratch_cnn"]["ten_crop"]["accuracy"] == pytest.approx((answers == labels).mean())
    text = table(results, read_cards(folder), "PrivateTest")
    assert text.count("\n") == 3 and "ten-crop" in text
