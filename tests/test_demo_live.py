"""Tests of the demo's Live and Video tabs: /live_frame and /video through gradio_client against the
launched app (the small models of tests/demo_fixtures.py), and the live stream's handler on its own.

The browser side of the Live tab (a fake webcam in Chromium) is in tests/test_demo_browser.py.
"""

from __future__ import annotations

import csv
import pathlib
import sys

import numpy as np
import pytest
from PIL import Image

TESTS = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

from synthetic import CLASS_NAMES_7  # noqa: E402
from demo_fixtures import EXAMPLES, loaded_models, running_app  # noqa: E402

ASTRONAUT = EXAMPLES / "astronaut.jpg"


def astronaut_frames(count: int, size: tuple[int, int] = (640, 480), face_side: int = 360) -> list[np.ndarray]:
    """RGB frames: the astronaut photo on a grey canvas, drifting a few pixels from frame to frame."""
    width, height = size
    photo = np.asarray(Image.open(ASTRONAUT).convert("RGB").resize((face_side, face_side), Image.LANCZOS))
    frames = []
    for index in range(count):
        canvas = np.full((height, width, 3), 90, np.uint8)
        x = (width - face_side) // 2 + int(round(30 * np.sin(index / 6)))
        y = (height - face_side) // 2 + int(round(12 * np.cos(index / 9)))
        canvas[y:y + face_side, x:x + face_side] = photo
        frames.append(canvas)
    return frames


def write_mp4(path: pathlib.Path, frames: list[np.ndarray], fps: float = 10.0) -> pathlib.Path:
    import cv2

    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened(), "OpenCV cannot write mp4v here"
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from gradio_client import Client

    return Client(running_app(), verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")),
                  ssl_verify=False)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> pathlib.Path:
    """25 frames (2.5 s at 10 frames/s) of the astronaut, as an mp4."""
    return write_mp4(tmp_path_factory.mktemp("video") / "astronaut.mp4", astronaut_frames(25))


# ----------------------------------------------------------------------------- /live_frame


def test_live_frame_boxes_and_labels_the_astronaut(client):
    from gradio_client import handle_file

    frame_path, info = client.predict(handle_file(str(ASTRONAUT)), api_name="/live_frame")
    networks = loaded_models().networks()
    assert info["faces_found"] == 1, info
    assert info["label"] in CLASS_NAMES_7
    assert info["faces"][0]["label"] == info["label"]
    assert set(info["faces"][0]["probabilities"]) == set(CLASS_NAMES_7)
    assert info["model"] in networks and info["model_name"] == networks[info["model"]].display_name
    assert info["detector"] == "mtcnn" and info["image_size_wh"] == [512, 512]

    shown = np.asarray(Image.open(frame_path).convert("RGB"), dtype=np.int16)
    original = np.asarray(Image.open(ASTRONAUT).convert("RGB"), dtype=np.int16)
    assert shown.shape == original.shape  # the frame at its own size, not shrunk
    x, y, w, h = info["faces"][0]["box_xywh"]
    difference = np.abs(shown - original).max(axis=2)
    border = np.zeros(difference.shape, bool)  # a band around the box's outline: where the box is drawn
    border[max(0, y - 3):y + h + 4, max(0, x - 3):x + w + 4] = True
    border[y + 4:y + h - 3, x + 4:x + w - 3] = False
    outside = np.ones(difference.shape, bool)
    outside[max(0, y - 60):y + h + 10, max(0, x - 10):x + w + 10] = False  # clear of the box and its label strip
    assert difference[border].mean() > 60, "no box drawn around the face"
    assert difference[outside].mean() < 8, "the frame changed away from the face (JPEG noise only expected)"


def test_live_frame_keeps_a_tracker_per_client_and_measures_fps(client):
    """Calls of one client are one stream: the frame counter goes on and frames/s appears."""
    from gradio_client import Client, handle_file

    infos = [client.predict(handle_file(str(ASTRONAUT)), api_name="/live_frame")[1] for _ in range(3)]
    assert [info["frame"] for info in infos] == [infos[0]["frame"], infos[0]["frame"] + 1, infos[0]["frame"] + 2]
    assert infos[-1]["fps"] and infos[-1]["fps"] > 0
    assert all(info["faces_found"] == 1 for info in infos)  # carried between detections too
    other = Client(running_app(), verbose=False, download_files=False, ssl_verify=False)
    first = other.predict(handle_file(str(ASTRONAUT)), api_name="/live_frame")[1]
    assert first["frame"] == 1 and first["fps"] is None  # a new session starts its own tracker


def test_live_frame_with_another_model_and_detector(client):
    from gradio_client import handle_file

    _, info = client.predict(handle_file(str(ASTRONAUT)), "scratch_cnn", "haar", api_name="/live_frame")
    assert (info["model"], info["detector"], info["frame"]) == ("scratch_cnn", "haar", 1)  # a new tracker
    assert info["faces_found"] == 1 and info["label"] in CLASS_NAMES_7


def test_live_frame_bad_image_is_a_clear_error(client, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    bad = tmp_path / "frame.jpg"
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(AppError, match="not an image"):
        client.predict(handle_file(str(bad)), api_name="/live_frame")


# ----------------------------------------------------------------------------- /video


def test_video_gives_timeline_preview_csv_and_summary(client, clip):
    from gradio_client import handle_file

    plot, preview, csv_path, summary = client.predict(handle_file(str(clip)), 5, api_name="/video")
    with open(csv_path, newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [int(row["frame"]) for row in rows] == [0, 5, 10, 15, 20]  # one row per sampled frame: one face each
    assert all(row["face"] == "1" for row in rows)
    assert all(row["file"] == "astronaut.mp4" for row in rows)  # the upload's name, not its server path
    assert {row["ensemble_label"] for row in rows} <= set(CLASS_NAMES_7)
    assert [float(row["time_s"]) for row in rows] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert plot["type"] == "matplotlib" and plot["plot"].startswith("data:image/")
    assert Image.open(preview).size == (640, 480)
    assert "astronaut.mp4" in summary and "**5** frames" in summary and "Most common expression" in summary


def test_video_default_every_is_10(client, clip):
    from gradio_client import handle_file

    _, _, csv_path, _ = client.predict(handle_file(str(clip)), api_name="/video")
    with open(csv_path, newline="") as stream:
        assert [int(row["frame"]) for row in csv.DictReader(stream)] == [0, 10, 20]


@pytest.mark.parametrize("name, content, message", [
    ("notes.mp4", b"these are meeting notes, not a video\n" * 20, "not a video that can be read"),
    ("photo.mp4", ASTRONAUT.read_bytes(), "is a JPEG image, not a video"),
    ("cut.mp4", None, "truncated or damaged"),
])
def test_video_bad_files_get_a_clear_message_and_the_server_keeps_serving(client, clip, tmp_path, name, content,
                                                                          message):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    bad = tmp_path / name
    bad.write_bytes(content if content is not None else clip.read_bytes()[: clip.stat().st_size // 2])
    with pytest.raises(AppError, match=message) as raised:
        client.predict(handle_file(str(bad)), api_name="/video")
    assert "Traceback" not in str(raised.value)
    _, info = client.predict(handle_file(str(ASTRONAUT)), api_name="/live_frame")  # still serving
    assert info["faces_found"] == 1


def test_video_every_must_be_at_least_1(client, clip):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="less than minimum value 1"):  # gr.Number(minimum=1) says so
        client.predict(handle_file(str(clip)), 0, api_name="/video")


# ----------------------------------------------------------------------------- the stream handler


def test_stream_frames_reuse_the_session_tracker_until_model_or_detector_change():
    from demo.app import live_stream_frame

    models = loaded_models()
    frames = astronaut_frames(6)
    image, status, tracker = live_stream_frame(models, frames[0], "scratch_cnn", "mtcnn", None)
    assert "1 face in view" in status and image.shape == frames[0].shape and not np.array_equal(image, frames[0])
    for frame in frames[1:5]:
        image, status, same = live_stream_frame(models, frame, "scratch_cnn", "mtcnn", tracker)
        assert same is tracker
    assert tracker.frames == 5 and "frames/s" in status and "measuring" not in status
    assert "1 face in view" in status and "MTCNN" in status
    _, status, changed = live_stream_frame(models, frames[5], "scratch_cnn", "haar", tracker)
    assert changed is not tracker and changed.detector == "haar" and "Haar" in status


def test_the_live_view_serves_an_ensemble_member_that_is_not_one_of_the_shown_models():
    """networks() (and fastest_model) offer members kept outside the five; serving.select finds them too."""
    from demo.app import live_model_choices, live_stream_frame
    from fer_utils.serving import ModelSet

    models = loaded_models()
    only_ensemble = ModelSet(models.models_dir, {"ensemble": models.models["ensemble"]}, {})
    assert "scratch_cnn" in only_ensemble.networks() and "scratch_cnn" not in only_ensemble.models
    assert [key for _, key in live_model_choices(only_ensemble)] == list(only_ensemble.networks())
    _, status, tracker = live_stream_frame(only_ensemble, astronaut_frames(1)[0], "scratch_cnn", "mtcnn", None)
    assert "1 face in view" in status and tracker.key == "scratch_cnn"


def test_a_failing_frame_is_shown_unannotated_and_the_stream_goes_on(monkeypatch):
    from demo.app import live_stream_frame

    models = loaded_models()
    frame = astronaut_frames(1)[0]
    _, _, tracker = live_stream_frame(models, frame, "scratch_cnn", "mtcnn", None)

    def broken(_frame):
        raise RuntimeError("detector crashed")

    monkeypatch.setattr(tracker, "process", broken)
    image, status, same = live_stream_frame(models, frame, "scratch_cnn", "mtcnn", tracker)
    assert image is frame and "could not be analysed" in status and same is tracker
    monkeypatch.undo()
    image, status, _ = live_stream_frame(models, frame, "scratch_cnn", "mtcnn", tracker)
    assert "1 face in view" in status


def test_a_frame_arriving_while_one_is_in_flight_is_dropped():
    import gradio as gr

    from demo.app import live_stream_frame

    models = loaded_models()
    frame = astronaut_frames(1)[0]
    _, _, tracker = live_stream_frame(models, frame, "scratch_cnn", "mtcnn", None)
    with tracker.busy:  # the previous frame is still being answered
        answer = live_stream_frame(models, frame, "scratch_cnn", "mtcnn", tracker)
    assert all(isinstance(value, type(gr.skip())) for value in answer)
    assert live_stream_frame(models, None, "scratch_cnn", "mtcnn", tracker)[0] == gr.skip()


def test_the_stream_event_drops_frames_and_has_its_own_slots():
    """The webcam's .stream() event: one stream per session, limited, in its own concurrency group."""
    from demo import app

    blocks = app.build_demo(models=loaded_models())
    streams = [fn for fn in blocks.fns.values() if fn.connection == "stream"]
    assert len(streams) == 1
    stream = streams[0]
    assert stream.stream_every == app.LIVE_STREAM_EVERY and stream.time_limit == app.LIVE_TIME_LIMIT
    assert stream.concurrency_id == "live" and stream.concurrency_limit == app.LIVE_SESSIONS
    names = {fn.api_name for fn in blocks.fns.values() if fn.api_visibility == "public"}
    assert {"live_frame", "video", "compare"} <= names
