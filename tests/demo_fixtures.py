"""Shared set-up of the demo's tests (tests/test_demo_*.py): small models, the launched app, photos.

The models are small ones trained or built here on synthetic faces and saved to a temporary
folder, so the tests never depend on the shipped models: a scratch CNN trained for a few epochs
(it learns the synthetic classes), tiny untrained ResNet50 / MobileNetV2 / InceptionV3 and an
ensemble of all four. They are made once per session (see :func:`trained_models_dir`), and the
app is launched once per session on loopback (see :func:`running_app`).

The pytest fixtures below (``models``, ``app_url``, ``client``, ``photos``) are registered for
every test module by tests/conftest.py; the plain functions are imported by the test modules.
"""

from __future__ import annotations

import atexit
import functools
import io
import json
import os
import pathlib
import shutil
import socket
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

TESTS = pathlib.Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from synthetic import CLASS_NAMES_7, synthetic_face, synthetic_faces  # noqa: E402

EXAMPLES = ROOT / "demo" / "examples"
MEMBERS = ("scratch_cnn", "resnet50", "mobilenetv2", "inceptionv3")
ALL_MODELS = (*MEMBERS, "ensemble")


# ----------------------------------------------------------------------------- shared set-up
# Plain cached functions rather than session fixtures, so tests/test_demo_browser.py can reuse
# the same trained models without training them twice.


@functools.lru_cache(maxsize=None)
def trained_models_dir() -> pathlib.Path:
    """Five small models with cards in a temporary folder (removed at exit)."""
    import keras

    from fer_utils.model_io import describe_weights, save_ensemble, save_model
    from fer_utils.models import build_ensemble, build_model

    folder = pathlib.Path(tempfile.mkdtemp(prefix="fer_demo_models_"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    keras.utils.set_random_seed(0)
    images, labels = synthetic_faces(100, seed=1)
    scratch = build_model("scratch_cnn", 7, filters=(16, 32, 64), dense_units=(64,), dropout=0.2, l2=0.0)
    scratch.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy")
    started = time.perf_counter()
    scratch.fit(images.astype("float32"), labels, epochs=8, batch_size=32, verbose=0)
    models = {"scratch_cnn": scratch}
    sizes = {"resnet50": 32, "mobilenetv2": 32, "inceptionv3": 75}
    for kind, size in sizes.items():
        models[kind] = build_model(kind, 7, weights=None, image_size=size)
    paths = []
    for key in MEMBERS:
        card = {
            "name": key,
            "class_names": list(CLASS_NAMES_7),
            "weights_source": describe_weights(None),
            "metrics": {"test": {"plain": {"accuracy": 0.625, "macro_f1": 0.5}, "tta": {"accuracy": 0.64}}},
            "training": {"duration_s": round(time.perf_counter() - started, 1), "epochs_run": 8 if key == "scratch_cnn" else 0},
            "parameters": {"image_size": sizes.get(key, 48)},
        }
        if key == "mobilenetv2":
            card = {"name": key}  # a sparse card: the app must cope with missing keys
        storage = "float16" if key == "scratch_cnn" else "float32"  # the app serves half-precision files too
        paths.append(save_model(models[key], folder / f"{key}.keras", card, weights_dtype=storage))
    ensemble = build_ensemble([models[key] for key in MEMBERS])
    save_ensemble(ensemble, folder / "ensemble.keras", paths, {"name": "ensemble", "class_names": list(CLASS_NAMES_7)})
    return folder


@functools.lru_cache(maxsize=None)
def loaded_models():
    from fer_utils.serving import load_models

    return load_models(trained_models_dir())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@functools.lru_cache(maxsize=None)
def running_app() -> str:
    """Launch the app once per session on loopback; returns its URL."""
    from demo.app import build_demo, launch

    blocks = build_demo(models=loaded_models())
    launch(blocks, host="127.0.0.1", port=free_port(), prevent_thread_lock=True, quiet=True, warm_up=False)
    atexit.register(blocks.close)
    return blocks.local_url


# ----------------------------------------------------------------------------- fixtures (tests/conftest.py)


@pytest.fixture(scope="session")
def models():
    return loaded_models()


@pytest.fixture(scope="session")
def app_url() -> str:
    return running_app()


@pytest.fixture(scope="session")
def client(app_url, tmp_path_factory):
    from gradio_client import Client

    # ssl_verify=False: plain HTTP on loopback; verification only costs a CA-bundle load per call
    return Client(app_url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")), ssl_verify=False)


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> dict[str, pathlib.Path]:
    """Good and bad uploads, written once."""
    folder = tmp_path_factory.mktemp("photos")
    astronaut = Image.open(EXAMPLES / "astronaut.jpg").convert("RGB")
    files: dict[str, pathlib.Path] = {}

    def put(name: str, data: bytes) -> None:
        files[name] = folder / name
        files[name].write_bytes(data)

    def save(name: str, image: Image.Image, **options) -> None:
        buffer = io.BytesIO()
        image.save(buffer, format=options.pop("format", None) or name.rsplit(".", 1)[1].replace("jpg", "jpeg"), **options)
        put(name, buffer.getvalue())

    put("not_an_image.jpg", b"GIF89a? no: this is plain text pretending to be a photo\n" * 20)
    jpeg = (EXAMPLES / "astronaut.jpg").read_bytes()
    put("truncated.jpg", jpeg[: len(jpeg) // 3])
    put("empty.png", b"")
    save("one_pixel.png", Image.new("RGB", (1, 1), (200, 150, 100)))
    save("bomb.png", Image.new("L", (9000, 9000)))  # 81 MP of zeros: a few hundred KB compressed
    put("huge_file.png", b"\x89PNG\r\n\x1a\n" + os.urandom(11 * 1024 * 1024))  # over the 10 MB upload cap
    grey16 = (np.asarray(astronaut.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    save("sixteen_bit.png", Image.fromarray(grey16))
    save("cmyk.jpg", astronaut.convert("CMYK"))
    save("palette.png", astronaut.convert("P", palette=Image.Palette.ADAPTIVE, colors=64))
    rgba = astronaut.convert("RGBA")
    rgba.putalpha(Image.new("L", rgba.size, 200))
    save("rgba.png", rgba)
    frames = [astronaut, Image.open(EXAMPLES / "coffee_no_face.jpg").convert("RGB").resize(astronaut.size)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=200, loop=0)
    put("animated.gif", buffer.getvalue())
    sideways = astronaut.transpose(Image.Transpose.ROTATE_90)  # stored lying on its side...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...with the EXIF tag that says "turn 90 degrees clockwise to view"
    save("exif_rotated.jpg", sideways, exif=exif)
    save("sideways_no_exif.jpg", sideways)
    save("grey.jpg", astronaut.convert("L"))
    files["no_face.jpg"] = EXAMPLES / "coffee_no_face.jpg"
    files["two_faces.jpg"] = EXAMPLES / "two_portraits.jpg"
    files["astronaut.jpg"] = EXAMPLES / "astronaut.jpg"
    happy = _undetected_synthetic_face(emotion=3)
    save("synthetic_happy.png", Image.fromarray(happy, mode="L"))
    return files


def _undetected_synthetic_face(emotion: int) -> np.ndarray:
    """A synthetic face the cascade does not fire on, so the app uses it whole, as trained."""
    from fer_utils.faces import detect_faces

    rng = np.random.default_rng(123)
    for _ in range(50):
        face = synthetic_face(emotion, rng)
        if not detect_faces(face):
            return face
    raise AssertionError("every synthetic face was detected by the cascade")


# ----------------------------------------------------------------------------- calling the app


def compare(client, path):
    from gradio_client import handle_file

    return client.predict(handle_file(str(path)), api_name="/compare")


def details(result) -> dict:
    """The /compare result's last output: the JSON summary."""
    value = result[-1]
    return json.loads(pathlib.Path(value).read_text()) if isinstance(value, str) else value
