"""The project's model names and how people see them: one list, importable without TensorFlow.

A command-line tool can check a ``--models`` value against it before loading anything heavy.
"""

from __future__ import annotations

MODEL_NAMES = ("scratch_cnn", "resnet50", "mobilenetv2", "inceptionv3", "ensemble")

DISPLAY_NAMES = {
    "scratch_cnn": "Scratch CNN",
    "resnet50": "ResNet50",
    "mobilenetv2": "MobileNetV2",
    "inceptionv3": "InceptionV3",
    "ensemble": "Ensemble",
}
