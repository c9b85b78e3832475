"""Tests of fer_utils.video on small videos written here with cv2.VideoWriter.

The clips are 40 frames at 10 fps of demo/examples/astronaut.jpg (one face), frames 20-29 blank
grey, in MP4 (mp4v), AVI (MJPG) and WebM (VP80, skipped only where this OpenCV cannot write it).
The models are a light set built here (see :func:`small_models_dir`): the demo's trained set
(tests/demo_fixtures.py) takes ~30 s to train and ~20 s to load per process, and these tests check
the video path, not what the models learned.
"""

from __future__ import annotations

import atexit
import functools
import math
import pathlib
import shutil
import sys
import tempfile

import numpy as np
import pandas as pd
import pytest

TESTS = pathlib.Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402

from fer_utils import video  # noqa: E402
from fer_utils.faces import CHOSEN_COLOUR  # noqa: E402
from fer_utils.video import VideoInfo, VideoInputError, analyse_video, probe_video  # noqa: E402

EXAMPLES = ROOT / "demo" / "examples"
FPS, FRAMES, SIDE = 10, 40, 320
BLANK = range(20, 30)
CODECS = {".mp4": "mp4v", ".avi": "MJPG", ".webm": "VP80"}
CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
MODEL_KEYS = ("scratch_cnn", "mobilenetv2", "ensemble")


# ----------------------------------------------------------------------------- shared set-up


@functools.lru_cache(maxsize=None)
def small_models_dir() -> pathlib.Path:
    """A tiny scratch CNN, an untrained MobileNetV2 at 32 px and their ensemble, with cards (~2 s)."""
    import keras

    from fer_utils.model_io import save_ensemble, save_model
    from fer_utils.models import build_ensemble, build_model

    folder = pathlib.Path(tempfile.mkdtemp(prefix="fer_video_models_"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    keras.utils.set_random_seed(0)
    scratch = build_model("scratch_cnn", 7, filters=(8, 16), dense_units=(16,), dropout=0.0, l2=0.0)
    mobile = build_model("mobilenetv2", 7, weights=None, image_size=32)
    card = {"class_names": list(CLASSES)}
    paths = [save_model(scratch, folder / "scratch_cnn.keras", {"name": "scratch_cnn", **card}),
             save_model(mobile, folder / "mobilenetv2.keras", {"name": "mobilenetv2", **card})]
    save_ensemble(build_ensemble([scratch, mobile]), folder / "ensemble.keras", paths, {"name": "ensemble", **card})
    return folder


@functools.lru_cache(maxsize=None)
def small_models():
    from fer_utils.serving import load_models

    models = load_models(small_models_dir())
    assert list(models.models) == list(MODEL_KEYS), models.missing
    return models


def face_frame(side: int = SIDE) -> np.ndarray:
    """demo/examples/astronaut.jpg as a BGR frame (what VideoWriter takes)."""
    return cv2.resize(cv2.imread(str(EXAMPLES / "astronaut.jpg")), (side, side), interpolation=cv2.INTER_AREA)


def clip_frames(count: int = FRAMES, blank: range = BLANK, side: int = SIDE) -> list[np.ndarray]:
    face = face_frame(side)
    grey = np.full_like(face, 128)
    return [grey if i in blank else face for i in range(count)]


def write_video(path: pathlib.Path, frames: list[np.ndarray], fps: float = FPS, fourcc: str | None = None) -> pathlib.Path | None:
    """Write ``frames`` with cv2.VideoWriter; None where this OpenCV build cannot write the codec."""
    fourcc = fourcc or CODECS[path.suffix]
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    if not writer.isOpened():
        return None
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path if path.is_file() and path.stat().st_size > 0 else None


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, pathlib.Path | None]:
    folder = tmp_path_factory.mktemp("clips")
    frames = clip_frames()
    return {suffix: write_video(folder / f"clip{suffix}", frames) for suffix in CODECS}


def clip(clips, suffix: str) -> pathlib.Path:
    path = clips[suffix]
    if path is None:
        if suffix == ".webm":
            pytest.skip("this OpenCV build cannot write WebM with VP80")
        pytest.fail(f"cv2.VideoWriter could not write {suffix} with {CODECS[suffix]}")
    return path


@pytest.fixture(scope="module")
def mp4_result(clips):
    calls = []
    result = analyse_video(small_models(), clip(clips, ".mp4"), every=5, detector="haar",
                           progress=lambda done, total: calls.append((done, total)))
    return result, calls


# ----------------------------------------------------------------------------- reading


@pytest.mark.parametrize("suffix", list(CODECS))
def test_probe_reads_frames_rate_and_size(clips, suffix):
    info = probe_video(clip(clips, suffix))
    assert (info.frames, info.fps, info.width, info.height) == (FRAMES, FPS, SIDE, SIDE)
    assert info.duration_s == pytest.approx(FRAMES / FPS)
    assert info.notes == []


@pytest.mark.parametrize("suffix", list(CODECS))
def test_every_nth_frame_is_analysed_and_faces_are_found_only_on_face_frames(clips, suffix):
    calls = []
    result = analyse_video(small_models(), clip(clips, suffix), every=5, detector="haar",
                           progress=lambda done, total: calls.append((done, total)))
    sampled = list(range(0, FRAMES, 5))
    assert [row["frame"] for row in result.rows] == sampled  # one face, or one no-face row, per frame
    assert [row["time_s"] for row in result.rows] == [f / FPS for f in sampled]
    assert result.frames_analysed == len(sampled) and result.every == 5
    assert calls == [(i, len(sampled)) for i in range(1, len(sampled) + 1)]
    for row in result.rows:
        assert row["file"] == str(clips[suffix]) and row["detector"] == "haar"
        if row["frame"] in BLANK:
            assert (row["face"], row["faces_in_image"], row["whole_image"]) == (0, 0, True)
            assert not any(key.startswith(MODEL_KEYS) for key in row), "no prediction on a frame with no face"
        else:
            assert (row["face"], row["faces_in_image"], row["whole_image"]) == (1, 1, False)
            assert 0 <= row["box_x"] < SIDE and 40 <= row["box_w"] <= SIDE
            for key in MODEL_KEYS:
                assert row[f"{key}_label"] in CLASSES
                assert sum(row[f"{key}_{name}"] for name in CLASSES) == pytest.approx(1.0, abs=1e-4)
    assert result.preview.shape == (SIDE, SIDE, 3)
    assert np.all(result.preview == CHOSEN_COLOUR, axis=-1).any(), "the preview has the face boxed"


def test_mtcnn_finds_the_face_in_video_frames(clips):
    result = analyse_video(small_models(), clip(clips, ".mp4"), every=10, detector="mtcnn", keys=["scratch_cnn"])
    assert [(row["frame"], row["face"], row["detector"]) for row in result.rows] == [
        (0, 1, "mtcnn"), (10, 1, "mtcnn"), (20, 0, "mtcnn"), (30, 1, "mtcnn")]
    assert not any(key.startswith(("mobilenetv2", "ensemble")) for row in result.rows for key in row)
    assert result.default_key() == "scratch_cnn"


def test_preview_is_the_most_confident_face_frame(clips, monkeypatch):
    """Make frame 15's answer the most confident: the preview must be drawn on that frame."""
    import fer_utils.serving as serving

    marked = clip_frames()
    for i in range(15, 20):
        marked[i] = cv2.rectangle(marked[i].copy(), (0, 0), (40, 40), (255, 0, 0), -1)  # BGR: a blue corner
    path = write_video(clips[".avi"].parent / "marked.avi", marked)
    confidences = iter([0.5, 0.6, 0.7, 0.99, 0.8, 0.8])  # frames 0, 5, 10, 15, 30, 35 (20, 25 have no face)

    def analyse_image(*args, **kwargs):
        analysis = original(*args, **kwargs)
        if analysis.search.found:
            value = next(confidences)
            for prediction in analysis.faces[0].predictions:
                prediction.probabilities = np.array([value, *[(1 - value) / 6] * 6], dtype=np.float32)
        return analysis

    original = serving.analyse_image
    monkeypatch.setattr(serving, "analyse_image", analyse_image)
    result = analyse_video(small_models(), path, every=5, detector="haar")
    corner = result.preview[5:30, 5:30]
    # RGB (0, 0, 255): the preview is frame 15, the most confident one, turned from OpenCV's BGR to RGB
    assert np.abs(corner.astype(int) - [0, 0, 255]).max() < 60


def test_timeline_has_one_line_per_class_over_the_clip_with_gaps(mp4_result):
    result, _ = mp4_result
    figure = result.timeline_figure()
    axes = figure.axes[0]
    assert len(axes.lines) == len(CLASSES)
    assert [line.get_label() for line in axes.lines] == list(CLASSES)
    assert [text.get_text() for text in axes.get_legend().get_texts()] == list(CLASSES)
    times = [f / FPS for f in range(0, FRAMES, 5)]
    assert axes.get_xlim() == pytest.approx((0.0, FRAMES / FPS))
    assert "ensemble" in axes.get_title() and "clip.mp4" in axes.get_title()
    by_frame = {row["frame"]: row for row in result.rows}
    for line, name in zip(axes.lines, CLASSES):
        x, y = line.get_data()
        assert list(x) == pytest.approx(times)
        for t, value in zip(x, y):
            frame = round(t * FPS)
            if frame in BLANK:
                assert math.isnan(value), "a frame with no face is a gap"
            else:
                assert value == pytest.approx(by_frame[frame][f"ensemble_{name}"])
    scratch = result.timeline_figure("scratch_cnn").axes[0]
    assert list(scratch.lines[0].get_data()[1])[0] == pytest.approx(by_frame[0]["scratch_cnn_angry"])
    with pytest.raises(ValueError, match="resnet50"):
        result.timeline_figure("resnet50")


def test_csv_round_trips_with_the_listed_columns(mp4_result, tmp_path):
    result, _ = mp4_result
    path = result.to_csv(tmp_path / "out" / "clip.csv")
    table = pd.read_csv(path)
    assert list(table.columns) == result.columns
    expected = ["file", "frame", "time_s", "face", "box_x", "box_y", "box_w", "box_h", "detector"]
    expected += [f"{key}_{name}" for key in MODEL_KEYS for name in ("label", *CLASSES)]
    assert set(expected) <= set(table.columns)
    assert list(table.columns[:3]) == ["file", "frame", "time_s"]
    assert len(table) == len(result.rows)
    assert table["frame"].tolist() == [row["frame"] for row in result.rows]
    face_rows = [row for row in result.rows if row["face"]]
    faces = table[table["face"] > 0]
    assert faces["ensemble_label"].tolist() == [row["ensemble_label"] for row in face_rows]
    assert faces["ensemble_happy"].tolist() == pytest.approx([row["ensemble_happy"] for row in face_rows])
    assert table[table["face"] == 0]["ensemble_label"].isna().all()
    assert not list(path.parent.glob("*.partial"))


def test_summary_counts_frames_faces_and_the_most_common_label(mp4_result):
    result, calls = mp4_result
    summary = result.summary()
    labels = [row["ensemble_label"] for row in result.rows if row["face"]]
    assert summary["frames"] == FRAMES and summary["sampled"] == 8 == len(calls)
    assert summary["frames_with_face"] == 6 and summary["faces_per_frame"] == pytest.approx(6 / 8)
    assert summary["max_faces_in_frame"] == 1 and summary["model"] == "ensemble"
    assert summary["most_common_label"] == max(set(labels), key=labels.count)
    assert sum(summary["label_counts"].values()) == 6


def test_every_must_be_at_least_one_and_keys_must_be_loaded(clips):
    with pytest.raises(ValueError, match="every"):
        analyse_video(small_models(), clip(clips, ".mp4"), every=0)
    with pytest.raises(ValueError, match="nope"):
        analyse_video(small_models(), clip(clips, ".mp4"), keys=["nope"])


def test_a_video_that_stops_early_keeps_the_rows_read_and_says_so(clips, monkeypatch, tmp_path):
    """The header promises 40 frames; the file holds 18: reading stops there with a note."""
    short = write_video(tmp_path / "short.avi", clip_frames(count=18, blank=range(0)))
    real_probe = video.probe_video

    def probe(path):
        info = real_probe(path)
        return VideoInfo(info.path, FRAMES, info.fps, info.width, info.height, FRAMES / info.fps, [])

    monkeypatch.setattr(video, "probe_video", probe)
    result = analyse_video(small_models(), short, every=5, detector="haar", keys=["scratch_cnn"])
    assert [row["frame"] for row in result.rows] == [0, 5, 10, 15]
    assert all(row["face"] == 1 for row in result.rows)
    assert len(result.notes) == 1 and "truncated" in result.notes[0] and "frame 18" in result.notes[0]


def test_no_frame_rate_assumes_25_with_a_note(clips, monkeypatch):
    real = cv2.VideoCapture

    class NoRate:
        def __init__(self, *args):
            self.capture = real(*args)

        def get(self, prop):
            return math.nan if prop == cv2.CAP_PROP_FPS else self.capture.get(prop)

        def __getattr__(self, name):
            return getattr(self.capture, name)

    monkeypatch.setattr(video.cv2, "VideoCapture", NoRate)
    info = probe_video(clip(clips, ".mp4"))
    assert info.fps == video.DEFAULT_FPS == 25 and info.duration_s == pytest.approx(FRAMES / 25)
    assert len(info.notes) == 1 and "25" in info.notes[0]


# ----------------------------------------------------------------------------- bad files


def test_text_and_jpeg_renamed_mp4_are_not_videos(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    with pytest.raises(VideoInputError, match="notes.mp4 is not a video"):
        probe_video(text)
    photo = tmp_path / "photo.mp4"
    shutil.copy(EXAMPLES / "astronaut.jpg", photo)
    with pytest.raises(VideoInputError, match="JPEG image, not a video"):
        probe_video(photo)


@pytest.mark.parametrize("suffix", [".mp4", ".avi", ".webm"])
def test_a_file_cut_in_half_is_truncated(clips, tmp_path, suffix):
    data = clip(clips, suffix).read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoInputError, match="truncated or damaged") as caught:
        probe_video(cut)
    assert cut.name in str(caught.value)
    with pytest.raises(VideoInputError, match="truncated"):
        analyse_video(small_models(), cut, detector="haar")


def test_empty_and_zero_frame_files(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoInputError, match=r"empty \(0 bytes\)"):
        probe_video(empty)
    zero = tmp_path / "zero.avi"
    writer = cv2.VideoWriter(str(zero), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (64, 64))
    writer.release()
    with pytest.raises(VideoInputError, match="contains no frames"):
        probe_video(zero)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(VideoInputError, match="could not be found"):
        probe_video(tmp_path / "absent.mp4")
    with pytest.raises(VideoInputError, match="is a folder"):
        probe_video(tmp_path)


def test_limits_on_size_resolution_and_duration(clips, monkeypatch):
    path = clip(clips, ".avi")
    monkeypatch.setattr(video, "MAX_FRAME_PIXELS", SIDE * SIDE - 1)
    with pytest.raises(VideoInputError, match=f"{SIDE}x{SIDE} pixels; the limit is"):
        probe_video(path)
    monkeypatch.setattr(video, "MAX_FRAME_PIXELS", SIDE * SIDE)
    monkeypatch.setattr(video, "MAX_DURATION_S", 3)
    with pytest.raises(VideoInputError, match=r"4\.0 seconds long; the limit is 3\.0 seconds"):
        probe_video(path)
    monkeypatch.setattr(video, "MAX_DURATION_S", 600)
    monkeypatch.setattr(video, "MAX_VIDEO_BYTES", 100 * 1024)
    with pytest.raises(VideoInputError, match=r"clip\.avi is 0\.\d MB; the limit is 0\.1 MB"):
        probe_video(path)
    monkeypatch.setattr(video, "MAX_VIDEO_BYTES", 200 * 1024**2)
    assert probe_video(path).frames == FRAMES


def test_module_constants():
    assert video.MAX_VIDEO_BYTES == 200 * 1024**2 and video.MAX_DURATION_S == 600
    assert video.MAX_FRAME_PIXELS == 3840 * 2160
    assert video.VIDEO_SUFFIXES == (".mp4", ".avi", ".webm", ".mov", ".mkv")
    assert issubclass(VideoInputError, ValueError)


def test_frames_with_no_face_get_no_second_look_unless_asked(clips, monkeypatch):
    """MTCNN's second look at lower thresholds runs on every frame where nothing is found, so a video
    does without it by default (the next sampled frame usually finds the face); asked for, it runs."""
    import fer_utils.faces as faces

    looked = []
    monkeypatch.setattr(faces, "_second_look", lambda rgb: looked.append(rgb.shape) or [])
    path = clip(clips, ".mp4")
    result = analyse_video(small_models(), path, every=5, keys=["scratch_cnn"], detector="mtcnn")
    blank = [row for row in result.rows if row["face"] == 0]
    assert len(blank) == 2 and looked == [], "frames 20 and 25 are blank, and no second look was taken"
    analyse_video(small_models(), path, every=5, keys=["scratch_cnn"], detector="mtcnn", second_look=True)
    assert looked == [(SIDE, SIDE, 3)] * 2, "one second look per blank frame"
