"""The demo as a server: command-line flags, where it looks for models, its API's endpoints, what it
refuses to serve, concurrent clients, and ``python demo/app.py`` run for real (auth, --share).

The tests marked slow launch the app (once per session, or as a subprocess).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from demo_fixtures import ALL_MODELS, EXAMPLES, ROOT, free_port, trained_models_dir  # noqa: E402


# ----------------------------------------------------------------------------- pure functions


def test_auth_flag_parsing():
    from demo.app import parse_auth

    assert parse_auth("ann:s3cr:et") == ("ann", "s3cr:et")
    assert parse_auth(None) is None
    with pytest.raises(ValueError):
        parse_auth("no-colon")


def test_the_latency_benchmark_hands_the_app_an_absolute_models_dir(tmp_path, monkeypatch):
    """benchmarks/demo_latency.py starts the app in the temp folder, so `--models-dir saved_models`
    (relative) once made it exit at start with no models found."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import demo_latency

    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    command = demo_latency.app_command(pathlib.Path("models"), 7860, detector="haar", mirror=True)
    models_dir = pathlib.Path(command[command.index("--models-dir") + 1])
    assert models_dir.is_absolute() and models_dir == tmp_path.resolve() / "models"
    assert command[-3:] == ["--detector", "haar", "--mirror"] and "7860" in command


def test_default_models_dir_is_next_to_the_repo_not_the_cwd():
    from fer_utils.serving import default_models_dir

    assert default_models_dir() == ROOT / "saved_models"


# ----------------------------------------------------------------------------- the launched app


@pytest.mark.slow
def test_api_lists_compare_and_one_endpoint_per_model(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) == {"/compare", "/video", "/live_frame", *(f"/{key}" for key in ALL_MODELS)}


@pytest.mark.slow
def test_the_app_serves_no_files_outside_its_own(app_url):
    import httpx

    model_file = trained_models_dir() / "scratch_cnn.keras"
    for path in ("/etc/passwd", str(model_file), str(ROOT / "pyproject.toml"), str(pathlib.Path(__file__))):
        for url in (f"{app_url}gradio_api/file={path}", f"{app_url}file={path}"):
            response = httpx.get(url, timeout=10)
            assert response.status_code in (403, 404), (url, response.status_code)
            assert b"root:" not in response.content and b"[project]" not in response.content
    # nor reads a server path that an API client names instead of uploading a file
    secret = trained_models_dir() / "mobilenetv2.json"
    file_data = {"path": str(secret), "meta": {"_type": "gradio.FileData"}}
    event_id = httpx.post(f"{app_url}gradio_api/call/compare", json={"data": [file_data]}, timeout=10).json()["event_id"]
    answer = httpx.get(f"{app_url}gradio_api/call/compare/{event_id}", timeout=30).text
    assert "event: error" in answer and "event: complete" not in answer


@pytest.mark.slow
def test_concurrent_clients_get_no_errors(app_url, photos):
    from gradio_client import Client, handle_file

    errors: list[BaseException] = []
    labels: list[str] = []

    def one_client(index: int) -> None:
        try:
            own = Client(app_url, verbose=False, download_files=False, ssl_verify=False)
            for request in range(3):
                if (index + request) % 4 == 0:
                    result = own.predict(handle_file(str(photos["astronaut.jpg"])), api_name="/scratch_cnn")
                    labels.append(result[0]["label"])
                else:
                    result = own.predict(handle_file(str(photos["two_faces.jpg"])), api_name="/compare")
                    labels.append(result[4]["label"])
        except BaseException as error:  # noqa: BLE001 - collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=one_client, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors[:3]
    assert len(labels) == 24


@pytest.mark.slow
def test_cli_serves_present_models_lists_missing_and_survives_a_failed_share_link(tmp_path):
    """``python demo/app.py`` for real: two of five models, --share without internet, auth from the environment."""
    import httpx
    from gradio_client import Client, handle_file

    for key in ("scratch_cnn", "mobilenetv2"):
        shutil.copy(trained_models_dir() / f"{key}.keras", tmp_path)
        shutil.copy(trained_models_dir() / f"{key}.json", tmp_path)
    port = free_port()
    env = {**os.environ, "FER_DEMO_AUTH": "ann:s3cret", "TF_CPP_MIN_LOG_LEVEL": "2"}
    log = tmp_path / "app.log"
    with open(log, "w") as stream:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "demo" / "app.py"), "--models-dir", str(tmp_path), "--port", str(port), "--share"],
            stdout=stream, stderr=subprocess.STDOUT, env=env, cwd=tempfile.gettempdir(),
        )
    try:
        deadline = time.monotonic() + 150
        while "Ready in" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        output = log.read_text()
        assert "Loaded 2 model(s)" in output and "Missing: ResNet50: resnet50.keras not found" in output
        share_created = "Running on public URL" in output
        assert share_created or "Could not create a public share link; still serving locally" in output
        url = f"http://127.0.0.1:{port}/"
        assert httpx.get(f"{url}config", timeout=10).status_code == 401  # auth is on
        client = Client(url, auth=("ann", "s3cret"), verbose=False, download_files=False, ssl_verify=False)
        result = client.predict(handle_file(str(EXAMPLES / "astronaut.jpg")), api_name="/compare")
        assert set(result[-1]["models"]) == {"scratch_cnn", "mobilenetv2"}
    finally:
        process.terminate()
        process.wait(timeout=30)
