"""Facial-expression recognition demo: one photo, five models side by side, and why.

    python demo/app.py [--models-dir DIR] [--host 127.0.0.1] [--port 7860] [--share] [--auth USER:PASS]

The page has a Compare tab (every model's top-3 on the same 48x48 face crop, where they agree,
how long each took), one tab per model with a Grad-CAM or saliency heatmap, and an "About these
models" panel read from the model cards. Every tab is also a named API endpoint (``/compare``,
``/scratch_cnn``, ``/resnet50``, ``/mobilenetv2``, ``/inceptionv3``, ``/ensemble``) for
``gradio_client``.

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

from demo import inference  # noqa: E402
from demo.about import about_markdown  # noqa: E402
from demo.imaging import MAX_BYTES, ImageInputError  # noqa: E402
from demo.registry import DISPLAY_NAMES, ModelSet, default_models_dir, load_models  # noqa: E402
from fer_utils.explain import find_last_conv_layer  # noqa: E402

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
"""


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
        return payload.url  # base64 from an API client: demo.imaging decodes it
    if payload.path is None:
        raise gr.Error("No image was received; please upload it again.", print_exception=False)
    return str(payload.path)


# ----------------------------------------------------------------------------- request handlers


def user_errors(fn: Callable) -> Callable:
    """Turn bad uploads into a gr.Error with the message for people; hide tracebacks from the page."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except ImageInputError as error:
            log.info("%s: rejected an upload: %s", fn.__name__, error)
            raise gr.Error(str(error), title="Cannot use this image", print_exception=False) from None
        except Exception:
            log.exception("analysing a photo failed")
            raise gr.Error(
                "Something went wrong while analysing this photo (the details are in the server log). "
                "Please try another photo.",
                print_exception=False,
            ) from None

    return wrapper


def compare_values(models: ModelSet, photo: str | None) -> list[Any]:
    """Outputs of the Compare tab: boxed photo, crop, face note, agreement, (label, time) per model, JSON."""
    if photo is None:
        raise gr.Error(NO_PHOTO.replace("**", ""), print_exception=False)
    comparison = inference.compare(models, photo)
    prepared = comparison.prepared
    values: list[Any] = [prepared.annotated(), prepared.face, face_markdown(prepared), comparison.agreement]
    for prediction in comparison.predictions:
        values += [prediction.confidences(None), f"Inference: {prediction.timing()}"]
    values.append(details_json(comparison))
    return values


def blank_compare_values(models: ModelSet) -> list[Any]:
    return [None, None, NO_PHOTO, ""] + [None, ""] * len(models) + [None]


def model_values(models: ModelSet, key: str, photo: str | None) -> list[Any]:
    """Outputs of one model's tab: its top-3, the heatmap over the face, and what was done."""
    if photo is None:
        raise gr.Error(NO_PHOTO.replace("**", ""), print_exception=False)
    loaded = models.models[key]
    prepared = inference.prepare(photo)
    explanation = inference.explain_prediction(loaded, prepared.face)
    prediction = explanation.prediction
    confidence = float(prediction.probabilities[prediction.class_index])
    info = (
        f"**{loaded.display_name}** says **{prediction.label}** ({confidence:.0%}).  \n"
        f"{METHOD_TEXT[explanation.method]}  \n"
        f"Inference: {prediction.timing()}; explanation: {explanation.seconds * 1000:.0f} ms.  \n"
        + " ".join(prepared.notes)
    )
    return [prediction.confidences(None), explanation.overlay, info]


def blank_model_values(message: str = "") -> list[Any]:
    return [None, None, message]


def face_markdown(prepared: inference.Prepared) -> str:
    """The face note, loud when no face was found (predictions on a whole photo are unreliable)."""
    first, *rest = prepared.notes
    text = f"⚠ **{first}**" if not prepared.crop.found else first
    return " ".join([text, *rest])


def details_json(comparison: inference.Comparison) -> dict[str, Any]:
    """Everything the Compare tab shows, as JSON for API clients and tests."""
    crop = comparison.prepared.crop
    return {
        "face": {
            "found": crop.found,
            "faces_found": len(crop.boxes),
            "box_xywh": crop.box.as_list() if crop.box else None,
            "all_boxes_xywh": [box.as_list() for box in crop.boxes],
            "image_size_wh": list(crop.image_size),
            "crop_size": list(crop.face.shape),
        },
        "notes": comparison.prepared.notes,
        "agreement": comparison.agreement,
        "server_ms": {step: round(seconds * 1000, 1) for step, seconds in comparison.seconds.items()},
        "models": {
            p.key: {
                "name": p.display_name,
                "label": p.label,
                "top3": p.confidences(3),
                "inference_ms": round(p.seconds * 1000, 2),
                "timing_note": p.note,
            }
            for p in comparison.predictions
        },
    }


# ----------------------------------------------------------------------------- page


def build_demo(models_dir: str | os.PathLike | None = None, *, models: ModelSet | None = None) -> gr.Blocks:
    """The whole page for the models in ``models_dir`` (or an already loaded ModelSet)."""
    if models is None:
        models = load_models(models_dir or default_models_dir())
    if not models:
        blocks = _no_models_page(models)
    else:
        blocks = _page(models)
    blocks.fer_models = models  # for launch(): background warm-up and blocked paths
    blocks.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    return blocks


def _page(models: ModelSet) -> gr.Blocks:
    keys = list(models.models)
    with gr.Blocks(title="Facial expression recognition: five models compared", analytics_enabled=False,
                   delete_cache=(3600, 3600)) as blocks:
        gr.Markdown(
            "# What do five models see in a face?\n"
            "Drop in a photo, use the webcam or paste one. The app finds the largest face, crops it to the "
            "48x48 grey face the models were trained on (FER2013), and shows what each model thinks: side by "
            "side in **Compare**, and *why* in each model's own tab."
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
                boxed = gr.Image(label="Faces found (green: the one used)", format="jpeg", interactive=False, height=340)
                with gr.Row():
                    with gr.Column(scale=0, min_width=160):
                        crop = gr.Image(label="The 48x48 face the models saw", show_label=False, format="png",
                                        interactive=False, height=150, width=150, elem_classes="face-crop",
                                        buttons=[], elem_id="face-crop")
                        gr.Markdown("The 48x48 face all models saw", elem_classes="timing")
                    face_note = gr.Markdown(NO_PHOTO, elem_id="face-note")
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
                    method = "grad_cam" if find_last_conv_layer(loaded.model) else "saliency"
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
        with gr.Accordion("About these models", open=True):
            gr.Markdown(about_markdown(models))
        with gr.Accordion("Details (JSON, as returned by the /compare API)", open=False):
            details = gr.JSON(label="Details")

        compare_outputs = [boxed, crop, face_note, agreement, *compare_cells, details]
        all_model_outputs = [component for key in keys for component in model_outputs[key]]
        shared = {"concurrency_id": "models", "concurrency_limit": CONCURRENCY}

        @user_errors
        def compare(photo_path: str | None):
            return compare_values(models, photo_path)

        @user_errors
        def compare_or_blank(photo_path: str | None):
            return blank_compare_values(models) if photo_path is None else compare_values(models, photo_path)

        @user_errors
        def refresh_tabs(photo_path: str | None, tab: str):
            """After a new photo: explain it in the open model tab, clear the others (they are stale)."""
            values = []
            for key in keys:
                if photo_path is not None and key == tab:
                    values += model_values(models, key, photo_path)
                else:
                    values += blank_model_values("Open this tab after analysing a photo to see the explanation.")
            return values

        # A new photo first clears the old results in the browser (no server round trip), so a
        # photo that fails never sits next to the previous photo's results.
        clearing = json.dumps([None, None, "Analysing the photo...", ""] + [{}, ""] * len(keys) + [None])
        clear_js = f"() => {clearing}"
        failed_js = "() => " + json.dumps("This photo could not be analysed: see the message in the corner.")

        def clear_then(dependency, fn, **options):
            """Clear the old results in the browser, run ``fn``, then refresh the open model tab."""
            event = dependency(None, None, compare_outputs, js=clear_js, queue=False, api_visibility="private").then(
                fn, photo, compare_outputs, **shared, **options
            )
            event.success(refresh_tabs, [photo, selected], all_model_outputs, api_visibility="private", **shared)
            event.failure(None, None, face_note, js=failed_js, queue=False, api_visibility="private")

        clear_then(
            analyse.click, compare, api_name="compare",
            api_description="Every model on the largest face in the photo. Returns the photo with face boxes, "
            "the 48x48 crop, a face note, the agreement line, (top-3 label, inference time) per model in the "
            f"order {', '.join(keys)}, and a JSON summary of all of it.",
        )
        # A new photo runs at once: "input" is the user's upload, webcam shot, paste or clear ("change"
        # would also fire when the browser fails to show a broken file, repeating the error).
        clear_then(photo.input, compare_or_blank, api_visibility="private")
        if examples is not None:
            clear_then(examples.load_input_event.then, compare_or_blank, api_visibility="private")
        compare_tab.select(lambda: "compare", None, selected, api_visibility="private", queue=False)

        for key in keys:
            tab, button = model_tabs[key]
            button.click(
                _model_handler(models, key), photo, model_outputs[key], api_name=key, **shared,
                api_description=f"{models.models[key].display_name} on the largest face in the photo: its top-3 "
                "label, the explanation heatmap over the face (192x192 PNG) and a note on what was done.",
            )
            tab.select(_tab_handler(models, key), photo, [selected, *model_outputs[key]],
                       api_visibility="private", **shared)
    return blocks


def _model_handler(models: ModelSet, key: str) -> Callable:
    @user_errors
    def run_model(photo_path: str | None):
        return model_values(models, key, photo_path)

    run_model.__name__ = f"predict_{key}"
    return run_model


def _tab_handler(models: ModelSet, key: str) -> Callable:
    @user_errors
    def open_tab(photo_path: str | None):
        if photo_path is None:
            return [key, *blank_model_values(NO_PHOTO)]
        return [key, *model_values(models, key, photo_path)]

    return open_tab


def _no_models_page(models: ModelSet) -> gr.Blocks:
    with gr.Blocks(title="Facial expression recognition: no models", analytics_enabled=False) as blocks:
        gr.Markdown(no_models_message(models))
    return blocks


def no_models_message(models: ModelSet) -> str:
    names = ", ".join(f"{key}.keras" for key in DISPLAY_NAMES)
    return (
        f"# No models found\n\nThe demo looked in `{models.models_dir}` for {names} and found none it could load. "
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
        **options,
    )
    if warm_up and models:
        threading.Thread(target=_warm_up, args=(models,), name="fer-warm-up", daemon=True).start()
    return result


def _warm_up(models: ModelSet) -> None:
    seconds = models.warm_up(explainers=True)
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
    parser.add_argument("--auth", default=None,
                        help=f"USER:PASS required to open the app (or set {AUTH_ENV}); recommended with --share")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        auth = parse_auth(args.auth or os.environ.get(AUTH_ENV))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    models = load_models(args.models_dir, warm_up=False)  # traced in the background once serving
    seconds = time.perf_counter() - started
    if not models:
        print(no_models_message(models).replace("# ", "").replace("`", ""), file=sys.stderr)
        return 1
    loaded = ", ".join(f"{m.display_name} ({m.load_seconds:.1f} s)" for m in models)
    print(f"Loaded {len(models)} model(s) from {models.models_dir} in {seconds:.1f} s: {loaded}", flush=True)
    for key, reason in models.missing.items():
        print(f"Missing: {DISPLAY_NAMES.get(key, key)}: {reason}", flush=True)
    if args.share and not auth:
        print(f"Warning: --share without --auth (or {AUTH_ENV}) lets anyone with the link use this app.")
    blocks = build_demo(models=models)
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
