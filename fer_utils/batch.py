"""Run a plan of notebooks with papermill: ``python -m fer_utils.batch PLAN``.

A plan is a YAML (or JSON) file::

    description: what this plan is for
    defaults:                     # given to every notebook that has the parameter
      output_dir: "{run_dir}/models"
    notebooks:
      - notebook: 01_scratch_cnn.ipynb
        parameters: {epochs: 2}   # must be parameters the notebook declares

A notebook's parameter takes, from weakest to strongest: its default in the notebook, the
plan's ``defaults``, the notebook's own ``parameters`` in the plan, then ``--set NAME=VALUE``
(and ``--data``) on the command line.

``{run_dir}`` stands for this run's folder, ``runs/<timestamp>-<plan>/``, where the executed
copies, each notebook's recorded result, ``batch.json`` (what ran, with which parameters,
and how it ended) and the summary go. Everything is checked before any kernel starts, and a
problem is an error with exit code 2: every parameter name of the plan and of ``--set``
against ``papermill.inspect_notebook``, each ``--set`` value's type against the notebook's
default, and the data given on the command line or in ``$FER2013_CSV`` (it must exist, and a
CSV must have rows for every split the notebooks use). A failed notebook does not stop the
others, and the exit code is 1 if any failed.

A killed run resumes with ``--resume RUN_DIR`` (the same plan and options again): it runs
into that folder, so ``{run_dir}`` paths (the smoke plan's ``work_dir``, where training keeps
its ``BackupAndRestore`` state) are the ones the first run used and training continues from
its last finished epoch; notebooks that already finished with the same parameters are not
run again. Plans whose ``work_dir`` lies outside ``{run_dir}`` (``runs/work``) resume also
when simply run again.
"""

from __future__ import annotations

import argparse
import ast
import datetime as _dt
import difflib
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .files import atomic_write
from .data import USAGE_TO_SPLIT
from .experiment import RESULT_FILE_ENV, project_root, resolve_path

PLANS_DIR = "plans"
PLAN_SUFFIXES = (".yaml", ".yml", ".json")  # what a plan name is looked up with, in this order
NOTEBOOKS_DIR = "notebooks"
RECORD_FILE = "batch.json"  # in the run folder: the plan, and each step's parameters and outcome
DATA_ENV = "FER2013_CSV"

#: The FER2013 ``Usage`` values a notebook's data must have rows for; notebooks not named here
#: train or evaluate, so they need all three (PrivateTest is the test split they report).
ALL_USAGES = tuple(USAGE_TO_SPLIT)  # Training, PublicTest, PrivateTest
NEEDED_USAGES = {"00_data_exploration": ("Training", "PublicTest")}


class PlanError(ValueError):
    """The plan cannot run as written (unknown notebook or parameter, bad value or data, bad file)."""


@dataclass
class Step:
    notebook: Path
    parameters: dict[str, Any]
    declared: dict[str, Any] = field(default_factory=dict, repr=False)  # papermill.inspect_notebook's answer


@dataclass
class PreparedRun:
    """A checked plan, ready to run: its file, the run folder and the steps."""

    plan_path: Path
    run_dir: Path
    steps: list[Step]
    resume: bool = False


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
    """The plan names in ``plans/`` and its subfolders (``plans/shipped/``, ``plans/superseded/``),
    for help texts and errors."""
    root = project_root() / PLANS_DIR
    return sorted({p.stem for p in root.rglob("*") if p.suffix in PLAN_SUFFIXES and p.is_file()})


def find_plan(plan: str | os.PathLike) -> Path:
    """A plan file path, or a plan name (``smoke``, ``cpu``, ``paper``, ...) from ``plans/`` or,
    failing that, from its subfolders (``cpu`` is ``plans/shipped/cpu.yaml``). A name that two
    subfolders share, or a path that does not exist, is a :class:`PlanError`."""
    path = Path(plan)
    if path.is_file():
        return path
    root = project_root() / PLANS_DIR
    name = str(plan)
    if path.name == name and path.suffix not in PLAN_SUFFIXES:  # a bare name, not a path
        for suffix in PLAN_SUFFIXES:
            candidate = root / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
        for suffix in PLAN_SUFFIXES:
            found = sorted(p for p in root.rglob(f"{name}{suffix}") if p.is_file())
            if len(found) > 1:
                where = ", ".join(str(p.relative_to(project_root())) for p in found)
                raise PlanError(f"plan name '{name}' is ambiguous: {where}; give the file path")
            if found:
                return found[0]
    elif path.suffix in PLAN_SUFFIXES and path.stem in shipped_plans():  # e.g. an old path, plans/cpu.yaml
        moved = find_plan(path.stem)
        raise PlanError(f"no plan file '{plan}': the plan '{path.stem}' is {moved.relative_to(project_root())}; "
                        f"run it by name: python -m fer_utils.batch {path.stem}")
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
    data: str | os.PathLike | None = None,
) -> list[Step]:
    """Resolve notebooks and parameters; every unknown name or ill-typed value is an error.

    A parameter's value comes from, the later winning: the notebook's default, the plan's
    ``defaults``, the notebook's own ``parameters`` in the plan, ``overrides`` (``--set``), ``data``
    (``--data``). The plan's problems are listed at once; then every ``overrides`` name must be declared
    by at least one of the selected notebooks, and its value must fit each one's default (see
    :func:`check_value`), else a one-line :class:`PlanError`.
    """
    import papermill

    notebooks_dir = project_root() / NOTEBOOKS_DIR
    defaults = dict(plan.get("defaults") or {})
    given = dict(overrides or {})
    if data is not None:
        given["data_path"] = str(data)
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
        parameters.update({k: v for k, v in given.items() if k in declared})
        steps.append(Step(path, parameters, declared))
    if only:
        missing = sorted(set(only) - {s.notebook.stem for s in steps})
        if missing:
            problems.append(f"--only names notebooks not in the plan: {missing}")
    if problems:
        raise PlanError("the plan does not match the notebooks:\n  " + "\n  ".join(problems))
    _check_overrides(steps, dict(overrides or {}))
    for step in steps:
        step.parameters = _substitute(step.parameters, run_dir)
    return steps


def check_value(name: str, value: Any, default: str) -> tuple[bool, Any, str]:
    """Whether ``value`` fits a parameter whose default in the notebook is the literal ``default``.

    Integers take integers, floats integers or floats (a string such as ``1e-3``, which YAML
    reads as text, is taken as the number), booleans true/false, lists lists and mappings
    mappings; a text or ``None`` default (or one that is not a literal) takes anything. Returns
    (fits, the value to use, what the parameter expects).
    """
    try:
        expected = ast.literal_eval(default)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return True, value, "anything"
    if expected is None or isinstance(expected, str):
        return True, value, "anything"
    if isinstance(expected, bool):
        return isinstance(value, bool), value, "true or false"
    if isinstance(expected, int):
        return isinstance(value, int) and not isinstance(value, bool), value, "an integer"
    if isinstance(expected, float):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        return isinstance(value, (int, float)) and not isinstance(value, bool), value, "a number"
    if isinstance(expected, (list, tuple)):
        return isinstance(value, (list, tuple)), value, "a list, e.g. [1, 2]"
    if isinstance(expected, dict):
        return isinstance(value, dict), value, "a mapping, e.g. {a: 1}"
    return True, value, "anything"


def check_data(steps: list[Step], data: str | os.PathLike | None = None) -> None:
    """Check the data the command line gives before any kernel starts; raise a one-line PlanError.

    ``data`` is the command line's data path (``--data`` or ``--set data_path=``, already in
    the steps' parameters); without one, notebooks whose
    ``data_path`` is empty read ``$FER2013_CSV``, which must then be set. The path must exist; a
    folder (image-folder root) must not be empty; a ``.csv``/``.csv.gz`` must have rows, and rows
    in its ``Usage`` column for every split the selected notebooks need (only that column is
    read). A ``data_path`` the plan file names itself is left to the notebook that loads it.
    """
    wanted: dict[Path, tuple[str, dict[str, tuple[str, ...]]]] = {}
    unset = []
    for step in steps:
        if "data_path" not in step.declared:
            continue
        value = str(step.parameters.get("data_path", _literal(step.declared["data_path"]) or "") or "")
        if data and value:
            label = "--data"
        elif value:
            continue  # the plan's own path: the notebook loads and reports it
        elif os.environ.get(DATA_ENV):
            label, value = DATA_ENV, os.environ[DATA_ENV]
        else:
            unset.append(step.notebook.stem)
            continue
        path = resolve_path(value)
        wanted.setdefault(path, (label, {}))[1][step.notebook.stem] = NEEDED_USAGES.get(step.notebook.stem, ALL_USAGES)
    if unset:
        raise PlanError(f"no FER2013 data for {', '.join(unset)}: pass --data fer2013.csv(.gz) or an image-folder "
                        f"root, or set {DATA_ENV}")
    for path, (label, needs) in wanted.items():
        _check_data_path(path, label, needs)


def prepare_run(
    plan: str | os.PathLike,
    *,
    runs_dir: str | os.PathLike = "runs",
    overrides: dict[str, Any] | None = None,
    only: list[str] | None = None,
    data: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
) -> PreparedRun:
    """Find, read and check a plan and its data, and choose its run folder; nothing is written.

    Without ``resume`` the folder is a new ``runs_dir/<timestamp>-<plan>``; with it, the given
    existing run folder (a path, or a folder name in ``runs_dir``), so the steps' ``{run_dir}``
    paths, their work dirs and training backups among them, are the first run's.
    """
    plan_path = find_plan(plan)
    runs_root = resolve_path(runs_dir)
    if resume is not None:
        run_dir = _resume_dir(resume, runs_root)
        recorded = _read_record(run_dir).get("plan")
        if recorded and recorded != plan_path.stem:
            raise PlanError(f"--resume {run_dir} holds a run of plan '{recorded}', not '{plan_path.stem}'")
    else:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = _unique(runs_root, f"{stamp}-{plan_path.stem}")
    steps = prepare_steps(read_plan(plan_path), run_dir, overrides, only, data)
    check_data(steps, data if data is not None else (overrides or {}).get("data_path"))
    return PreparedRun(plan_path, run_dir, steps, resume is not None)


def run_steps(
    steps: list[Step], run_dir: Path, kernel: str = "python3", progress: bool = True,
    *, skip_done: bool = False, plan_name: str = "",
) -> list[Outcome]:
    """Execute each notebook, keep going past failures, return one outcome each.

    Each step's parameters and outcome go to ``batch.json`` in ``run_dir`` as soon as it ends;
    with ``skip_done``, a step that file records as finished ``ok`` with the same notebook and
    parameters is not run again (its recorded outcome is kept).
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    run_dir.mkdir(parents=True, exist_ok=True)
    record = _read_record(run_dir)
    record["plan"] = plan_name or record.get("plan", "")
    record.setdefault("steps", {})
    _write_record(run_dir, record)
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
        parameters = json.loads(json.dumps(step.parameters, default=str))
        done = record["steps"].get(executed.name, {})
        if (skip_done and done.get("status") == "ok" and done.get("notebook_file") == str(step.notebook)
                and done.get("parameters") == parameters and isinstance(done.get("outcome"), dict)
                and set(done["outcome"]) == set(Outcome.__dataclass_fields__) and executed.exists()):
            outcomes.append(Outcome(**done["outcome"]))
            print(f"[{number}/{len(steps)}] {executed.name}: finished ok in an earlier run into this folder, not run again",
                  flush=True)
            continue
        result_file = run_dir / "results" / f"{stem}.json"
        result_file.unlink(missing_ok=True)
        record["steps"][executed.name] = {"notebook_file": str(step.notebook), "parameters": parameters, "status": "running"}
        _write_record(run_dir, record)
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
        record["steps"][executed.name].update(status=status, outcome=json.loads(json.dumps(outcome.__dict__, default=str)))
        _write_record(run_dir, record)
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
    data: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
) -> tuple[pd.DataFrame, Path]:
    """Check and run a plan (see :func:`prepare_run`); returns the summary table and the run folder."""
    prepared = prepare_run(plan, runs_dir=runs_dir, overrides=overrides, only=only, data=data, resume=resume)
    run_dir = prepared.run_dir
    print(f"plan {prepared.plan_path.name}: {len(prepared.steps)} notebook(s) -> {run_dir}"
          + (" (resumed)" if prepared.resume else ""), flush=True)
    outcomes = run_steps(prepared.steps, run_dir, kernel, progress, skip_done=prepared.resume,
                         plan_name=prepared.plan_path.stem)
    return summarise(outcomes, run_dir), run_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer_utils.batch", description=__doc__.split("\n\n")[0])
    parser.add_argument("plan", help=f"plan file, or a name from plans/: {', '.join(shipped_plans())}")
    parser.add_argument("--data", help="data_path for every notebook that takes one (default: the plan's, else $FER2013_CSV)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="set a parameter for every notebook that declares it, over the plan's own values "
                             "(value parsed as YAML; its type must fit the notebook's default)")
    parser.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="run only these notebooks of the plan (names without .ipynb)")
    parser.add_argument("--runs-dir", default="runs", help="where run folders go (default: runs/, git-ignored)")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue a killed or failed run in its existing folder (a path, or a folder name in "
                             "--runs-dir) with the same plan and options: {run_dir} paths are that folder's, so "
                             "training resumes from its backups, and notebooks that already finished ok with the "
                             "same parameters are not run again")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name (default: python3)")
    parser.add_argument("--no-progress", action="store_true", help="no per-cell progress bar")
    args = parser.parse_args(argv)

    import yaml

    overrides: dict[str, Any] = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            parser.error(f"--set needs NAME=VALUE, got '{item}'")
        try:
            overrides[name.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            print(f"error: --set {item}: the value is not valid YAML ({_first_line(str(error))})", file=sys.stderr)
            return 2
    data = str(Path(args.data).expanduser().resolve()) if args.data else None
    try:
        table, run_dir = run_plan(args.plan, runs_dir=args.runs_dir, overrides=overrides, only=args.only,
                                  kernel=args.kernel, progress=not args.no_progress, data=data, resume=args.resume)
    except PlanError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print()
    print(table.drop(columns=["error"] if not table["error"].any() else []).to_string(index=False))
    print(f"\nexecuted notebooks and summary: {run_dir}")
    failed = table[table["status"] != "ok"]
    for _, row in failed.iterrows():
        print(f"FAILED {row['notebook']}: {row['error']}", file=sys.stderr)
    if len(failed):
        print(f"to run the failed notebooks again into the same folder, add: --resume {run_dir}", file=sys.stderr)
    return 1 if len(failed) else 0


def _check_overrides(steps: list[Step], overrides: dict[str, Any]) -> None:
    """Every ``--set`` name must be declared by a selected notebook, its value fit each default."""
    declared = sorted({name for step in steps for name in step.declared})
    problems = []
    for name, value in overrides.items():
        takers = [step for step in steps if name in step.declared]
        if not takers:
            close = difflib.get_close_matches(name, declared, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; they declare {', '.join(declared)}"
            problems.append(f"--set {name}: no selected notebook declares '{name}'{hint}")
            continue
        for step in takers:
            fits, coerced, expected = check_value(name, value, step.declared[name].get("default", ""))
            if not fits:
                problems.append(f"--set {name}={_yaml_text(value)}: {step.notebook.name} wants {expected} "
                                f"(default {step.declared[name].get('default')}), not {_kind(value)}")
                break
            step.parameters[name] = coerced
    if problems:
        raise PlanError("; ".join(problems))


def _check_data_path(path: Path, label: str, needs: dict[str, tuple[str, ...]]) -> None:
    where = f"{label} '{path}'"
    if not path.exists():
        raise PlanError(f"{where} does not exist: give fer2013.csv(.gz) or an image-folder root")
    if path.is_dir():
        if not any(path.iterdir()):
            raise PlanError(f"{where} is an empty folder: an image-folder root holds train/ and test/ folders")
        return
    if not path.name.endswith((".csv", ".csv.gz")):
        raise PlanError(f"{where} is neither a .csv/.csv.gz file nor a folder of images")
    try:
        usages = pd.read_csv(path, usecols=lambda column: column.strip() == "Usage", dtype=str,
                             keep_default_na=False).squeeze("columns")
    except pd.errors.EmptyDataError:
        raise PlanError(f"{where} is empty: a FER2013 CSV has the header emotion,pixels,Usage and one row per face") from None
    except (UnicodeDecodeError, pd.errors.ParserError, OSError, EOFError, ValueError) as error:
        raise PlanError(f"{where} could not be read as a FER2013 CSV: {_first_line(str(error))}") from None
    if not isinstance(usages, pd.Series):
        raise PlanError(f"{where} has no Usage column; FER2013's CSV has emotion,pixels,Usage")
    if usages.empty:
        raise PlanError(f"{where} has a header but no rows")
    counts = Counter(usages.str.strip())
    lacking = [usage for usage in ALL_USAGES if not counts[usage] and any(usage in need for need in needs.values())]
    if lacking:
        users = [stem for stem, need in needs.items() if set(lacking) & set(need)]
        raise PlanError(f"{where} has no {' or '.join(lacking)} rows in its Usage column, which {', '.join(users)} "
                        f"need{'s' if len(users) == 1 else ''} (found {dict(sorted(counts.items())) or 'none'})")


def _resume_dir(resume: str | os.PathLike, runs_root: Path) -> Path:
    given = Path(resume).expanduser()
    candidates = [given] if given.is_absolute() else list(dict.fromkeys(
        [Path.cwd() / given, runs_root / given, project_root() / given]))
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    raise PlanError(f"--resume {resume}: no such run folder (looked in {', '.join(str(c.parent) for c in candidates)})")


def _read_record(run_dir: Path) -> dict[str, Any]:
    try:
        record = json.loads((run_dir / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _write_record(run_dir: Path, record: dict[str, Any]) -> None:
    with atomic_write(run_dir / RECORD_FILE) as partial:
        partial.write_text(json.dumps(record, indent=2, default=str))


def _literal(parameter: dict[str, Any]) -> Any:
    try:
        return ast.literal_eval(parameter.get("default", ""))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "text"
    return {int: "an integer", float: "a number", list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def _yaml_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


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
