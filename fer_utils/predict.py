"""Predict the expression of every face in photos and videos from the command line, or a notebook.

``python -m fer_utils.predict PATH... [--models ensemble,scratch_cnn] [--detector mtcnn|haar]
[--every 10] [--out predictions.csv | predictions.jsonl] [--models-dir saved_models] [--no-mirror]``

Why: the demo answers one upload at a time; this runs a folder of them through the very same
serving path (:func:`fer_utils.serving.analyse_photo` for photos, :func:`fer_utils.video.analyse_video`
for videos), so a face gets the same answer here as in the demo (started with ``--mirror``; with
``--no-mirror`` here, as the demo by default).

- Folders are searched recursively, in sorted order; files in them that are neither an image
  (:data:`IMAGE_SUFFIXES`) nor a video (:data:`fer_utils.video.VIDEO_SUFFIXES`) are ignored, while
  such a file named on the command line is reported as skipped.
- One row per face: ``file``, ``frame`` and ``time_s`` (empty for photos), then the face columns of
  :func:`fer_utils.serving.analysis_rows` (face number, box, detector...) and per model
  ``<model>_label`` and ``<model>_<class>`` probabilities. A video frame with no face has one row
  with ``face`` 0 and no predictions.
- A file that cannot be read is reported on stderr with the reason and skipped; the exit code is
  1 if any file failed, 0 otherwise, and 2 for a usage error (unknown model, missing models
  folder, nothing to read, an ``--out`` that is neither ``.csv`` nor ``.jsonl``).
- ``--out``: rows are appended to a temporary file beside it as each input file finishes (a CSV's
  header is fixed up front from the models' class names), and the temporary file is renamed over
  ``--out`` at the end, so the target is never half written; an interrupted run (Ctrl-C) still
  keeps the rows of the files done. Without ``--out`` only a per-file summary is printed.
- Each face's answers average the face and its mirror image (flip TTA, as the demo started with
  ``--mirror`` does, shown with the temperature fitted for such answers); ``--no-mirror`` passes once.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from .faces import DEFAULT_DETECTOR, DETECTORS  # noqa: E402
from .names import MODEL_NAMES  # noqa: E402  (no TensorFlow: usage errors answer at once)
from .video import VIDEO_SUFFIXES  # noqa: E402

if TYPE_CHECKING:
    from .serving import ModelSet

__all__ = ["IMAGE_SUFFIXES", "FileResult", "PredictionRun", "collect_files", "predict_paths", "main"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
OUT_SUFFIXES = (".csv", ".jsonl")
CONTEXT_COLUMNS = ("file", "frame", "time_s")


@dataclass
class FileResult:
    """One input file: its rows, or why it could not be read."""

    path: Path
    kind: str  # "image" or "video"
    rows: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    summary: str = ""  # one line for people


@dataclass
class PredictionRun:
    """Every row of a run, and the files that failed or were skipped (each with the reason)."""

    rows: list[dict[str, Any]]
    failures: list[tuple[str, str]]
    files_done: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    detector: str = DEFAULT_DETECTOR

    @property
    def columns(self) -> list[str]:
        seen: dict[str, None] = {}
        for row in self.rows:
            for key in row:
                seen.setdefault(key, None)
        return list(seen)

    def to_frame(self):
        """The rows as a pandas DataFrame (columns: the union of the rows' keys, in first-seen order)."""
        import pandas as pd

        return pd.DataFrame(self.rows, columns=self.columns)


# ----------------------------------------------------------------------------- finding files


def file_kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    return None


def collect_files(paths: Iterable[str | os.PathLike]) -> tuple[list[tuple[Path, str]], list[tuple[str, str]],
                                                               list[tuple[str, str]]]:
    """``(files, skipped, missing)``: the images and videos to read, as ``(path, kind)`` in a
    deterministic order (folders recursively, sorted), each file once; files named on the command
    line that are neither, and paths that do not exist, each with the reason."""
    files: list[tuple[Path, str]] = []
    skipped: list[tuple[str, str]] = []
    missing: list[tuple[str, str]] = []
    seen: set[Path] = set()

    def add(path: Path, kind: str) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            files.append((path, kind))

    for given in paths:
        path = Path(given)
        if path.is_dir():
            for found in sorted(p for p in path.rglob("*") if p.is_file()):
                kind = file_kind(found)
                if kind:
                    add(found, kind)
        elif path.is_file():
            kind = file_kind(path)
            if kind:
                add(path, kind)
            else:
                skipped.append((str(path), f"not an image ({' '.join(IMAGE_SUFFIXES)}) or a video "
                                           f"({' '.join(VIDEO_SUFFIXES)}) by its name"))
        else:
            missing.append((str(path), "no such file or folder"))
    return files, skipped, missing


# ----------------------------------------------------------------------------- predicting


def predict_paths(
    paths: Iterable[str | os.PathLike] | str | os.PathLike,
    models: "ModelSet | None" = None,
    *,
    keys: Sequence[str] | None = None,
    detector: str = DEFAULT_DETECTOR,
    every: int = 10,
    models_dir: str | os.PathLike | None = None,
    progress: bool = True,
    on_file: Callable[[FileResult], None] | None = None,
    mirror: bool = True,
) -> PredictionRun:
    """Every face in every image and video under ``paths``: one row per face (see the module doc).

    ``models``: a loaded :class:`fer_utils.serving.ModelSet`, or None to load ``keys`` (all when
    None) from ``models_dir`` (default: the repository's ``saved_models/``). A file that fails is
    listed in ``failures`` with the reason and the run goes on. ``on_file`` is called as each file
    finishes (the CLI writes its rows then). An unknown model or detector is a ValueError.
    ``mirror``: average each face's answers with its mirror image's (flip TTA, the default).
    """
    from .serving import default_models_dir, load_models, select

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {', '.join(DETECTORS)}, got {detector!r}")
    if not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be a whole number of at least 1, got {every!r}")
    if keys is not None:
        keys = list(keys)
        unknown = [key for key in keys if key not in MODEL_NAMES]
        if unknown:
            raise ValueError(f"unknown model(s): {', '.join(unknown)}; choose from {', '.join(MODEL_NAMES)}")
    if models is None:
        folder = Path(models_dir) if models_dir is not None else default_models_dir()
        wanted = tuple(key for key in MODEL_NAMES if keys is None or key in keys)  # members before the ensemble
        models = load_models(folder, wanted)
        if not models:
            reasons = "; ".join(f"{k}: {v}" for k, v in models.missing.items())
            raise ValueError(f"no model could be loaded from {folder} ({reasons})")
        if keys is not None:
            absent = [key for key in keys if key not in models.models]
            if absent:
                raise ValueError("; ".join(f"{key} is not available: {models.missing.get(key, 'not loaded')}"
                                           for key in absent))
    chosen = [loaded.key for loaded in select(models, keys)]
    files, skipped, missing = collect_files(paths)
    run = PredictionRun([], list(missing), 0, skipped, chosen, detector)
    bar = _progress_bar(files, progress)
    try:
        for path, kind in bar:
            bar.set_postfix_str(path.name[-40:], refresh=False)
            result = _predict_file(models, path, kind, chosen, detector, every, progress, mirror)
            if result.error is None:
                run.rows.extend(result.rows)
                run.files_done += 1
            else:
                run.failures.append((str(path), result.error))
            if on_file is not None:
                on_file(result)
    finally:
        bar.close()
    return run


def _predict_file(models: "ModelSet", path: Path, kind: str, keys: list[str], detector: str, every: int,
                  progress: bool, mirror: bool = True) -> FileResult:
    from .imaging import ImageInputError
    from .serving import analyse_photo, analysis_rows
    from .video import VideoInputError, analyse_video

    started = time.perf_counter()
    result = FileResult(path, kind)
    try:
        if kind == "image":
            analysis = analyse_photo(models, path, keys=keys, detector=detector, mirror=mirror)
            result.rows = analysis_rows(analysis, file=str(path), frame=None, time_s=None)
            result.summary = _image_summary(analysis)
        else:
            with _FrameBar(path, progress) as bar:
                video = analyse_video(models, path, every=every, keys=keys, detector=detector,
                                      progress=bar.update_to, file=str(path), mirror=mirror)
            result.rows = video.rows
            result.summary = _video_summary(video)
    except (ImageInputError, VideoInputError) as error:
        result.error = str(error)
    except Exception as error:  # one bad file must not end the run
        log.debug("predicting %s failed", path, exc_info=True)
        result.error = f"{type(error).__name__}: {error}"
    result.seconds = time.perf_counter() - started
    return result


def _image_summary(analysis) -> str:
    search = analysis.search
    if search.face_crop:
        faces = "a face crop"
    elif search.whole_image:
        faces = "no face (whole image used)"
    else:
        faces = f"{len(analysis.faces)} face{'s' if len(analysis.faces) != 1 else ''}"
    answers = []
    for result in analysis.faces[:5]:
        answer = result.prediction()
        if answer is not None:
            answers.append(f"#{result.number} {answer.label} ({answer.confidence:.2f})")
    key = analysis.faces[0].prediction().key if analysis.faces and analysis.faces[0].predictions else ""
    return f"{faces}" + (f"; {key}: " + ", ".join(answers) if answers else "")


def _video_summary(video) -> str:
    info = video.summary()
    text = (f"{info['sampled']} of {info['frames']} frames read (every {info['every']}), "
            f"faces in {info['frames_with_face']}")
    if info["most_common_label"]:
        text += f"; {info['model']} mostly {info['most_common_label']}"
    if video.notes:
        text += f" [{' '.join(video.notes)}]"
    return text


# ----------------------------------------------------------------------------- progress


def _progress_bar(files: list, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(files, desc="files", unit="file", disable=not enabled, file=sys.stderr, dynamic_ncols=True)


class _FrameBar:
    """A per-video bar over sampled frames, fed by analyse_video's ``progress(done, total)``."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled, self.bar = path, enabled, None

    def __enter__(self) -> "_FrameBar":
        return self

    def update_to(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=self.path.name[-30:], unit="frame", leave=False, file=sys.stderr,
                            dynamic_ncols=True)
        self.bar.update(done - self.bar.n)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------- writing


class RowWriter:
    """Rows appended to a temporary file beside ``target`` as each input file finishes, then renamed
    over ``target`` (:meth:`close`), so ``target`` is never half written.

    CSV: the header is ``columns`` (fixed up front); should a row bring a column outside it, the
    file is rewritten from all rows with the union of columns before the rename.
    """

    def __init__(self, target: Path, columns: list[str]):
        self.target = target
        self.format = target.suffix.lower().lstrip(".")
        self.columns = list(columns)
        self.rows: list[dict[str, Any]] = []
        self.extra: dict[str, None] = {}
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
        self.partial = Path(partial)
        self.stream = os.fdopen(handle, "w", newline="", encoding="utf-8")
        if self.format == "csv":
            self.csv = csv.DictWriter(self.stream, fieldnames=self.columns, extrasaction="ignore")
            self.csv.writeheader()
            self.stream.flush()

    def write(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.rows.append(row)
            if self.format == "csv":
                for key in row:
                    if key not in self.columns:
                        self.extra.setdefault(key, None)
                self.csv.writerow(_csv_row(row))
            else:
                self.stream.write(json.dumps(row, default=_json_default) + "\n")
        self.stream.flush()

    def close(self) -> Path:
        if self.format == "csv" and self.extra:
            self.stream.seek(0)
            self.stream.truncate()
            self.csv = csv.DictWriter(self.stream, fieldnames=self.columns + list(self.extra))
            self.csv.writeheader()
            self.csv.writerows(_csv_row(row) for row in self.rows)
        self.stream.close()
        os.replace(self.partial, self.target)
        return self.target


def _csv_row(row: dict[str, Any]) -> dict[str, Any]:
    return {key: "" if value is None else value for key, value in row.items()}


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def output_columns(models: "ModelSet", keys: list[str]) -> list[str]:
    """The CSV header: context, face columns, then per model its label and class probabilities."""
    from .serving import row_columns

    return row_columns(models, keys, CONTEXT_COLUMNS)


# ----------------------------------------------------------------------------- command line


class _UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fer_utils.predict",
        description="Predict the facial expression of every face in images and videos (folders are searched recursively).",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image, video or folder")
    parser.add_argument("--models", default=None,
                        help=f"comma-separated models to run (default: every model found): {','.join(MODEL_NAMES)}")
    parser.add_argument("--detector", choices=DETECTORS, default=DEFAULT_DETECTOR,
                        help=f"face detector (default: {DEFAULT_DETECTOR})")
    parser.add_argument("--every", type=int, default=10, help="in videos, analyse every N-th frame (default: 10)")
    parser.add_argument("--out", default=None,
                        help="write the rows to this .csv or .jsonl file (default: print a per-file summary only)")
    parser.add_argument("--models-dir", default=None, help="folder with <model>.keras files (default: saved_models/)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (they only show on a terminal)")
    parser.add_argument("--no-mirror", action="store_true",
                        help="one pass per face; by default each face's answers are averaged with its mirror "
                             "image's (flip TTA: about a point more accurate on FER2013, twice the model time)")
    return parser


def _check_usage(args: argparse.Namespace) -> tuple[list[str] | None, Path | None]:
    keys = None
    if args.models is not None:
        keys = [key.strip() for key in args.models.split(",") if key.strip()]
        if not keys:
            raise _UsageError("--models is empty; name at least one of " + ", ".join(MODEL_NAMES))
        unknown = [key for key in keys if key not in MODEL_NAMES]
        if unknown:
            raise _UsageError(f"unknown model(s): {', '.join(unknown)}; choose from {', '.join(MODEL_NAMES)}")
        keys = list(dict.fromkeys(keys))
    if args.every < 1:
        raise _UsageError(f"--every must be at least 1, got {args.every}")
    out = None
    if args.out is not None:
        out = Path(args.out)
        if out.suffix.lower() not in OUT_SUFFIXES:
            raise _UsageError(f"--out must end in .csv or .jsonl, got {args.out!r}")
        if out.is_dir():
            raise _UsageError(f"--out {args.out!r} is a folder; give a file name ending in .csv or .jsonl")
    if args.models_dir is not None and not Path(args.models_dir).is_dir():
        raise _UsageError(f"the models folder {args.models_dir} does not exist")
    return keys, out


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit code (0 all read, 1 some file failed, 2 usage error)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        keys, out = _check_usage(args)
        files, skipped, missing = collect_files(args.paths)
        if not files:
            where = ", ".join(args.paths)
            raise _UsageError(f"no images or videos found in {where}")
    except _UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path, reason in skipped:
        print(f"skipped: {path}: {reason}", file=sys.stderr)
    for path, reason in missing:
        print(f"error: {path}: {reason}", file=sys.stderr)

    from .serving import default_models_dir, load_models

    models_dir = Path(args.models_dir) if args.models_dir is not None else default_models_dir()
    if not models_dir.is_dir():
        print(f"error: the models folder {models_dir} does not exist", file=sys.stderr)
        return 2
    wanted = tuple(key for key in MODEL_NAMES if keys is None or key in keys)
    models = load_models(models_dir, wanted)
    absent = [key for key in (keys or []) if key not in models.models]
    if absent or not models:
        reasons = "; ".join(f"{key}: {models.missing.get(key, 'not loaded')}" for key in (absent or models.missing))
        print(f"error: model(s) not available in {models_dir}: {reasons}", file=sys.stderr)
        return 2
    chosen = keys or list(models.models)
    progress = not args.no_progress and sys.stderr.isatty()
    writer = RowWriter(out, output_columns(models, chosen)) if out is not None else None

    def report(result: FileResult) -> None:
        from tqdm.auto import tqdm

        if result.error is not None:
            tqdm.write(f"error: {result.path}: {result.error}", file=sys.stderr)
            return
        if writer is not None:
            writer.write(result.rows)
        tqdm.write(f"{result.path}: {result.summary}", file=sys.stdout)

    try:
        run = predict_paths(args.paths, models, keys=chosen, detector=args.detector, every=args.every,
                            progress=progress, on_file=report, mirror=not args.no_mirror)
    except BaseException as error:  # Ctrl-C or a crash: keep the rows of the files finished, whole
        if writer is not None:
            writer.close()
            print(f"stopped: the rows of the files finished so far are in {out}", file=sys.stderr)
        if isinstance(error, KeyboardInterrupt):
            return 130
        raise
    if writer is not None:
        writer.close()
    failed = len(run.failures)
    print(f"{run.files_done} file(s) read, {len(run.rows)} row(s), {failed} failed, {len(skipped)} skipped"
          + (f"; rows written to {out}" if out is not None else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
