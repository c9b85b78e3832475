"""python -m fer_utils.batch: --set precedence, the checks made before any kernel starts, --resume.

Everything here but the last test runs without a Jupyter kernel: the checks must fail fast, so
the CLI calls get a short timeout (the code before these fixes started kernels and ran for minutes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from synthetic import write_synthetic_fer_csv

from fer_utils import batch
from fer_utils.batch import PlanError, find_plan, prepare_steps, read_plan

ROOT = Path(__file__).resolve().parents[1]
TINY = (("Training", 1, 11), ("PublicTest", 1, 12), ("PrivateTest", 1, 13))  # 7 faces per split


def _batch(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "fer_utils.batch", *args, "--no-progress"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )


def _error_lines(completed: subprocess.CompletedProcess) -> list[str]:
    """stderr without TensorFlow's start-up log lines."""
    noise = ("I0000", "W0000", "E0000", "WARNING: All log messages", "To enable the following")
    return [line for line in completed.stderr.splitlines() if line.strip() and not line.startswith(noise)]


def _assert_usage_error(completed: subprocess.CompletedProcess, runs: Path, *fragments: str) -> str:
    """Exit 2, one line of error naming every fragment, no traceback and no run folder (no kernel)."""
    lines = _error_lines(completed)
    assert completed.returncode == 2, completed.stdout[-2000:] + completed.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "Traceback" not in completed.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not getattr(completed, "kernels", []), "no notebook may run"
    assert not runs.exists(), "nothing may run (run_steps makes the run folder before the first kernel)"
    return lines[0]


@pytest.fixture()
def main(monkeypatch, capsys):
    """``python -m fer_utils.batch ARGS`` in this process (no TensorFlow start-up per call); any
    notebook execution is recorded, so a test can assert that no kernel was started."""
    import papermill

    started = []
    monkeypatch.setattr(papermill, "execute_notebook", lambda source, output, **_: started.append(output))

    def run(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()
        code = batch.main([*args, "--no-progress"])
        out, err = capsys.readouterr()
        completed = subprocess.CompletedProcess(args, code, out, err)
        completed.kernels = list(started)
        return completed

    return run


@pytest.fixture(scope="module")
def tiny_csv(tmp_path_factory) -> Path:
    return write_synthetic_fer_csv(tmp_path_factory.mktemp("data") / "tiny.csv", splits=TINY)


@pytest.fixture()
def typed_notebook(tmp_path) -> Path:
    """A notebook whose parameters cell has one default of every kind (no kernel is needed to inspect it)."""
    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(
        'count = 3\nrate = 0.5\nflag = True\nname = "x"\nanything = None\nsizes = [1, 2]\n'
        'data_path = ""\nwork_dir = "runs/work"\n'
    )
    cell.metadata["tags"] = ["parameters"]
    notebook.cells = [cell, nbformat.v4.new_code_cell("print(count)")]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "typed.ipynb"
    nbformat.write(notebook, path)
    return path


def _typed_plan(notebook: Path) -> dict:
    return {"notebooks": [{"notebook": str(notebook), "parameters": {"count": 4}}]}


# ----------------------------------------------------------------------------- 1. --set wins


def test_set_wins_over_the_plans_own_per_notebook_value(tmp_path):
    """README's `cpu --only 01_scratch_cnn --set epochs=5 --set limit=2000` must train 5 epochs, not the plan's 30."""
    (step,) = prepare_steps(read_plan(find_plan("cpu")), tmp_path, {"epochs": 5, "limit": 2000}, ["01_scratch_cnn"])
    assert step.parameters["epochs"] == 5 and step.parameters["limit"] == 2000
    assert step.parameters["time_limit_minutes"] == 60, "the plan's other values stay"

    steps = prepare_steps(read_plan(find_plan("smoke")), tmp_path, {"epochs": 40})
    epochs = {s.notebook.stem: s.parameters.get("epochs") for s in steps}
    assert epochs == {"00_data_exploration": None, "01_scratch_cnn": 40, "02_resnet50": 40, "03_mobilenetv2": 40,
                      "04_inceptionv3": 40, "05_ensemble": 40, "06_compare_models": None}


def test_precedence_is_notebook_default_then_plan_defaults_then_plan_step_then_set(tmp_path):
    steps = {s.notebook.stem: s.parameters for s in prepare_steps(read_plan(find_plan("smoke")), tmp_path)}
    assert steps["01_scratch_cnn"]["epochs"] == 15, "the step's own value beats the plan's defaults"
    assert steps["02_resnet50"]["epochs"] == 1, "the plan's defaults beat the notebook's 30"
    assert "tta" not in steps["02_resnet50"], "unset parameters keep the notebook's default"
    steps = {s.notebook.stem: s.parameters for s in prepare_steps(read_plan(find_plan("smoke")), tmp_path, {"batch_size": 8})}
    assert steps["01_scratch_cnn"]["batch_size"] == steps["05_ensemble"]["batch_size"] == 8


def test_data_wins_over_a_plans_own_data_path(typed_notebook, tmp_path):
    plan = {"notebooks": [{"notebook": str(typed_notebook), "parameters": {"data_path": "plan.csv"}}]}
    (step,) = prepare_steps(plan, tmp_path, data="/given.csv")
    assert step.parameters["data_path"] == "/given.csv"


# ----------------------------------------------------------------------------- 2. unknown --set names


def test_unknown_set_name_is_an_error_before_anything_runs(tiny_csv, tmp_path):
    runs = tmp_path / "runs"
    completed = _batch("smoke", "--data", str(tiny_csv), "--set", "epochz=5", "--runs-dir", str(runs))
    line = _assert_usage_error(completed, runs, "--set epochz", "no selected notebook declares 'epochz'")
    assert "did you mean 'epochs'?" in line


def test_a_set_name_only_unselected_notebooks_declare_is_an_error(tmp_path):
    with pytest.raises(PlanError, match=r"--set latency_repeats: no selected notebook declares"):
        prepare_steps(read_plan(find_plan("smoke")), tmp_path, {"latency_repeats": 3}, ["01_scratch_cnn"])
    (step,) = prepare_steps(read_plan(find_plan("smoke")), tmp_path, {"latency_repeats": 5}, ["06_compare_models"])
    assert step.parameters["latency_repeats"] == 5


# ----------------------------------------------------------------------------- 3. values and data


def test_ill_typed_set_value_is_an_error_before_any_kernel_starts(main, tiny_csv, tmp_path):
    runs = tmp_path / "runs"
    completed = main("smoke", "--data", str(tiny_csv), "--set", "batch_size=abc", "--runs-dir", str(runs))
    _assert_usage_error(completed, runs, "--set batch_size=abc", "wants an integer", "not text")


@pytest.mark.parametrize(("name", "value", "fits"), [
    ("count", 5, True), ("count", "abc", False), ("count", 2.5, False), ("count", True, False), ("count", None, False),
    ("rate", 1, True), ("rate", 0.25, True), ("rate", "fast", False), ("rate", False, False),
    ("flag", False, True), ("flag", 1, False), ("flag", "yes please", False),
    ("name", "y", True), ("name", 3, True), ("name", None, True), ("name", [1], True),
    ("anything", 1, True), ("anything", "x", True), ("anything", [1], True),
    ("sizes", [3], True), ("sizes", 3, False),
])
def test_set_values_are_checked_against_the_notebooks_defaults(typed_notebook, tmp_path, name, value, fits):
    if fits:
        (step,) = prepare_steps(_typed_plan(typed_notebook), tmp_path, {name: value})
        assert step.parameters[name] == value
    else:
        with pytest.raises(PlanError, match=rf"^--set {name}=.*: typed.ipynb wants .*\(default .*\), not "):
            prepare_steps(_typed_plan(typed_notebook), tmp_path, {name: value})


def test_a_float_parameter_takes_yaml_scientific_notation_as_a_number(typed_notebook, tmp_path):
    """PyYAML reads 1e-3 as text; a float parameter takes it as the number it means."""
    (step,) = prepare_steps(_typed_plan(typed_notebook), tmp_path, {"rate": "1e-3"})
    assert step.parameters["rate"] == 0.001 and isinstance(step.parameters["rate"], float)


def test_every_bad_set_is_named_on_one_line(typed_notebook, tmp_path):
    with pytest.raises(PlanError) as caught:
        prepare_steps(_typed_plan(typed_notebook), tmp_path, {"count": "x", "flag": 2, "cuont": 1})
    message = str(caught.value)
    assert "\n" not in message
    assert "--set count=x" in message and "--set flag=2" in message and "did you mean 'count'?" in message


def test_missing_data_is_an_error_before_any_kernel_starts(main, tmp_path):
    runs, missing = tmp_path / "runs", tmp_path / "nowhere" / "fer2013.csv"
    completed = main("smoke", "--data", str(missing), "--runs-dir", str(runs))
    _assert_usage_error(completed, runs, f"--data '{missing}' does not exist")


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_a_csv_without_a_split_the_plan_needs_is_an_error_before_any_kernel_starts(main, tmp_path, suffix):
    data = write_synthetic_fer_csv(tmp_path / f"no_private{suffix}", splits=TINY[:2])
    runs = tmp_path / "runs"
    completed = main("smoke", "--data", str(data), "--runs-dir", str(runs))
    _assert_usage_error(completed, runs, str(data), "has no PrivateTest rows", "01_scratch_cnn", "05_ensemble")


def test_the_split_check_asks_only_for_what_the_selected_notebooks_use(tmp_path):
    no_private = write_synthetic_fer_csv(tmp_path / "no_private.csv", splits=TINY[:2])
    plan = read_plan(find_plan("smoke"))
    batch.check_data(prepare_steps(plan, tmp_path, only=["00_data_exploration"], data=no_private), no_private)
    batch.check_data(prepare_steps(plan, tmp_path, only=["06_compare_models"], data=no_private), no_private)  # no data_path
    no_public = write_synthetic_fer_csv(tmp_path / "no_public.csv", splits=(TINY[0], TINY[2]))
    with pytest.raises(PlanError, match="has no PublicTest rows in its Usage column, which 00_data_exploration needs"):
        batch.check_data(prepare_steps(plan, tmp_path, only=["00_data_exploration"], data=no_public), no_public)


def test_an_empty_csv_is_an_error_that_names_the_file(main, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    runs = tmp_path / "runs"
    completed = main("smoke", "--data", str(empty), "--runs-dir", str(runs))
    _assert_usage_error(completed, runs, f"'{empty}' is empty")
    header_only = tmp_path / "header_only.csv"
    header_only.write_text("emotion,pixels,Usage\n")
    with pytest.raises(PlanError, match=f"'{header_only}' has a header but no rows"):
        batch.check_data(prepare_steps(read_plan(find_plan("smoke")), tmp_path, data=header_only), header_only)


def test_a_csv_without_a_usage_column_is_an_error(tmp_path):
    bad = tmp_path / "no_usage.csv"
    bad.write_text("emotion,pixels\n0,1 2 3\n")
    with pytest.raises(PlanError, match=f"'{bad}' has no Usage column"):
        batch.check_data(prepare_steps(read_plan(find_plan("smoke")), tmp_path, data=bad), bad)


def test_an_image_folder_root_only_needs_to_exist_and_hold_something(tmp_path):
    root = tmp_path / "faces"
    root.mkdir()
    steps = prepare_steps(read_plan(find_plan("smoke")), tmp_path, data=root)
    with pytest.raises(PlanError, match=f"'{root}' is an empty folder"):
        batch.check_data(steps, root)
    (root / "train").mkdir()
    batch.check_data(steps, root)


def test_fer2013_csv_is_checked_when_the_plan_leaves_data_path_empty(tmp_path, monkeypatch):
    steps = prepare_steps(read_plan(find_plan("cpu")), tmp_path, only=["01_scratch_cnn"])
    monkeypatch.delenv("FER2013_CSV", raising=False)
    with pytest.raises(PlanError, match="no FER2013 data for 01_scratch_cnn: pass --data"):
        batch.check_data(steps)
    monkeypatch.setenv("FER2013_CSV", str(tmp_path / "gone.csv.gz"))
    with pytest.raises(PlanError, match=r"FER2013_CSV '.*gone.csv.gz' does not exist"):
        batch.check_data(steps)


def test_a_data_path_the_plan_names_itself_is_left_to_the_notebook(typed_notebook, tmp_path, monkeypatch):
    """tests/test_notebooks.py's failing-notebook test relies on it: the notebook reports the missing file."""
    monkeypatch.delenv("FER2013_CSV", raising=False)
    plan = {"notebooks": [{"notebook": str(typed_notebook), "parameters": {"data_path": str(tmp_path / "gone.csv")}}]}
    batch.check_data(prepare_steps(plan, tmp_path))


# ----------------------------------------------------------------------------- 4. resume


def test_resume_reuses_the_run_folder_and_its_work_dirs(tiny_csv, tmp_path):
    runs = tmp_path / "runs"
    first = batch.prepare_run("smoke", runs_dir=runs, data=str(tiny_csv))
    assert first.run_dir.parent == runs and not first.resume
    first.run_dir.mkdir(parents=True)  # what run_steps does before the first kernel starts
    again = batch.prepare_run("smoke", runs_dir=runs, data=str(tiny_csv))
    assert again.run_dir != first.run_dir, "without --resume a run gets a folder of its own"
    for resume in (first.run_dir, first.run_dir.name):  # a path, or a folder name in --runs-dir
        resumed = batch.prepare_run("smoke", runs_dir=runs, data=str(tiny_csv), resume=resume)
        assert resumed.resume and resumed.run_dir == first.run_dir
        assert [s.parameters for s in resumed.steps] == [s.parameters for s in first.steps]
    work_dirs = [Path(s.parameters["work_dir"]) for s in resumed.steps if "work_dir" in s.parameters]
    assert len(work_dirs) == 5 and all(w == first.run_dir / "work" for w in work_dirs)


def test_resume_checks_its_folder_and_plan_before_anything_runs(main, tiny_csv, tmp_path):
    runs = tmp_path / "runs"
    completed = main("smoke", "--data", str(tiny_csv), "--resume", str(tmp_path / "gone"), "--runs-dir", str(runs))
    _assert_usage_error(completed, runs, "--resume", "no such run folder")
    other = runs / "20250101-000000-cpu"
    other.mkdir(parents=True)
    (other / "batch.json").write_text(json.dumps({"plan": "cpu", "steps": {}}))
    with pytest.raises(PlanError, match="holds a run of plan 'cpu', not 'smoke'"):
        batch.prepare_run("smoke", runs_dir=runs, data=str(tiny_csv), resume=other)


def test_resume_runs_only_the_steps_that_did_not_finish(typed_notebook, tmp_path, monkeypatch):
    """A kill leaves a step 'running' in batch.json: that one runs again, finished ones are kept (no kernel here)."""
    import papermill

    executed = []

    def fake_execute(source, output, parameters, **_):
        executed.append((Path(output).name, parameters))
        Path(output).write_text("{}")

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    plan = {"notebooks": [{"notebook": str(typed_notebook), "parameters": {"count": n}} for n in (1, 2, 3)]}
    run_dir = tmp_path / "run"
    steps = prepare_steps(plan, run_dir)
    outcomes = batch.run_steps(steps, run_dir, progress=False, plan_name="typed")
    assert [o.status for o in outcomes] == ["ok"] * 3 and len(executed) == 3
    record = json.loads((run_dir / "batch.json").read_text())
    assert record["plan"] == "typed" and list(record["steps"]) == ["typed.ipynb", "typed-2.ipynb", "typed-3.ipynb"]
    record["steps"]["typed-2.ipynb"]["status"] = "running"  # killed in the middle of the second step
    (run_dir / "batch.json").write_text(json.dumps(record))

    executed.clear()
    steps = prepare_steps(plan, run_dir)
    steps[2].parameters["count"] = 30  # changed parameters: the third runs again too
    outcomes = batch.run_steps(steps, run_dir, progress=False, skip_done=True)
    assert [name for name, _ in executed] == ["typed-2.ipynb", "typed-3.ipynb"]
    assert executed[1][1]["count"] == 30
    assert [(o.notebook, o.status) for o in outcomes] == [("typed.ipynb", "ok"), ("typed-2.ipynb", "ok"), ("typed-3.ipynb", "ok")]
    assert json.loads((run_dir / "batch.json").read_text())["plan"] == "typed"

    executed.clear()
    batch.run_steps(prepare_steps(plan, run_dir), run_dir, progress=False)  # without skip_done everything runs
    assert len(executed) == 3


@pytest.mark.slow  # runs two notebooks
def test_a_failed_run_resumed_into_its_folder_runs_only_what_failed(tiny_csv, tmp_path):
    """End to end with two quick notebooks: the second fails (its data is not there yet), then --resume."""
    late = tmp_path / "late.csv"
    plan = tmp_path / "two.yaml"
    plan.write_text(
        "notebooks:\n"
        f"  - notebook: 00_data_exploration\n    parameters: {{data_path: {tiny_csv}, samples_per_class: 1, reports_dir: '{{run_dir}}/first'}}\n"
        f"  - notebook: 00_data_exploration\n    parameters: {{data_path: {late}, samples_per_class: 1, reports_dir: '{{run_dir}}/second'}}\n"
    )
    runs = tmp_path / "runs"
    completed = _batch(str(plan), "--runs-dir", str(runs), timeout=600)
    assert completed.returncode == 1, completed.stdout[-3000:] + completed.stderr[-3000:]
    (run_dir,) = runs.iterdir()
    assert f"--resume {run_dir}" in completed.stderr
    first_copy = (run_dir / "00_data_exploration.ipynb").stat().st_mtime_ns

    write_synthetic_fer_csv(late, splits=TINY)
    completed = _batch(str(plan), "--runs-dir", str(runs), "--resume", str(run_dir), timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert list(runs.iterdir()) == [run_dir], "no second run folder"
    assert "00_data_exploration.ipynb: finished ok in an earlier run into this folder, not run again" in completed.stdout
    assert (run_dir / "00_data_exploration.ipynb").stat().st_mtime_ns == first_copy
    summary = pd.read_csv(run_dir / "summary.csv")
    assert summary["notebook"].tolist() == ["00_data_exploration.ipynb", "00_data_exploration-2.ipynb"]
    assert summary["status"].tolist() == ["ok", "ok"]
    assert summary["key_metric"].tolist() == ["train_images = 7", "train_images = 7"]
    assert (run_dir / "second" / "data" / "class_distribution.png").stat().st_size > 5_000
