"""Facial-expression recognition demo: one photo, five models side by side, and why.

    python demo/app.py [--models-dir DIR] [--host 127.0.0.1] [--port 7860] [--share] [--auth USER:PASS]
        [--detector mtcnn|haar] [--mirror]

The page has a Compare tab (every model's top-3 on the same 48x48 face crop, where they agree,
how long each took), one tab per model with a Grad-CAM or saliency heatmap, a Live tab (the
webcam streamed, every face boxed and labelled by one fast model), a Video tab (an uploaded
video sampled every N-th frame: a timeline of the largest face's expression, a CSV) and an
"About these models" panel read from the model cards. Every tab is also a named API endpoint
(``/compare``, ``/scratch_cnn``, ``/resnet50``, ``/mobilenetv2``, ``/inceptionv3``,
``/ensemble``, ``/live_frame``, ``/video``) for ``gradio_client``.

:func:`launch` also bounds what a request may cost before any handler runs: request bodies over
the upload limit are refused (413), an unknown endpoint is a 404 naming the real ones, Gradio's own
input checks answer with a reason (never ``{"error": null}``), no log line quotes more than ~100
characters of what a client sent, and an address with 5 failed logins in a minute waits 60 s (429).

Tests and the benchmark call :func:`build_demo` and :func:`launch`; ``demo`` (the Blocks for the
default ``saved_models/``) is built on first access, so importing this module stays cheap.
"""

from __future__ import annotations

import time

_STARTED = time.perf_counter()  # "ready in N s" counts the imports too

import argparse
import functools
import json
import logging
import os
import sys
import threading
import types
import uuid
from pathlib import Path
from typing import Any, Callable

APP_DIR = Path(__file__).resolve().parent
ROOT = APP_DIR.parent
if sys.path and sys.path[0] and Path(sys.path[0]).resolve() == APP_DIR:
    sys.path[0] = str(ROOT)  # run as a script: import demo.* as a package, never its modules as top-level names
elif str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
from gradio.data_classes import ImageData  # noqa: E402
from gradio.route_utils import FnIndexInferError  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402

from demo.about import about_markdown  # noqa: E402
from demo.hardening import (  # noqa: E402
    FORWARDED_ENV, MESSAGE_LIMIT, BodySizeLimit, LoginLimiter, LoginRateLimit, bounded_traceback, guard_blocks,
    unknown_endpoint,
)
from fer_utils import serving  # noqa: E402
from fer_utils.explain import resolve_method  # noqa: E402
from fer_utils.faces import DEFAULT_DETECTOR, DETECTORS  # noqa: E402
from fer_utils.imaging import MAX_BYTES, ImageInputError, decode_image, jpeg_data_url, quote_input  # noqa: E402
from fer_utils.serving import DISPLAY_NAMES, ModelSet, default_models_dir, load_models  # noqa: E402
from fer_utils.video import VideoInputError, analyse_video  # noqa: E402

log = logging.getLogger("fer_demo")

EXAMPLES_DIR = APP_DIR / "examples"
EXAMPLES = (
    ("astronaut.jpg", "One face"),
    ("two_portraits.jpg", "Two faces"),
    ("small_face.jpg", "Small face, big photo"),
    ("grace_hopper.jpg", "Large face"),
    ("coffee_no_face.jpg", "No face"),
)
CONCURRENCY = 2  # requests running models at once: one per CPU core on the target machine
QUEUE_SIZE = 100
AUTH_ENV = "FER_DEMO_AUTH"
INPUT_SOURCES = ["upload", "webcam", "clipboard"]
NO_PHOTO = "Upload a photo, use the webcam or paste one (or pick an example), then press **Analyse**."
METHOD_TEXT = {
    "grad_cam": "Grad-CAM: the regions whose features raised the score of the predicted class most.",
    "saliency": "Saliency: the pixels whose small changes move the predicted class's score most "
    "(the ensemble has no single last convolution, so Grad-CAM does not apply).",
}
THEME = gr.themes.Soft(
    font=["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "sans-serif"],  # no web-font download
    font_mono=["ui-monospace", "SFMono-Regular", "Consolas", "monospace"],
)
CSS = """
.face-crop img { image-rendering: pixelated; object-fit: contain; width: 100%; height: 100%; }
.model-card { min-width: 150px; }
.model-card h3 { margin: 0 0 4px 0; }
.timing p { font-size: 0.85em; opacity: 0.8; margin: 0; }
#face-note { min-height: 90px; }  /* room for Gradio's status badge below the text */
#live-status p { font-variant-numeric: tabular-nums; }
"""
# Live tab. The browser sends a webcam frame every LIVE_STREAM_EVERY s (as a JPEG data URL). On
# the 2-core machine LiveTracker answers a 640x480 frame in ~5 ms when it carries the faces and
# ~130 ms when it runs MTCNN (every 4th frame): ~29 frames/s with drawing (benchmarks/demo_latency.py),
# so one stream gets the 10 frames/s the browser asks for, with room for a second.
LIVE_STREAM_EVERY = 0.1
LIVE_TIME_LIMIT = 300  # s: a stream then stops (press record again), so a forgotten tab frees its slot
LIVE_SESSIONS = 4  # webcam streams served at once (each holds one queue slot while it runs); more wait
LIVE_ERROR_LOG_EVERY = 100  # a stream whose frames keep failing logs one traceback, then a count
LIVE_JPEG_QUALITY = 80
VIDEO_EVERY = 10
NO_VIDEO = "Upload a video (mp4, avi or webm, up to 10 MB), then press **Analyse video**."


def photo_input(**options) -> gr.Image:
    """A gr.Image that hands the app the uploaded file undecoded.

    Gradio's own preprocessing opens the file with Pillow before the app sees it, so a broken
    file would end as a generic error; here the app decodes it and can say what is wrong. (The
    method is replaced on the instance: subclassing a component makes Gradio write a .pyi stub
    beside this file on every import.)
    """
    component = gr.Image(type="filepath", **options)
    component.preprocess = types.MethodType(_undecoded_upload, component)
    return component


def _undecoded_upload(self: gr.Image, payload) -> str | None:
    """The upload's path in Gradio's cache (Gradio has already checked it is an upload)."""
    if payload is None:
        return None
    if payload.url and payload.url.startswith("data:"):
        return payload.url  # base64 from an API client: fer_utils.imaging decodes it
    if payload.path is None:
        raise gr.Error("No image was received; please upload it again.", print_exception=False)
    return str(payload.path)


# ----------------------------------------------------------------------------- request handlers


def user_errors(fn: Callable | None = None, *, what: str = "photo") -> Callable:
    """Turn bad uploads into a gr.Error with the message for people; hide tracebacks from the page.

    ``@user_errors`` for the photo handlers, ``@user_errors(what="video")`` for the video one.
    """
    if fn is None:
        return functools.partial(user_errors, what=what)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except ImageInputError as error:
            message = quote_input(error, MESSAGE_LIMIT)
            log.info("%s: rejected an upload: %s", fn.__name__, message)
            raise gr.Error(message, title="Cannot use this image", print_exception=False) from None
        except VideoInputError as error:
            message = quote_input(error, MESSAGE_LIMIT)
            log.info("%s: rejected a video: %s", fn.__name__, message)
            raise gr.Error(message, title="Cannot use this video", print_exception=False) from None
        except Exception as error:
            log.error("analysing a %s failed: %s", what, bounded_traceback(error))
            raise gr.Error(
                f"Something went wrong while analysing this {what} (the details are in the server log). "
                f"Please try another {what}.",
                print_exception=False,
            ) from None

    return wrapper


def rejection_note(error: gr.Error) -> str:
    """The face note for a photo that could not be used: "⚠ **Cannot use this image:** <reason>"."""
    title = getattr(error, "title", None)
    lead = f"**{title}:** " if title and title != "Error" else ""
    return f"⚠ {lead}{quote_input(getattr(error, 'message', error), MESSAGE_LIMIT)}"


def face_number(choice: str | int | float | None) -> int:
    """The face picker's value ("#2", 2 or None) as a face number, 1 = the largest."""
    if choice is None or choice == "":
        return 1
    try:
        return max(1, int(str(choice).lstrip("#").split()[0]))
    except ValueError:
        return 1


def face_choices(analysis: serving.Analysis) -> list[str]:
    """The picker's entries: "#1 happy (largest)", "#2 sad", ... (the ensemble's answer, else the first model's)."""
    if not analysis.search.found:
        return ["#1 whole image"]
    choices = []
    for result in analysis.faces:
        prediction = result.prediction()
        label = f" {prediction.label}" if prediction else ""
        choices.append(f"#{result.number}{label}" + (" (largest)" if result.number == 1 else ""))
    return choices


def compare_values(models: ModelSet, photo: str | None, face: str | int | None = None,
                   detector: str = DEFAULT_DETECTOR, mirror: bool = False) -> list[Any]:
    """Outputs of the Compare tab: boxed photo, crop, face note, agreement, (label, time) per model,
    the face picker and the JSON summary (every face, with each model's probabilities)."""
    if photo is None:
        raise gr.Error(NO_PHOTO.replace("**", ""), print_exception=False)
    analysis = serving.analyse_photo(models, photo, detector=detector, mirror=mirror)
    number = min(face_number(face), len(analysis.faces))
    chosen = analysis.face(number)
    values: list[Any] = [analysis.annotated(chosen=number), chosen.crop, face_markdown(analysis, number),
                         chosen.agreement]
    for prediction in chosen.predictions:
        values += [prediction.confidences(None), f"Inference: {prediction.timing()}"]
    choices = face_choices(analysis)
    values.append(gr.update(choices=choices, value=choices[number - 1], interactive=len(choices) > 1))
    values.append(details_json(analysis, number))
    return values


def blank_compare_values(models: ModelSet, note: str = NO_PHOTO) -> list[Any]:
    return [None, None, note, ""] + [None, ""] * len(models) + [gr.update(choices=[], value=None, interactive=False),
                                                               None]


def model_values(models: ModelSet, key: str, photo: str | None, face: str | int | None = None,
                 detector: str = DEFAULT_DETECTOR, mirror: bool = False) -> list[Any]:
    """Outputs of one model's tab: its top-3, the heatmap over the chosen face, and what was done."""
    if photo is None:
        raise gr.Error(NO_PHOTO.replace("**", ""), print_exception=False)
    loaded = models.models[key]
    analysis = serving.analyse_photo(models, photo, detector=detector, keys=[key], mirror=mirror)
    number = min(face_number(face), len(analysis.faces))
    result = analysis.face(number)
    explanation = serving.explain_prediction(loaded, result.crop, result.prediction(key))
    prediction = explanation.prediction
    which = f" on face #{number} of {len(analysis.faces)}" if len(analysis.faces) > 1 else ""
    info = (
        f"**{loaded.display_name}** says **{prediction.label}** ({prediction.confidence:.0%}){which}.  \n"
        f"{METHOD_TEXT[explanation.method]}  \n"
        f"Inference: {prediction.timing()}; explanation: {explanation.seconds * 1000:.0f} ms.  \n"
        + " ".join(analysis.all_notes)
    )
    return [prediction.confidences(None), explanation.overlay, info]


def blank_model_values(message: str = "") -> list[Any]:
    return [None, None, message]


def face_markdown(analysis: serving.Analysis, number: int = 1) -> str:
    """The face note, loud when no face was found (predictions on a whole photo are unreliable)."""
    first, *rest = analysis.all_notes
    search = analysis.search
    text = f"⚠ **{first}**" if search.whole_image and not search.face_crop else first
    if search.found and len(analysis.faces) > 1:
        text += f" Showing face **#{number}** (green); pick another under *Face*."
    return " ".join([text, *rest])


def details_json(analysis: serving.Analysis, number: int = 1) -> dict[str, Any]:
    """Everything the Compare tab shows, as JSON for API clients and tests: every face, each model's probabilities."""
    search = analysis.search
    chosen = analysis.face(number)
    summary = analysis.as_dict()
    summary["face"] = {  # the face shown in the Compare tab
        "found": search.found,
        "number": chosen.number,
        "faces_found": len(search.boxes),
        "box_xywh": chosen.face.box.as_list() if chosen.face.box else None,
        "all_boxes_xywh": [box.as_list() for box in search.boxes],
        "image_size_wh": list(search.image_size),
        "crop_size": list(chosen.crop.shape),
    }
    summary["agreement"] = chosen.agreement
    summary["models"] = {
        p.key: {
            "name": p.display_name,
            "label": p.label,
            "top3": p.confidences(3),
            "inference_ms": round(p.seconds * 1000, 2),
            "timing_note": p.note,
        }
        for p in chosen.predictions
    }
    return summary


# ----------------------------------------------------------------------------- live webcam


def live_tracker(models: ModelSet, tracker: serving.LiveTracker | None, key: str,
                 detector: str) -> serving.LiveTracker:
    """The session's tracker (kept in a gr.State), made anew when there is none or the model or detector changed."""
    if detector not in DETECTORS:
        raise gr.Error(f"detector must be one of {', '.join(DETECTORS)}, got {detector!r}", print_exception=False)
    if tracker is not None and tracker.key == key and tracker.detector == detector:
        return tracker
    try:
        return serving.LiveTracker(models, key, detector=detector)
    except ValueError as error:
        raise gr.Error(f"The live view cannot use {key!r}: {error}", print_exception=False) from None


def live_model_choices(models: ModelSet) -> list[tuple[str, str]]:
    """The Live tab's model picker: (name and PrivateTest accuracy, key) for every single network."""
    choices = []
    for key, loaded in models.networks().items():
        accuracy = serving.card_accuracy(loaded.card)
        shown = f"{accuracy:.1%} PrivateTest" if accuracy is not None else "no accuracy on its card"
        choices.append((f"{loaded.display_name}: {shown}", key))
    return choices


def live_model_note(models: ModelSet, key: str, fastest: str | None = None) -> str:
    loaded = models.networks().get(key)
    if loaded is None:
        return ""
    accuracy = serving.card_accuracy(loaded.card)
    shown = f"**{accuracy:.1%}** on FER2013 PrivateTest (from its card)" if accuracy is not None else \
        "no PrivateTest accuracy on its card"
    why = (" The default: the fastest single network on this machine within 2 points of the best card accuracy."
           if key == fastest else "")
    return f"Labelling with **{loaded.display_name}**: {shown}.{why}"


def live_status(tracker: serving.LiveTracker, analysis: serving.Analysis | None, note: str = "") -> str:
    """The status line: frames/s over the last frames, the detector, faces in view."""
    fps = tracker.fps()
    rate = f"**{fps:.1f} frames/s** (last {tracker.frames_counted} frames)" if fps else "measuring frames/s..."
    detector = {"mtcnn": "MTCNN", "haar": "Haar cascade"}.get(tracker.detector, tracker.detector)
    parts = [rate, f"detector: {detector}, on {every_nth(tracker.detect_every)} frame"]
    if analysis is not None:
        count = len(analysis.faces)
        parts.append(f"**{count} face{'s' if count != 1 else ''} in view**")
        parts.append(f"{tracker.mean_ms():.0f} ms per frame on the server")
    return " · ".join(parts) + (f"  \n{note}" if note else "")


def every_nth(n: int) -> str:
    """"every frame", "every 2nd", "every 4th", ..."""
    if n == 1:
        return "every"
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"every {n}{suffix}"


def live_output(**options) -> gr.Image:
    """An output gr.Image that sends each frame inline as a JPEG data URL.

    A plain gr.Image output writes every frame into Gradio's cache folder (10 files a second per
    stream, kept an hour); a streamed frame is shown once and replaced, so it need not be a file.
    (Replaced on the instance, as in :func:`photo_input`.)
    """
    component = gr.Image(format="jpeg", interactive=False, **options)
    component.postprocess = types.MethodType(_inline_jpeg, component)
    return component


def _inline_jpeg(self: gr.Image, value: Any) -> ImageData | None:
    url = None if value is None else jpeg_data_url(value, LIVE_JPEG_QUALITY)
    return ImageData(url=url, orig_name="live.jpg", mime_type="image/jpeg") if url else None


def live_stream_frame(models: ModelSet, frame: Any, key: str, detector: str,
                      tracker: serving.LiveTracker | None) -> tuple[Any, Any, Any]:
    """One webcam frame of the Live tab's stream: (labelled frame, status line, tracker).

    Never raises: an error in one frame is logged and that frame is shown unannotated, so the
    stream goes on (the traceback is logged for a session's first failing frame, then a count
    every LIVE_ERROR_LOG_EVERY). While this session's previous frame is still being answered (it
    cannot be with Gradio's stream event, see _live_events, but an API client might send two at
    once) the frame is dropped with gr.skip().
    """
    if frame is None:
        return gr.skip(), gr.skip(), gr.skip()
    try:
        tracker = live_tracker(models, tracker, key, detector)
    except Exception as error:  # a model or detector that cannot serve: say so, keep streaming
        log.warning("live view: cannot make a tracker for %s / %s: %s", key, detector, error)
        return frame, f"⚠ The live view cannot use {key} with {detector}: {error}", tracker
    if not tracker.busy.acquire(blocking=False):
        return gr.skip(), gr.skip(), gr.skip()
    try:
        analysis = tracker.process(frame)
        return analysis.annotated(key=key, max_side=None), live_status(tracker, analysis), tracker
    except Exception:
        tracker.errors += 1
        if tracker.errors == 1:
            log.exception("live view: analysing a webcam frame failed; showing it unannotated")
        elif tracker.errors % LIVE_ERROR_LOG_EVERY == 0:
            log.warning("live view: %d frames of this stream could not be analysed", tracker.errors)
        return frame, live_status(tracker, None, "⚠ This frame could not be analysed (see the server log)."), tracker
    finally:
        tracker.busy.release()


def live_frame_values(models: ModelSet, photo: str | None, key: str, detector: str,
                      tracker: serving.LiveTracker | None) -> tuple[Any, dict[str, Any], serving.LiveTracker]:
    """/live_frame: one image through this client's live tracker (frames of one stream: faces are
    detected on every serving.LIVE_DETECT_EVERY-th call and carried in between, as in the Live tab)."""
    if photo is None:
        raise gr.Error("Send one frame (an image) to /live_frame.", print_exception=False)
    rgb = decode_image(photo).rgb
    tracker = live_tracker(models, tracker, key, detector)
    with tracker.busy:
        analysis = tracker.process(rgb)
        return analysis.annotated(key=key, max_side=None), tracker.as_dict(analysis), tracker


# ----------------------------------------------------------------------------- video


def video_input(**options) -> gr.Video:
    """A gr.Video that hands the app the uploaded file as it came (no ffmpeg conversion by Gradio),
    so fer_utils.video opens it and says what is wrong with a bad file."""
    component = gr.Video(sources=["upload"], **options)
    component.preprocess = types.MethodType(_undecoded_video, component)
    return component


def _undecoded_video(self: gr.Video, payload) -> str | None:
    if payload is None:
        return None
    path = getattr(payload, "path", None) or getattr(getattr(payload, "video", None), "path", None)
    if not path:
        raise gr.Error("No video was received; please upload it again.", print_exception=False)
    return str(path)


def sample_step(value: Any) -> int:
    """The "every N-th frame" box as a whole number >= 1 (empty: the default)."""
    if value is None or value == "":
        return VIDEO_EVERY
    try:
        step = int(round(float(value)))
    except (TypeError, ValueError):
        raise gr.Error(f"Sample every N-th frame needs a whole number, got {value!r}.", print_exception=False) from None
    if step < 1:
        raise gr.Error(f"Sample every N-th frame needs a number of at least 1, got {step}.", print_exception=False)
    return step


def video_summary_markdown(result: Any) -> str:
    """The Video tab's summary: the file, what was sampled, and the expressions seen (from VideoResult.summary())."""
    info = result.info
    summary = result.summary() or {}
    sampled = summary.get("sampled", result.frames_analysed)
    lines = [
        f"**{Path(info.path).name}**: {info.width}x{info.height}, {info.fps:.3g} frames/s, {info.duration_s:.1f} s "
        f"({info.frames} frames). {every_nth(result.every).capitalize()} frame analysed: **{sampled}** frames, "
        f"a face in **{summary.get('frames_with_face', '?')}** ({summary.get('faces_per_frame', 0):.2g} faces per "
        f"frame, at most {summary.get('max_faces_in_frame', 0)}); {len(result.rows)} rows in the CSV.",
    ]
    model = summary.get("model")
    if summary.get("most_common_label"):
        counts = ", ".join(f"{label} {count}" for label, count in (summary.get("label_counts") or {}).items())
        name = DISPLAY_NAMES.get(model, model)
        lines.append(f"Most common expression ({name}, all faces): **{summary['most_common_label']}** ({counts}).")
    elif sampled:
        lines.append("⚠ **No face was found in any sampled frame.**")
    lines += [f"- {note}" for note in (summary.get("notes") or result.notes or [])]
    return "  \n".join(lines[:2]) + ("\n\n" + "\n".join(lines[2:]) if lines[2:] else "")


def video_values(models: ModelSet, path: str | None, every: Any, detector: str, cache_dir: str,
                 progress: Callable[[int, int], None] | None = None, mirror: bool = False) -> list[Any]:
    """Outputs of the Video tab: timeline plot, annotated preview frame, CSV path, summary."""
    if path is None:
        raise gr.Error(NO_VIDEO.replace("**", ""), print_exception=False)
    step = sample_step(every)
    started = time.perf_counter()
    # file=: the CSV names the upload, not its path in the server's cache
    result = analyse_video(models, path, every=step, detector=detector, progress=progress, file=Path(path).name,
                           mirror=mirror)
    log.info("video %s: %d frames analysed in %.1f s", Path(path).name, result.frames_analysed,
             time.perf_counter() - started)
    folder = Path(cache_dir) / f"video-{uuid.uuid4().hex}"  # in Gradio's cache: served, and cleaned with it
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = folder / f"{Path(path).stem or 'video'}_expressions.csv"
    result.to_csv(csv_path)
    return [result.timeline_figure(), result.preview, str(csv_path), video_summary_markdown(result)]



# ----------------------------------------------------------------------------- page


def build_demo(models_dir: str | os.PathLike | None = None, *, models: ModelSet | None = None,
               detector: str = DEFAULT_DETECTOR, mirror: bool = False) -> gr.Blocks:
    """The whole page for the models in ``models_dir`` (or an already loaded ModelSet).

    ``mirror``: photos and videos are answered as the mean of each face's and its mirror image's
    answers (flip TTA: about a point more accurate, about 25 ms more per photo with every model,
    which takes Compare-all past its 150 ms target, so it is off unless asked for).
    """
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {', '.join(DETECTORS)}, got {detector!r}")
    if models is None:
        models = load_models(models_dir or default_models_dir())
    if not models:
        blocks = _no_models_page(models)
    else:
        blocks = _page(models, detector, mirror)
    blocks.fer_models = models  # for launch(): background warm-up and blocked paths
    blocks.fer_mirror = mirror  # for launch(): which Compare-all graph to trace
    guard_blocks(blocks)
    blocks.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    return blocks


def _page(models: ModelSet, detector: str = DEFAULT_DETECTOR, mirror: bool = False) -> gr.Blocks:
    keys = list(models.models)
    with gr.Blocks(title="Facial expression recognition: five models compared", analytics_enabled=False,
                   delete_cache=(3600, 3600)) as blocks:
        gr.Markdown(
            "# What do five models see in a face?\n"
            "Drop in a photo, use the webcam or paste one. The app finds every face "
            f"({'MTCNN' if detector == 'mtcnn' else 'Haar cascade'} detector), aligns each to the 48x48 grey "
            "framing of the faces the models were trained on (FER2013), and shows what each model thinks: side "
            "by side in **Compare** (pick the face under *Face*), and *why* in each model's own tab."
            + (" Each face is answered together with its mirror image, the two answers averaged." if mirror else "")
        )
        if models.missing:
            lines = "; ".join(f"{DISPLAY_NAMES.get(k, k)} ({reason})" for k, reason in models.missing.items())
            gr.Markdown(f"⚠ **Not loaded:** {lines}.")
        with gr.Row():
            with gr.Column(scale=2):
                photo = photo_input(label="Photo", sources=INPUT_SOURCES, height=340)
                analyse = gr.Button("Analyse", variant="primary")
                example_files = [EXAMPLES_DIR / name for name, _ in EXAMPLES if (EXAMPLES_DIR / name).is_file()]
                examples = None
                if example_files:
                    examples = gr.Examples(
                        examples=[[str(path)] for path in example_files],
                        inputs=[photo],
                        example_labels=[label for name, label in EXAMPLES if (EXAMPLES_DIR / name).is_file()],
                        label="Examples (public-domain photos, see demo/examples/README.md)",
                    )
            with gr.Column(scale=3):
                boxed = gr.Image(label="Faces found, numbered largest first, labelled with the ensemble's answer "
                                 "(green: the one shown)", format="jpeg", interactive=False, height=340)
                with gr.Row():
                    with gr.Column(scale=0, min_width=160):
                        crop = gr.Image(label="The 48x48 face the models saw", show_label=False, format="png",
                                        interactive=False, height=150, width=150, elem_classes="face-crop",
                                        buttons=[], elem_id="face-crop")
                        gr.Markdown("The 48x48 face all models saw", elem_classes="timing")
                    with gr.Column():
                        face_note = gr.Markdown(NO_PHOTO, elem_id="face-note")
                        face_picker = gr.Dropdown(choices=[], value=None, label="Face", interactive=False,
                                                  elem_id="face-picker", allow_custom_value=True,
                                                  info="Which face the Compare tab and the model tabs show")
        selected = gr.State("compare")
        model_outputs: dict[str, list[gr.components.Component]] = {}
        model_tabs = {}
        with gr.Tabs(selected="compare"):
            with gr.Tab("Compare", id="compare") as compare_tab:
                agreement = gr.Markdown(elem_id="agreement")
                compare_cells: list[gr.components.Component] = []
                with gr.Row(equal_height=True):
                    for loaded in models:
                        with gr.Column(min_width=150, elem_classes="model-card", elem_id=f"compare-{loaded.key}"):
                            gr.Markdown(f"### {loaded.display_name}")
                            label = gr.Label(num_top_classes=3, show_label=False, elem_id=f"label-{loaded.key}")
                            timing = gr.Markdown(elem_classes="timing", elem_id=f"time-{loaded.key}")
                            compare_cells += [label, timing]
            for loaded in models:
                with gr.Tab(loaded.display_name, id=loaded.key) as tab:
                    method = resolve_method(loaded.model)  # what "auto" explains with, as the tab will
                    gr.Markdown(f"**{loaded.display_name}**: its prediction for the face above, and "
                                f"{METHOD_TEXT[method][0].lower() + METHOD_TEXT[method][1:]}")
                    with gr.Row():
                        m_label = gr.Label(num_top_classes=3, label="Prediction (top 3)",
                                           elem_id=f"tab-label-{loaded.key}")
                        m_heat = gr.Image(label="Explanation over the face", format="png", interactive=False,
                                          height=260)
                    m_info = gr.Markdown()
                    m_button = gr.Button(f"Explain with {loaded.display_name}")
                model_outputs[loaded.key] = [m_label, m_heat, m_info]
                model_tabs[loaded.key] = (tab, m_button)
            live = _live_tab(models, detector)
            video = _video_tab()
        with gr.Accordion("About these models", open=True):
            gr.Markdown(about_markdown(models, mirror))
        with gr.Accordion("Details (JSON, as returned by the /compare API)", open=False):
            details = gr.JSON(label="Details")

        compare_outputs = [boxed, crop, face_note, agreement, *compare_cells, face_picker, details]
        all_model_outputs = [component for key in keys for component in model_outputs[key]]
        shared = {"concurrency_id": "models", "concurrency_limit": CONCURRENCY}
        photo_ok = gr.State(False)  # the page's last photo was analysed (so the model tabs may explain it)
        api_compare = gr.Button("Compare (/compare)", visible=False)  # the API endpoint's own trigger, see below

        @user_errors
        def compare(photo_path: str | None, face: str | None = None):
            return compare_values(models, photo_path, face, detector, mirror)

        def page_compare(photo_path: str | None, face: str | int | None = 1):
            """The page's Compare: a photo that cannot be used gets its reason in the face note, where it
            stays (an error would show it for 10 s in a corner toast and put a red badge over the note)."""
            if photo_path is None:  # cleared, or Analyse before any photo
                return [*blank_compare_values(models), False]
            try:
                return [*compare(photo_path, face), True]
            except gr.Error as error:
                return [*blank_compare_values(models, rejection_note(error)), False]

        def page_compare_new_photo(photo_path: str | None):
            """A new photo starts at its largest face."""
            return page_compare(photo_path, 1)

        @user_errors
        def refresh_tabs(photo_path: str | None, tab: str, face: str | None = None, ok: bool = True):
            """After a new photo or face: explain it in the open model tab, clear the others (they are stale)."""
            values = []
            for key in keys:
                if photo_path is not None and ok and key == tab:
                    values += model_values(models, key, photo_path, face, detector, mirror)
                elif photo_path is not None and not ok:
                    values += blank_model_values("⚠ This photo cannot be used: the reason is under the photo above.")
                else:
                    values += blank_model_values("Open this tab after analysing a photo to see the explanation.")
            return values

        # A new photo first clears the old results in the browser (no server round trip), so a
        # photo that fails never sits next to the previous photo's results.
        clearing = json.dumps([None, None, "Analysing the photo...", ""] + [{}, ""] * len(keys) + [None, None])
        clear_js = f"() => {clearing}"
        failed_js = "() => " + json.dumps("This photo could not be analysed: see the message in the corner.")
        page_outputs = [*compare_outputs, photo_ok]

        def clear_then(dependency, fn, inputs):
            """Clear the old results in the browser, run ``fn``, then refresh the open model tab."""
            event = dependency(None, None, compare_outputs, js=clear_js, queue=False, api_visibility="private").then(
                fn, inputs, page_outputs, **shared, api_visibility="private"
            )
            event.success(refresh_tabs, [photo, selected, face_picker, photo_ok], all_model_outputs,
                          api_visibility="private", **shared)
            # only when the server did not answer (a queue that is full, a lost connection): a refused
            # photo is an answer, with its reason in the face note
            event.failure(None, None, face_note, js=failed_js, queue=False, api_visibility="private")

        clear_then(analyse.click, page_compare, [photo, face_picker])
        # /compare for API clients: the same analysis, but a photo that cannot be used is an error
        # (gradio_client raises AppError with the reason), not a page with a note.
        api_compare.click(
            compare, [photo, face_picker], compare_outputs, api_name="compare", **shared,
            api_description="Every model on one face of the photo (face: '#1' = the largest, the default). Returns "
            "the photo with every face boxed and labelled, that face's 48x48 crop, a face note, the agreement "
            f"line, (top-3 label, inference time) per model in the order {', '.join(keys)}, the face picker, and "
            "a JSON summary: every face with its box, landmarks and each model's probabilities.",
        )
        # A new photo runs at once: "input" is the user's upload, webcam shot, paste or clear ("change"
        # would also fire when the browser fails to show a broken file, repeating the error).
        clear_then(photo.input, page_compare_new_photo, [photo])
        if examples is not None:
            clear_then(examples.load_input_event.then, page_compare_new_photo, [photo])
        # Picking another face re-runs the models on it (the photo's faces are found again: ~0.1 s).
        face_picker.input(page_compare, [photo, face_picker], page_outputs, api_visibility="private",
                          **shared).success(refresh_tabs, [photo, selected, face_picker, photo_ok], all_model_outputs,
                                            api_visibility="private", **shared)
        compare_tab.select(lambda: "compare", None, selected, api_visibility="private", queue=False)

        for key in keys:
            tab, button = model_tabs[key]
            button.click(
                _model_handler(models, key, detector, mirror), [photo, face_picker], model_outputs[key], api_name=key,
                **shared,
                api_description=f"{models.models[key].display_name} on one face of the photo (default: the largest): "
                "its top-3 label, the explanation heatmap over the face (192x192 PNG) and a note on what was done.",
            )
            tab.select(_tab_handler(models, key, detector, mirror), [photo, face_picker], [selected, *model_outputs[key]],
                       api_visibility="private", **shared)
        _live_events(models, live)
        _video_events(models, video, detector, mirror)
    return blocks


def _live_tab(models: ModelSet, detector: str) -> types.SimpleNamespace | None:
    """The Live tab's components (None when no single network is loaded)."""
    with gr.Tab("Live", id="live"):
        try:
            fastest = serving.fastest_model(models)  # measured once, when the page is built
        except ValueError as error:
            gr.Markdown(f"The live view needs a single network; {error}.")
            return None
        gr.Markdown(
            "Turn on your webcam and press the record button under it: every face in view is boxed and "
            "labelled, frame by frame, by **one** fast model (faces are found on "
            f"{every_nth(serving.LIVE_DETECT_EVERY)} frame and followed in between). When the machine is slower than "
            "the camera, frames are skipped, never queued, so what you see stays current. "
            f"A stream stops after {LIVE_TIME_LIMIT // 60} minutes; press record again to go on."
        )
        with gr.Row():
            model = gr.Dropdown(choices=live_model_choices(models), value=fastest, label="Model",
                                elem_id="live-model", info="Any single network, ensemble members included")
            live_detector = gr.Dropdown(choices=list(DETECTORS), value=detector, label="Face detector",
                                        elem_id="live-detector",
                                        info="MTCNN: aligned crops; Haar cascade: faster, upright faces only")
        model_note = gr.Markdown(live_model_note(models, fastest, fastest), elem_id="live-model-note")
        with gr.Row():
            webcam = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Webcam",
                              elem_id="live-webcam", height=360)
            output = live_output(label="Faces, labelled", elem_id="live-output", height=360)
        status = gr.Markdown("Start the webcam to see frames/s, the detector and the faces in view.",
                             elem_id="live-status")
        session = gr.State(None)
        # /live_frame (API only): one image through this client's tracker; frame and JSON back.
        api_frame = photo_input(label="Frame (/live_frame)", visible=False)
        api_output = gr.Image(label="Labelled frame (/live_frame)", format="jpeg", interactive=False, visible=False)
        api_json = gr.JSON(label="Faces (/live_frame)", visible=False)
        api_trigger = gr.Button("Analyse one frame", visible=False)
    return types.SimpleNamespace(fastest=fastest, model=model, detector=live_detector, model_note=model_note,
                                 webcam=webcam, output=output, status=status, session=session, api_frame=api_frame,
                                 api_output=api_output, api_json=api_json, api_trigger=api_trigger)


def _live_events(models: ModelSet, live: types.SimpleNamespace | None) -> None:
    if live is None:
        return

    def stream(frame, key, detector, session):
        return live_stream_frame(models, frame, key, detector, session)

    # Frames are dropped, not queued, when the machine is slower than the camera. Gradio 6's
    # .stream() event is one queue event per browser session for the whole stream: the browser
    # posts each frame to /stream/<event_id>, which *replaces* the frame waiting there
    # (gradio/routes.py: ``event.data = body``), and the queue runs this function on the latest
    # frame once the previous one is answered. So a session has one frame in flight and a slow
    # frame makes the next ones stale, never a backlog (the browser also skips capturing while its
    # stream is pending). A busy flag in the session (gr.skip()) covers API clients sending two at
    # once. concurrency_limit counts streams (sessions), not frames: LIVE_SESSIONS at once, in
    # their own "live" group, so webcams never hold the photo tabs' two model slots.
    # trigger_mode="always_last" would not help: it governs new events, and a stream is one event.
    live.webcam.stream(
        stream, [live.webcam, live.model, live.detector, live.session], [live.output, live.status, live.session],
        stream_every=LIVE_STREAM_EVERY, time_limit=LIVE_TIME_LIMIT, concurrency_limit=LIVE_SESSIONS,
        concurrency_id="live", show_progress="hidden", api_visibility="private",
    )
    live.model.change(lambda key: live_model_note(models, key, live.fastest), live.model, live.model_note,
                      queue=False, api_visibility="private")

    @user_errors
    def live_frame(photo, key, detector, session):
        return live_frame_values(models, photo, key, detector, session)

    live.api_trigger.click(
        live_frame, [live.api_frame, live.model, live.detector, live.session],
        [live.api_output, live.api_json, live.session], api_name="live_frame", api_visibility="public",
        concurrency_id="models", concurrency_limit=CONCURRENCY,
        api_description="One webcam frame through this client's live tracker (as the Live tab does: one fast "
        f"model; faces detected on {every_nth(serving.LIVE_DETECT_EVERY)} call and carried in between). Returns the frame "
        "with every face boxed and labelled, and JSON: faces_found, faces (box_xywh, label, confidence, "
        "probabilities), label (the largest face's), fps over this client's last frames, model, detector.",
    )


def _video_tab() -> types.SimpleNamespace:
    with gr.Tab("Video", id="video"):
        gr.Markdown(
            "Upload a video: every N-th frame is analysed by every model (faces found as in the photo tabs); "
            "the timeline follows the largest face's expression, and the CSV has one row per face per sampled "
            "frame."
        )
        with gr.Row():
            with gr.Column(scale=2):
                video = video_input(label="Video (mp4, avi or webm, up to 10 MB)", elem_id="video-input", height=300)
                every = gr.Number(value=VIDEO_EVERY, precision=0, minimum=1, step=1,
                                  label="Sample every N-th frame", elem_id="video-every")
                button = gr.Button("Analyse video", variant="primary", elem_id="video-analyse")
            with gr.Column(scale=3):
                preview = gr.Image(label="Preview frame, faces boxed and labelled", format="jpeg",
                                   interactive=False, height=300, elem_id="video-preview")
                summary = gr.Markdown(NO_VIDEO, elem_id="video-summary")
        plot = gr.Plot(label="Timeline: the largest face's probabilities", elem_id="video-timeline")
        csv = gr.File(label="CSV download", elem_id="video-csv")
    return types.SimpleNamespace(video=video, every=every, button=button, preview=preview, summary=summary,
                                 plot=plot, csv=csv)


def _video_events(models: ModelSet, video: types.SimpleNamespace, detector: str, mirror: bool = False) -> None:
    cache_dir = video.csv.GRADIO_CACHE

    @user_errors(what="video")
    def analyse(path, every, progress=gr.Progress(track_tqdm=False)):
        progress((0, None), desc="Opening the video")

        def report(done: int, total: int) -> None:
            progress((done, total), desc="Analysing frames", unit="frames")

        return video_values(models, path, every, detector, cache_dir, report, mirror)

    video.button.click(
        analyse, [video.video, video.every], [video.plot, video.preview, video.csv, video.summary],
        api_name="video", concurrency_id="video", concurrency_limit=1,  # never both model slots
        api_description="Every model on every N-th frame of a video (mp4, avi, webm; every: N, default "
        f"{VIDEO_EVERY}). Returns the timeline plot of the largest face's probabilities, an annotated preview "
        "frame, a CSV (one row per face per sampled frame) and a summary.",
    )


def _model_handler(models: ModelSet, key: str, detector: str = DEFAULT_DETECTOR, mirror: bool = False) -> Callable:
    @user_errors
    def run_model(photo_path: str | None, face: str | None = None):
        return model_values(models, key, photo_path, face, detector, mirror)

    run_model.__name__ = f"predict_{key}"
    return run_model


def _tab_handler(models: ModelSet, key: str, detector: str = DEFAULT_DETECTOR, mirror: bool = False) -> Callable:
    @user_errors
    def explain(photo_path: str, face: str | None = None):
        return model_values(models, key, photo_path, face, detector, mirror)

    def open_tab(photo_path: str | None, face: str | None = None):
        """Opening a model's tab: the explanation, or in the tab itself why there is none."""
        if photo_path is None:
            return [key, *blank_model_values(NO_PHOTO)]
        try:
            return [key, *explain(photo_path, face)]
        except gr.Error as error:
            return [key, *blank_model_values(rejection_note(error))]

    return open_tab


def _no_models_page(models: ModelSet) -> gr.Blocks:
    with gr.Blocks(title="Facial expression recognition: no models", analytics_enabled=False) as blocks:
        gr.Markdown(no_models_message(models))
    return blocks


def no_models_message(models: ModelSet, *, for_page: bool = True) -> str:
    """Why there is nothing to serve; the page names the folder only, never the server's path (the console does)."""
    names = ", ".join(f"{key}.keras" for key in DISPLAY_NAMES)
    where = models.models_dir.name if for_page else models.models_dir
    return (
        f"# No models found\n\nThe demo looked in `{where}` for {names} and found none it could load. "
        "Train the models first (see the README and the notebooks), or point the app at a folder that has them "
        "with `--models-dir`."
        + "".join(f"\n- {key}: {reason}" for key, reason in models.missing.items() if "not found" not in reason)
    )


# ----------------------------------------------------------------------------- serving


def launch(blocks: gr.Blocks, *, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
           auth: tuple[str, str] | None = None, warm_up: bool = True, **options) -> tuple[Any, str, str | None]:
    """Launch with the app's limits: upload size cap, queue, no files served outside the app's own."""
    models: ModelSet | None = getattr(blocks, "fer_models", None)
    blocked = [str(models.models_dir)] if models is not None else []
    guard_blocks(blocks)
    os.environ.setdefault(FORWARDED_ENV, "")  # read by uvicorn's Config, made by blocks.launch()
    limiter = blocks.fer_login_limiter = LoginLimiter()
    app_kwargs = dict(options.pop("app_kwargs", None) or {})
    # inside Gradio's own CORS and compression middleware, which it adds outermost
    app_kwargs["middleware"] = [Middleware(LoginRateLimit, limiter=limiter), Middleware(BodySizeLimit),
                                *app_kwargs.get("middleware", [])]
    app_kwargs["exception_handlers"] = {FnIndexInferError: unknown_endpoint, **app_kwargs.get("exception_handlers", {})}
    result = blocks.launch(
        server_name=host,
        server_port=port,
        share=share,
        auth=auth,
        auth_message="This demo is password-protected." if auth else None,
        max_file_size=MAX_BYTES,
        show_error=False,  # unexpected errors stay in the server log; user errors are gr.Error
        allowed_paths=[str(EXAMPLES_DIR)],
        blocked_paths=blocked,
        theme=THEME,
        css=CSS,
        footer_links=["api"],
        app_kwargs=app_kwargs,
        **options,
    )
    if warm_up and models:
        views = (2,) if getattr(blocks, "fer_mirror", False) else (1,)  # the Compare-all graph this page runs
        threading.Thread(target=_warm_up, args=(models, views), name="fer-warm-up", daemon=True).start()
    return result


def _warm_up(models: ModelSet, views: tuple[int, ...] = (1,)) -> None:
    seconds = models.warm_up(explainers=True, views=views)
    log.info("all models and explainers traced in %.1f s (requests before this ran them eagerly)", seconds)


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """``USER:PASS`` to Gradio's (user, password); the password may contain colons."""
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ValueError(f"--auth / {AUTH_ENV} must look like USER:PASS")
    return user, password


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Facial-expression recognition demo: five models side by side.")
    parser.add_argument("--models-dir", type=Path, default=default_models_dir(),
                        help="folder with scratch_cnn.keras, resnet50.keras, ... and their .json cards "
                        "(default: saved_models/ at the repository root)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to listen on (0.0.0.0 for every interface; default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--share", action="store_true", help="also create a temporary public gradio.live link")
    parser.add_argument("--detector", choices=DETECTORS, default=DEFAULT_DETECTOR,
                        help=f"face detector: mtcnn (landmarks, aligned crops) or haar (faster; default {DEFAULT_DETECTOR})")
    parser.add_argument("--mirror", action="store_true",
                        help="answer each face of a photo or video together with its mirror image, averaged (flip TTA: "
                        "about a point more accurate on FER2013, about 25 ms slower per photo with every model)")
    parser.add_argument("--auth", default=None,
                        help=f"USER:PASS required to open the app; better set {AUTH_ENV}=USER:PASS (a command line "
                        "is readable by every local user); recommended with --share")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    if args.auth:
        print(f"Warning: --auth puts the password on the command line, where any user of this machine can read it "
              f"(ps, /proc/<pid>/cmdline); set {AUTH_ENV}=USER:PASS in the environment instead.", file=sys.stderr,
              flush=True)
    try:
        auth = parse_auth(args.auth or os.environ.get(AUTH_ENV))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    models = load_models(args.models_dir, warm_up=False)  # traced in the background once serving
    seconds = time.perf_counter() - started
    if not models:
        print(no_models_message(models, for_page=False).replace("# ", "").replace("`", ""), file=sys.stderr)
        return 1
    loaded = ", ".join(f"{m.display_name} ({m.load_seconds:.1f} s)" for m in models)
    print(f"Loaded {len(models)} model(s) from {models.models_dir} in {seconds:.1f} s: {loaded}", flush=True)
    for key, reason in models.missing.items():
        print(f"Missing: {DISPLAY_NAMES.get(key, key)}: {reason}", flush=True)
    if args.share and not auth:
        print(f"Warning: --share without --auth (or {AUTH_ENV}) lets anyone with the link use this app.")
    blocks = build_demo(models=models, detector=args.detector, mirror=args.mirror)
    launch(blocks, host=args.host, port=args.port, share=args.share, auth=auth, prevent_thread_lock=True)
    if args.share and not blocks.share_url:
        print(f"Could not create a public share link; still serving locally at {blocks.local_url}", flush=True)
    print(f"Ready in {time.perf_counter() - _STARTED:.1f} s (imports included); tracing the models in the background.",
          flush=True)
    try:
        blocks.block_thread()
    except KeyboardInterrupt:
        pass
    return 0


_lazy_demo: gr.Blocks | None = None
_lazy_lock = threading.Lock()


def __getattr__(name: str) -> Any:
    """``demo``: the Blocks for the default models folder, built on first use (``gradio demo/app.py`` finds it)."""
    global _lazy_demo
    if name == "demo":
        with _lazy_lock:
            if _lazy_demo is None:
                _lazy_demo = build_demo(default_models_dir())
        return _lazy_demo
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    sys.exit(main())
