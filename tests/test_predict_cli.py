"""Tests of ``python -m fer_utils.predict`` (run as a subprocess) and of ``predict_paths``.

One folder mixes good photos (copies of demo/examples), a nested subfolder, a short video
written here and broken files. The models are tests/test_video.py's light set (three models:
scratch_cnn, mobilenetv2, ensemble); each CLI run costs a TensorFlow start (~7 s here), so the
runs are shared by module fixtures and most use the Haar detector; one uses MTCNN.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pandas as pd
import pytest

TESTS = pathlib.Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from test_video import CLASSES, clip_frames, small_models, small_models_dir, write_video  # noqa: E402

EXAMPLES = ROOT / "demo" / "examples"
MODEL_KEYS = ("scratch_cnn", "mobilenetv2", "ensemble")
BROKEN = {"truncated.jpg": "truncated or damaged", "empty.png": "empty (0 bytes)", "text.jpg": "not an image"}


def run_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "fer_utils.predict", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=timeout)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("inputs")
    (root / "nested" / "deeper").mkdir(parents=True)
    shutil.copy(EXAMPLES / "astronaut.jpg", root / "astronaut.jpg")
    shutil.copy(EXAMPLES / "two_portraits.jpg", root / "nested" / "two_portraits.jpg")
    shutil.copy(EXAMPLES / "coffee_no_face.jpg", root / "nested" / "deeper" / "coffee_no_face.jpg")
    # 20 frames at 10 fps: a face in 0-9, blank 10-19; --every 10 samples frames 0 (face) and 10 (none)
    assert write_video(root / "nested" / "clip.mp4", clip_frames(count=20, blank=range(10, 20), side=256))
    data = (EXAMPLES / "astronaut.jpg").read_bytes()
    (root / "broken").mkdir()
    (root / "broken" / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (root / "broken" / "empty.png").write_bytes(b"")
    (root / "broken" / "text.jpg").write_text("not a photo\n")
    (root / "notes.txt").write_text("ignored inside a folder\n")
    return root


@pytest.fixture(scope="module")
def models_dir() -> pathlib.Path:
    return small_models_dir()


@pytest.fixture(scope="module")
def csv_run(folder, models_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "x.csv"
    done = run_cli(folder, "--models-dir", models_dir, "--detector", "haar", "--out", out)
    return done, out, pd.read_csv(out) if out.is_file() else None


def rows_of(table: pd.DataFrame, name: str) -> pd.DataFrame:
    return table[table["file"].map(lambda f: pathlib.Path(f).name) == name]


def test_broken_files_are_named_on_stderr_and_the_run_goes_on_with_exit_1(csv_run, folder):
    done, out, table = csv_run
    assert done.returncode == 1, done.stderr
    errors = error_lines(done.stderr)
    assert len(errors) == len(BROKEN), done.stderr
    for name, reason in BROKEN.items():
        assert any(name in line and reason in line for line in errors), (name, errors)
    assert "Traceback" not in done.stderr
    assert "notes.txt" not in done.stderr + done.stdout  # other files inside a folder are ignored quietly
    assert "two_portraits.jpg: 2 faces" in done.stdout  # the per-file summary
    assert not list(out.parent.glob("*.partial"))


def test_csv_has_a_row_per_face_and_per_sampled_video_frame(csv_run, folder):
    _, _, table = csv_run
    assert table is not None
    assert table["file"].map(lambda f: pathlib.Path(f).name).tolist() == [
        "astronaut.jpg", "clip.mp4", "clip.mp4", "coffee_no_face.jpg", "two_portraits.jpg", "two_portraits.jpg"]
    assert rows_of(table, "two_portraits.jpg")["face"].tolist() == [1, 2]
    astronaut = rows_of(table, "astronaut.jpg").iloc[0]
    assert astronaut["face"] == 1 and not astronaut["whole_image"] and astronaut["box_w"] > 50
    assert pd.isna(astronaut["frame"]) and pd.isna(astronaut["time_s"])
    assert rows_of(table, "coffee_no_face.jpg")["whole_image"].tolist() == [True]
    clip = rows_of(table, "clip.mp4")
    assert clip["frame"].tolist() == [0, 10] and clip["time_s"].tolist() == [0.0, 1.0]
    assert clip["face"].tolist() == [1, 0]
    assert clip["ensemble_label"].isna().tolist() == [False, True]
    assert set(table["detector"]) == {"haar"}
    assert set(table["found_by"].dropna()) == {"haar"} and table["detector_score"].isna().all(), "Haar gives no score"
    assert pd.isna(rows_of(table, "coffee_no_face.jpg")["found_by"]).all(), "the whole image: found by nothing"
    assert str(folder / "nested" / "two_portraits.jpg") in set(table["file"])
    for key in MODEL_KEYS:
        columns = [f"{key}_label", *(f"{key}_{name}" for name in CLASSES)]
        assert set(columns) <= set(table.columns)
        faces = table[table["face"] > 0]
        assert faces[columns[1:]].sum(axis=1).tolist() == pytest.approx([1.0] * len(faces), abs=1e-4)
        assert set(faces[f"{key}_label"]) <= set(CLASSES)
    assert list(table.columns[:4]) == ["file", "frame", "time_s", "face"]


def as_csv_table(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    """Rows (JSONL or Python) as the CSV writer would give them back through pandas."""
    text = pd.DataFrame(rows, columns=columns).to_csv(index=False)
    return pd.read_csv(io.StringIO(text))


def test_jsonl_gives_the_same_rows(csv_run, folder, models_dir, tmp_path):
    _, _, table = csv_run
    out = tmp_path / "x.jsonl"
    done = run_cli(folder, "--models-dir", models_dir, "--detector", "haar", "--out", out)
    assert done.returncode == 1 and len(error_lines(done.stderr)) == len(BROKEN)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(table)
    assert rows[0]["frame"] is None and rows[0]["time_s"] is None  # a photo: empty, not 0
    assert {key for row in rows for key in row} == set(table.columns)
    pd.testing.assert_frame_equal(as_csv_table(rows, list(table.columns)), table, check_exact=False, rtol=1e-5)


def test_python_function_returns_the_rows_the_cli_writes(csv_run, folder):
    from fer_utils.predict import predict_paths

    _, _, table = csv_run
    run = predict_paths([folder], small_models(), detector="haar", every=10, progress=False)
    assert run.files_done == 4 and run.keys == list(MODEL_KEYS)
    assert sorted(pathlib.Path(path).name for path, _ in run.failures) == sorted(BROKEN)
    assert all(reason for _, reason in run.failures)
    assert run.columns == list(table.columns)
    pd.testing.assert_frame_equal(as_csv_table(run.rows, run.columns), table, check_exact=False, rtol=1e-5)


def test_one_model_with_mtcnn_gives_only_its_columns_and_reports_a_skipped_file(folder, models_dir, tmp_path):
    out = tmp_path / "y.csv"
    done = run_cli(folder / "nested" / "two_portraits.jpg", folder / "astronaut.jpg", folder / "notes.txt",
                   "--models", "scratch_cnn", "--detector", "mtcnn", "--models-dir", models_dir, "--out", out)
    assert done.returncode == 0, done.stderr
    assert any(line.startswith("skipped:") and "notes.txt" in line for line in done.stderr.splitlines())
    table = pd.read_csv(out)
    model_columns = [c for c in table.columns if c.endswith("_label") or c.split("_")[-1] in CLASSES]
    assert model_columns == ["scratch_cnn_label", *(f"scratch_cnn_{name}" for name in CLASSES)]
    assert table["file"].map(lambda f: pathlib.Path(f).name).tolist() == [
        "two_portraits.jpg", "two_portraits.jpg", "astronaut.jpg"]  # command-line order
    assert table["face"].tolist() == [1, 2, 1] and set(table["detector"]) == {"mtcnn"}
    assert not table["whole_image"].any()
    assert set(table["found_by"]) == {"mtcnn"} and table["detector_score"].between(0.8, 1).all(), "how each face was found"


@pytest.mark.parametrize("extra, message", [
    (["--models", "nope"], "unknown model(s): nope; choose from scratch_cnn, resnet50, mobilenetv2, inceptionv3, ensemble"),
    (["--out", "x.txt"], "--out must end in .csv or .jsonl, got 'x.txt'"),
    (["--models-dir", "/no/such/folder"], "the models folder /no/such/folder does not exist"),
])
def test_usage_errors_exit_2_with_one_clear_line(folder, models_dir, tmp_path, extra, message):
    args = [folder, "--models-dir", models_dir, *extra]
    done = run_cli(*args, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: {message}"]
    assert done.stdout == ""


def test_no_images_or_videos_found_exits_2(tmp_path, models_dir):
    (tmp_path / "empty_folder").mkdir()
    (tmp_path / "empty_folder" / "readme.md").write_text("nothing to see")
    done = run_cli(tmp_path / "empty_folder", "--models-dir", models_dir, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: no images or videos found in {tmp_path / 'empty_folder'}"]


def test_collect_files_is_recursive_sorted_and_typed(folder):
    from fer_utils.predict import collect_files

    files, skipped, missing = collect_files([folder, folder / "astronaut.jpg", folder / "notes.txt", folder / "gone.jpg"])
    assert [(path.relative_to(folder).as_posix(), kind) for path, kind in files] == [
        ("astronaut.jpg", "image"), ("broken/empty.png", "image"), ("broken/text.jpg", "image"),
        ("broken/truncated.jpg", "image"), ("nested/clip.mp4", "video"), ("nested/deeper/coffee_no_face.jpg", "image"),
        ("nested/two_portraits.jpg", "image")]  # astronaut.jpg named twice is read once
    assert [pathlib.Path(p).name for p, _ in skipped] == ["notes.txt"]
    assert [pathlib.Path(p).name for p, _ in missing] == ["gone.jpg"]


def test_rows_reach_the_partial_file_as_each_file_finishes_and_the_target_only_at_the_end(tmp_path):
    from fer_utils.predict import RowWriter

    target = tmp_path / "rows.csv"
    writer = RowWriter(target, ["file", "face"])
    writer.write([{"file": "a.jpg", "face": 1}, {"file": "a.jpg", "face": 2}])
    assert not target.exists()
    assert writer.partial.read_text().splitlines() == ["file,face", "a.jpg,1", "a.jpg,2"]
    writer.write([{"file": "b.jpg", "face": 1, "new_column": "x"}])  # a column outside the header
    writer.close()
    assert not writer.partial.exists()
    assert pd.read_csv(target).fillna("").to_dict("records") == [
        {"file": "a.jpg", "face": 1, "new_column": ""},
        {"file": "a.jpg", "face": 2, "new_column": ""},
        {"file": "b.jpg", "face": 1, "new_column": "x"},
    ]


def test_no_mirror_passes_once_where_the_default_averages_each_face_with_its_mirror_image(csv_run, folder, models_dir,
                                                                                          tmp_path):
    import numpy as np

    from fer_utils.predict import predict_paths

    out = tmp_path / "once.csv"
    done = run_cli(folder / "astronaut.jpg", "--models-dir", models_dir, "--detector", "haar", "--no-mirror", "--out", out)
    assert done.returncode == 0, done.stderr
    once = pd.read_csv(out)
    columns = [f"{key}_{name}" for key in MODEL_KEYS for name in CLASSES]
    averaged = rows_of(csv_run[2], "astronaut.jpg")[columns].to_numpy()
    assert np.abs(once[columns].to_numpy() - averaged).max() > 1e-3, "the default differs: it averages in the mirror"
    run = predict_paths([folder / "astronaut.jpg"], small_models(), detector="haar", progress=False, mirror=False)
    np.testing.assert_allclose(as_csv_table(run.rows, run.columns)[columns].to_numpy(), once[columns].to_numpy(), rtol=1e-4)
