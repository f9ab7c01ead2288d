"""nc_prune on Keras 3 vs tfmot's ``prune_low_magnitude`` on Keras 2: accuracy and training-time overhead.

    python benchmarks/keras_vs_tfmot.py [--seeds 3] [--epochs 30] [--skip-large] [--json out.json]

The same digits CNN (``examples/keras_train_prune.py``'s: conv1, conv2, fc1, fc2, classifier), the same
dense starting weights (trained once in Keras 3 and loaded into both), the same data split, the same
schedule — cubic ramp from 0 to the target between the end of epoch 1 and 60 % of fine-tuning, pruning
twice per epoch — and the same layers (the classifier stays dense in both). tfmot scores by magnitude
and prunes each layer on its own, so nc_prune runs ``magnitude`` with ``pruning_scope="local"`` for the
comparison; nc_prune's defaults (``snip_momentum``, global) are shown beside it.

Overhead is measured side by side, never as bare times: in each environment a plain copy of the model
and a pruned copy train in alternating epochs (which one goes first alternates too); every step is timed
from one batch start to the next, so the pruning callbacks' own work counts; the overhead is the ratio of
the median step times — separately for epochs inside the schedule and after it. A larger
MLP on synthetic data (``--skip-large`` to omit) shows the steady-state cost when compute dominates, and
in the nc_prune environment the mask-application alternatives are timed the same way.

tfmot needs Keras 2, so it runs in its own environment, ``benchmarks/.envs/tfmot``, created on first
use (``pip install tensorflow-cpu tf-keras tensorflow-model-optimization scikit-learn``) and run with
``TF_USE_LEGACY_KERAS=1``. If it cannot be created the tfmot rows are skipped and the reason printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TFMOT_ENV = os.path.join(HERE, ".envs", "tfmot")
TFMOT_PACKAGES = ["tensorflow-cpu==2.21.0", "tf-keras==2.21.0", "tensorflow-model-optimization==0.8.1",
                  "scikit-learn"]
TAG = "RESULT "
BATCH = 32
TARGETS = ("conv1", "conv2", "fc1", "fc2")

# name → (nc_prune config kwargs, tfmot wrapper kwargs, layers pruned)
COMPARISONS: Dict[str, Tuple[Dict[str, Any], Dict[str, Any], Tuple[str, ...]]] = {
    "1x1 85%": ({"pattern": "1x1", "target_sparsity": 0.85}, {"final": 0.85}, TARGETS),
    "4x1 85% (dense layers)": ({"pattern": "4x1", "target_sparsity": 0.85}, {"final": 0.85, "block_size": (1, 4)},
                               ("fc1", "fc2")),
    "2:4": ({"pattern": "2:4", "target_sparsity": 0.5}, {"final": 0.5, "sparsity_m_by_n": (2, 4)},
            ("conv2", "fc1", "fc2")),
}


# ---- shared by both environments ------------------------------------------------------------------
def emit(result: Dict[str, Any]) -> None:
    print(TAG + json.dumps(result, sort_keys=True), flush=True)


def collect(stdout: str) -> List[Dict[str, Any]]:
    return [json.loads(l[len(TAG):]) for l in stdout.splitlines() if l.startswith(TAG)]


def digits():
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    x = (d.images / 16.0).astype("float32")[..., None]
    return train_test_split(x, d.target.astype("int32"), test_size=0.25, random_state=0, stratify=d.target)


def build_cnn(K):
    """The example's CNN in ``K`` (keras 3 or tf_keras: the same layer API)."""
    L = K.layers
    inp = K.Input((8, 8, 1))
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inp)
    x = L.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = L.MaxPooling2D(2)(x)
    x = L.Flatten()(x)
    x = L.Dense(128, activation="relu", name="fc1")(x)
    x = L.Dense(64, activation="relu", name="fc2")(x)
    return K.Model(inp, L.Dense(10, name="classifier")(x))


def build_mlp(K):
    """8.4M-parameter MLP (1024-2048-2048-1024-10) for the compute-bound overhead figure."""
    L = K.layers
    inp = K.Input((1024,))
    x = inp
    for i, w in enumerate((2048, 2048, 1024)):
        x = L.Dense(w, activation="relu", name=f"fc{i + 1}")(x)
    return K.Model(inp, L.Dense(10, name="classifier")(x))


def compile_model(K, model, lr=1e-3):
    model.compile(K.optimizers.Adam(lr), K.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def schedule(steps_per_epoch: int, epochs: int) -> Dict[str, int]:
    return {"begin": steps_per_epoch, "end": int(epochs * 0.6) * steps_per_epoch, "frequency": steps_per_epoch // 2}


def step_clock(K):
    """A callback recording the time between consecutive batch starts (the whole step, hooks included)."""

    class StepClock(K.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.last, self.steps = None, []

        def on_epoch_begin(self, epoch, logs=None):
            self.last = None

        def on_train_batch_begin(self, batch, logs=None):
            now = time.perf_counter()
            if self.last is not None and batch > 2:  # skip the first steps of an epoch (iterator warm-up)
                self.steps.append(now - self.last)
            self.last = now

    return StepClock


def side_by_side(K, fit_plain: Callable[[list], None], fit_pruned: Callable[[list], None], epochs: int,
                 in_schedule: Callable[[int], bool]) -> Dict[str, Any]:
    """Alternate one epoch of each model; the overhead inside and after the schedule.

    Steps are timed batch start to batch start by the first callback, so every callback's work counts.
    Each epoch gives the ratio of the two models' mean step times (pruning steps included); a phase
    reports the median of its epochs' ratios, which load changes on the machine between epochs do not bias.
    """
    clock = step_clock(K)
    steps: Dict[str, List[Tuple[int, float]]] = {"plain": [], "pruned": []}
    for epoch in range(epochs):
        order = [("plain", fit_plain), ("pruned", fit_pruned)]
        for name, fn in (order if epoch % 2 == 0 else order[::-1]):
            c = clock()
            fn([c])
            steps[name] += [(epoch, t) for t in c.steps]
    per_epoch = {}  # epoch 0 includes tracing; later epochs: pruned median / plain median of the same epoch
    for e in range(1, epochs):
        plain = [t for ep, t in steps["plain"] if ep == e]
        pruned = [t for ep, t in steps["pruned"] if ep == e]
        if plain and pruned:
            per_epoch[e] = statistics.fmean(pruned) / statistics.fmean(plain)
    out = {}
    for phase, keep in (("in_schedule", in_schedule), ("after_schedule", lambda e: not in_schedule(e))):
        ratios = [r for e, r in per_epoch.items() if keep(e)]
        if ratios:
            out[phase] = statistics.median(ratios)
            out[phase + "_epochs"] = len(ratios)
    return out


def accuracy(model, x, y) -> float:
    import numpy as np
    return float((np.argmax(model.predict(x, verbose=0, batch_size=256), axis=1) == y).mean())


def zeros_in(model, names) -> float:
    import numpy as np
    total = zero = 0
    for n in names:
        k = np.asarray(model.get_layer(n).get_weights()[0])
        total, zero = total + k.size, zero + int((k == 0).sum())
    return zero / total


# ---- the nc_prune side (Keras 3) ------------------------------------------------------------------
def role_nc_prune(args) -> None:
    import keras
    import numpy as np

    sys.path.insert(0, ROOT)
    from nc_prune import WeightPruningConfig
    from nc_prune.keras import prepare_pruning, strip

    x_tr, x_te, y_tr, y_te = digits()
    dense = np.load(args.weights)
    weights = [dense[f"w{i}"] for i in range(len(dense.files))]
    spe = len(x_tr) // BATCH
    sch = schedule(spe, args.epochs)

    def fresh():
        m = build_cnn(keras)
        m.set_weights(weights)
        return compile_model(keras, m)

    runs = [(name, dict(kw, pruning_type="magnitude", pruning_scope="local"), layers, "tfmot-like")
            for name, (kw, _, layers) in COMPARISONS.items()]
    runs += [(name, dict(kw, pruning_type="snip_momentum", pruning_scope="global"), layers, "nc_prune default")
             for name, (kw, _, layers) in COMPARISONS.items()]
    for seed in range(args.seeds):
        for name, kw, layers, variant in runs:
            keras.utils.set_random_seed(seed)
            plain, pruned = fresh(), fresh()
            cfg = WeightPruningConfig(op_names=[f"^{l}$" for l in layers], start_step=sch["begin"],
                                      end_step=sch["end"], pruning_frequency=sch["frequency"],
                                      sparsity_decay_type="cube", **kw)
            cb = prepare_pruning(pruned, cfg)
            ratios = side_by_side(
                keras,
                lambda c: plain.fit(x_tr, y_tr, batch_size=BATCH, epochs=1, verbose=0, callbacks=c),
                lambda c: pruned.fit(x_tr, y_tr, batch_size=BATCH, epochs=1, verbose=0, callbacks=c + [cb]),
                args.epochs, lambda e: e * spe <= sch["end"])
            strip(pruned)
            emit({"side": "nc_prune", "variant": variant, "comparison": name, "seed": seed,
                  "acc_dense_finetuned": accuracy(plain, x_te, y_te), "acc_pruned": accuracy(pruned, x_te, y_te),
                  "sparsity": zeros_in(pruned, layers), **ratios})
    if not args.skip_large:
        large_overhead_nc_prune(args)
        masking_alternatives(args)


def _large_data(np):
    rng = np.random.default_rng(0)
    return rng.normal(size=(2560, 1024)).astype("float32"), rng.integers(0, 10, 2560).astype("int32")


LARGE_SCHEDULE = {"begin": 0, "end": 60, "frequency": 5}  # 10 steps per epoch: pruning in epochs 0-6


def large_overhead_nc_prune(args) -> None:
    import keras
    import numpy as np
    from nc_prune import WeightPruningConfig
    from nc_prune.keras import prepare_pruning

    x, y = _large_data(np)
    for variant, kw in (("tfmot-like", {"pruning_type": "magnitude", "pruning_scope": "local"}),
                        ("nc_prune default", {"pruning_type": "snip_momentum", "pruning_scope": "global"})):
        keras.utils.set_random_seed(0)
        plain = compile_model(keras, build_mlp(keras))
        pruned = compile_model(keras, build_mlp(keras))
        pruned.set_weights(plain.get_weights())
        cfg = WeightPruningConfig(pattern="1x1", target_sparsity=0.85, op_names=["^fc"], sparsity_decay_type="cube",
                                  start_step=LARGE_SCHEDULE["begin"], end_step=LARGE_SCHEDULE["end"],
                                  pruning_frequency=LARGE_SCHEDULE["frequency"], **kw)
        cb = prepare_pruning(pruned, cfg)
        ratios = side_by_side(keras, lambda c: plain.fit(x, y, batch_size=256, epochs=1, verbose=0, callbacks=c),
                              lambda c: pruned.fit(x, y, batch_size=256, epochs=1, verbose=0, callbacks=c + [cb]),
                              args.large_epochs, lambda e: e * 10 <= LARGE_SCHEDULE["end"])
        emit({"side": "nc_prune", "variant": variant, "comparison": "large MLP, 1x1 85%", **ratios})


def masking_alternatives(args) -> None:
    """Masks fixed: three ways to keep masked weights at zero, each against plain training, on both models."""
    import numpy as np
    x_tr, _, y_tr, _ = digits()
    _masking(args, "digits CNN", build_cnn, ("conv1", "conv2", "fc1", "fc2"), x_tr, y_tr, BATCH, args.epochs // 2)
    x, y = _large_data(np)
    _masking(args, "large MLP", build_mlp, ("fc1", "fc2", "fc3"), x, y, 256, args.large_epochs)


def _masking(args, model_name, build, names, x, y, batch, epochs) -> None:
    import keras
    import numpy as np
    from keras import ops
    from nc_prune import WeightPruningConfig
    from nc_prune.keras import prepare_pruning

    keras.utils.set_random_seed(0)
    base = compile_model(keras, build(keras))
    masks = {n: (np.random.default_rng(1).random(base.get_layer(n).kernel.shape) > 0.85) for n in names}

    def copy():
        m = compile_model(keras, build(keras))
        m.set_weights(base.get_weights())
        return m

    wrapper = copy()
    cb = prepare_pruning(wrapper, WeightPruningConfig(pruning_type="magnitude", pattern="1x1", target_sparsity=0.85,
                                                      op_names=[f"^{n}$" for n in names], start_step=0, end_step=0))
    for n in names:
        cb.weights[n].slot.mask.assign(masks[n])

    constrained = copy()
    mask_vars = {n: keras.Variable(masks[n].astype("float32"), trainable=False) for n in names}
    for n in names:
        constrained.get_layer(n).kernel.constraint = (lambda m: (lambda w: w * m))(mask_vars[n])

    eager = copy()

    class EagerMask(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            for n in names:
                k = eager.get_layer(n).kernel
                k.assign(ops.where(masks[n], k, 0.0))

    plain = copy()
    fits = {
        "optimizer wrapper (nc_prune)": lambda c: wrapper.fit(x, y, batch_size=batch, epochs=1, verbose=0,
                                                              callbacks=c + [cb]),
        "kernel constraint": lambda c: constrained.fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=c),
        "eager assign in a callback": lambda c: eager.fit(x, y, batch_size=batch, epochs=1, verbose=0,
                                                          callbacks=c + [EagerMask()]),
    }
    plain_fit = lambda c: plain.fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=c)  # noqa: E731
    for name, fn in fits.items():
        ratios = side_by_side(keras, plain_fit, fn, epochs, lambda e: False)
        emit({"side": "nc_prune", "variant": f"masking, {model_name}", "comparison": name, **ratios})


# ---- the tfmot side (Keras 2 via tf_keras) --------------------------------------------------------
def role_tfmot(args) -> None:
    import numpy as np
    import tensorflow_model_optimization as tfmot
    import tf_keras as K

    x_tr, x_te, y_tr, y_te = digits()
    dense = np.load(args.weights)
    weights = [dense[f"w{i}"] for i in range(len(dense.files))]
    spe = len(x_tr) // BATCH
    sch = schedule(spe, args.epochs)
    sparsity = tfmot.sparsity.keras

    def fresh():
        m = build_cnn(K)
        m.set_weights(weights)
        return m

    for seed in range(args.seeds):
        for name, (_, tk, layers) in COMPARISONS.items():
            K.utils.set_random_seed(seed)
            plain = compile_model(K, fresh())
            base = fresh()
            params = {"pruning_schedule": sparsity.PolynomialDecay(0.0, tk["final"], sch["begin"], sch["end"], power=3,
                                                                   frequency=sch["frequency"])}
            for key in ("block_size", "sparsity_m_by_n"):
                if key in tk:
                    params[key] = tk[key]

            def wrap(layer, params=params, layers=layers):
                return sparsity.prune_low_magnitude(layer, **params) if layer.name in layers else layer

            pruned = compile_model(K, K.models.clone_model(base, clone_function=wrap))
            step_cb = sparsity.UpdatePruningStep()
            ratios = side_by_side(
                K,
                lambda c: plain.fit(x_tr, y_tr, batch_size=BATCH, epochs=1, verbose=0, callbacks=c),
                lambda c: pruned.fit(x_tr, y_tr, batch_size=BATCH, epochs=1, verbose=0, callbacks=c + [step_cb]),
                args.epochs, lambda e: e * spe <= sch["end"])
            stripped = sparsity.strip_pruning(pruned)
            emit({"side": "tfmot", "variant": "tfmot", "comparison": name, "seed": seed,
                  "acc_dense_finetuned": accuracy(plain, x_te, y_te), "acc_pruned": accuracy(stripped, x_te, y_te),
                  "sparsity": zeros_in(stripped, layers), **ratios})
    if not args.skip_large:
        x, y = _large_data(np)
        K.utils.set_random_seed(0)
        plain = compile_model(K, build_mlp(K))
        base = build_mlp(K)
        base.set_weights(plain.get_weights())
        params = {"pruning_schedule": sparsity.PolynomialDecay(0.0, 0.85, LARGE_SCHEDULE["begin"], LARGE_SCHEDULE["end"],
                                                               power=3, frequency=LARGE_SCHEDULE["frequency"])}
        pruned = compile_model(K, K.models.clone_model(
            base, clone_function=lambda l: sparsity.prune_low_magnitude(l, **params) if l.name.startswith("fc") else l))
        step_cb = sparsity.UpdatePruningStep()
        ratios = side_by_side(K, lambda c: plain.fit(x, y, batch_size=256, epochs=1, verbose=0, callbacks=c),
                              lambda c: pruned.fit(x, y, batch_size=256, epochs=1, verbose=0, callbacks=c + [step_cb]),
                              args.large_epochs, lambda e: e * 10 <= LARGE_SCHEDULE["end"])
        emit({"side": "tfmot", "variant": "tfmot", "comparison": "large MLP, 1x1 85%", **ratios})


# ---- the driver -----------------------------------------------------------------------------------
def tfmot_python(install: bool) -> Tuple[Optional[str], str]:
    py = os.path.join(TFMOT_ENV, "bin", "python")
    probe = [py, "-c", "import tf_keras, tensorflow_model_optimization, sklearn"]
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    if os.path.exists(py) and subprocess.run(probe, env=env, capture_output=True).returncode == 0:
        return py, ""
    if not install:
        return None, f"{TFMOT_ENV} does not exist (run without --no-install to create it)"
    try:
        subprocess.run([sys.executable, "-m", "venv", TFMOT_ENV], check=True, capture_output=True)
        subprocess.run([py, "-m", "pip", "install", "-q", *TFMOT_PACKAGES], check=True, capture_output=True,
                       text=True, timeout=1800)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        return None, f"could not build {TFMOT_ENV}: {str(detail).strip()[-500:]}"
    if subprocess.run(probe, env=env, capture_output=True).returncode != 0:
        return None, f"{TFMOT_ENV} was created but tf_keras/tfmot do not import"
    return py, ""


def pretrain(path: str, epochs: int) -> None:
    import keras
    import numpy as np
    keras.utils.set_random_seed(0)
    x_tr, _, y_tr, _ = digits()
    model = compile_model(keras, build_cnn(keras), 3e-3)
    model.fit(x_tr, y_tr, batch_size=BATCH, epochs=epochs, verbose=0)
    np.savez(path, **{f"w{i}": w for i, w in enumerate(model.get_weights())})


def run_role(python: str, role: str, args, weights: str, extra_env: Dict[str, str]) -> List[Dict[str, Any]]:
    cmd = [python, os.path.abspath(__file__), "--role", role, "--weights", weights, "--seeds", str(args.seeds),
           "--epochs", str(args.epochs), "--large-epochs", str(args.large_epochs)]
    if args.skip_large:
        cmd.append("--skip-large")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT, **extra_env)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{role} run failed:\n{out.stderr[-3000:]}")
    return collect(out.stdout)


def summarize(results: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    rows: Dict[Tuple[str, str, str], List[Dict[str, Any]]] = {}
    for r in results:
        rows.setdefault((r["side"], r["variant"], r["comparison"]), []).append(r)
    out = []
    for (side, variant, comparison), rs in rows.items():
        row: Dict[str, Any] = {"side": side, "variant": variant, "comparison": comparison, "runs": len(rs)}
        for key in ("acc_dense_finetuned", "acc_pruned", "sparsity", "in_schedule", "after_schedule"):
            vals = [r[key] for r in rs if key in r]
            if vals:
                row[key] = statistics.mean(vals)
        out.append(row)
    return out


def print_table(rows: List[Dict[str, Any]]) -> None:
    def pct(v):
        return "" if v is None else f"{v:.2%}"

    def ratio(v):
        return "" if v is None else f"{v:.2f}x"

    print(f"\n{'comparison':<30} {'run':<26} {'sparsity':>9} {'acc dense':>10} {'acc pruned':>11} "
          f"{'overhead in sched.':>19} {'after sched.':>13}")
    for r in rows:
        run = r["variant"]
        print(f"{r['comparison']:<30} {run:<26} {pct(r.get('sparsity')):>9} "
              f"{pct(r.get('acc_dense_finetuned')):>10} {pct(r.get('acc_pruned')):>11} "
              f"{ratio(r.get('in_schedule')):>19} {ratio(r.get('after_schedule')):>13}")
    print("overhead = mean step time of the pruned model / the plain model's in the same epoch (same process,\n"
          "alternating epochs, every callback included), median over the epochs of the phase")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--role", choices=["driver", "nc_prune", "tfmot"], default="driver")
    ap.add_argument("--weights")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--large-epochs", type=int, default=12)
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--no-install", action="store_true", help="do not create the tfmot environment")
    ap.add_argument("--json", help="write the summary here")
    args = ap.parse_args()
    if int(args.epochs * 0.6) < 2 or args.large_epochs < 3:
        ap.error("--epochs must be at least 4 (the schedule ends after 60 % of them, at least one epoch after it "
                 "starts) and --large-epochs at least 3")
    if args.role == "nc_prune":
        return role_nc_prune(args)
    if args.role == "tfmot":
        return role_tfmot(args)

    tmp = tempfile.mkdtemp(prefix="keras_vs_tfmot_")
    weights = os.path.join(tmp, "dense.npz")
    pretrain(weights, 25)
    results = run_role(sys.executable, "nc_prune", args, weights, {})
    python, reason = tfmot_python(install=not args.no_install)
    if python is None:
        print(f"SKIP tfmot: {reason}")
    else:
        results += run_role(python, "tfmot", args, weights, {"TF_USE_LEGACY_KERAS": "1"})
    rows = summarize(results)
    print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "runs": results, "tfmot_skipped": reason or None}, f, indent=2)


if __name__ == "__main__":
    main()
