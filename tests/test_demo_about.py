"""The About panel (what the cards say, missing keys tolerated) and the page without models: missing
models listed, none at all exits 1 from the command line, the module-level demo still builds.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from demo_fixtures import trained_models_dir  # noqa: E402


@pytest.mark.slow
def test_about_panel_reads_cards_and_tolerates_missing_keys(models):
    from demo.about import about_markdown

    text = about_markdown(models)
    assert "PrivateTest" in text and "62.5% (64.0% with TTA)" in text
    assert "random initialisation (weights=None)" in text
    mobilenet_row = next(line for line in text.splitlines() if line.startswith("| MobileNetV2"))
    assert "not evaluated" in mobilenet_row and "not recorded" in mobilenet_row
    rows = {name: next(line for line in text.splitlines() if line.startswith(f"| {name} |")) for name in ("Scratch CNN", "ResNet50")}
    assert "weights stored as float16" in rows["Scratch CNN"] and "float16" not in rows["ResNet50"]


@pytest.mark.slow
def test_missing_models_are_listed_and_none_at_all_exits_1(tmp_path, capsys):
    from demo.app import build_demo, main
    from fer_utils.serving import load_models

    (tmp_path / "partial").mkdir()
    shutil.copy(trained_models_dir() / "scratch_cnn.keras", tmp_path / "partial")
    (tmp_path / "partial" / "resnet50.keras").write_bytes(b"not a keras file")
    partial = load_models(tmp_path / "partial")
    assert list(partial.models) == ["scratch_cnn"]
    assert "could not be loaded" in partial.missing["resnet50"]
    assert partial.missing["ensemble"] == "ensemble.keras not found"
    assert build_demo(models=partial) is not None

    (tmp_path / "empty").mkdir()
    assert main(["--models-dir", str(tmp_path / "empty")]) == 1
    assert "No models found" in capsys.readouterr().err
    assert build_demo(tmp_path / "empty") is not None  # the page still builds, with a message


def test_module_level_demo_imports_with_an_empty_models_dir(tmp_path, monkeypatch):
    import gradio as gr

    import demo.app as app

    monkeypatch.setattr(app, "default_models_dir", lambda: tmp_path)
    monkeypatch.setattr(app, "_lazy_demo", None)
    assert isinstance(app.demo, gr.Blocks)
    assert "No models found" in json.dumps(app.demo.config)
