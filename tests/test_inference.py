"""The traced fast path must give the model's own answers, and trace only once however many threads ask."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import threading  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from fer_utils.inference import TracedFunction, compiled_predictor, measure_latency  # noqa: E402


def _tiny_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((48, 48, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(x))


def test_compiled_predictor_matches_the_model_for_any_batch_size():
    model = _tiny_model()
    predict = compiled_predictor(model)
    faces = np.random.default_rng(1).uniform(0, 255, (5, 48, 48, 1)).astype(np.float32)
    np.testing.assert_allclose(predict(faces), model(faces, training=False).numpy(), atol=1e-5)
    one = predict(faces[0])  # a single (48, 48, 1) face gets a batch axis
    assert one.shape == (1, 7)
    np.testing.assert_allclose(one[0], predict(faces)[0], atol=1e-5)
    timing = measure_latency(predict, repeats=5)
    assert 0 < timing["median_ms"] <= timing["p95_ms"] and timing["repeats"] == 5


def test_traced_function_traces_once_across_threads():
    traces = []

    def double(x):
        traces.append(1)  # Python side effect: runs only while tracing
        return x * 2

    fn = TracedFunction(double, [tf.TensorSpec((None, 3), tf.float32)])
    assert not fn.traced
    threads = [threading.Thread(target=fn.warm_up) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert fn.traced and len(traces) == 1
    np.testing.assert_allclose(fn(tf.ones((2, 3))).numpy(), np.full((2, 3), 2.0))
    assert len(traces) == 1  # a new batch size reuses the trace
