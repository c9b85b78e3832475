"""benchmarks/photo_pipeline.py on a labelled folder the test makes from the public-domain example
photos: every figure it reports is what scikit-learn gives on the same answers, with and without
the mirror image, and the confusion figure is drawn."""

from __future__ import annotations

import json
import pathlib
import shutil
import sys

import numpy as np
import pytest

TESTS = pathlib.Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(ROOT / "benchmarks"))

from test_video import CLASSES, small_models_dir  # noqa: E402

EXAMPLES = ROOT / "demo" / "examples"


def test_the_photo_benchmark_reports_recall_and_confusion_with_and_without_the_mirror(tmp_path, capsys):
    import photo_pipeline

    photos = tmp_path / "photos"
    for name, label in (("astronaut.jpg", "happy"), ("grace_hopper.jpg", "neutral"), ("two_portraits.jpg", "happy")):
        (photos / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(EXAMPLES / name, photos / label / name)
    out, figure = tmp_path / "figures.json", tmp_path / "confusion.png"
    assert photo_pipeline.main(["--photos", str(photos), "--models-dir", str(small_models_dir()), "--detectors", "haar",
                                "--no-unaligned", "--normalize", "none", "--json", str(out), "--figure", str(figure)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(row["detector"], row["mirror"]) for row in rows] == [("haar", False), ("haar", True)]
    labels = [CLASSES.index(label) for label in ("happy", "happy", "neutral")]
    for row in rows:
        assert row["faces_found"] == 3
        for key, figures in row["models"].items():
            confusion = np.array(figures["confusion"])
            assert confusion.shape == (7, 7) and confusion.sum() == 3
            assert confusion.sum(axis=1).tolist() == [labels.count(i) for i in range(7)], "rows are the true classes"
            assert figures["accuracy"] == round(np.trace(confusion) / 3, 4)
            for i, name in enumerate(CLASSES):
                expected = confusion[i, i] / confusion[i].sum() if confusion[i].sum() else 0.0
                assert figures["recall"][name] == round(float(expected), 4)
        gap = row["ensemble_gaps"]["ensemble"]  # the ensemble against its two members, on these three photos
        members = {key: row["models"][key]["accuracy"] for key in ("scratch_cnn", "mobilenetv2")}
        assert gap["best"] == max(members, key=members.get) and gap["items"] == 3 and gap["members"] == 2
        assert gap["gap"] == pytest.approx(row["models"]["ensemble"]["accuracy"] - max(members.values()), abs=1e-4)
        assert gap["below"] is False, "three photos can never show a member better beyond chance"
    printed = capsys.readouterr().out
    assert "The ensemble against its best member, on these photos:" in printed and "over all 2 members (Bonferroni)" in printed
    assert "Recall per class, ensemble:" in printed and "| haar | yes | none | yes |" in printed
    assert figure.read_bytes()[:4] == b"\x89PNG"
