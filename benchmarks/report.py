"""Write ``docs/benchmarks.md`` and ``docs/img/bench_*.png`` from ``benchmarks/results/<run>.json``.

    python benchmarks/report.py [--results benchmarks/results/full.json]

Without ``--results`` it reports the full run when there is one, else the quick run. Every figure in the
page comes from the results file; where a target does not hold, the verdict says so.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DOCS = os.path.join(ROOT, "docs")
IMG = os.path.join(DOCS, "img")
PATTERN_COLORS = {"4x1": "tab:blue", "2:4": "tab:orange", "1x1": "tab:green"}


def _pick(results: Optional[str]) -> str:
    if results:
        return results
    for run in ("full", "quick"):
        path = os.path.join(HERE, "results", run + ".json")
        if os.path.exists(path):
            return path
    raise SystemExit("no results: run bash benchmarks/run.sh first")


def _ok(flag: Optional[bool]) -> str:
    return "—" if flag is None else ("**yes**" if flag else "**no**")


def _slow(r: Dict) -> str:
    return f"{r['pattern']} {r['size']}² {r['ratio']:.0f}x"


def _bench(res: Dict, name: str) -> Optional[Dict]:
    b = res["benchmarks"].get(name)
    return b if b and b["returncode"] == 0 else None


def _failed(res: Dict, name: str) -> Optional[str]:
    b = res["benchmarks"].get(name)
    if b is None:
        return "not run"
    if b["returncode"]:
        return f"failed (exit {b['returncode']}); log: `{b['log']}`"
    return None


# ---- plots ----------------------------------------------------------------------------------------
def _save(fig, name: str) -> str:
    import matplotlib.pyplot as plt

    os.makedirs(IMG, exist_ok=True)
    path = os.path.join(IMG, name)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plots(rows: List[Dict], run: str) -> List[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for pattern in PATTERN_COLORS:
        rs = sorted((r for r in rows if r["pattern"] == pattern), key=lambda r: r["params"])
        if not rs:
            continue
        x = [r["params"] / 1e6 for r in rs]
        c = PATTERN_COLORS[pattern]
        axes[0].plot(x, [r["ours"]["seconds"] for r in rs], "o-", color=c, label=f"nc_prune {pattern}")
        axes[1].plot(x, [max(r["ours"]["extra_mib"], 0.01) for r in rs], "o-", color=c, label=f"nc_prune {pattern}")
        if all(r["inc"] for r in rs):
            axes[0].plot(x, [r["inc"]["seconds"] for r in rs], "s--", color=c, alpha=0.7, label=f"INC 2.6 {pattern}")
            axes[1].plot(x, [max(r["inc"]["extra_mib"], 0.01) for r in rs], "s--", color=c, alpha=0.7,
                         label=f"INC 2.6 {pattern}")
    rs = sorted({r["params"]: r for r in rows}.values(), key=lambda r: r["params"])
    axes[1].plot([r["params"] / 1e6 for r in rs], [r["ours"]["largest_layer_scores_mib"] for r in rs], "k:",
                 label="largest layer's scores")
    axes[0].set_title("Global mask generation time (48 layers)")
    axes[0].set_ylabel("seconds")
    axes[1].set_title("Memory added beyond scores and masks")
    axes[1].set_ylabel("MiB (peak RSS - RSS before - masks)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("parameters (millions)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"nc_prune vs INC 2.6, same scores ({run} run)")
    fig.tight_layout()
    path = _save(fig, "bench_global_masks.png")
    written.append(path)
    return written


def train_plot(train: List[Dict], run: str) -> Optional[str]:
    if not train:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    labels = ["after schedule", "score-update steps", "mask-update steps"]
    keys = ["after_schedule", "score_steps", "mask_steps"]
    width = 0.8 / len(train)
    for i, t in enumerate(train):
        xs = [j + i * width for j in range(len(keys))]
        ax.bar(xs, [t[k]["ratio"] for k in keys], width, label=f"{t['model']} ({t['params'] / 1e6:.1f}M)")
    ax.axhline(1.05, color="k", ls=":", lw=1, label="target 1.05 (after schedule)")
    ax.axhline(1.0, color="k", lw=0.5)
    ax.set_xticks([j + width * (len(train) - 1) / 2 for j in range(len(keys))])
    ax.set_xticklabels(labels)
    ax.set_ylabel("step time / plain step time")
    ax.set_title(f"PyTorch training-step cost of pruning ({run} run)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = _save(fig, "bench_train_overhead.png")
    return path


# ---- page -----------------------------------------------------------------------------------------
def global_section(res: Dict, out: List[str], targets: List[List[str]], notes: List[str]) -> None:
    b = _bench(res, "global_masks")
    out += ["## Global mask generation: nc_prune vs INC 2.6", ""]
    if not b:
        out += [f"Not measured: {_failed(res, 'global_masks')}.", ""]
        targets.append(["Global masks ≥ 10x faster than INC 2.6", "not measured", "—"])
        return
    rows = b["results"]
    inc = res["inc"]
    out += [
        "The same random float32 scores (saved to disk) go to nc_prune's `compute_masks` and to INC 2.6's pattern",
        "`get_masks` (after its `reduce_score`, as INC's criteria do), each in its own process, global scope.",
        "48 square layers; the first three hold the lowest scores, so `max_sparsity_ratio_per_op` binds on them",
        "and the rest of the budget spreads over the others. Unit scores are distinct and exact under any",
        "summation order (see `benchmarks/_common.py`), so the masks can be compared element for element.",
        "Time: best of the runs (`runs`); memory: what the first run added beyond the scores and the returned",
        "masks (peak RSS minus RSS before the call minus the masks' bytes, from `/proc/self/status`).",
        "",
    ]
    if not inc["python"]:
        out += [f"INC was not available in this run ({inc['skipped']}); exactness was checked against a full sort.", ""]
    out += ["| pattern | layers × size | params | target / max per layer | nc_prune s | INC s | speed-up | "
            "nc_prune + MiB | INC + MiB | largest layer MiB | same masks | exactly k | layers at max |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        o, i = r["ours"], r["inc"]
        out.append(
            f"| {r['pattern']} | {r['layers']} × {r['size']}² | {r['params'] / 1e6:.1f}M | "
            f"{r['target']} / {r['max_sparsity_ratio_per_op']} | {o['seconds']:.3f} ({o['runs']}) | "
            + (f"{i['seconds']:.2f} ({i['runs']}) | **{r['ratio']:.0f}x** | " if i else "— | — | ")
            + f"{o['extra_mib']} | " + (f"{i['extra_mib']} | " if i else "— | ")
            + f"{o['largest_layer_scores_mib']} | "
            + (f"{_ok(r['masks_equal'])} | " if i else f"counts = full sort: {_ok(r['counts_equal_reference'])} | ")
            + f"{_ok(r['exact_k'])} | {r['bound_binds']} |")
    out += ["", "![time and memory by model size](img/bench_global_masks.png)", ""]
    biggest = max(r["params"] for r in rows)
    top = [r for r in rows if r["params"] == biggest]
    ratios = [r.get("ratio") for r in top]
    fast = all(x is not None and x >= 10 for x in ratios)
    exact = all(r["exact_k"] and r["counts_equal_reference"] and r.get("masks_equal", True) for r in rows)
    desc = ", ".join(f"{r['pattern']} {r['ratio']:.0f}x" if r.get("ratio") else f"{r['pattern']} (no INC)"
                     for r in top)
    targets.append([f"Global mask generation ≥ 10x faster than INC 2.6 (48 layers, {biggest / 1e6:.1f}M params)",
                    desc, _ok(fast) if inc["python"] else "— (INC not run)"])
    mem = all(r["ours"]["extra_mib"] <= r["ours"]["largest_layer_scores_mib"] for r in top)
    ours_top = ", ".join(f"{r['pattern']} +{r['ours']['extra_mib']} MiB" for r in top)
    inc_top = ", ".join(f"{r['pattern']} +{r['inc']['extra_mib']} MiB" for r in top if r["inc"])
    targets.append([f"Extra memory ≤ the largest layer's scores ({top[0]['ours']['largest_layer_scores_mib']} MiB "
                    f"at {biggest / 1e6:.1f}M), never a concatenation",
                    ours_top + (f" (INC: {inc_top})" if inc_top else ""), _ok(mem)])
    small = [r for r in rows if r["ours"]["extra_mib"] > r["ours"]["largest_layer_scores_mib"]]
    if small:
        notes.append(
            "Memory at the small sizes: the select's fixed working set — 16-bit-digit histograms of 65,536 "
            "counters and pieces of 65,536 units, about 1–2 MiB — is larger than the layers themselves below "
            f"about 512² (here: {', '.join(sorted({str(r['size']) + '²' for r in small}))}). It does not grow with the "
            "model; the target is about large models, where it is a fraction of one layer.")
    slow = [r for r in rows if r.get("ratio") is not None and r["ratio"] < 10]
    if slow:
        notes.append(
            "Speed at the small sizes: below 10x where INC's cost is still small "
            f"({', '.join(_slow(r) for r in slow)}); INC's cost grows "
            "with layers x parameters (it re-checks every layer's sparsity for every layer), nc_prune's with "
            "parameters, so the gap widens with size.")
    targets.append(["Exact: INC's masks, exactly k units, bounds held",
                    f"{len(rows)} runs: " + ("same masks as INC element for element, " if inc["python"] else "")
                    + "k pruned exactly, counts per layer equal the reference", _ok(exact)])


def section_3b(res: Dict, out: List[str], targets: List[List[str]]) -> None:
    b = _bench(res, "mask_3b")
    out += ["## A global 4x1 mask over billions of parameters", ""]
    if not b or not b["results"]:
        out += [f"Not measured: {_failed(res, 'mask_3b')}.", ""]
        targets.append(["3B-parameter global 4x1 mask on this machine", "not measured", "—"])
        return
    r = b["results"][0]
    out += [
        f"{r['layers']} layers of {r['shape'][0]}×{r['shape'][1]} bfloat16 weights, built from a seed and held in",
        f"memory ({r['params'] / 1e9:.2f}e9 parameters, {r['weights_gib']} GiB). Scores are magnitudes computed when",
        "the engine reads a layer: `compute_masks` accepts a mapping whose values only need `shape` and numpy",
        "conversion, and reads one layer at a time, so no float copy of the model exists. Target 0.5 of the",
        f"4x1 blocks, `max_sparsity_ratio_per_op={r['max_sparsity_ratio_per_op']}`.",
        "",
        "| parameters | time | peak RSS | weights | masks (bool) | working memory | largest layer's scores (float32) |",
        "|---|---|---|---|---|---|---|",
        f"| {r['params'] / 1e9:.2f}e9 | {r['seconds']:.1f} s | {r['peak_rss_gib']} GiB | {r['weights_gib']} GiB | "
        f"{r['masks_gib']} GiB | {r['extra_mib']} MiB | {r['largest_layer_scores_mib']} MiB |",
        "",
    ]
    if "exact_k" in r:
        out += [f"Checked layer by layer afterwards: {r['pruned_blocks']:,} blocks pruned, exactly k = {r['k']:,} "
                f"({_ok(r['exact_k'])}); every pruned block scores no higher than every kept block of the layers "
                f"below their bound ({_ok(r['threshold_property'])}); {r['layers_at_bound']} layers at their bound.",
                ""]
    big = r["params"] >= 3e9
    targets.append(["Global 4x1 mask over 3e9 parameters completes on this machine",
                    f"{r['params'] / 1e9:.2f}e9 params: {r['seconds']:.0f} s, peak RSS {r['peak_rss_gib']} GiB"
                    + ("" if big else " (quick run; the full run does 3.02e9)"),
                    _ok(r.get("exact_k", True)) if big else "— (quick run)"])


def train_section(res: Dict, out: List[str], targets: List[List[str]], notes: List[str]) -> Optional[List[Dict]]:
    b = _bench(res, "train_overhead")
    out += ["## PyTorch training-step overhead", ""]
    if not b:
        out += [f"Not measured: {_failed(res, 'train_overhead')}.", ""]
        targets.append(["Training-step overhead ≤ 5 % once masks are fixed", "not measured", "—"])
        return None
    train = b["results"]
    out += [
        "Two copies of a model train side by side in one process (SGD, momentum 0.9, synthetic data): one plain,",
        "one with `prepare_pruning` attached (`snip_momentum`, `4x1`, target 0.8, steps 0–20 pruning every 5).",
        "After the schedule, blocks of steps alternate between the two (the order flips every round); the",
        "overhead is the median pruned block over the median plain block, with the ratio of the fastest",
        "blocks beside it. The pruning hooks are also timed alone (called directly), which other load on the",
        "machine disturbs least. Score-update steps (inside the schedule, no mask change) and mask-update steps",
        "(`pruning_frequency=1`, every mask recomputed) are timed against the plain model the same way.",
        f"torch threads: {train[0]['torch_threads']}.",
        "",
        "| model | params (pruned) | plain step | after schedule | fastest blocks | A/A (noise) | hooks per step | "
        "score-update steps | mask-update steps |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in train:
        a = t["after_schedule"]
        out.append(f"| {t['model']} | {t['params'] / 1e6:.1f}M ({t['pruned_params'] / 1e6:.1f}M) | "
                   f"{a['plain_ms']:.0f} ms | **x{a['ratio']:.3f}** | x{a['ratio_best']:.3f} | "
                   f"x{t['noise_aa']['ratio']:.3f} | "
                   f"{t['hooks_ms']:.2f} ms ({100 * t['hooks_share']:.1f} %) | x{t['score_steps']['ratio']:.2f} "
                   f"({t['score_steps']['pruned_ms'] - t['score_steps']['plain_ms']:+.0f} ms) | "
                   f"x{t['mask_steps']['ratio']:.2f} ({t['mask_steps']['pruned_ms'] - t['mask_steps']['plain_ms']:+.0f} ms) |")
    out += ["", "![training-step overhead](img/bench_train_overhead.png)", ""]
    holds = all(t["after_schedule"]["ratio"] <= 1.05 for t in train)
    notes.append(
        "Training overhead: after the schedule a step costs the two optimizer hooks — bookkeeping plus one "
        "zeroing of every pruned weight (a `bitwise_and_` of the weight's bits with its widened boolean mask, "
        "1M-weight pieces, no weight-sized temporary; exact +0.0 even after a NaN update) — shown as \"hooks per step\". The whole-step ratios also carry "
        "the machine's noise; the A/A column (two identical plain copies) shows its size in this run."
        + ("" if holds else " A ratio above 1.05 here while the hooks cost less than 5 % of the step is that noise;"
           " rerun to see it move."))
    for t in train:
        if t["score_steps"]["ratio"] > 1.05:
            notes.append(
                f"Score-update steps ({t['model']}): `snip_momentum` updates score = 0.9 score + |w grad| for every "
                f"pruned weight at every step of the schedule, "
                f"{t['score_steps']['pruned_ms'] - t['score_steps']['plain_ms']:.0f} ms here; after the schedule it "
                "stops. `magnitude` has no per-step score.")
            break
    targets.append(["Training-step overhead ≤ 5 % once masks are fixed",
                    "; ".join(f"{t['model']} x{t['after_schedule']['ratio']:.3f} (hooks {100 * t['hooks_share']:.1f} %)"
                              for t in train), _ok(holds)])
    targets.append(["Cost of a mask-update step (reported)",
                    "; ".join(f"{t['model']} x{t['mask_steps']['ratio']:.2f}, score-update x{t['score_steps']['ratio']:.2f}"
                              for t in train), "—"])
    return train


def torch_prune_section(res: Dict, out: List[str]) -> None:
    b = res["benchmarks"].get("torch_prune_global")
    if b is None:
        return
    out += ["## `global_unstructured`: nc_prune.torch.prune vs torch.nn.utils.prune", "",
            f"`{b['command']}` (written with the `torch.nn.utils.prune` drop-in; see [its page](torch_prune.md)):", ""]
    out += ["```text", *(b["stdout"] if b["returncode"] == 0 else [f"failed: see {b['log']}"]), "```", ""]


def keras_section(res: Dict, out: List[str], targets: List[List[str]]) -> None:
    b = res["benchmarks"].get("keras_vs_tfmot")
    out += ["## Keras: the callback against the unpruned fit and against tfmot", ""]
    data = b["results"] if b and b["returncode"] == 0 else None
    if not data:
        why = _failed(res, "keras_vs_tfmot") or "no results"
        out += [f"Not part of this run ({why}); the method and figures are on the Keras page: "
                "[Benchmark: nc_prune vs tfmot](keras.md#benchmark-nc_prune-vs-tfmot).", ""]
        targets.append(["Keras callback overhead vs plain fit and vs tfmot", "see the Keras page", "—"])
        return
    out += [f"From `{b['command']}` (method: [Benchmark: nc_prune vs tfmot](keras.md#benchmark-nc_prune-vs-tfmot)).",
            "Overhead = median step time of the pruned model over the plain model's, same environment,",
            "alternating epochs.", ""]
    if data.get("tfmot_skipped"):
        out += [f"tfmot was skipped: {data['tfmot_skipped']}", ""]
    out += ["| comparison | run | sparsity | accuracy dense | accuracy pruned | overhead in schedule | after schedule |",
            "|---|---|---|---|---|---|---|"]

    def pct(v):
        return "" if v is None else f"{100 * v:.1f} %"

    def x(v):
        return "" if v is None else f"x{v:.3f}"

    for r in data["rows"]:
        out.append(f"| {r['comparison']} | {r['variant']} | {pct(r.get('sparsity'))} | {pct(r.get('acc_dense_finetuned'))} "
                   f"| {pct(r.get('acc_pruned'))} | {x(r.get('in_schedule'))} | {x(r.get('after_schedule'))} |")
    out.append("")
    by: Dict[str, Dict[str, float]] = {}
    for r in data["rows"]:
        if r.get("after_schedule") is not None:
            by.setdefault(r["comparison"], {})[r["variant"]] = r["after_schedule"]
    shown = []
    for comparison, v in by.items():
        parts = [f"{name} x{v[key]:.2f}" for key, name in (("nc_prune default", "nc_prune"), ("tfmot", "tfmot"))
                 if key in v]
        if parts:
            shown.append(f"{comparison}: " + ", ".join(parts))
    targets.append(["Keras: step time after the schedule vs the plain fit, nc_prune callback and tfmot (reported)",
                    "; ".join(shown), "—"])


METHOD_COLORS = {"magnitude": "tab:gray", "wanda": "tab:blue", "sparse_gpt": "tab:orange",
                 "wanda+owl": "tab:cyan", "sparse_gpt+owl": "tab:red", "INC sparse_gpt": "tab:brown",
                 "llmc sparse_gpt": "tab:pink", "llmc wanda": "tab:purple"}


def oneshot_quality_plot(q: Dict, run: str) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = q["summary"]
    methods = [m for m in METHOD_COLORS if any(m in summary[s] for s in summary)]
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        xs, ys, lo, hi = [], [], [], []
        for j, setting in enumerate(summary):
            if m in summary[setting]:
                r = summary[setting][m]
                xs.append(j + i * width)
                ys.append(r["perplexity"])
                lo.append(r["perplexity"] - r["perplexity_min"])
                hi.append(r["perplexity_max"] - r["perplexity"])
        ax.bar(xs, ys, width, yerr=[lo, hi], color=METHOD_COLORS[m], label=m, capsize=2)
    ax.axhline(q["dense_perplexity"], color="k", ls=":", lw=1, label=f"dense {q['dense_perplexity']:.2f}")
    ax.set_xticks([j + width * (len(methods) - 1) / 2 for j in range(len(summary))])
    ax.set_xticklabels(list(summary))
    ax.set_ylim(q["dense_perplexity"] * 0.95, None)
    ax.set_ylabel("held-out perplexity (lower is better)")
    ax.set_title(f"One-shot pruning of models/stdlib-lm: mean over {len(q['seeds'])} calibration seed(s), "
                 f"min–max bars ({run} run)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = _save(fig, "bench_oneshot_quality.png")
    return path


def oneshot_scale_plot(rows: List[Dict], run: str) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for method in sorted({r["method"] for r in rows}):
        rs = sorted((r for r in rows if r["method"] == method), key=lambda r: r["params"])
        x = [r["params"] / 1e6 for r in rs]
        c = METHOD_COLORS.get(method)
        axes[0].plot(x, [r["time_ratio"] for r in rs], "o-", color=c, label=method)
        axes[1].plot(x, [r["extra_ratio"] for r in rs], "o-", color=c, label=method)
    axes[0].set_title("One-shot time / one dense forward over the calibration data")
    axes[0].set_ylabel("ratio")
    axes[1].set_title("Memory added during pruning / the model's size")
    axes[1].set_ylabel("ratio (peak RSS - RSS before) / model bytes")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("parameters (millions)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"One-shot cost as a Llama-style decoder grows ({run} run)")
    fig.tight_layout()
    path = _save(fig, "bench_oneshot_scale.png")
    return path


SGPT_TARGET = "One-shot: SparseGPT's perplexity gap to dense at 50 % ≤ ⅓ of magnitude's"


def oneshot_section(res: Dict, out: List[str], targets: List[List[str]], notes: List[str]) -> None:
    b = _bench(res, "oneshot_quality")
    out += ["## One-shot pruning quality: nc_prune vs INC 2.6 and llm-compressor", ""]
    if not b or not b["results"]:
        out += [f"Not measured: {_failed(res, 'oneshot_quality')}.", ""]
        targets.append([SGPT_TARGET, "not measured", "—"])
        return
    q = b["results"][-1]
    summary = q["summary"]
    out += [
        f"`models/stdlib-lm` (a 4-block Llama with grouped-query attention, 3.95M parameters, trained here on the",
        f"Python standard library; dense held-out perplexity **{q['dense_perplexity']:.3f}**) pruned at once, each",
        f"run in a fresh process with {q['threads']} torch threads; calibration: {q['samples']} windows of "
        f"{q['length']} tokens of training text per seed",
        f"(seeds {', '.join(map(str, q['seeds']))}; the same token ids for every system). Perplexity: 64 held-out "
        "windows of 256 tokens, computed in nc_prune's environment for every system's saved output. `magnitude` is",
        "each layer to the target by `|W|` (`pruning_scope=\"local\"`, the papers' baseline; no data, one run).",
        "Time: the pruning call alone; memory: what it added over the process's resident set after loading the",
        "model. Masks alike: the fraction of weights every seed's reference run and nc_prune's run of the same",
        "method on the same data pruned or kept alike (the lowest over seeds).", ""]
    for env, name in (("inc", "INC 2.6"), ("llmc", "llm-compressor")):
        if not q["references"].get(env):
            out += [f"{name} was not part of this run: {q['skipped'].get(env, 'no environment given')}.", ""]
    out += ["| setting | method | perplexity (mean) | min–max over seeds | gap to dense | gap / magnitude's | "
            "prune time | memory added | sparsity | masks alike |", "|---|---|---|---|---|---|---|---|---|---|"]
    for setting, methods in summary.items():
        mag = methods["magnitude"]["gap"]
        for method, r in methods.items():
            out.append(f"| {setting} | {method} | {r['perplexity']:.3f} | {r['perplexity_min']:.3f}–"
                       f"{r['perplexity_max']:.3f} | {r['gap']:+.3f} | {r['gap'] / mag:.2f} | "
                       f"{r['prune_seconds']:.1f} s | {r['extra_mib']:.0f} MiB | {100 * r['sparsity']:.2f} % | "
                       + (f"{100 * r['mask_agreement']:.2f} % |" if "mask_agreement" in r else "— |"))
    out += ["", "![one-shot quality](img/bench_oneshot_quality.png)", ""]
    fifty = summary.get("50%")
    if fifty:
        ratio = fifty["sparse_gpt"]["gap"] / fifty["magnitude"]["gap"]
        shown = [f"{ratio:.2f} ({fifty['sparse_gpt']['gap']:+.3f} vs {fifty['magnitude']['gap']:+.3f})"]
        shown += [f"{s} {m['sparse_gpt']['gap'] / m['magnitude']['gap']:.2f}" for s, m in summary.items() if s != "50%"]
        targets.append([SGPT_TARGET, "; ".join(shown), _ok(ratio <= 1 / 3)])
    for ref, ours in (("INC sparse_gpt", "sparse_gpt"), ("llmc sparse_gpt", "sparse_gpt"), ("llmc wanda", "wanda")):
        pairs = [(s, m[ours], m[ref]) for s, m in summary.items() if ref in m]
        if not pairs:
            continue
        worse = [s for s, o, r in pairs if o["perplexity"] > r["perplexity"]]
        shown = "; ".join(f"{s} {o['perplexity']:.3f} vs {r['perplexity']:.3f}, time x{o['prune_seconds'] / r['prune_seconds']:.2f}, "
                          f"memory x{o['extra_mib'] / r['extra_mib']:.2f}" for s, o, r in pairs)
        targets.append([f"One-shot {ours}: perplexity at most {ref}'s (time, memory: nc_prune / {ref.split()[0]})",
                        shown, _ok(not worse)])
        if worse:
            diff = max((o["perplexity"] - r["perplexity"]) / r["perplexity"] for s, o, r in pairs)
            notes.append(f"{ref} is ahead of nc_prune's {ours} at {', '.join(worse)} by at most {100 * diff:.2f} % "
                         f"perplexity, with masks {100 * min(r.get('mask_agreement', 1) for _, _, r in pairs):.1f} %+ "
                         "alike: the same algorithm on activations computed by another transformers version.")
    seventy = summary.get("70%")
    if seventy and "wanda+owl" in seventy:
        w, o = seventy["wanda"]["gap"], seventy["wanda+owl"]["gap"]
        g, go = seventy["sparse_gpt"]["gap"], seventy["sparse_gpt+owl"]["gap"]
        targets.append(["One-shot at 70 %: OWL's gap to dense vs uniform (reported)",
                        f"Wanda {w:+.3f} → OWL {o:+.3f} (x{o / w:.2f}); SparseGPT {g:+.3f} → OWL {go:+.3f} (x{go / g:.2f})",
                        "—"])
    scale = _bench(res, "oneshot_scale")
    out += ["### One-shot cost as the model grows", ""]
    if not scale or not scale["results"]:
        out += [f"Not measured: {_failed(res, 'oneshot_scale')}.", ""]
        return
    rows = scale["results"]
    out += ["A Llama-style decoder (grouped-query attention, 4 blocks, random weights, float32) at three widths, each",
            "method in a fresh process at 50 % `1x1` from the same calibration batches. Time over one dense forward",
            "pass over the calibration batches measured beside it; memory added over the model's size, beside what",
            "the pipeline reports holding at most (one block's inputs for all batches plus one block's statistics).", "",
            "| width | params | tokens | method | time / dense forward | memory added | / model size | held by the pipeline |",
            "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['width']} | {r['params'] / 1e6:.1f}M | {r['tokens']:,} | {r['method']} | "
                   f"x{r['time_ratio']:.1f} | {r['extra_bytes'] / 2**20:.0f} MiB | x{r['extra_ratio']:.2f} | "
                   f"{r['held_bytes'] / 2**20:.0f} MiB |")
    out += ["", "![one-shot cost by model size](img/bench_oneshot_scale.png)", ""]
    big = max(r["params"] for r in rows)
    top = [r for r in rows if r["params"] == big]
    targets.append([f"One-shot memory added at {big / 1e6:.1f}M params, over the model's size (reported)",
                    ", ".join(f"{r['method']} x{r['extra_ratio']:.2f}" for r in top), "—"])


SLIM_TARGET = "Slimming: ≥ 1.3x faster than dense at 25–30 % of the prunable parameters removed"
SLIM_TP_TARGET = "Slimmed models no slower than Torch-Pruning's of the same model (time ratio ≤ 1.05, noise)"
SLIM_NAMES = {"bert": "BERT-base-shaped encoder", "llama": "Llama-style decoder (GQA)", "resnet50": "ResNet-50"}


def _case(r: Dict) -> str:
    return f"{r['kind']} {100 * r['fraction']:.0f} %"


def slim_plot(rows: List[Dict], run: str) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    x = list(range(len(rows)))
    ax.bar([i - 0.2 for i in x], [r["speedup"]["nc_prune"] for r in rows], 0.4, label="nc_prune model_slim")
    if any("torch_pruning" in r["speedup"] for r in rows):
        ax.bar([i + 0.2 for i in x], [r["speedup"].get("torch_pruning", 0) for r in rows], 0.4,
               label="Torch-Pruning", color="tab:gray")
    ax.axhline(1.0, color="black", lw=0.8)
    ax.axhline(1.3, color="tab:red", lw=0.8, ls="--", label="1.3x")
    ax.set_xticks(x, [f"{_case(r)}\n({100 * r['removed_share']['nc_prune']:.0f} % params)" for r in rows], fontsize=8)
    ax.set_ylabel("dense time / slimmed time")
    ax.set_title(f"Forward latency after slimming, CPU ({run} run)")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, "bench_slim_speed.png")


def slim_section(res: Dict, out: List[str], targets: List[List[str]]) -> None:
    b = _bench(res, "slim_speed")
    out += ["## Structured pruning: real speed after slimming", ""]
    if not b or not b["results"]:
        out += [f"Not measured: {_failed(res, 'slim_speed')}.", ""]
        targets.append([SLIM_TARGET, "not measured", "—"])
        return
    rows = b["results"]
    tp = res.get("tp", {})
    out += [
        "Each model (random weights, eval mode, float32) loses the same share of its attention heads (Llama:",
        "whole KV groups with their query heads) and FFN channels in every layer — or of every convolution's",
        "channels, the residual ones included — by magnitude, one-shot (`pruning_scope=\"local\"`), and",
        "`model_slim` cuts them out; the slimmed model's output is checked against the masked model's.",
        "Torch-Pruning removes the same share from the same dense weights in its own environment",
        "(`benchmarks/tp_driver.py` says how). Then dense, nc_prune's and Torch-Pruning's models are timed in",
        "one process on the same batch, in interleaved rounds; the table shows the median ratios. Prunable",
        "parameters: the Linear layers of a transformers model (embeddings and norms keep the hidden size),",
        "every parameter of the CNN.", ""]
    if not tp.get("python"):
        out += [f"Torch-Pruning was not part of this run: {tp.get('skipped') or 'no environment given'}.", ""]
    out += ["| model | removed | prunable params | share removed | all params | speedup (nc_prune) | "
            "speedup (Torch-Pruning) | nc_prune time / TP's | max output difference | rounds |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        bp, ap = r["block_params"], r["params"]
        removed = ", ".join(f"{v} {k}" for k, v in sorted(r["removed"].items()))
        tps = r["speedup"].get("torch_pruning")
        shape = (f"{r['layers']} layers" if r["kind"] != "resnet50" else "3-4-6-3 blocks") + \
            (f", width x{r['scale']:g}" if r["scale"] != 1 else "") + \
            (f", batch {r['batch']} x {r['size']} tokens" if r["kind"] != "resnet50"
             else f", batch {r['batch']} x {r['size']}²")
        out.append(f"| {SLIM_NAMES.get(r['kind'], r['kind'])} ({shape}) at {100 * r['fraction']:.0f} % | {removed} | "
                   f"{bp['dense'] / 1e6:.1f}M → {bp['nc_prune'] / 1e6:.1f}M | "
                   f"{100 * r['removed_share']['nc_prune']:.1f} % | {ap['dense'] / 1e6:.1f}M → {ap['nc_prune'] / 1e6:.1f}M | "
                   f"**x{r['speedup']['nc_prune']:.2f}** | " + (f"x{tps:.2f}" if tps else "—") + " | "
                   + (f"x{r['nc_over_tp']:.2f}" if "nc_over_tp" in r else "—")
                   + f" | {r['output_diff']:.1e} | {r['rounds']} |")
    out += ["", "![speed after slimming](img/bench_slim_speed.png)", ""]
    near = [r for r in rows if 0.2 <= r["removed_share"]["nc_prune"] <= 0.35]
    if near:
        targets.append([SLIM_TARGET, "; ".join(f"{_case(r)} ({100 * r['removed_share']['nc_prune']:.0f} % removed) "
                                               f"x{r['speedup']['nc_prune']:.2f}" for r in near),
                        _ok(all(r["speedup"]["nc_prune"] >= 1.3 for r in near))])
    vs = [r for r in rows if "nc_over_tp" in r]
    if vs:
        targets.append([SLIM_TP_TARGET, "; ".join(f"{_case(r)} x{r['nc_over_tp']:.2f}" for r in vs),
                        _ok(all(r["nc_over_tp"] <= 1.05 for r in vs))])


DIST_TARGET = "FSDP2 global masks: memory added per rank falls with the ranks, masks identical (reported)"


def distributed_section(res: Dict, out: List[str], targets: List[List[str]]) -> None:
    b = _bench(res, "distributed_masks")
    out += ["## Global masks on a sharded model: 1, 2 and 4 ranks", ""]
    if not b or not b["results"]:
        out += [f"Not measured: {_failed(res, 'distributed_masks')}.", ""]
        targets.append([DIST_TARGET, "not measured", "—"])
        return
    rows = b["results"]
    r0 = rows[0]
    out += [
        f"{r0['layers']} square `nn.Linear({r0['size']}, {r0['size']})`, each and the whole model `fully_shard`-ed "
        "(FSDP2, rows sharded), pruned",
        f"{r0['pattern']}, {r0['scope']} scope, {100 * r0['target']:.0f} % by magnitude on 1, 2 and 4 gloo processes "
        f"on this CPU: {r0['pruned']:,} of {r0['of']:,} weights",
        "(the last layer is the head and stays dense). Each rank ranks its own rows; the global threshold comes from",
        "per-digit histograms summed by `all_reduce` and one `all_gather` for the tied units — nothing is gathered",
        "onto one rank. Time: the slowest rank's mask computation, best of the repeats; memory: what that call",
        "added per rank; communication: the bytes each rank handed to collectives in one update. This machine",
        f"has {res['machine']['cores']} cores, so 4 ranks time-share them: the time ratios show the cost of that",
        "sharing, not of the method.", "",
        "| ranks | masks equal to 1 rank's | time vs 1 rank | memory added per rank vs 1 (MiB) | weights per rank vs 1 | "
        "bytes per rank per update | collectives |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        calls = ", ".join(f"{k} x{v}" for k, v in sorted(r["collective_calls"].items())) or "none"
        out.append(f"| {r['ranks']} | {'yes' if r['masks_equal_1_rank'] else '**no**'} | x{r['time_vs_1_rank']:.2f} | "
                   f"x{r['extra_mem_per_rank_vs_1_rank']:.2f} ({r.get('extra_mem_per_rank_mib', 0):.1f}) | "
                   f"x{r['weights_per_rank_vs_1_rank']:.2f} | "
                   f"{r['comm_bytes_per_update']:,} | {calls} |")
    out.append("")
    top = rows[-1]
    targets.append([DIST_TARGET, f"{top['ranks']} ranks: memory added per rank x{top['extra_mem_per_rank_vs_1_rank']:.2f}, "
                                 f"weights per rank x{top['weights_per_rank_vs_1_rank']:.2f}, "
                                 f"{top['comm_bytes_per_update']:,} B per update; masks equal: "
                                 + ("all" if all(r["masks_equal_1_rank"] for r in rows) else "**not all**"), "—"])


def reproduce(res: Dict, out: List[str]) -> None:
    out += ["## Reproduce", "",
            "Everything above comes from one command; `--quick` runs smaller sizes in a few minutes:", "",
            "```bash", "bash benchmarks/run.sh            # full run (about 30 minutes)",
            "bash benchmarks/run.sh --quick    # quick run",
            "bash benchmarks/run.sh --only oneshot_quality --merge   # one benchmark again, the rest kept", "```", "",
            "It sources `scripts/env.sh` (the project's `.venv`), builds INC 2.6 apart in `benchmarks/.envs/inc`",
            "(`scripts/inc_env.sh`: `torch==2.13.0 neural-compressor==2.6 numpy<2 setuptools<81 six transformers<5`),",
            "llm-compressor in `benchmarks/.envs/llmc` (`benchmarks/oneshot_refs/envs.sh`: `torch==2.13.0",
            "llmcompressor==0.14.0.1 compressed-tensors==0.19.0 transformers==5.17.0`), Torch-Pruning in",
            "`benchmarks/.envs/tp` (`benchmarks/tp_env.sh`: `torch==2.13.0 torch-pruning==1.6.1 transformers==5.24.0`), lets",
            "`keras_vs_tfmot.py` build tfmot in `benchmarks/.envs/tfmot`, skips a reference that cannot be",
            "installed, runs each benchmark in its own process and writes `benchmarks/results/<run>.json`,",
            "this page and its plots. The commands of this run:", "", "```bash"]
    for name, b in res["benchmarks"].items():
        out.append(f"PYTHONPATH=. {b['command']}   # {b['seconds']:.0f} s")
    out += ["```", ""]


def write(path: str) -> str:
    res = json.load(open(path))
    m = res["machine"]
    out = ["# Benchmarks", "",
           f"<!-- generated by benchmarks/report.py from {os.path.relpath(path, ROOT)}; edit the generator, not this page -->",
           "",
           "What pruning costs, measured side by side with what nc_prune replaces — ratios from one run on one",
           f"machine, never lone times. This page shows the **{res['run']} run** of {res['date']}: "
           f"{m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, Python {m['python']}, numpy {m['numpy']}"
           + (f", torch {m['torch']}" if m.get("torch") else "") + f" (`{res['command']}`).",
           "The machine is shared, so timings carry noise; the ratios come from runs side by side.", ""]
    targets: List[List[str]] = []
    body: List[str] = []
    notes: List[str] = []
    global_section(res, body, targets, notes)
    section_3b(res, body, targets)
    train = train_section(res, body, targets, notes)
    torch_prune_section(res, body)
    keras_section(res, body, targets)
    oneshot_section(res, body, targets, notes)
    slim_section(res, body, targets)
    distributed_section(res, body, targets)
    reproduce(res, body)
    if notes:
        body += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    out += ["## Targets", "", "| target | measured | holds |", "|---|---|---|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in targets]
    out += [""] + body
    rows = _bench(res, "global_masks")["results"] if _bench(res, "global_masks") else []
    if rows:
        plots(rows, res["run"])
    if train:
        train_plot(train, res["run"])
    if _bench(res, "oneshot_quality") and _bench(res, "oneshot_quality")["results"]:
        oneshot_quality_plot(_bench(res, "oneshot_quality")["results"][-1], res["run"])
    if _bench(res, "oneshot_scale") and _bench(res, "oneshot_scale")["results"]:
        oneshot_scale_plot(_bench(res, "oneshot_scale")["results"], res["run"])
    if _bench(res, "slim_speed") and _bench(res, "slim_speed")["results"]:
        slim_plot(_bench(res, "slim_speed")["results"], res["run"])
    page = os.path.join(DOCS, "benchmarks.md")
    with open(page, "w") as f:
        f.write("\n".join(out).rstrip() + "\n")
    return page


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=None)
    args = parser.parse_args()
    print("wrote", os.path.relpath(write(_pick(args.results)), ROOT))


if __name__ == "__main__":
    main()
