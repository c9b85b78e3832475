"""Distributed training for real: two mirrored CPU replicas, two workers on loopback, the paper plan.

TensorFlow fixes its devices and its collective ops when it starts, so the distributed runs
happen in fresh processes (a helper script each test writes), never in the pytest process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import papermill
import pytest
import tensorflow as tf

from synthetic import write_synthetic_fer_csv

from fer_utils import training
from fer_utils.model_io import load_model, read_model_card

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
TRAINING_NOTEBOOKS = ["01_scratch_cnn", "02_resnet50", "03_mobilenetv2", "04_inceptionv3", "05_ensemble"]

# The small scratch CNN and a short run on synthetic faces, shared by the helper scripts.
COMMON = textwrap.dedent(f"""
    import json, os, sys
    from pathlib import Path
    sys.path.insert(0, {str(TESTS)!r})
    sys.path.insert(0, {str(ROOT)!r})

    def faces():
        from synthetic import synthetic_faces
        from fer_utils.data import Split
        train = Split(*synthetic_faces(16, seed=1))  # 112 faces: 3.5 batches of 32
        val = Split(*synthetic_faces(4, seed=2))
        test = Split(*synthetic_faces(4, seed=3))
        return train, val, test

    def small_cnn():
        from fer_utils import models
        return models.build_model("scratch_cnn", 7, filters=[8, 16], dense_units=[32], dropout=0.1, l2=0.0)
""")

MIRRORED = COMMON + textwrap.dedent("""
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import numpy as np
    from fer_utils import model_io, training
    from fer_utils.evaluation import predict_proba

    out = Path(sys.argv[1])
    strategy = training.make_strategy("mirrored")
    train, val, test = faces()
    config = training.TrainConfig(epochs=6, batch_size=32, optimizer="adam", learning_rate=2e-3, jit_compile=False,
                                  early_stopping_patience=None, reduce_lr_patience=None, verbose=0, seed=1)
    result = training.train_model(small_cnn, train, val, config, out / "work", strategy=strategy)
    kernel = result.model.get_layer("stage1_conv1").kernel
    path = model_io.save_model(result.model, out / "scratch_cnn.keras", {"name": "scratch_cnn"})
    reloaded = model_io.load_model(path)
    in_memory = predict_proba(result.model, test.images)
    json.dump({
        "replicas": strategy.num_replicas_in_sync,
        "devices": list(strategy.extended.worker_devices),
        "variable_type": type(kernel.value).__name__,
        "loss": result.history["loss"].tolist(),
        "val_accuracy": result.history["val_accuracy"].tolist(),
        "distribution": result.summary().get("distribution"),
        "max_difference": float(np.max(np.abs(in_memory - predict_proba(reloaded, test.images)))),
        "same_classes": bool((in_memory.argmax(1) == predict_proba(reloaded, test.images).argmax(1)).all()),
        "test_accuracy": float(np.mean(in_memory.argmax(1) == test.labels)),
    }, open(out / "report.json", "w"))
""")

WORKER = COMMON + textwrap.dedent("""
    import tensorflow as tf
    from fer_utils import training  # nothing in TensorFlow has run yet: the strategy comes first
    strategy = training.make_strategy("auto")  # TF_CONFIG is set: multi-worker

    out = Path(sys.argv[1])
    train, val, _ = faces()
    config = training.TrainConfig(epochs=2, batch_size=32, optimizer="adam", jit_compile=False, verbose=0, seed=1,
                                  reduce_lr_patience=None, time_limit_minutes=60)  # the workers agree on stopping
    result = training.train_model(small_cnn, train, val, config, out / "work", strategy=strategy)
    path = training.save_on_chief(result.model, out / "models" / "scratch_cnn.keras", {"name": "scratch_cnn"},
                                  strategy=strategy)
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    json.dump({
        "multi_worker": isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy),
        "replicas": strategy.num_replicas_in_sync,
        "chief": training.is_chief(strategy),
        "saved": str(path),
        "epochs_run": result.epochs_run,
        "loss": result.history["loss"].tolist(),
        "distribution": result.summary().get("distribution"),
    }, open(out / f"worker{index}.json", "w"))
""")


def _python(script: str, *args: str, env: dict[str, str] | None = None, **popen) -> subprocess.Popen:
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": "",
                   **(env or {})}
    if "TF_CONFIG" not in (env or {}):
        environment.pop("TF_CONFIG", None)
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=ROOT, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def test_mirrored_strategy_trains_on_two_cpu_replicas_and_the_saved_model_predicts_the_same(tmp_path):
    process = _python(MIRRORED, str(tmp_path))
    try:
        output, _ = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 0, output[-4000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["replicas"] == 2 and len(report["devices"]) == 2, report["devices"]
    assert "Mirrored" in report["variable_type"], "the model was built inside the strategy's scope"
    assert report["distribution"] == {"strategy": "MirroredStrategy", "replicas": 2, "global_batch_size": 32,
                                      "per_replica_batch_size": 16.0}
    loss = report["loss"]
    assert loss[-1] < loss[0], loss
    assert max(report["val_accuracy"]) > 2 / 7 or report["test_accuracy"] > 2 / 7, "chance is 1/7"
    assert report["max_difference"] < 1e-5 and report["same_classes"], "the reloaded model predicts what the trained one does"


def test_two_workers_on_loopback_train_together_and_only_the_chief_saves(tmp_path):
    ports = _free_ports(2)
    workers = [f"127.0.0.1:{port}" for port in ports]
    processes = []
    try:
        for index in range(2):
            tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
            processes.append(_python(WORKER, str(tmp_path), env={"TF_CONFIG": tf_config}))
        deadline = time.monotonic() + 180
        outputs = []
        for process in processes:
            try:
                outputs.append(process.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
            except subprocess.TimeoutExpired:
                for other in processes:
                    other.kill()
                pytest.fail("the workers did not finish within 180 s:\n" + "\n".join(
                    (p.communicate()[0] or "")[-2000:] for p in processes))
    finally:
        for process in processes:
            process.kill()
    for index, (process, output) in enumerate(zip(processes, outputs)):
        assert process.returncode == 0, f"worker {index}:\n{output[-4000:]}"
    reports = [json.loads((tmp_path / f"worker{index}.json").read_text()) for index in range(2)]
    for report in reports:
        assert report["multi_worker"] and report["replicas"] == 2
        assert report["distribution"] == {"strategy": "MultiWorkerMirroredStrategy", "replicas": 2, "workers": 2,
                                          "global_batch_size": 32, "per_replica_batch_size": 16.0}
        assert report["saved"] == str(tmp_path / "models" / "scratch_cnn.keras")
    assert [r["chief"] for r in reports] == [True, False]
    assert reports[0]["loss"] == pytest.approx(reports[1]["loss"]), "synchronous training: one loss for both"
    assert reports[0]["epochs_run"] == reports[1]["epochs_run"] == 2
    saved = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.keras"))
    assert saved == [Path("models/scratch_cnn.keras")], saved
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["scratch_cnn.json", "scratch_cnn.keras"]
    assert (tmp_path / "work" / "history.csv").exists() and (tmp_path / "work" / ".worker-1" / "history.csv").exists()
    model = load_model(tmp_path / "models" / "scratch_cnn.keras")
    faces = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 1)).astype("float32")
    proba = np.asarray(model(faces))
    assert proba.shape == (3, 7) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert read_model_card(tmp_path / "models" / "scratch_cnn.keras").name == "scratch_cnn"


def test_make_strategy_choices(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    default = tf.distribute.get_strategy()
    if len(tf.config.list_logical_devices("GPU")) <= 1:
        assert training.make_strategy() is default, "auto on one device: exactly today's default strategy"
    assert training.make_strategy("none") is default
    assert training.distribution_strategy() is training.make_strategy("auto")
    with pytest.raises(ValueError, match="distribute must be one of auto, mirrored, multi_worker, none, got 'horovod'"):
        training.make_strategy("horovod")
    with pytest.raises(ValueError, match="needs TF_CONFIG"):
        training.make_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        training.make_strategy("auto")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}))
    with pytest.raises(ValueError, match="task index 3 is not in its cluster's 1 worker"):
        training.make_strategy("multi_worker")
    assert training.is_chief(default) and training.worker_path("m/x.keras", default) == Path("m/x.keras")


def test_a_plain_run_records_no_distribution(synthetic_splits, tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    config = training.TrainConfig(epochs=1, batch_size=64, verbose=0, jit_compile=False)
    result = training.train_model(lambda: training_model(), synthetic_splits["val"], synthetic_splits["val"], config,
                                  tmp_path / "run")
    assert "distribution" not in result.summary() and result.distribution is None


def training_model():
    from fer_utils import models

    return models.build_model("scratch_cnn", 7, filters=[4], dense_units=[8])


@pytest.mark.parametrize("name", TRAINING_NOTEBOOKS)
def test_training_notebooks_take_a_distribute_parameter_defaulting_to_auto(name):
    declared = papermill.inspect_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"))
    assert declared["distribute"]["default"] == '"auto"'
    source = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    code = "\n".join("".join(c["source"]) for c in source["cells"] if c["cell_type"] == "code")
    assert "make_strategy(distribute)" in code and "strategy=strategy" in code


def _batch(*args: str, timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    env.pop("TF_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "fer_utils.batch", *args, "--no-progress"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_an_unknown_distribute_value_fails_the_notebook_naming_the_choices(tmp_path):
    csv = write_synthetic_fer_csv(tmp_path / "faces.csv", splits=(("Training", 2, 1), ("PublicTest", 1, 2), ("PrivateTest", 1, 3)))
    completed = _batch("smoke", "--only", "01_scratch_cnn", "--data", str(csv), "--set", "distribute=horovod",
                       "--runs-dir", str(tmp_path / "runs"), timeout=300)
    assert completed.returncode == 1, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "ValueError: distribute must be one of auto, mirrored, multi_worker, none, got 'horovod'" in completed.stderr


def test_the_paper_plan_runs_end_to_end_on_cpu_with_random_weights_and_tiny_limits(tmp_path):
    """The study's recipes at 224/299 px, every notebook, on 14 synthetic faces per split (minutes on 2 CPUs).

    No explanation figures: at these sizes their occlusion maps were a fifth of the test's time, and
    the smoke plan (tests/test_notebooks.py) draws them through the same code at small sizes."""
    csv = write_synthetic_fer_csv(tmp_path / "faces.csv")
    started = time.monotonic()
    completed = _batch(
        "paper", "--data", str(csv), "--runs-dir", str(tmp_path / "runs"),
        "--set", "weights=null", "--set", "limit=14", "--set", "epochs=1", "--set", "batch_size=8",
        "--set", "jit_compile=false", "--set", "explain_faces=0", "--set", "samples_per_class=1",
        "--set", "latency_repeats=1", "--set", "tta=false",
        "--set", f"output_dir={tmp_path / 'models'}", "--set", f"models_dir={tmp_path / 'models'}",
        "--set", f"reports_dir={tmp_path / 'reports'}", "--set", f"work_dir={tmp_path / 'work'}",
        timeout=1800,
    )
    minutes = (time.monotonic() - started) / 60
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    run_dir = next((tmp_path / "runs").iterdir())
    summary = pd.read_csv(run_dir / "summary.csv")
    assert summary["notebook"].tolist() == [f"{name}.ipynb" for name in
                                            ["00_data_exploration", *TRAINING_NOTEBOOKS, "06_compare_models"]]
    assert (summary["status"] == "ok").all(), summary.to_string()
    sizes = {"resnet50": 224, "mobilenetv2": 224, "inceptionv3": 299}
    for name in ["scratch_cnn", *sizes, "ensemble"]:
        path = tmp_path / "models" / f"{name}.keras"
        card = read_model_card(path)
        assert card.name == name and card.data["split_sizes"] == {"train": 14, "val": 14, "test": 14}
        assert card.training["epochs_run"] == 1
        if name in sizes:
            assert card.parameters["model"]["image_size"] == sizes[name], "the study's input size"
            assert "random initialisation" in card.weights_source
    model = load_model(tmp_path / "models" / "ensemble.keras")
    assert model(np.zeros((1, 48, 48, 1), "float32")).shape == (1, 7)
    assert not (ROOT / "saved_models" / "paper").exists(), "every output went to the test's folders"
    print(f"paper plan on CPU: {minutes:.1f} min")
