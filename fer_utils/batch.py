"""Run a plan of notebooks with papermill: ``python -m fer_utils.batch PLAN``.

A plan is a YAML (or JSON) file::

    description: what this plan is for
    defaults:                     # given to every notebook that has the parameter
      output_dir: "{run_dir}/models"
    notebooks:
      - notebook: 01_scratch_cnn.ipynb
        parameters: {epochs: 2}   # must be parameters the notebook declares

``{run_dir}`` stands for this run's folder, ``runs/<timestamp>/``, where the executed
copies, each notebook's recorded result and the summary go. Every parameter name is
checked against ``papermill.inspect_notebook`` before anything runs, a failed notebook
does not stop the others, and the exit code is 1 if any failed.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .experiment import RESULT_FILE_ENV, project_root

PLANS_DIR = "plans"
PLAN_SUFFIXES = (".yaml", ".yml", ".json")  # what a plan name is looked up with, in this order
NOTEBOOKS_DIR = "notebooks"


class PlanError(ValueError):
    """The plan cannot run as written (unknown notebook or parameter, bad file)."""


@dataclass
class Step:
    notebook: Path
    parameters: dict[str, Any]


@dataclass
class Outcome:
    notebook: str
    status: str
    seconds: float
    key_metric: str = ""
    value: Any = None
    outputs: list[str] = field(default_factory=list)
    error: str = ""
    executed: str = ""


def shipped_plans() -> list[str]:
    """The plan names in ``plans/``, for help texts and errors."""
    return sorted({p.stem for p in (project_root() / PLANS_DIR).glob("*") if p.suffix in PLAN_SUFFIXES})


def find_plan(plan: str | os.PathLike) -> Path:
    """A plan file path, or a plan name from ``plans/`` (``smoke``, ``cpu``, ``paper``, ...)."""
    path = Path(plan)
    if path.is_file():
        return path
    for suffix in PLAN_SUFFIXES:
        candidate = project_root() / PLANS_DIR / f"{plan}{suffix}"
        if candidate.is_file():
            return candidate
    raise PlanError(f"no plan '{plan}': give a file path or one of {', '.join(shipped_plans()) or 'none found'}")


def read_plan(path: str | os.PathLike) -> dict[str, Any]:
    import yaml

    path = Path(path)
    try:
        plan = yaml.safe_load(path.read_text())  # JSON is valid YAML
    except yaml.YAMLError as error:
        raise PlanError(f"plan '{path}' is not valid YAML/JSON: {error}") from None
    if not isinstance(plan, dict) or not isinstance(plan.get("notebooks"), list) or not plan["notebooks"]:
        raise PlanError(f"plan '{path}' needs a non-empty 'notebooks' list")
    return plan


def prepare_steps(
    plan: dict[str, Any],
    run_dir: Path,
    overrides: dict[str, Any] | None = None,
    only: list[str] | None = None,
) -> list[Step]:
    """Resolve notebooks and parameters; every unknown name is an error, listed at once."""
    import papermill

    notebooks_dir = project_root() / NOTEBOOKS_DIR
    defaults = dict(plan.get("defaults") or {})
    defaults.update(overrides or {})
    steps, problems = [], []
    for entry in plan["notebooks"]:
        if isinstance(entry, str):
            entry = {"notebook": entry}
        name = entry.get("notebook", "")
        path = Path(name) if Path(name).is_absolute() else notebooks_dir / name
        if path.suffix != ".ipynb":
            path = path.with_suffix(".ipynb")
        if only and path.stem not in only:
            continue
        if not path.is_file():
            problems.append(f"{name}: notebook not found at {path}")
            continue
        declared = papermill.inspect_notebook(str(path))
        own = dict(entry.get("parameters") or {})
        unknown = sorted(set(own) - set(declared))
        if unknown:
            problems.append(f"{path.name}: unknown parameter(s) {unknown}; it declares {sorted(declared)}")
        parameters = {k: v for k, v in defaults.items() if k in declared}
        parameters.update(own)
        steps.append(Step(path, _substitute(parameters, run_dir)))
    if only:
        missing = sorted(set(only) - {s.notebook.stem for s in steps})
        if missing:
            problems.append(f"--only names notebooks not in the plan: {missing}")
    if problems:
        raise PlanError("the plan does not match the notebooks:\n  " + "\n  ".join(problems))
    return steps


def run_steps(steps: list[Step], run_dir: Path, kernel: str = "python3", progress: bool = True) -> list[Outcome]:
    """Execute each notebook, keep going past failures, return one outcome each."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    run_dir.mkdir(parents=True, exist_ok=True)
    outcomes = []
    seen: Counter[str] = Counter()
    for number, step in enumerate(steps, start=1):
        # A plan may run one notebook twice (two CNNs with other parameters): the second copy
        # is 01_scratch_cnn-2.ipynb, so it does not overwrite the first one's record.
        stem = step.notebook.stem
        seen[stem] += 1
        if seen[stem] > 1:
            stem += f"-{seen[stem]}"
        executed = run_dir / f"{stem}.ipynb"
        result_file = run_dir / "results" / f"{stem}.json"
        result_file.unlink(missing_ok=True)
        print(f"[{number}/{len(steps)}] {executed.name} {json.dumps(step.parameters, default=str)}", flush=True)
        os.environ[RESULT_FILE_ENV] = str(result_file)
        started = time.perf_counter()
        status, error = "ok", ""
        try:
            papermill.execute_notebook(
                str(step.notebook), str(executed), parameters=step.parameters, kernel_name=kernel,
                cwd=str(step.notebook.parent), progress_bar=progress, request_save_on_cancel=False,
            )
        except PapermillExecutionError as failure:
            status = "failed"
            error = f"cell {failure.exec_count}: {failure.ename}: {_first_line(failure.evalue)}"
        except Exception as failure:  # kernel death, bad notebook JSON, missing kernel
            status = "failed"
            error = f"{type(failure).__name__}: {_first_line(str(failure))}"
        finally:
            os.environ.pop(RESULT_FILE_ENV, None)
        seconds = time.perf_counter() - started
        recorded = json.loads(result_file.read_text()) if result_file.exists() else {}
        outcome = Outcome(
            executed.name, status, seconds, recorded.get("key_metric", ""), recorded.get("value"),
            recorded.get("outputs", []), error, str(executed) if executed.exists() else "",
        )
        outcomes.append(outcome)
        print(f"    {status} in {seconds:.0f} s" + (f": {error}" if error else ""), flush=True)
    return outcomes


def summarise(outcomes: list[Outcome], run_dir: Path) -> pd.DataFrame:
    """The table printed at the end and saved as ``summary.csv``/``summary.md``."""
    table = pd.DataFrame([{
        "notebook": o.notebook,
        "status": o.status,
        "duration_s": round(o.seconds, 1),
        "key_metric": f"{o.key_metric} = {_format(o.value)}" if o.key_metric else "",
        "outputs": ", ".join(_short(p, run_dir) for p in o.outputs) or "",
        "error": o.error,
    } for o in outcomes])
    table.to_csv(run_dir / "summary.csv", index=False)
    (run_dir / "summary.md").write_text(_markdown(table))
    return table


def run_plan(
    plan: str | os.PathLike,
    *,
    runs_dir: str | os.PathLike = "runs",
    overrides: dict[str, Any] | None = None,
    only: list[str] | None = None,
    kernel: str = "python3",
    progress: bool = True,
) -> tuple[pd.DataFrame, Path]:
    """Check and run a plan; returns the summary table and the run folder."""
    plan_path = find_plan(plan)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = _unique(Path(runs_dir) if Path(runs_dir).is_absolute() else project_root() / runs_dir, f"{stamp}-{plan_path.stem}")
    steps = prepare_steps(read_plan(plan_path), run_dir, overrides, only)
    print(f"plan {plan_path.name}: {len(steps)} notebook(s) -> {run_dir}", flush=True)
    outcomes = run_steps(steps, run_dir, kernel, progress)
    return summarise(outcomes, run_dir), run_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer_utils.batch", description=__doc__.split("\n\n")[0])
    parser.add_argument("plan", help=f"plan file, or a name from plans/: {', '.join(shipped_plans())}")
    parser.add_argument("--data", help="data_path for every notebook that takes one (default: the plan's, else $FER2013_CSV)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override a parameter for every notebook that declares it (value parsed as YAML)")
    parser.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="run only these notebooks of the plan (names without .ipynb)")
    parser.add_argument("--runs-dir", default="runs", help="where run folders go (default: runs/, git-ignored)")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name (default: python3)")
    parser.add_argument("--no-progress", action="store_true", help="no per-cell progress bar")
    args = parser.parse_args(argv)

    import yaml

    overrides: dict[str, Any] = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set needs NAME=VALUE, got '{item}'")
        overrides[name.strip()] = yaml.safe_load(value)
    if args.data:
        overrides["data_path"] = str(Path(args.data).resolve())
    try:
        table, run_dir = run_plan(args.plan, runs_dir=args.runs_dir, overrides=overrides, only=args.only,
                                  kernel=args.kernel, progress=not args.no_progress)
    except PlanError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print()
    print(table.drop(columns=["error"] if not table["error"].any() else []).to_string(index=False))
    print(f"\nexecuted notebooks and summary: {run_dir}")
    failed = table[table["status"] != "ok"]
    for _, row in failed.iterrows():
        print(f"FAILED {row['notebook']}: {row['error']}", file=sys.stderr)
    return 1 if len(failed) else 0


def _substitute(value: Any, run_dir: Path) -> Any:
    if isinstance(value, str):
        return value.replace("{run_dir}", str(run_dir))
    if isinstance(value, list):
        return [_substitute(v, run_dir) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, run_dir) for k, v in value.items()}
    return value


def _unique(parent: Path, name: str) -> Path:
    candidate, n = parent / name, 1
    while candidate.exists():
        n += 1
        candidate = parent / f"{name}-{n}"
    return candidate


def _first_line(text: str) -> str:
    text = (text or "").strip()
    return text.splitlines()[0][:300] if text else ""


def _format(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _short(path: str, run_dir: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(run_dir.resolve()))
    except ValueError:
        return str(path)


def _markdown(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns) + "\n"
    rows = "".join("| " + " | ".join(str(v).replace("|", "/") for v in row) + " |\n" for row in table.itertuples(index=False))
    return header + rows


if __name__ == "__main__":
    sys.exit(main())
