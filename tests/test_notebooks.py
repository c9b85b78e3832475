"""The notebooks and the batch runner: hygiene, the whole smoke plan, failures and typos."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import papermill
import pytest

from synthetic import write_synthetic_fer_csv

from fer_utils.data import load_dataset
from fer_utils.evaluation import predict_proba
from fer_utils.model_io import load_model, read_model_card, stored_weights_dtypes

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXPECTED = [
    "00_data_exploration", "01_scratch_cnn", "02_resnet50", "03_mobilenetv2",
    "04_inceptionv3", "05_ensemble", "06_compare_models",
]


def _batch(*args: str, timeout: int = 1500) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "fer_utils.batch", *args, "--no-progress"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )


def test_every_notebook_is_there_in_reading_order():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs_and_one_literal_parameters_cell(path):
    notebook = json.loads(path.read_text())
    code_cells = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code_cells), "clear the outputs before committing"
    tagged = [c for c in notebook["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    source = "".join(tagged[0]["source"])
    names = []
    for statement in ast.parse(source).body:
        assert isinstance(statement, ast.Assign), f"only assignments in the parameters cell: {ast.unparse(statement)}"
        ast.literal_eval(statement.value)  # raises on anything but a literal
        names.append(statement.targets[0].id)
    # papermill must see every parameter, or a plan could not set it.
    assert sorted(papermill.inspect_notebook(str(path))) == sorted(names)


@pytest.fixture(scope="module")
def synthetic_csv(tmp_path_factory) -> Path:
    """A small FER2013-format CSV of synthetic faces, all seven classes in every split."""
    return write_synthetic_fer_csv(tmp_path_factory.mktemp("data") / "synthetic_fer.csv")


@pytest.fixture(scope="module")
def smoke_run(synthetic_csv, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    runs = tmp_path_factory.mktemp("runs")
    completed = _batch("smoke", "--data", str(synthetic_csv), "--runs-dir", str(runs))
    run_dirs = list(runs.iterdir())
    assert len(run_dirs) == 1, completed.stdout + completed.stderr
    return completed, run_dirs[0]


def test_smoke_plan_runs_all_seven_notebooks(smoke_run):
    completed, run_dir = smoke_run
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    summary = pd.read_csv(run_dir / "summary.csv")
    assert summary["notebook"].tolist() == [f"{name}.ipynb" for name in EXPECTED]
    assert (summary["status"] == "ok").all()
    assert "key_metric" in completed.stdout and "test_accuracy" in completed.stdout
    for name in EXPECTED:
        executed = json.loads((run_dir / f"{name}.ipynb").read_text())
        assert any(c.get("outputs") for c in executed["cells"] if c["cell_type"] == "code")
        if name in EXPECTED[1:6]:  # the training notebooks' figures show inline (experiment.RunRecord.show)
            outputs = [o for c in executed["cells"] for o in c.get("outputs", [])]
            assert any("image/png" in o.get("data", {}) for o in outputs), f"{name} shows no figure"


@pytest.mark.parametrize("name", ["scratch_cnn", "resnet50", "mobilenetv2", "inceptionv3", "ensemble"])
def test_smoke_models_load_and_their_cards_hold_real_metrics(smoke_run, name):
    _, run_dir = smoke_run
    models_dir = run_dir / "models"
    model = load_model(models_dir / f"{name}.keras")
    faces = np.random.default_rng(0).integers(0, 256, (2, 48, 48, 1)).astype("float32")
    assert model(faces).shape == (2, 7)
    card = read_model_card(models_dir / f"{name}.keras")
    test = card["metrics"]["test"]
    assert 0.0 <= test["plain"]["accuracy"] <= 1.0 and 0.0 <= test["tta"]["accuracy"] <= 1.0
    assert test["plain"]["n"] == 70
    assert card["data"]["split_sizes"] == {"train": 280, "val": 70, "test": 70}
    assert card["class_names"] == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert "random initialisation" in card["weights_source"] or name == "ensemble"
    assert card["training"]["epochs_run"] >= 1
    predictions = np.load(models_dir / f"{name}_predictions.npz")
    assert predictions["proba"].shape == (70, 7)
    reports = run_dir / "reports" / name
    for figure in ("training_curves.png", "confusion_matrix_normalized.png", "roc_curves.png"):
        assert (reports / figure).stat().st_size > 5_000, figure


def test_smoke_scratch_cnn_learned_and_ensemble_stores_only_its_head(smoke_run):
    _, run_dir = smoke_run
    models_dir = run_dir / "models"
    scratch = read_model_card(models_dir / "scratch_cnn.keras")
    assert scratch["metrics"]["test"]["plain"]["accuracy"] > 0.5, "15 epochs on synthetic faces beat chance (0.14) by far"
    ensemble = read_model_card(models_dir / "ensemble.keras")
    assert ensemble["ensemble"]["members"] == ["resnet50.keras", "mobilenetv2.keras", "inceptionv3.keras"]
    assert (models_dir / "ensemble.keras").stat().st_size < 100_000


def test_smoke_scratch_cnn_is_stored_at_half_precision_and_measured_as_stored(smoke_run, synthetic_csv):
    """The smoke plan sets weights_dtype: float16; the card's figure is what the file itself scores."""
    _, run_dir = smoke_run
    path = run_dir / "models" / "scratch_cnn.keras"
    card = read_model_card(path)
    assert card["weights_dtype"] == "float16" and stored_weights_dtypes(path) == {"float16"}
    test = load_dataset(synthetic_csv).test
    accuracy = np.mean(predict_proba(load_model(path), test.images).argmax(axis=1) == test.labels)
    assert accuracy == card["metrics"]["test"]["plain"]["accuracy"]
    assert read_model_card(run_dir / "models" / "resnet50.keras")["weights_dtype"] == "float32", "the default"


def test_smoke_exploration_and_comparison_figures(smoke_run):
    _, run_dir = smoke_run
    for figure in ("data/class_distribution.png", "data/sample_faces.png", "comparison/per_class_f1.png",
                   "comparison/confusion_matrices.png", "comparison/agreement.png"):
        assert (run_dir / "reports" / figure).stat().st_size > 5_000, figure
    results = pd.read_csv(run_dir / "reports" / "comparison" / "results.csv")
    assert len(results) == 5 and (results["latency_ms"] > 0).all()


@pytest.mark.parametrize("plan", sorted(p.stem for p in (ROOT / "plans").rglob("*.yaml")))  # plans/shipped/ too
def test_every_shipped_plan_names_only_parameters_its_notebooks_declare(plan, tmp_path):
    from fer_utils.batch import find_plan, prepare_steps, read_plan

    steps = prepare_steps(read_plan(find_plan(plan)), tmp_path)  # raises PlanError on any unknown name
    assert steps and all(step.notebook.is_file() for step in steps)
    for step in steps:
        if step.parameters.get("init_model"):
            assert step.parameters["init_model"].endswith(".keras")


def test_typo_in_a_plan_is_an_error_before_anything_runs(tmp_path):
    plan = tmp_path / "typo.yaml"
    plan.write_text("notebooks:\n  - notebook: 01_scratch_cnn\n    parameters: {epoch: 3, learning_rte: 0.1}\n")
    completed = _batch(str(plan), "--runs-dir", str(tmp_path / "runs"), timeout=120)
    assert completed.returncode == 2
    assert "unknown parameter(s) ['epoch', 'learning_rte']" in completed.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.ipynb"))


def test_an_unknown_plan_name_lists_the_shipped_plans(tmp_path):
    completed = _batch("cpu_thrid_stage", "--runs-dir", str(tmp_path / "runs"), timeout=120)
    assert completed.returncode == 2
    shipped = sorted(p.stem for p in (ROOT / "plans").rglob("*.yaml"))
    assert {"cpu", "cpu_continue", "cpu_third_stage", "cpu_fourth_stage", "cpu_larger_input", "cpu_second_cnn", "cpu_third_cnn", "paper", "smoke"} <= set(shipped)
    assert f"no plan 'cpu_thrid_stage': give a file path or one of {', '.join(shipped)}" in completed.stderr
    assert not (tmp_path / "runs").exists()


def test_failed_notebook_is_reported_and_the_batch_goes_on(synthetic_csv, tmp_path):
    plan = tmp_path / "failing.yaml"
    plan.write_text(
        "notebooks:\n"
        f"  - notebook: 01_scratch_cnn\n    parameters: {{data_path: {tmp_path / 'missing.csv'}, epochs: 1}}\n"
        f"  - notebook: 00_data_exploration\n    parameters: {{data_path: {synthetic_csv}, reports_dir: {tmp_path / 'reports'}}}\n"
    )
    completed = _batch(str(plan), "--runs-dir", str(tmp_path / "runs"), timeout=600)
    assert completed.returncode == 1
    assert "FAILED 01_scratch_cnn.ipynb: cell" in completed.stderr
    assert "FileNotFoundError: FER2013 not found" in completed.stderr
    run_dir = next((tmp_path / "runs").iterdir())
    summary = pd.read_csv(run_dir / "summary.csv")
    assert summary["status"].tolist() == ["failed", "ok"]
    partial = json.loads((run_dir / "01_scratch_cnn.ipynb").read_text())
    assert any(o.get("ename") == "FileNotFoundError" for c in partial["cells"] for o in c.get("outputs", []))


def test_a_plan_can_run_one_notebook_twice_and_keeps_both_records(synthetic_csv, tmp_path):
    """Two CNNs in one plan: the second executed copy must not overwrite the first."""
    plan = tmp_path / "twice.yaml"
    plan.write_text(
        "notebooks:\n"
        f"  - notebook: 00_data_exploration\n    parameters: {{data_path: {synthetic_csv}, reports_dir: {tmp_path / 'first'}}}\n"
        f"  - notebook: 00_data_exploration\n    parameters: {{data_path: {synthetic_csv}, reports_dir: {tmp_path / 'second'}}}\n"
    )
    completed = _batch(str(plan), "--runs-dir", str(tmp_path / "runs"), timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    run_dir = next((tmp_path / "runs").iterdir())
    summary = pd.read_csv(run_dir / "summary.csv")
    assert summary["notebook"].tolist() == ["00_data_exploration.ipynb", "00_data_exploration-2.ipynb"]
    assert summary["status"].tolist() == ["ok", "ok"]
    for executed, reports in (("00_data_exploration.ipynb", "first"), ("00_data_exploration-2.ipynb", "second")):
        source = "".join("".join(c["source"]) for c in json.loads((run_dir / executed).read_text())["cells"])
        assert str(tmp_path / reports) in source, f"{executed} ran with its own parameters"
        assert (tmp_path / reports / "data" / "class_distribution.png").stat().st_size > 5_000


def test_results_table_cli_prints_the_cards_figures(smoke_run):
    _, run_dir = smoke_run
    models_dir = run_dir / "models"
    completed = subprocess.run(
        [sys.executable, "-m", "fer_utils.compare", str(models_dir), "--latency-repeats", "3"],
        capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = [line for line in completed.stdout.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + 5, "a header and one row per model"
    assert rows[0].split(" | ")[1] == "PrivateTest acc."
    for row, name in zip(rows[1:], ["scratch_cnn", "resnet50", "mobilenetv2", "inceptionv3", "ensemble"]):
        card = read_model_card(models_dir / f"{name}.keras")
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[0] == card["display_name"]
        assert cells[1] == f"{100 * card['metrics']['test']['plain']['accuracy']:.1f} %"
        assert float(cells[7]) > 0, "latency per face"
    assert (run_dir / "reports" / "comparison" / "results.md").read_text().startswith("| model |")


def test_a_notebook_continues_a_saved_model_as_a_second_stage(smoke_run, synthetic_csv, tmp_path):
    """The cpu_continue plan's path: init_model loads the first stage, the card keeps its record."""
    _, run_dir = smoke_run
    first_path = run_dir / "models" / "scratch_cnn.keras"
    first = read_model_card(first_path)
    plan = tmp_path / "continue.yaml"
    plan.write_text(json.dumps({"notebooks": [{"notebook": "01_scratch_cnn", "parameters": {
        "data_path": str(synthetic_csv), "init_model": str(first_path), "epochs": 2, "batch_size": 32,
        "optimizer": "adam", "learning_rate": 0.0003, "lr_schedule": "cosine", "early_stopping_patience": 0,
        "jit_compile": False, "explain_faces": 2, "output_dir": str(tmp_path / "models"),
        "reports_dir": str(tmp_path / "reports"), "work_dir": str(tmp_path / "work"),
    }}]}))
    completed = _batch(str(plan), "--runs-dir", str(tmp_path / "runs"), timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    card = read_model_card(tmp_path / "models" / "scratch_cnn.keras")
    training = card["training"]
    assert training["continued_from"]["sha256"] == first["file_sha256"]
    assert training["continued_from"]["weights_source"] == first["weights_source"]
    assert training["epochs_run"] == 2 and training["weights_from_epoch"] == 2
    assert training["total_epochs"] == first["training"]["epochs_run"] + 2
    assert training["total_duration_s"] > first["training"]["duration_s"]
    assert [stage["epochs_run"] for stage in training["stages"]] == [first["training"]["epochs_run"]]
    assert card["parameters"]["training"]["lr_schedule"] == "cosine"
    # Two more epochs at a small learning rate keep what the first stage learned (it scored > 0.5).
    assert card["metrics"]["test"]["plain"]["accuracy"] > 0.5


def test_a_notebook_trains_on_ferplus_labels_with_photo_conditions(synthetic_csv, tmp_path):
    """FER+ end to end: every label is the vote's, validation comes from Training, PublicTest is unused."""
    from fer_utils.experiment import load_predictions

    frame = pd.read_csv(synthetic_csv)
    columns = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF"]
    by_emotion = ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]  # FER2013's order
    ferplus_labels = frame["emotion"].replace({0: 1, 1: 0}).to_numpy()  # FER+ swaps angry and disgusted
    votes = np.zeros((len(frame), len(columns)), dtype=int)
    votes[np.arange(len(frame)), [columns.index(by_emotion[e]) for e in ferplus_labels]] = 7
    votes[0] = 0
    votes[0, columns.index("NF")] = 10  # not a face: dropped
    ferplus = tmp_path / "fer2013new.csv"
    pd.DataFrame(votes, columns=columns).assign(Usage=frame["Usage"]).to_csv(ferplus, index=False)

    plan = tmp_path / "ferplus.yaml"
    plan.write_text(json.dumps({"notebooks": [{"notebook": "01_scratch_cnn", "parameters": {
        "data_path": str(synthetic_csv), "ferplus_csv": str(ferplus), "epochs": 25, "batch_size": 32,
        "early_stopping_patience": 0, "reduce_lr_patience": 10,  # it may idle a few epochs before it takes off
        "filters": [16, 32, 64], "dense_units": [64], "dropout": 0.2, "l2": 0.0, "optimizer": "adam",
        "jit_compile": False, "explain_faces": 2, "tta": False,
        "brightness": 0.2, "contrast": 0.2, "blur": 0.2, "jpeg_quality": 50, "occlusion": 0.2,
        "output_dir": str(tmp_path / "models"), "reports_dir": str(tmp_path / "reports"), "work_dir": str(tmp_path / "work"),
    }}]}))
    completed = _batch(str(plan), "--runs-dir", str(tmp_path / "runs"), timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]

    card = read_model_card(tmp_path / "models" / "scratch_cnn.keras")
    assert any("FER+ majority vote" in note for note in card["data"]["notes"])
    usage = frame["Usage"].to_numpy()
    assert card["data"]["dropped"]["ferplus_publictest_unused"] == (usage == "PublicTest").sum()
    sizes = card["data"]["split_sizes"]
    assert sizes["train"] + sizes["val"] == (usage == "Training").sum() - 1 and sizes["val"] == 28
    assert sizes["test"] == (usage == "PrivateTest").sum()
    assert card["parameters"]["augmentation"]["jpeg_quality"] == 50
    assert card["parameters"]["data"]["ferplus_csv"] == str(ferplus)
    # The card's PrivateTest figure is measured against the FER+ labels, and the swap was learned.
    proba = load_predictions(tmp_path / "models" / "scratch_cnn_predictions.npz")["proba"]
    accuracy = float((proba.argmax(axis=1) == ferplus_labels[usage == "PrivateTest"]).mean())
    assert accuracy == pytest.approx(card["metrics"]["test"]["plain"]["accuracy"], abs=1e-6)
    assert accuracy > 0.5  # chance is 1/7

    # Calibration finds the FER+ votes the card names and fits T on the Training slice, not PublicTest.
    from fer_utils.calibration import FITTED_ON_FERPLUS, calibrate_folder

    blocks, errors = calibrate_folder(tmp_path / "models", synthetic_csv, reports_dir=tmp_path / "reports")
    assert not errors and blocks["scratch_cnn"]["fitted_on"] == FITTED_ON_FERPLUS
    assert blocks["scratch_cnn"]["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)
