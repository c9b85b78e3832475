"""The "About these models" panel, written from the model cards (any key may be missing)."""

from __future__ import annotations

from typing import Any

from fer_utils.experiment import training_totals

from fer_utils.serving import DISPLAY_NAMES, LoadedModel, ModelSet


def about_markdown(models: ModelSet) -> str:
    """A short table: test accuracy, how each model was trained, where its weights started."""
    lines = [
        "Accuracy and macro-F1 are on the FER2013 **PrivateTest** split, as recorded in each model's card "
        "when it was evaluated; TTA = test-time augmentation (averaging each face with its mirror image).",
        "",
        "| Model | PrivateTest accuracy | Macro-F1 | Weights started from | Training | Size | Probabilities |",
        "|---|---|---|---|---|---|---|",
    ]
    for loaded in models:
        lines.append(_row(loaded))
    for key, reason in models.missing.items():
        lines.append(f"| {DISPLAY_NAMES.get(key, key)} | not loaded | | | {_cell(reason)} | | |")
    lines += [
        "",
        "All five take the same 48x48 grey face; the transfer models resize it inside the model. "
        "The models learned from FER2013's tightly cropped faces, so the app crops the largest face it finds "
        "before predicting. The percentages shown are calibrated where a model's card has a temperature: "
        "fitted on PublicTest so that, say, 70 % answers are right about 70 % of the time (ECE: the expected "
        "gap between confidence and accuracy, 15 bins, on PrivateTest). "
        "These are research models: do not use them to make decisions about people.",
    ]
    return "\n".join(lines)


def _row(loaded: LoadedModel) -> str:
    card = loaded.card or {}
    test = _get(card, "metrics", "test") or {}
    accuracy = _metric(test, "accuracy")
    macro_f1 = _metric(test, "macro_f1")
    return (
        f"| {_cell(loaded.display_name)} | {accuracy} | {macro_f1} | {_cell(_weights(loaded))} "
        f"| {_cell(_training(card))} | {_size(card)} | {_cell(_calibration(loaded))} |"
    )


def _calibration(loaded: LoadedModel) -> str:
    block = (loaded.card or {}).get("calibration") or {}
    before, after = block.get("test_ece_before"), block.get("test_ece_after")
    if loaded.temperature == 1.0 or not isinstance(before, (int, float)) or not isinstance(after, (int, float)):
        return "as the model gives them (not calibrated)"
    return f"calibrated, T = {loaded.temperature:.2f}: ECE {before:.3f} -> {after:.3f}"


def _metric(split: dict[str, Any], name: str) -> str:
    plain = _get(split, "plain", name)
    tta = _get(split, "tta", name)
    if not isinstance(plain, (int, float)):
        return "not evaluated"
    text = f"{plain:.1%}"
    if isinstance(tta, (int, float)):
        text += f" ({tta:.1%} with TTA)"
    return text


def _weights(loaded: LoadedModel) -> str:
    card = loaded.card or {}
    if loaded.is_ensemble:
        names = ", ".join(m.display_name for m in loaded.members)
        if _get(card, "ensemble", "combine") == "mean":
            return f"the mean of the probabilities of {names} (members frozen; no weights of its own)"
        return f"a trained head on the probabilities of {names} (members frozen)"
    source = card.get("weights_source")
    return source if isinstance(source, str) and source else "not recorded"


def _training(card: dict[str, Any]) -> str:
    training = card.get("training") or {}
    if _get(card, "ensemble", "combine") == "mean":
        compared = "learned" in (training.get("val_accuracy_by_combine") or {})
        return "nothing to train: the mean of its members" + (
            ", kept over a trained head for its higher PublicTest accuracy" if compared else "")
    parts = []
    epochs, duration = training_totals(training)
    if isinstance(epochs, int):
        parts.append(f"{epochs} epochs")
    if isinstance(duration, (int, float)):
        parts.append(f"{duration / 60:.0f} min" if duration >= 60 else f"{duration:.0f} s")
    stages = training.get("stages")
    if isinstance(stages, list) and stages:
        parts.append(f"in {len(stages) + 1} stages")
    recipe = card.get("parameters") or {}
    recipe = {**(recipe.get("model") or {}), **(recipe.get("training") or {}), **recipe} if isinstance(recipe, dict) else {}
    for key in ("image_size", "trainable", "optimizer", "learning_rate", "lr_schedule", "batch_size"):
        value = recipe.get(key)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            parts.append(f"{key.replace('_', ' ')} {value}")
    return ", ".join(parts) if parts else "not recorded"


def _size(card: dict[str, Any]) -> str:
    parts = []
    params = card.get("parameters_total")
    if isinstance(params, int):
        parts.append(f"{params / 1e6:.1f} M params" if params >= 100_000 else f"{params:,} params")
    size = card.get("file_size_bytes")
    if isinstance(size, int):
        parts.append(f"{size / 1024 / 1024:.1f} MB" if size >= 1024 * 1024 else f"{size / 1024:.0f} KB")
    if card.get("weights_dtype") == "float16":
        parts.append("weights stored as float16")
    return ", ".join(parts)


def _get(mapping: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def _cell(text: str) -> str:
    """Table-safe: no pipes or newlines."""
    return " ".join(str(text).replace("|", "/").split())
