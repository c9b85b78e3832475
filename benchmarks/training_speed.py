"""Training throughput per model on this machine, to size training runs before starting them.

    python benchmarks/training_speed.py                       # every model, float32 and bfloat16, XLA on
    python benchmarks/training_speed.py --models scratch_vgg mobilenetv2 --sizes 48 96 --no-xla

For each model and input size it builds the model as the notebooks do (``weights=None``,
every layer trainable), compiles it with ``fer_utils.training.compile_model`` and times
``fit`` on random 48x48 faces in memory (so only the model's cost is measured, not the
input pipeline: see ``input_pipeline.py`` for that). It runs three epochs: the first (tracing and XLA
compilation) is reported apart from the steady state (the faster of the other two). The last column estimates one epoch
of FER2013 Training (28,709 faces).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

FER_TRAIN_IMAGES = 28_709
MODELS = {
    "scratch_cnn": ("scratch_cnn", {}),
    "scratch_cpu": ("scratch_cnn", {"filters": (64, 128, 256, 512), "batch_norm": True, "dense_units": (256,)}),  # plans/shipped/cpu.yaml
    "scratch_cpu_small": ("scratch_cnn", {"filters": (32, 64, 128, 256), "batch_norm": True, "dense_units": (256,)}),  # its first version
    "scratch_cpu_deep": ("scratch_cnn", {"filters": (32, 64, 128, 256), "convs_per_stage": 2, "batch_norm": True,
                                         "dense_units": (256,)}),  # plans/shipped/cpu_third_cnn.yaml
    "scratch_vgg": ("scratch_cnn", {"filters": (64, 128, 256, 512), "convs_per_stage": 2, "batch_norm": True, "dense_units": (512,)}),
    "resnet50": ("resnet50", {"trainable": "all"}),
    "mobilenetv2": ("mobilenetv2", {"trainable": "all"}),
    "inceptionv3": ("inceptionv3", {"trainable": "all"}),
}
MIN_SIZE = {"resnet50": 32, "mobilenetv2": 32, "inceptionv3": 75}


def measure(name: str, size: int, mixed: bool, xla: bool, batch_size: int, steps: int) -> dict:
    """Images per second of ``fit`` for one configuration, first epoch and steady state."""
    import keras

    from fer_utils.models import build_model
    from fer_utils.training import TrainConfig, compile_model, precision_policy

    kind, options = MODELS[name]
    if kind != "scratch_cnn":
        options = {**options, "weights": None, "image_size": size}
    elif size != 48:
        options = {**options, "image_size": size}
    keras.utils.set_random_seed(0)
    with precision_policy(mixed):
        model = build_model(kind, 7, **options)
    compile_model(model, TrainConfig(optimizer="sgd", learning_rate=0.01, jit_compile=xla))
    n = batch_size * steps
    faces = np.random.default_rng(0).integers(0, 256, (n, 48, 48, 1)).astype("float32")
    labels = np.random.default_rng(1).integers(0, 7, n)
    epoch_seconds: list[float] = []
    timer = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: epoch_seconds.append(-time.perf_counter()),
        on_epoch_end=lambda epoch, logs: epoch_seconds.__setitem__(-1, epoch_seconds[-1] + time.perf_counter()),
    )
    model.fit(faces, labels, batch_size=batch_size, epochs=3, verbose=0, callbacks=[timer])
    first = epoch_seconds[0]
    steady = n / min(epoch_seconds[1:])
    return {
        "model": name, "size": size, "precision": "bfloat16" if mixed else "float32", "xla": xla,
        "parameters": model.count_params(), "first_epoch_s": round(first, 1),
        "images_per_s": round(steady, 1), "fer_epoch_min": round(FER_TRAIN_IMAGES / steady / 60, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--sizes", nargs="+", type=int, default=[48], help="input sizes (backbones below their minimum are skipped)")
    parser.add_argument("--precision", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    parser.add_argument("--no-xla", action="store_true", help="compile without XLA (jit_compile=False)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="batches per timed epoch")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()

    import tensorflow as tf

    print(f"TensorFlow {tf.__version__}, intra-op threads {tf.config.threading.get_intra_op_parallelism_threads() or 'default'}")
    rows = []
    for name in args.models:
        for size in args.sizes:
            if size < MIN_SIZE.get(name, 0):
                continue
            for precision in args.precision:
                row = measure(name, size, precision == "bfloat16", not args.no_xla, args.batch_size, args.steps)
                rows.append(row)
                print(" | ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    if args.json:
        with open(args.json, "w") as stream:
            json.dump(rows, stream, indent=2)


if __name__ == "__main__":
    main()
