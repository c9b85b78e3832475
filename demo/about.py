"""The "About these models" panel, written from the model cards (any key may be missing).

Sizes are decimal MB, as in the README's results table: both come from :class:`fer_utils.card.ModelCard`.
"""

from __future__ import annotations

from fer_utils.card import ModelCard, table_cell
from fer_utils.serving import DISPLAY_NAMES, LoadedModel, ModelSet


def about_markdown(models: ModelSet, mirror: bool = False) -> str:
    """A short table: test accuracy, how each model was trained, where its weights started
    (``mirror``: the app averages each face's answers with its mirror image's)."""
    lines = [
        "Accuracy and macro-F1 are on the FER2013 **PrivateTest** split, as recorded in each model's card "
        "when it was evaluated; TTA = test-time augmentation (averaging each face with its mirror image).",
        "",
        "| Model | PrivateTest accuracy | Macro-F1 | Weights started from | Training | Size | Probabilities |",
        "|---|---|---|---|---|---|---|",
    ]
    for loaded in models:
        lines.append(about_row(loaded))
    for key, reason in models.missing.items():
        lines.append(f"| {DISPLAY_NAMES.get(key, key)} | not loaded | | | {table_cell(reason)} | | |")
    lines += [
        "",
        "All five take the same 48x48 grey face; the transfer models resize it inside the model. "
        "The models learned from FER2013's tightly cropped faces, so the app crops every face it finds "
        "before predicting. "
        + ("On photos and videos each model answers the face and its mirror image and the two answers are "
           "averaged (the TTA figures above); the Live tab runs one pass, for speed. " if mirror else
           "Each face is answered in one pass (started with --mirror, the app also answers its mirror image and "
           "averages the two, the TTA figures above). ")
        + "The percentages "
        "shown are calibrated where a model's card has a temperature: fitted on PublicTest so that, say, 70 % "
        "answers are right about 70 % of the time (ECE: the expected gap between confidence and accuracy, "
        "15 bins, on PrivateTest), with a second temperature for the averaged answers, which are softer. "
        "These are research models: do not use them to make decisions about people.",
    ]
    return "\n".join(lines)


def about_row(loaded: LoadedModel) -> str:
    """One model's row: the card's :meth:`~fer_utils.card.ModelCard.about_row`, the figures the README shows."""
    members = [member.display_name for member in loaded.members] if loaded.is_ensemble else None
    return ModelCard.of(loaded.card).about_row(loaded.display_name, members)
