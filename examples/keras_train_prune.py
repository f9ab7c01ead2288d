"""Train a small Keras 3 CNN on scikit-learn's digits, then prune it during fine-tuning — 4x1 blocks to 85 %
and 2:4 — and compare test accuracy before and after. No downloads: the digits ship with scikit-learn.

    python examples/keras_train_prune.py                 # model.fit with the pruning callback
    python examples/keras_train_prune.py --loop custom   # the same with a tf.GradientTape loop
    python examples/keras_train_prune.py --quick --json out.json

Every run starts from the same trained dense model. The pruned models are stripped and saved as plain
``.keras`` files (no nc_prune needed to load them), reloaded, and evaluated again.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from typing import Any, Dict, List, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from nc_prune import WeightPruningConfig  # noqa: E402
from nc_prune.keras import prepare_pruning, strip  # noqa: E402

L = keras.layers
BATCH = 32


def load_data() -> Tuple[np.ndarray, ...]:
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]  # (n, 8, 8, 1)
    return tuple(train_test_split(x, digits.target.astype("int32"), test_size=0.25, random_state=0,
                                  stratify=digits.target))


def build_model() -> keras.Model:
    inp = keras.Input((8, 8, 1))
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inp)
    x = L.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = L.MaxPooling2D(2)(x)
    x = L.Flatten()(x)
    x = L.Dense(128, activation="relu", name="fc1")(x)
    x = L.Dense(64, activation="relu", name="fc2")(x)
    return keras.Model(inp, L.Dense(10, name="classifier")(x), name="digits_cnn")


def compile_model(model: keras.Model, lr: float) -> keras.Model:
    model.compile(keras.optimizers.Adam(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float((np.argmax(model.predict(x, verbose=0), axis=1) == y).mean())


def custom_loop(model: keras.Model, callback, x: np.ndarray, y: np.ndarray, epochs: int) -> None:
    """What model.fit does, written out: the callback around each step, gradients applied by its optimizer."""
    import tensorflow as tf

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer = callback.optimizer

    @tf.function
    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    rng = np.random.default_rng(0)
    callback.on_train_begin()
    step = 0
    for epoch in range(epochs):
        callback.on_epoch_begin(epoch)
        order = rng.permutation(len(x))
        for i in range(0, len(x) - BATCH + 1, BATCH):
            idx = order[i:i + BATCH]
            callback.on_train_batch_begin(step)
            train_step(x[idx], y[idx])
            callback.on_train_batch_end(step)
            step += 1
        callback.on_epoch_end(epoch)
    callback.on_train_end()


def prune_run(name: str, config: WeightPruningConfig, dense_weights: List[np.ndarray], data, epochs: int,
              loop: str, out_dir: str) -> Dict[str, Any]:
    x_tr, x_te, y_tr, y_te = data
    model = build_model()
    model.set_weights(dense_weights)
    before = accuracy(model, x_te, y_te)
    start = time.perf_counter()
    if loop == "fit":
        compile_model(model, 1e-3)
        callback = prepare_pruning(model, config)
        model.fit(x_tr, y_tr, batch_size=BATCH, epochs=epochs, verbose=0, callbacks=[callback])
    else:
        callback = prepare_pruning(model, config, optimizer=keras.optimizers.Adam(1e-3))
        custom_loop(model, callback, x_tr, y_tr, epochs)
    seconds = time.perf_counter() - start
    report = callback.report()
    pruned = [r for r in report.rows if r.pattern != "-"]
    strip(callback)
    after = accuracy(model, x_te, y_te)
    path = os.path.join(out_dir, f"digits_{name.replace(':', 'in')}.keras")
    model.save(path)
    reloaded = accuracy(keras.models.load_model(path), x_te, y_te)
    print(f"\n{name}: {config.groups[0]['pruning_type']}, {len(pruned)} layers pruned, {seconds:.1f} s\n{report}")
    return {
        "run": name, "accuracy_before": before, "accuracy_after": after, "accuracy_reloaded": reloaded,
        "pruned_layer_sparsity": sum(r.zeros for r in pruned) / sum(r.params for r in pruned),
        "model_sparsity": report.total_ratio, "layers": {r.name: r.ratio for r in report.rows}, "saved": path,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer epochs (for tests)")
    ap.add_argument("--loop", choices=["fit", "custom"], default="fit")
    ap.add_argument("--target", type=float, default=0.85, help="4x1 target sparsity (0.80-0.90 is typical)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--out", default=None, help="directory for the saved .keras models (default: a temp dir)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    keras.utils.set_random_seed(args.seed)
    out_dir = args.out or tempfile.mkdtemp(prefix="nc_prune_keras_")
    os.makedirs(out_dir, exist_ok=True)

    data = load_data()
    x_tr, x_te, y_tr, y_te = data
    dense_epochs, prune_epochs = (8, 8) if args.quick else (25, 30)
    steps_per_epoch = len(x_tr) // BATCH
    dense = compile_model(build_model(), 3e-3)
    dense.fit(x_tr, y_tr, batch_size=BATCH, epochs=dense_epochs, verbose=0)
    dense_acc = accuracy(dense, x_te, y_te)
    print(f"dense model: test accuracy {dense_acc:.2%} ({dense.count_params():,} parameters)")

    # prune from the end of epoch 1 to 60 % of fine-tuning, twice per epoch, then recover
    schedule = dict(pruning_type="snip_momentum", start_step=steps_per_epoch,
                    end_step=int(prune_epochs * 0.6) * steps_per_epoch, pruning_frequency=steps_per_epoch // 2)
    runs = [
        ("4x1", WeightPruningConfig(pattern="4x1", target_sparsity=args.target, **schedule)),
        # conv1 sees 3x3x1 = 9 inputs per filter: no room for groups of 4, so it stays dense
        ("2:4", WeightPruningConfig(pattern="2:4", target_sparsity=0.5, excluded_op_names=["conv1"], **schedule)),
    ]
    results = [{"run": "dense", "accuracy_before": dense_acc, "accuracy_after": dense_acc,
                "accuracy_reloaded": dense_acc, "pruned_layer_sparsity": 0.0, "model_sparsity": 0.0}]
    for name, cfg in runs:
        results.append(prune_run(name, cfg, dense.get_weights(), data, prune_epochs, args.loop, out_dir))

    print(f"\n{'run':<6} {'pruned layers':>14} {'whole model*':>13} {'accuracy before':>16} {'after':>8}")
    for r in results:
        print(f"{r['run']:<6} {r['pruned_layer_sparsity']:>14.2%} {r['model_sparsity']:>13.2%} "
              f"{r['accuracy_before']:>16.2%} {r['accuracy_after']:>8.2%}")
    print("* sparsity over all conv/dense kernels, classifier included (it is left dense)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"loop": args.loop, "quick": args.quick, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
