"""Video files through the same serving path as photos: every N-th frame, every face, every model.

Why a module of its own: a video is a stream of photos, so each sampled frame goes through
:func:`fer_utils.serving.analyse_image` and :func:`fer_utils.serving.analysis_rows` and a face gets
the same answer in a frame as in a photo. What is new is the file: OpenCV's reader
(``cv2.VideoCapture``) opens nearly anything and fails quietly (a JPEG renamed ``.mp4`` "opens" as
one frame, a cut-off AVI reports its full frame count and then stops early), so
:func:`probe_video` checks a file first and says in one sentence what is wrong with it
(:class:`VideoInputError`), and :func:`analyse_video` keeps what it read when a file ends early.

Example::

    result = analyse_video(models, "clip.mp4", every=10, detector="haar")
    result.to_csv("clip.csv"); result.timeline_figure().savefig("clip.png"); result.summary()
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

# FFmpeg's own log lines ("moov atom not found"...) say less than VideoInputError; quiet them
# (read once, when OpenCV first starts its FFmpeg backend; set the variable yourself to see them).
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from .faces import DEFAULT_DETECTOR, DETECTORS, MAX_FACES  # noqa: E402
from .files import atomic_write  # noqa: E402

if TYPE_CHECKING:  # serving imports TensorFlow; probing a file does not need it
    from matplotlib.figure import Figure

    from .serving import Analysis, ModelSet

__all__ = [
    "VideoInputError",
    "VideoInfo",
    "VideoResult",
    "probe_video",
    "analyse_video",
    "MAX_VIDEO_BYTES",
    "MAX_DURATION_S",
    "MAX_FRAME_PIXELS",
    "VIDEO_SUFFIXES",
    "DEFAULT_FPS",
]

MAX_VIDEO_BYTES = 200 * 1024**2
MAX_DURATION_S = 600
MAX_FRAME_PIXELS = 3840 * 2160
VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".mov", ".mkv")
DEFAULT_FPS = 25.0  # assumed when the file states no usable frame rate
SUPPORTED = "MP4, AVI, WebM, MOV or MKV"
# A header's frame count may be estimated from duration x fps and be a frame or two high, so the
# end-of-file check reads this far before the stated last frame.
END_SLACK_FRAMES, END_SLACK_FRACTION = 2, 0.01

_IMAGE_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
)
_MP4_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid"}


class VideoInputError(ValueError):
    """The video cannot be used; the message is written for the person who gave it."""


@dataclass
class VideoInfo:
    """What :func:`probe_video` found: frames, frame rate (after any assumption) and size."""

    path: Path
    frames: int
    fps: float
    width: int
    height: int
    duration_s: float
    notes: list[str] = field(default_factory=list)


@dataclass
class VideoResult:
    """Every sampled frame's faces as flat rows (one per face; a frame with no face has one row
    with ``face == 0`` and no predictions), the best frame's annotated preview and notes."""

    info: VideoInfo
    every: int
    rows: list[dict[str, Any]]
    frames_analysed: int
    preview: np.ndarray  # RGB
    notes: list[str] = field(default_factory=list)
    class_names: dict[str, tuple[str, ...]] = field(default_factory=dict)  # model key -> classes, in column order

    @property
    def columns(self) -> list[str]:
        """The union of the rows' keys, in the order they first appear."""
        return _union_columns(self.rows)

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write the rows as CSV (atomically: a temporary file, then renamed)."""
        import pandas as pd

        target = Path(path)
        frame = pd.DataFrame(self.rows, columns=self.columns)
        _write_atomically(target, lambda stream: frame.to_csv(stream, index=False))
        return target

    def default_key(self) -> str | None:
        """The model the timeline and summary follow: the ensemble where present, else the first."""
        if not self.class_names:
            return None
        return "ensemble" if "ensemble" in self.class_names else next(iter(self.class_names))

    def timeline_figure(self, key: str | None = None) -> "Figure":
        """The largest face's per-class probabilities over time, one line per class; frames
        without a face are gaps."""
        from matplotlib.figure import Figure

        key = key or self.default_key()
        if key not in self.class_names:
            raise ValueError(f"no model {key!r} in this result; it has: {', '.join(self.class_names) or 'none'}")
        times: dict[int, float] = {}
        largest: dict[int, dict[str, Any]] = {}
        for row in self.rows:
            times.setdefault(row["frame"], row["time_s"])
            if row.get("face") == 1:
                largest[row["frame"]] = row
        frames = sorted(times)
        x = [times[f] for f in frames]
        figure = Figure(figsize=(9, 4), layout="constrained")
        axes = figure.add_subplot()
        for name in self.class_names[key]:
            y = [float(largest[f].get(f"{key}_{name}", math.nan)) if f in largest else math.nan for f in frames]
            axes.plot(x, y, marker="o", markersize=3, linewidth=1.5, label=name)
        end = max([self.info.duration_s, *x]) or 1.0
        axes.set_xlim(0, end)
        axes.set_ylim(0, 1)
        axes.set_xlabel("time (s)")
        axes.set_ylabel("probability")
        axes.set_title(f"{self.info.path.name}: {key}, largest face, every {self.every} frame(s)")
        if not largest:
            axes.text(0.5, 0.5, "no face found in any sampled frame", transform=axes.transAxes, ha="center")
        axes.legend(loc="upper right", fontsize="small", ncol=2)
        axes.grid(alpha=0.3)
        return figure

    def summary(self) -> dict[str, Any]:
        """Frames, frames sampled, faces per sampled frame and the most common label."""
        key = self.default_key()
        faces: dict[int, int] = {}
        for row in self.rows:
            faces[row["frame"]] = faces.get(row["frame"], 0) + (1 if row.get("face") else 0)
        labels = Counter(row[f"{key}_label"] for row in self.rows if row.get("face") and f"{key}_label" in row)
        counts = list(faces.values())
        return {
            "file": str(self.info.path),
            "frames": self.info.frames,
            "fps": self.info.fps,
            "duration_s": self.info.duration_s,
            "every": self.every,
            "sampled": self.frames_analysed,
            "frames_with_face": sum(1 for c in counts if c),
            "faces_per_frame": round(sum(counts) / len(counts), 3) if counts else 0.0,
            "max_faces_in_frame": max(counts, default=0),
            "model": key,
            "most_common_label": labels.most_common(1)[0][0] if labels else None,
            "label_counts": dict(labels.most_common()),
            "notes": list(self.notes),
        }


# ----------------------------------------------------------------------------- probing


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Open a video and check it can be used, or raise :class:`VideoInputError` saying why.

    Checks, in order: the file exists, is not empty or over :data:`MAX_VIDEO_BYTES`, is not an
    image under a video name, opens, has frames, fits :data:`MAX_FRAME_PIXELS` and
    :data:`MAX_DURATION_S`, and really holds the frames its header promises (a truncated file).
    """
    path = Path(path)
    name = path.name
    if path.is_dir():
        raise VideoInputError(f"{name} is a folder, not a video file.")
    if not path.is_file():
        raise VideoInputError(f"The video file {name} could not be found.")
    size = path.stat().st_size
    if size == 0:
        raise VideoInputError(f"The video file {name} is empty (0 bytes).")
    if size > MAX_VIDEO_BYTES:
        raise VideoInputError(f"The video {name} is {_megabytes(size)} MB; the limit is "
                              f"{_megabytes(MAX_VIDEO_BYTES)} MB. Please cut or compress it.")
    with open(path, "rb") as stream:
        head = stream.read(64)
    image = _image_kind(head)
    if image:
        raise VideoInputError(f"{name} is a {image} image, not a video (was it renamed?). Open it as a photo instead.")
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise VideoInputError(_unopenable_message(path, head))
        notes: list[str] = []
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        if not math.isfinite(fps) or fps <= 0 or fps > 1000:
            notes.append(f"The video states no usable frame rate; {DEFAULT_FPS:g} frames per second was assumed.")
            fps = DEFAULT_FPS
        ok, first = capture.read()
        if not ok or first is None:
            stated = _frame_count(capture)
            if stated:
                raise VideoInputError(f"The video file {name} is truncated or damaged: its header lists {stated} "
                                      "frames but not one could be decoded.")
            raise VideoInputError(f"The video {name} contains no frames.")
        height, width = first.shape[:2]
        if width * height > MAX_FRAME_PIXELS:
            raise VideoInputError(f"The video {name} is {width}x{height} pixels; the limit is "
                                  f"{MAX_FRAME_PIXELS / 1e6:.1f} megapixels (3840x2160). Please scale it down.")
        frames = _frame_count(capture)
        counted = frames is None
        if counted:  # the header does not say: count them, up to the length limit
            frames = 1
            limit = int(MAX_DURATION_S * fps) + 1
            while frames <= limit and capture.grab():
                frames += 1
            notes.append("The video's header gives no frame count; its frames were counted.")
        duration = frames / fps
        if duration > MAX_DURATION_S:
            raise VideoInputError(f"The video {name} is {_minutes(duration)} long; the limit is "
                                  f"{_minutes(MAX_DURATION_S)}. Please cut it shorter.")
        if not counted:
            _check_end(capture, frames, name)
        return VideoInfo(path, frames, fps, int(width), int(height), round(duration, 3), notes)
    finally:
        capture.release()


def _frame_count(capture: cv2.VideoCapture) -> int | None:
    count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    if not math.isfinite(count) or count <= 0 or count > 1e9:
        return None
    return int(round(count))


def _check_end(capture: cv2.VideoCapture, frames: int, name: str) -> None:
    """Read (close to) the last frame the header promises: a cut-off file has none there."""
    if frames <= 1:
        return
    slack = max(END_SLACK_FRAMES, int(frames * END_SLACK_FRACTION))
    index = max(1, frames - 1 - slack)
    ok = capture.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok = ok and capture.read()[0]
    if not ok:
        reached = int(capture.get(cv2.CAP_PROP_POS_FRAMES) or 0)
        about = f" but it ends after about {reached}" if 0 < reached < frames else " but they cannot all be read"
        raise VideoInputError(f"The video file {name} is truncated or damaged: its header lists {frames} frames{about}. "
                              "Please use the complete file.")


def _image_kind(head: bytes) -> str | None:
    for magic, kind in _IMAGE_MAGIC:
        if head.startswith(magic):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return None


def _container_kind(head: bytes) -> str | None:
    if len(head) >= 8 and head[4:8] in _MP4_BOXES:
        return "MP4/MOV"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "WebM/MKV"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "AVI"
    return None


def _unopenable_message(path: Path, head: bytes) -> str:
    """Why OpenCV could not open the file: a known container is damaged, anything else is not a video."""
    name = path.name
    container = _container_kind(head)
    if container is None:
        return f"{name} is not a video that can be read; please use an {SUPPORTED} file."
    if container == "MP4/MOV":
        boxes, cut = _mp4_top_boxes(path)
        if cut or b"moov" not in boxes:
            return (f"The video file {name} is truncated or damaged: the {container} file ends before its index "
                    "(moov box), as a partly downloaded or copied file does. Please use the complete file.")
        return (f"The video file {name} is damaged or holds no video frames: its {container} index could not be "
                "read.")
    return (f"The video file {name} looks like {container} but could not be opened; it is truncated or damaged. "
            "Please use the complete file.")


def _mp4_top_boxes(path: Path, limit: int = 10_000) -> tuple[list[bytes], bool]:
    """The top-level box types of an MP4/MOV file, and whether the last box runs past the end."""
    size = path.stat().st_size
    boxes: list[bytes] = []
    with open(path, "rb") as stream:
        offset = 0
        while offset < size and len(boxes) < limit:
            stream.seek(offset)
            header = stream.read(16)
            if len(header) < 8:
                return boxes, True
            length = int.from_bytes(header[:4], "big")
            kind = header[4:8]
            if length == 1 and len(header) >= 16:
                length = int.from_bytes(header[8:16], "big")
            elif length == 0:
                length = size - offset
            if length < 8:
                return boxes, True
            boxes.append(kind)
            offset += length
        return boxes, offset > size


def _megabytes(size: int) -> str:
    value = size / 1024**2
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} minutes" if seconds >= 60 else f"{seconds:.1f} seconds"


# ----------------------------------------------------------------------------- analysing


def analyse_video(
    models: "ModelSet",
    path: str | os.PathLike,
    *,
    every: int = 10,
    keys: Sequence[str] | None = None,
    detector: str = DEFAULT_DETECTOR,
    progress: Callable[[int, int], None] | None = None,
    max_faces: int = MAX_FACES,
    try_rotations: bool = False,
    second_look: bool = False,
    profiles: bool = False,
    file: str | None = None,
    mirror: bool = True,
) -> VideoResult:
    """Every ``every``-th frame (0, every, 2*every...) through every model named (all when None).

    Frames are read in order: skipped ones are only ``grab()``-ed, sampled ones decoded and
    turned from OpenCV's BGR to RGB. ``progress(done, total)`` is called after each sampled
    frame. Rows carry ``file`` (``file`` or the path), ``frame`` and ``time_s`` before the face
    columns of :func:`fer_utils.serving.analysis_rows`. A frame that cannot be read ends the
    reading with a note, keeping the rows so far. Turned faces (90/180/270 degrees) are not
    searched unless ``try_rotations``: OpenCV already applies a phone video's rotation, and the
    three extra searches would cost most on the frames with no face. Nor does MTCNN take its second
    look at lower thresholds unless ``second_look``: it too runs on every frame with no face (+57 ms
    on a 600x400 one, +150 ms at 1280x720), and a face missed in one frame is usually found in the
    next. Nor does the profile cascade look for faces seen from the side unless ``profiles`` (the cascade
    takes 135 ms on a 600x400 frame and 330 ms at 1280x720 where it finds nothing). ``mirror``: each face is
    answered with its mirror image averaged in, as photos are (:func:`fer_utils.serving.analyse_image`).
    """
    from .serving import analyse_image, analysis_rows, select

    if not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be a whole number of at least 1, got {every!r}")
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {', '.join(DETECTORS)}, got {detector!r}")
    chosen = select(models, list(keys) if keys is not None else None)  # an unknown key fails before reading
    info = probe_video(path)
    label = file if file is not None else str(path)
    notes = list(info.notes)
    sampled = range(0, info.frames, every)
    total = len(sampled)
    rows: list[dict[str, Any]] = []
    best: tuple[float, Analysis] | None = None  # (confidence, analysis) of the best frame with a face
    first: Analysis | None = None
    done = 0
    capture = cv2.VideoCapture(str(info.path))
    try:
        for index in range(info.frames):
            if index % every:
                if not capture.grab():
                    notes.append(_ended_note(index, info.frames))
                    break
                continue
            ok, bgr = capture.read()
            if not ok or bgr is None:
                notes.append(_ended_note(index, info.frames))
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            analysis = analyse_image(models, rgb, keys=keys, detector=detector, max_faces=max_faces,
                                     try_rotations=try_rotations, second_look=second_look, profiles=profiles,
                                     mirror=mirror)
            search = analysis.search
            context = {"file": label, "frame": index, "time_s": round(index / info.fps, 3)}
            frame_rows = analysis_rows(analysis, **context)
            if search.found or search.face_crop:
                rows.extend(frame_rows)
                answer = analysis.faces[0].prediction() if analysis.faces else None
                confidence = answer.confidence if answer is not None else -1.0
                if best is None or confidence > best[0]:
                    best = (confidence, analysis)
            else:
                rows.append(_no_face_row(frame_rows, analysis))
            if first is None:
                first = analysis
            done += 1
            if progress is not None:
                progress(done, total)
    finally:
        capture.release()
    if first is None:
        raise VideoInputError(f"The video file {info.path.name} is truncated or damaged: no frame could be decoded.")
    shown = best[1] if best is not None else first
    return VideoResult(info, every, rows, done, shown.annotated(), notes,
                       {loaded.key: tuple(loaded.class_names) for loaded in chosen})


def _no_face_row(frame_rows: list[dict[str, Any]], analysis: "Analysis") -> dict[str, Any]:
    """A frame with no face: one row, ``face`` 0, and no predictions (they would be of the whole frame)."""
    row = dict(frame_rows[0]) if frame_rows else {}
    prefixes = tuple(f"{p.key}_" for result in analysis.faces for p in result.predictions)
    row = {k: v for k, v in row.items() if not (prefixes and k.startswith(prefixes))}
    row.update({"face": 0, "faces_in_image": 0, "whole_image": True})
    return row


def _ended_note(index: int, frames: int) -> str:
    return (f"The video ended at frame {index} of the {frames} its header lists: the file is truncated or damaged; "
            "the frames before it were analysed.")


# ----------------------------------------------------------------------------- helpers


def _union_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    return list(seen)


def _write_atomically(target: Path, write: Callable[[Any], None]) -> None:
    """``write(stream)`` into a temporary file beside ``target``, then rename it over ``target``."""
    with atomic_write(target) as partial, open(partial, "w", newline="", encoding="utf-8") as stream:
        write(stream)
