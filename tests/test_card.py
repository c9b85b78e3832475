"""Model cards (issue #20): one typed reader and writer, and one source for every table's figures.

Every shipped card reads and writes back byte for byte; an older card still loads with defaults;
the README's results table, the demo's About panel and ``fer_utils.compare`` show each shipped
model's accuracy and size with the same figures, in the same unit (decimal MB).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from fer_utils.card import (
    README_END, README_START, ModelCard, main, megabytes, percent, read_cards, readme_table, replace_results_table,
    table_latencies,
)

ROOT = Path(__file__).resolve().parent.parent
SAVED_MODELS = ROOT / "saved_models"
CARD_FILES = sorted(SAVED_MODELS.glob("*.json"))
CARDS = read_cards(SAVED_MODELS)
shipped = pytest.mark.parametrize("name", list(CARDS))


def _cells(row: str) -> list[str]:
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


# ----------------------------------------------------------------------------- reading and writing
@pytest.mark.parametrize("card_file", CARD_FILES, ids=lambda path: path.stem)
def test_every_shipped_card_round_trips_exactly(card_file, tmp_path):
    text = card_file.read_text()
    card = ModelCard.read(card_file)
    assert card.to_dict() == json.loads(text)
    assert list(card.to_dict()) == list(json.loads(text)), "keys keep their order"
    assert card.to_json() == text
    written = card.write(tmp_path / card_file.name)
    assert written.read_bytes() == card_file.read_bytes()
    assert ModelCard.from_dict(card.to_dict()) == card
    assert card.model_name == card_file.stem and card.file == f"{card_file.stem}.keras"


def test_the_typed_fields_hold_the_cards_keys():
    card = CARDS["scratch_cnn"]
    assert card.extra == {}, "every key the project writes has a field"
    assert card.name == "scratch_cnn" and card.kind == "scratch_cnn" and card.label() == "Scratch CNN"
    assert card.class_names == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert card.fitting_class_names(7) == tuple(card.class_names) and card.fitting_class_names(6) is None
    assert card.class_set == 7 and card.data_sha256 == card.data["sha256"]
    assert card.size_mb == round(card.file_size_bytes / 1e6, 1) == 5.6
    assert card.stored_weights_dtype == "float16"
    assert card.converted_from_sha256 == card.storage["before"]["file_sha256"]
    provenance = card.provenance()
    assert provenance["weights_source"].startswith("random initialisation")
    assert provenance["weights_dtype"] == "float16" and provenance["versions"]["tensorflow"] == "2.21.0"
    assert provenance["machine"]["cpu_count"] == 2


def test_a_card_in_the_older_layout_loads_with_defaults():
    """resnet50.json predates ``storage``, ``weights_dtype`` and ``ensemble``; without ``calibration`` too."""
    values = json.loads((SAVED_MODELS / "resnet50.json").read_text())
    values.pop("calibration")
    assert not {"calibration", "storage", "weights_dtype", "ensemble"} & set(values)
    card = ModelCard.from_dict(values)
    assert card.calibration is None and card.storage is None and card.weights_dtype is None and card.ensemble is None
    assert card.temperature == 1.0 and card.calibration_ece() == (None, None)
    assert card.stored_weights_dtype == "float32" and card.converted_from_sha256 is None
    assert not card.is_ensemble and card.ensemble_members == [] and card.member_sha256 is None
    assert card.to_dict() == values and list(card.to_dict()) == list(values), "no default is written back"
    assert card.headline().accuracy == values["metrics"]["test"]["plain"]["accuracy"]
    row = card.about_row("ResNet50")
    assert row.endswith("| as the model gives them (not calibrated) |") and "float16" not in row
    assert "24.1 M params, 97.1 MB" in row


def test_an_early_card_with_few_keys_still_gives_its_figures():
    card = ModelCard.from_dict({"name": "early", "metrics": {"test": {"accuracy": 0.6}}, "file_size_bytes": 2_500_000})
    assert card.metric("test", "plain", "accuracy") == 0.6, "a split without plain/tta blocks is the plain figures"
    assert card.metric("test", "tta", "accuracy") is None and card.metric("val", "plain", "accuracy") is None
    assert card.label() == "early" and card.label("Early CNN") == "Early CNN"
    assert card.training_totals() == (None, None) and card.training_minutes == 0.0 and card.stages == []
    assert card.readme_row() == "| early | 60.0 % |  |  |  |  | 2.5 | 0 |"
    assert _cells(card.about_row("Early"))[1:] == [
        "60.0%", "not evaluated", "not recorded", "not recorded", "2.5 MB", "as the model gives them (not calibrated)"]
    with pytest.raises(ValueError, match="neither its class set nor its class names"):
        card.class_set


def test_unknown_keys_are_kept_where_they_were():
    values = {"name": "m", "license": "CC-BY", "kind": "scratch_cnn", "notes": [], "reviewed_by": None}
    card = ModelCard.from_dict(values)
    assert card.extra == {"license": "CC-BY", "reviewed_by": None}
    assert list(card.to_dict()) == list(values) and card.to_dict() == values


def test_a_key_set_later_goes_last_and_one_changed_stays_in_place():
    card = ModelCard.read(SAVED_MODELS / "resnet50.json")
    keys = list(card.to_dict())
    card.calibration = {"method": "temperature", "temperature": 2.0}
    card.storage = {"before": {}}
    assert list(card.to_dict()) == [*keys, "storage"]
    assert card.temperature == 2.0 and card.calibration_ece() == (None, None)
    assert card.temperature_for(mirrored=True) == 2.0, "a card without a mirrored T falls back to the plain one"
    card.calibration = {"method": "temperature", "temperature": 2.0, "test_ece_before": 0.1, "test_ece_after": 0.02,
                        "mirrored": {"temperature": 1.5, "test_ece_before": 0.05, "test_ece_after": 0.01}}
    assert card.temperature_for(mirrored=True) == 1.5 and card.temperature == 2.0
    assert card.calibration_ece(mirrored=True) == (0.05, 0.01) and card.calibration_ece() == (0.1, 0.02)
    assert card.about_row("ResNet50").endswith(
        "| calibrated, T = 2.00: ECE 0.100 -> 0.020; photos (face and mirror averaged), T = 1.50: ECE 0.050 -> 0.010 |")
    fresh = ModelCard(name="m", kind="scratch_cnn", notes=[])
    assert fresh.to_dict() == {"name": "m", "kind": "scratch_cnn", "notes": []}, "unset fields are not written"


def test_the_card_is_a_read_only_mapping_of_its_json_for_older_code():
    card = CARDS["ensemble"]
    assert card["metrics"] is card.metrics and card.get("no such key") is None
    assert dict(card) == json.loads((SAVED_MODELS / "ensemble.json").read_text())
    assert "ensemble" in card and "weights_dtype" in card and "no such key" not in card and card.is_ensemble
    with pytest.raises(TypeError):
        card["name"] = "other"  # type: ignore[index]
    assert not ModelCard(), "an empty card (a model without one) is falsy, as {} was"


def test_a_broken_card_says_what_is_wrong(tmp_path):
    (tmp_path / "a.json").write_text("{not json")
    (tmp_path / "b.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"its card a\.json is not valid JSON .*fix the card or delete it"):
        ModelCard.read(tmp_path / "a.keras")
    with pytest.raises(ValueError, match=r"its card b\.json holds a JSON list, not an object"):
        ModelCard.read(tmp_path / "b.json")
    with pytest.raises(FileNotFoundError, match="no model card"):
        ModelCard.read(tmp_path / "c.keras")
    assert ModelCard.read_if_present(tmp_path / "c.keras") is None


def test_the_writers_write_what_they_wrote_before(tmp_path):
    """model_card + save_model: the same keys in the same order as the dict cards had."""
    import keras

    from fer_utils import experiment, model_io

    dataset = SimpleNamespace(class_names=("a", "b"), source="/data/fer2013.csv.gz", checksum="c" * 64,
                              split_sizes=lambda: {"train": 2, "val": 1, "test": 1}, dropped={"blank": 0}, notes=[])
    card = experiment.model_card("tiny", "scratch_cnn", dataset=dataset, parameters={"data": {"class_set": 7}},
                                 weights=None, metrics={"test": {"plain": {"accuracy": 0.5}}})
    assert isinstance(card, dict), "notebooks still add keys to it"
    assert list(card) == ["name", "kind", "display_name", "class_names", "input", "weights_source", "parameters", "data",
                          "metrics", "training", "machine", "versions", "created", "notes"]
    assert card["display_name"] == "Scratch CNN (tiny)" and card["training"] == {} and card["notes"] == []
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    path = model_io.save_model(model, tmp_path / "tiny.keras", card)
    written = json.loads((tmp_path / "tiny.json").read_text())
    assert list(written) == [*card, "file", "file_size_bytes", "file_sha256", "weights_dtype", "parameters_total", "saved_at"]
    assert written["file_size_bytes"] == path.stat().st_size and written["parameters_total"] == 10
    assert (tmp_path / "tiny.json").read_text() == json.dumps(written, indent=2) + "\n"
    assert list(card) == list(written)[:14], "save_model does not change the caller's card"


# ----------------------------------------------------------------------------- figures
def test_sizes_are_decimal_megabytes():
    assert megabytes(1_000_000) == 1.0 and megabytes(97_106_000) == 97.1 and megabytes(14_964) == 0.01
    assert CARDS["resnet50"].size_text() == "97.1 MB", "not 92.6 (MiB)"
    assert CARDS["ensemble"].size_text() == "0.02 MB", "the head-only file (15,160 bytes), not 0"
    assert percent(0.6634) == "66.3" and percent(0.70326) == "70.3"


def test_training_totals_and_lineage_of_a_continued_model():
    from fer_utils.experiment import training_totals

    card = CARDS["inceptionv3"]
    assert card.training_totals() == (49, 12189.1) == training_totals(card.training)
    assert card.training_minutes == 203.2 and len(card.stages) == 3
    lineage = card.lineage()
    assert lineage["epochs"] == 49 and lineage["duration_s"] == 12189.1
    assert lineage["val_accuracy"] == card.metrics["val"]["plain"]["accuracy"]
    assert lineage["weights_source"] == card.weights_source
    assert lineage["stages"] == [*card.training["stages"], card.as_stage()]
    assert card.as_stage() == {"epochs_run": 13, "duration_s": card.training["duration_s"],
                               "training": card.parameters["training"], "model": card.parameters["model"],
                               "created": card.created}
    assert ModelCard().lineage()["weights_source"] == "unknown (no model card)"


# ----------------------------------------------------------------------------- the three tables
def _about_row(name: str) -> str:
    """The demo's About row for a shipped model, from demo.about (no model loaded: only its card is read)."""
    from demo.about import about_row
    from fer_utils.serving import LoadedModel

    def stub(card: ModelCard, members=()) -> LoadedModel:
        return LoadedModel(key=card.model_name, display_name=card.label(), path=SAVED_MODELS / card.file_name,
                           card=card, class_names=tuple(card.class_names), model=None, forward=None, members=members)

    card = CARDS[name]
    members = tuple(stub(ModelCard.read(SAVED_MODELS / member)) for member in card.ensemble_members)
    return about_row(stub(card, members))


def _compare_row(name: str, latency_ms: dict[str, float] | None = None) -> tuple[str, dict, str]:
    """compare's Markdown line for the model, its DataFrame row and the table's header."""
    from fer_utils.compare import results_markdown, results_table

    table = results_table(CARDS)
    if latency_ms is not None:  # as compare's CLI adds the latencies it measured
        table["latency_ms"] = [latency_ms.get(model) for model in table.index]
    label = CARDS[name].label()
    lines = results_markdown(table).splitlines()
    return next(line for line in lines if line.startswith(f"| {label} |")), table.loc[label].to_dict(), lines[0]


@shipped
def test_readme_about_and_compare_rows_show_the_same_accuracy_and_size(name):
    card = CARDS[name]
    accuracy, size = percent(card.headline().accuracy), f"{card.size_mb:g}"
    assert accuracy == f"{100 * card.metrics['test']['plain']['accuracy']:.1f}"
    assert size == f"{round(card.file_size_bytes / 1e6, 1 if card.file_size_bytes >= 1e6 else 2):g}"

    readme = card.readme_row()
    compare_line, compare_values, compare_header = _compare_row(name)
    about = _cells(_about_row(name))
    assert readme == compare_line, "the README's row is compare's row (without the measured ms / face)"
    readme_cells, header = _cells(readme), _cells(readme_table(CARDS).splitlines()[0])
    assert readme_cells[header.index("PrivateTest acc.")] == f"{accuracy} %"
    assert about[1] == f"{accuracy}%" + (f" ({percent(card.headline().accuracy_tta)}% with TTA)")
    assert f"{100 * compare_values['accuracy']:.1f}" == accuracy
    # size: one figure, one unit (decimal MB) in all three
    assert readme_cells[header.index("file MB")] == size and f"{compare_values['size_mb']:g}" == size
    assert "file MB" in _cells(compare_header)
    assert re.search(rf"(^|, ){re.escape(size)} MB(,|$)", about[5]), about[5]
    assert "KB" not in about[5] and "MiB" not in about[5]


def test_with_latencies_the_readme_rows_are_still_compares_rows():
    latency = {card.label(): 1.5 + i for i, card in enumerate(CARDS.values())}
    lines = readme_table(CARDS, latency).splitlines()
    assert _cells(lines[0])[-2:] == ["ms / face", "training min"]
    for name, card in CARDS.items():
        row = card.readme_row(latency[card.label()])
        assert row in lines and row == _compare_row(name, latency)[0]
    assert table_latencies("\n".join(lines)) == latency


def test_the_rows_of_two_models_have_these_figures():
    assert CARDS["scratch_cnn"].readme_row() == "| Scratch CNN | 66.3 % | 0.628 | 67.5 % | 0.645 | 2,735,431 | 5.6 | 75.1 |"
    assert CARDS["ensemble"].readme_row() == "| Ensemble | 70.5 % | 0.693 | 71.0 % | 0.701 | 59,504,743 | 0.02 | 8.1 |"
    resnet = _cells(_about_row("resnet50"))
    assert resnet[:2] == ["ResNet50", "62.1% (64.7% with TTA)"]
    assert resnet[5] == "24.1 M params, 97.1 MB" and resnet[6] == (
        "calibrated, T = 1.34: ECE 0.087 -> 0.025; photos (face and mirror averaged), T = 1.19: ECE 0.034 -> 0.020")
    ensemble = _cells(_about_row("ensemble"))
    assert ensemble[3].startswith("a trained head on the probabilities of Scratch CNN, ResNet50, MobileNetV2")
    assert ensemble[5] == "59.5 M params, 0.02 MB"


# ----------------------------------------------------------------------------- python -m fer_utils.card readme
def test_readme_command_rewrites_only_the_table_and_check_says_when_it_differs(tmp_path, capsys):
    readme = tmp_path / "README.md"
    stale = f"# Lab\n\nIntro → text.\n\n{README_START}\n| model |\n|---|\n| old | 1 % |\n{README_END}\n\nAfter.\n"
    readme.write_text(stale, encoding="utf-8")
    args = ["readme", "--models-dir", str(SAVED_MODELS), "--readme", str(readme)]

    assert main([*args, "--check"]) == 1 and readme.read_text(encoding="utf-8") == stale, "--check changes nothing"
    assert main(args) == 0
    text = readme.read_text(encoding="utf-8")
    assert text == f"# Lab\n\nIntro → text.\n\n{README_START}\n{readme_table(CARDS)}\n{README_END}\n\nAfter.\n"
    assert "| ResNet50 | 62.1 % | 0.588 | 64.7 % | 0.622 | 24,115,079 | 97.1 | 68.5 |" in text
    assert main([*args, "--check"]) == 0 and main(args) == 0 and readme.read_text(encoding="utf-8") == text

    readme.write_text(text.replace("| 97.1 |", "| 92.6 |"), encoding="utf-8")
    assert main([*args, "--check"]) == 1

    measured = (f"{README_START}\n| model | PrivateTest acc. | ms / face |\n|---|---|---|\n| ResNet50 | 1 % | 10.5 |\n"
                f"| Ensemble | 2 % | 22.7 |\n{README_END}\n")
    readme.write_text(measured, encoding="utf-8")
    assert main(args) == 0, "the cards' figures are written, the measured ms / face kept"
    assert readme.read_text(encoding="utf-8") == replace_results_table(measured, CARDS)
    rows = {_cells(line)[0]: line for line in readme.read_text(encoding="utf-8").splitlines() if line.startswith("| ")}
    assert rows["ResNet50"] == "| ResNet50 | 62.1 % | 0.588 | 64.7 % | 0.622 | 24,115,079 | 97.1 | 10.5 | 68.5 |"
    assert rows["Ensemble"] == CARDS["ensemble"].readme_row(22.7)
    assert rows["Scratch CNN"] == "| Scratch CNN | 66.3 % | 0.628 | 67.5 % | 0.645 | 2,735,431 | 5.6 |  | 75.1 |"
    capsys.readouterr()
    readme.write_text("# no markers\n", encoding="utf-8")
    assert main(args) == 2 and readme.read_text(encoding="utf-8") == "# no markers\n"
    assert "no <!-- results-table:start -->" in capsys.readouterr().err
    with pytest.raises(ValueError):
        replace_results_table(f"{README_END}\n{README_START}\n", CARDS)


def test_the_readme_table_matches_the_cards():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    if README_START not in text:
        pytest.skip("README.md has no results-table markers yet")
    assert main(["readme", "--check", "--models-dir", str(SAVED_MODELS), "--readme", str(ROOT / "README.md")]) == 0, \
        "run python -m fer_utils.card readme"
    table = text[text.index(README_START) + len(README_START):text.index(README_END)]
    assert table.strip() == readme_table(CARDS, table_latencies(table)), "the cards' rows, with the ms / face measured"


def test_split_metrics_give_the_figures_the_comparison_draws():
    for card in CARDS.values():
        plain = card.split_metrics("test")
        assert plain["accuracy"] == card.metric("test", "plain", "accuracy")
        assert len(plain["confusion_matrix"]) == len(card.class_names)
        assert card.split_metrics("test", "tta")["accuracy"] == card.metric("test", "tta", "accuracy")
    early = ModelCard.from_dict({"name": "old", "metrics": {"test": {"accuracy": 0.5}}})
    assert early.split_metrics("test") == {"accuracy": 0.5} and early.split_metrics("val") == {}
