"""The real FER2013 file (FER2013_CSV): the splits and class counts everyone reports against."""

from __future__ import annotations

import numpy as np

from fer_utils.data import EMOTIONS, load_dataset

# Rows per Usage in the original CSV, and the Training class counts of the data README.
ROWS = {"train": 28_709, "val": 3_589, "test": 3_589}
TRAIN_COUNTS = {"angry": 3_995, "disgust": 436, "fear": 4_097, "happy": 7_215, "sad": 4_830, "surprise": 3_171, "neutral": 4_965}


def test_fer2013_splits_and_class_counts(fer2013_csv):
    dataset = load_dataset(fer2013_csv, drop_blank=False)
    assert dataset.split_sizes() == ROWS
    assert dataset.train.images.shape == (ROWS["train"], 48, 48, 1)
    assert dataset.train.images.dtype == np.uint8
    counts = dict(zip(EMOTIONS, np.bincount(dataset.train.labels, minlength=7).tolist()))
    assert counts == TRAIN_COUNTS


def test_fer2013_blank_faces_are_few_and_never_in_private_test(fer2013_csv):
    dataset = load_dataset(fer2013_csv)
    assert 0 < dataset.dropped["blank"] < 50
    assert len(dataset.test) == ROWS["test"], "PrivateTest is reported whole"
    six = load_dataset(fer2013_csv, 6)
    assert "disgust" not in six.class_names
    assert six.dropped["outside_class_set"] == 547  # every disgust face, in all three splits
