"""Loaders on generated CSVs and image folders, including the bad cases."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from synthetic import CLASS_DIRS_6, SIX_CLASS_SPLITS, synthetic_faces, write_fer_csv, write_image_folders

from fer_utils.data import (
    CLASS_SETS,
    EMOTIONS,
    class_names_for,
    count_duplicates,
    ferplus_majority_labels,
    load_dataset,
    remap_labels,
)

USAGES = ("Training", "PublicTest", "PrivateTest")


def _faces_with_usages(n_per_class: int = 6, seed: int = 0):
    """Synthetic faces of all seven classes, each class spread over all three usages."""
    images, labels = synthetic_faces(n_per_class, classes=range(7), seed=seed)
    order = np.argsort(labels, kind="stable")
    images, labels = images[order], labels[order]
    usages = np.array([USAGES[i % 3] for i in range(len(labels))])
    return images, labels, usages


@pytest.fixture()
def fer_csv(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    images, labels, usages = _faces_with_usages()
    path = write_fer_csv(tmp_path / "fer2013.csv", images, labels, list(usages))
    return path, images, labels, usages


def test_csv_round_trip_keeps_pixels_labels_and_splits(fer_csv, tmp_path):
    path, images, labels, usages = fer_csv
    dataset = load_dataset(path, cache_dir=tmp_path / "cache")
    assert dataset.class_names == EMOTIONS
    for usage, split in (("Training", "train"), ("PublicTest", "val"), ("PrivateTest", "test")):
        mask = usages == usage
        np.testing.assert_array_equal(dataset.splits[split].images, images[mask])
        np.testing.assert_array_equal(dataset.splits[split].labels, labels[mask])
    assert dataset.split_sizes() == {"train": 14, "val": 14, "test": 14}
    assert len(dataset.checksum) == 64


def test_gzipped_csv_loads_the_same_as_plain(fer_csv, tmp_path):
    path, images, labels, usages = fer_csv
    gz = tmp_path / "copy.csv.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    plain = load_dataset(path, cache_dir=tmp_path / "cache")
    zipped = load_dataset(gz, cache_dir=tmp_path / "cache")
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(plain.splits[split].images, zipped.splits[split].images)


def test_cache_returns_identical_arrays(fer_csv, tmp_path):
    path = fer_csv[0]
    first = load_dataset(path, cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").glob("fer2013-*.npz"))
    second = load_dataset(path, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(first.train.images, second.train.images)


@pytest.mark.parametrize("class_set", [6, 4])
def test_class_sets_remap_labels_consistently(fer_csv, tmp_path, class_set):
    path, images, labels, usages = fer_csv
    dataset = load_dataset(path, class_set, cache_dir=tmp_path / "cache")
    names = CLASS_SETS[class_set]
    assert dataset.class_names == names
    train_mask = usages == "Training"
    kept = np.isin(labels[train_mask], [EMOTIONS.index(n) for n in names])
    expected_names = [EMOTIONS[e] for e in labels[train_mask][kept]]
    assert [names[i] for i in dataset.train.labels] == expected_names
    np.testing.assert_array_equal(dataset.train.images, images[train_mask][kept])
    assert dataset.dropped["outside_class_set"] == int((~np.isin(labels, [EMOTIONS.index(n) for n in names])).sum())


def test_remap_labels_marks_dropped_emotions():
    np.testing.assert_array_equal(remap_labels(np.array([0, 1, 3, 6]), CLASS_SETS[6]), [0, -1, 2, 5])
    np.testing.assert_array_equal(remap_labels(np.array([0, 3, 4, 5, 6]), CLASS_SETS[4]), [-1, 0, 1, 2, 3])


def test_class_set_names_and_errors():
    assert class_names_for("6") == CLASS_SETS[6]
    assert class_names_for(["Suprise", "happiness", "neutral"]) == ("happy", "surprise", "neutral")
    with pytest.raises(ValueError, match="class_set must be one of"):
        class_names_for(5)
    with pytest.raises(ValueError, match="'joy' is not a FER2013 emotion"):
        class_names_for(["joy", "sad"])


def test_blank_images_are_dropped_and_counted(tmp_path):
    images, labels, usages = _faces_with_usages()
    images[0] = 0
    images[5] = 200
    path = write_fer_csv(tmp_path / "blank.csv", images, labels, list(usages))
    dataset = load_dataset(path, cache_dir=tmp_path / "cache")
    assert dataset.dropped["blank"] == 2
    assert sum(dataset.split_sizes().values()) == len(labels) - 2
    assert "blank 2" in dataset.summary()


def _write_rows(path: Path, rows: list[str], header: str = "emotion,pixels,Usage") -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _row(emotion="3", n=2304, value="7", usage="Training") -> str:
    return f"{emotion},{' '.join([value] * n)},{usage}"


@pytest.mark.parametrize(
    "bad_row, message",
    [
        (_row(n=2303), "line 3: 2303 pixel values, expected 2304"),
        (_row(emotion="7"), "line 3: emotion '7' is not an integer 0-6"),
        (_row(emotion="happy"), "line 3: emotion 'happy' is not an integer 0-6"),
        (_row(usage="Validation"), "line 3: Usage 'Validation' is not one of"),
        (_row(value="300"), "line 3: pixel values outside 0-255"),
        (_row(value="x"), "line 3: pixels are not all integers"),
    ],
)
def test_malformed_csv_row_is_named(tmp_path, bad_row, message):
    path = _write_rows(tmp_path / "bad.csv", [_row(), bad_row, _row(usage="PublicTest")])
    with pytest.raises(ValueError, match=message):
        load_dataset(path, cache_dir=tmp_path / "cache")


def test_csv_with_wrong_columns_is_explained(tmp_path):
    path = _write_rows(tmp_path / "cols.csv", ["3,1 2 3"], header="label,pixels")
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['Usage', 'emotion'\]"):
        load_dataset(path, cache_dir=tmp_path / "cache")


def test_missing_path_and_unknown_file_type(tmp_path):
    with pytest.raises(FileNotFoundError, match="FER2013 not found"):
        load_dataset(tmp_path / "nope.csv")
    (tmp_path / "data.txt").write_text("hello")
    with pytest.raises(ValueError, match="neither a .csv/.csv.gz file nor a folder"):
        load_dataset(tmp_path / "data.txt")


def test_kaggle_folders_split_public_and_private_test(tmp_path):
    images, labels, usages = _faces_with_usages()
    root = write_image_folders(tmp_path / "kaggle", images, labels, usages=list(usages), ext=".png")
    (root / "train" / "happy" / ".DS_Store").write_bytes(b"\x00\x01")
    (root / "train" / "happy" / "notes.txt").write_text("not an image")
    dataset = load_dataset(root)
    for usage, split in (("Training", "train"), ("PublicTest", "val"), ("PrivateTest", "test")):
        mask = usages == usage
        assert sorted(dataset.splits[split].labels.tolist()) == sorted(labels[mask].tolist())
        # PNG is lossless: the same faces come back, in folder order.
        got = {img.tobytes() for img in dataset.splits[split].images}
        assert got == {img.tobytes() for img in images[mask]}
    assert dataset.dropped["non_image_files"] == 2


def test_six_class_study_layout_gets_a_stratified_validation_split(tmp_path):
    images, labels = synthetic_faces(10, classes=[0, 2, 3, 4, 5, 6], seed=4)
    usages = ["Training"] * 50 + ["PrivateTest"] * 10
    root = write_image_folders(
        tmp_path / "six", images, labels, usages=usages,
        split_names=SIX_CLASS_SPLITS, class_dir_names=CLASS_DIRS_6, ext=".jpg",
    )
    assert (root / "Training" / "Surprise").is_dir() or (root / "Training" / "Suprise").is_dir()
    with pytest.raises(ValueError, match="no training images of \\['disgust'\\].*class_set=6"):
        load_dataset(root)
    first = load_dataset(root, 6, val_fraction=0.2, seed=1)
    second = load_dataset(root, 6, val_fraction=0.2, seed=1)
    assert first.class_names == CLASS_SETS[6]
    assert len(first.val) == 10 and len(first.train) == 40 and len(first.test) == 10
    np.testing.assert_array_equal(first.val.images, second.val.images)
    # Stratified: every class keeps its share in validation.
    assert set(first.val.labels.tolist()) == set(range(6))


def test_unreadable_image_and_unknown_class_folder_are_named(tmp_path):
    images, labels, usages = _faces_with_usages()
    root = write_image_folders(tmp_path / "broken", images, labels, usages=list(usages))
    broken = root / "test" / "sad" / "PrivateTest_broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ValueError, match="PrivateTest_broken.png' could not be read"):
        load_dataset(root)
    broken.unlink()
    (root / "train" / "contempt").mkdir()
    with pytest.raises(ValueError, match="class folder .*contempt' is not a FER2013 emotion"):
        load_dataset(root)


def test_not_a_dataset_folder(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(ValueError, match="does not look like a FER image-folder dataset"):
        load_dataset(tmp_path)


def test_ferplus_majority_vote(tmp_path):
    votes = pd.DataFrame(
        [
            # neutral happiness surprise sadness anger disgust fear contempt unknown NF
            [0, 8, 1, 0, 0, 0, 0, 0, 1, 0],  # happy
            [5, 0, 0, 5, 0, 0, 0, 0, 0, 0],  # tie: dropped
            [0, 0, 0, 0, 1, 0, 0, 7, 2, 0],  # contempt wins: dropped
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 10],  # not a face: dropped
            [1, 0, 0, 0, 6, 3, 0, 0, 0, 0],  # angry
        ],
        columns=["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF"],
    )
    votes.insert(0, "Image name", [f"fer{i:07d}.png" for i in range(5)])
    votes.insert(0, "Usage", "Training")
    path = tmp_path / "fer2013new.csv"
    votes.to_csv(path, index=False)
    np.testing.assert_array_equal(ferplus_majority_labels(path), [3, -1, -1, -1, 0])
    with pytest.raises(ValueError, match="has 5 rows but the FER2013 CSV has 6"):
        ferplus_majority_labels(path, expected_rows=6)


def test_ferplus_labels_replace_the_originals(fer_csv, tmp_path):
    path, images, labels, usages = fer_csv
    columns = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF"]
    votes = np.zeros((len(labels), len(columns)), dtype=int)
    originally_happy = labels == EMOTIONS.index("happy")
    votes[originally_happy, columns.index("sadness")] = 6  # FER+ calls the happy faces sad
    votes[~originally_happy, columns.index("happiness")] = 6  # and every other face happy
    votes[0] = 0
    votes[0, columns.index("NF")] = 10  # the first is not a face at all
    frame = pd.DataFrame(votes, columns=columns)
    frame.insert(0, "Usage", list(usages))
    ferplus = tmp_path / "fer2013new.csv"
    frame.to_csv(ferplus, index=False)

    dataset = load_dataset(path, ["happy", "sad"], ferplus_csv=ferplus, cache_dir=tmp_path / "cache")
    assert dataset.dropped["ferplus_no_majority"] == 1
    assert dataset.dropped["ferplus_publictest_unused"] == int((usages == "PublicTest").sum())
    training = usages == "Training"
    training[0] = False
    expected = np.where(originally_happy, 1, 0)  # class set (happy, sad), by FER+
    # Validation is carved out of Training: no PublicTest face or vote reaches selection.
    fitted = np.concatenate([dataset.train.images, dataset.val.images])
    fitted_labels = np.concatenate([dataset.train.labels, dataset.val.labels])
    assert len(dataset.val) == 2 and len(fitted) == training.sum()
    index_of = {images[i].tobytes(): i for i in np.flatnonzero(training)}
    rows = [index_of[face.tobytes()] for face in fitted]  # KeyError: a face not from Training
    np.testing.assert_array_equal(fitted_labels, expected[rows])
    private = usages == "PrivateTest"
    np.testing.assert_array_equal(dataset.test.images, images[private])
    np.testing.assert_array_equal(dataset.test.labels, expected[private])
    with pytest.raises(ValueError, match=r"no training images of \['angry'"):
        load_dataset(path, ferplus_csv=ferplus, cache_dir=tmp_path / "cache")


def test_subsample_is_stratified_and_deterministic(fer_csv, tmp_path):
    dataset = load_dataset(fer_csv[0], cache_dir=tmp_path / "cache")
    small = dataset.subsample(7, seed=3)
    assert small.split_sizes() == {"train": 7, "val": 7, "test": 7}
    assert sorted(small.train.labels.tolist()) == list(range(7))
    np.testing.assert_array_equal(small.train.images, dataset.subsample(7, seed=3).train.images)
    with pytest.raises(ValueError, match="smaller than the number of classes"):
        dataset.subsample(3)


def test_class_weights_are_balanced():
    from fer_utils.data import balanced_class_weights

    weights = balanced_class_weights(np.array([0, 0, 0, 1]), 3)
    # n / (k_present * count): 4 / (2 * 3) and 4 / (2 * 1); an absent class keeps 1.
    assert weights == pytest.approx({0: 4 / 6, 1: 2.0, 2: 1.0})


def test_count_duplicates():
    images = np.zeros((4, 48, 48, 1), np.uint8)
    images[1] = 5
    images[3] = 5
    assert count_duplicates(images) == 2
