"""Latency of the Gradio demo as a client sees it: launch demo/app.py on loopback, time requests.

    python benchmarks/demo_latency.py                      # the trained models in saved_models/
    python benchmarks/demo_latency.py --synthetic study    # random-weight models at the study's sizes
    python benchmarks/demo_latency.py --synthetic small    # the tiny models the tests use
    python benchmarks/demo_latency.py --synthetic cpu      # random weights, the shapes plans/cpu.yaml trains

Reports: startup (process start to the page answering), median and p95 of one model's
endpoint (prediction + heatmap) and of Compare-all, and a concurrent run (8 clients x 25
Compare requests by default) with its error count. The app runs as a separate process, as
``python demo/app.py`` would; requests go through gradio_client. Output files are not
downloaded (``download_files=False``): the figures are the server's answer, not a file copy.
The clients use ``ssl_verify=False``: the app is plain HTTP on loopback, so there is nothing to
verify, and with verification on gradio_client builds several httpx clients per call, each
loading the CA bundle (~35 ms each on the 2-core machine), which would dominate the figures.
For context it also reports the app's own time per request (from the /compare JSON), the same
request through Gradio's HTTP API on one connection, and a do-nothing Gradio app (the floor).
Target on the 2-core reference machine: Compare-all median <= 150 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "demo" / "app.py"
DEFAULT_PHOTO = ROOT / "demo" / "examples" / "astronaut.jpg"
MEMBERS = ("scratch_cnn", "resnet50", "mobilenetv2", "inceptionv3")
STUDY_SIZES = {"resnet50": 224, "mobilenetv2": 224, "inceptionv3": 299}
SMALL_SIZES = {"resnet50": 32, "mobilenetv2": 32, "inceptionv3": 75}
SCRATCH_SHAPE = ("filters", "convs_per_stage", "batch_norm", "dense_units")


def plan_shapes(plan: str = "cpu") -> tuple[dict[str, int], dict[str, object]]:
    """Backbone input sizes and the scratch CNN's shape from a plan, so timings match what it trains.

    A backbone the plan does not train (ResNet50 in the cpu plan) is timed at the native 48 px.
    """
    import yaml

    notebooks = yaml.safe_load((ROOT / "plans" / f"{plan}.yaml").read_text())["notebooks"]
    parameters = {entry["notebook"].split("_", 1)[1]: entry.get("parameters", {}) for entry in notebooks}
    sizes = {key: int(parameters.get(key, {}).get("image_size", 48)) for key in MEMBERS[1:]}
    scratch = {name: value for name, value in parameters["scratch_cnn"].items() if name in SCRATCH_SHAPE}
    return sizes, scratch


def make_models(folder: Path, sizes: dict[str, int], scratch: dict[str, object] | None = None) -> Path:
    """Random-weight models of the given input sizes, with cards, and their ensemble (timing only)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(ROOT))
    from fer_utils.data import CLASS_SETS
    from fer_utils.model_io import describe_weights, save_ensemble, save_model
    from fer_utils.models import build_ensemble, build_model

    models, paths = {}, []
    for key in MEMBERS:
        options = dict(scratch or {}) if key == "scratch_cnn" else {"weights": None, "image_size": sizes[key]}
        models[key] = build_model(key, 7, **options)
        card = {"name": key, "class_names": list(CLASS_SETS[7]), "weights_source": describe_weights(None),
                "parameters": {"image_size": sizes.get(key, 48)}, "note": "untrained: for timing only"}
        paths.append(save_model(models[key], folder / f"{key}.keras", card))
    save_ensemble(build_ensemble([models[k] for k in MEMBERS]), folder / "ensemble.keras", paths,
                  {"name": "ensemble", "class_names": list(CLASS_SETS[7])})
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(models_dir: Path, port: int, log_path: Path) -> tuple[subprocess.Popen, float]:
    """Start ``python demo/app.py`` and wait until its page answers; returns (process, seconds)."""
    import httpx

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "GRADIO_ANALYTICS_ENABLED": "False"}
    started = time.perf_counter()
    log = open(log_path, "w")
    process = subprocess.Popen(
        [sys.executable, str(APP), "--models-dir", str(models_dir), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tempfile.gettempdir(),  # not the repo: paths must not depend on cwd
    )
    url = f"http://127.0.0.1:{port}/"
    while time.perf_counter() - started < 180:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with code {process.returncode}; see {log_path}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return process, time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the app did not answer within 180 s; see {log_path}")


def timed_calls(client, photo: Path, api_name: str, count: int, answers: list | None = None) -> list[float]:
    from gradio_client import handle_file

    seconds = []
    for _ in range(count):
        started = time.perf_counter()
        answer = client.predict(handle_file(str(photo)), api_name=api_name)
        seconds.append(time.perf_counter() - started)
        if answers is not None:
            answers.append(answer)
    return seconds


def server_side(answers: list) -> dict[str, float]:
    """Median time the app itself spent per Compare request (from its JSON), by step."""
    steps: dict[str, list[float]] = {}
    for answer in answers:
        for step, ms in answer[-1].get("server_ms", {}).items():
            steps.setdefault(step, []).append(ms)
        models = answer[-1].get("models", {})
        for key, facts in models.items():
            steps.setdefault(f"model:{key}", []).append(facts["inference_ms"])
    return {step: round(statistics.median(values), 1) for step, values in steps.items()}


def http_calls(url: str, photo: Path, api_name: str, count: int) -> list[float]:
    """The same request through Gradio's documented HTTP API (upload, POST /call, read the SSE answer),
    on one kept-alive connection: what a lean client sees, without gradio_client's 50 ms polling."""
    import httpx

    seconds = []
    with httpx.Client(base_url=url, timeout=60) as http:
        for _ in range(count):
            started = time.perf_counter()
            with open(photo, "rb") as stream:
                uploaded = http.post("gradio_api/upload", files={"files": (photo.name, stream)}).json()[0]
            file_data = {"path": uploaded, "orig_name": photo.name, "meta": {"_type": "gradio.FileData"}}
            event_id = http.post(f"gradio_api/call/{api_name}", json={"data": [file_data]}).json()["event_id"]
            with http.stream("GET", f"gradio_api/call/{api_name}/{event_id}") as answer:
                event = ""
                for line in answer.iter_lines():
                    if line.startswith("event:"):
                        event = line.split(":", 1)[1].strip()
                    if event in ("complete", "error") and line.startswith("data:"):
                        break
            if event != "complete":
                raise RuntimeError(f"/call/{api_name} answered {event!r}")
            seconds.append(time.perf_counter() - started)
    return seconds


def serve_noop(port: int) -> None:
    """A Gradio app with the demo's photo input that does nothing (run in its own process)."""
    import gradio as gr

    sys.path.insert(0, str(ROOT))
    from demo.app import photo_input as make_photo_input

    with gr.Blocks(analytics_enabled=False) as blocks:
        photo_input = make_photo_input()
        text = gr.Textbox()
        photo_input.upload(lambda path: "ok", photo_input, text, api_name="noop")
    blocks.queue()
    blocks.launch(server_name="127.0.0.1", server_port=port, quiet=True)


def gradio_floor(photo: Path, count: int, workdir: Path) -> dict[str, float]:
    """The same upload-and-answer round trip to a Gradio app that does nothing: the transport's cost."""
    import httpx
    from gradio_client import Client

    port = free_port()
    with open(workdir / "noop.log", "w") as log:
        process = subprocess.Popen([sys.executable, __file__, "--serve-noop", str(port)], stdout=log,
                                   stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        for _ in range(600):
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        client = Client(url, verbose=False, download_files=False, ssl_verify=False)
        timed_calls(client, photo, "/noop", 3)
        return summary(timed_calls(client, photo, "/noop", count))
    finally:
        process.kill()
        process.wait()


def summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return {"n": len(ordered), "median_ms": round(statistics.median(ordered) * 1000, 1), "p95_ms": round(p95 * 1000, 1)}


def concurrent_run(url: str, photo: Path, clients: int, per_client: int) -> dict[str, object]:
    """``clients`` threads, each with its own Client, sending ``per_client`` Compare requests."""
    from gradio_client import Client, handle_file

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            client = Client(url, verbose=False, download_files=False, ssl_verify=False)
        except Exception as error:  # noqa: BLE001 - counted as errors
            with lock:
                errors.extend([f"connect: {error}"] * per_client)
            return
        for _ in range(per_client):
            started = time.perf_counter()
            try:
                client.predict(handle_file(str(photo)), api_name="/compare")
            except Exception as error:  # noqa: BLE001 - counted as errors
                with lock:
                    errors.append(f"{type(error).__name__}: {error}")
                continue
            with lock:
                latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    result: dict[str, object] = {"clients": clients, "requests": clients * per_client, "errors": len(errors),
                                 "wall_s": round(wall, 1), "throughput_rps": round(len(latencies) / wall, 2)}
    if latencies:
        result.update(summary(latencies))
    if errors:
        result["first_errors"] = errors[:3]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=ROOT / "saved_models")
    parser.add_argument("--synthetic", choices=("small", "study", "cpu"),
                        help="build random-weight models (tiny, at the study's input sizes, or as plans/cpu.yaml "
                             "trains them) instead of --models-dir")
    parser.add_argument("--photo", type=Path, default=DEFAULT_PHOTO)
    parser.add_argument("--requests", type=int, default=40, help="sequential requests per measured endpoint")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--per-client", type=int, default=25)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--serve-noop", type=int, help=argparse.SUPPRESS)  # internal: the transport-floor app
    args = parser.parse_args(argv)
    if args.serve_noop:
        serve_noop(args.serve_noop)
        return 0

    workdir = Path(tempfile.mkdtemp(prefix="fer_demo_bench_"))
    try:
        if args.synthetic:
            started = time.perf_counter()
            if args.synthetic == "cpu":
                models_dir = make_models(workdir / "models", *plan_shapes("cpu"))
            else:
                models_dir = make_models(workdir / "models", SMALL_SIZES if args.synthetic == "small" else STUDY_SIZES)
            print(f"built {args.synthetic} random-weight models in {time.perf_counter() - started:.0f} s", flush=True)
        else:
            models_dir = args.models_dir
            if not any(models_dir.glob("*.keras")):
                print(f"no models in {models_dir}; train them or use --synthetic study", file=sys.stderr)
                return 1
        results = run(models_dir, args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    target = results["compare"]["median_ms"] <= 150
    print(f"Compare-all median {results['compare']['median_ms']} ms: target <= 150 ms {'met' if target else 'NOT met'}; "
          f"concurrent errors: {results['concurrent']['errors']}")
    return 0 if results["concurrent"]["errors"] == 0 else 1


def run(models_dir: Path, args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    from gradio_client import Client

    port = free_port()
    log_path = workdir / "app.log"
    process, startup = start_app(models_dir, port, log_path)
    try:
        url = f"http://127.0.0.1:{port}/"
        client = Client(url, verbose=False, download_files=False, ssl_verify=False)
        endpoints = [name for name in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
                     if name != "/compare"]
        first = timed_calls(client, args.photo, "/compare", 1)[0]
        for name in endpoints:  # trace everything before measuring (the app also does so in the background)
            timed_calls(client, args.photo, name, 2)
        timed_calls(client, args.photo, "/compare", 3)
        answers: list = []
        results: dict[str, object] = {
            "models_dir": str(models_dir),
            "photo": args.photo.name,
            "cpu_count": os.cpu_count(),
            "load_average_at_start": os.getloadavg()[0],
            "startup_s": round(startup, 1),
            "first_compare_ms": round(first * 1000, 1),
            "compare": summary(timed_calls(client, args.photo, "/compare", args.requests, answers)),
            "compare_server_side_median_ms": server_side(answers),
            "compare_via_http_api": summary(http_calls(url, args.photo, "compare", args.requests)),
            "single_model": {name.strip("/"): summary(timed_calls(client, args.photo, name, max(5, args.requests // 2)))
                             for name in endpoints},
        }
        results["concurrent"] = concurrent_run(url, args.photo, args.clients, args.per_client)
        results["gradio_floor_noop"] = gradio_floor(args.photo, args.requests, workdir)
        results["app_log_tail"] = [line for line in log_path.read_text().splitlines()
                                   if "Loaded" in line or "Ready" in line or "traced" in line]
        return results
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


if __name__ == "__main__":
    sys.exit(main())
