"""Load the drivers' outputs back and check their sparsity; optionally compare them with each other.

    python benchmarks/oneshot_refs/verify.py OUT_DIR [OUT_DIR ...] [--dense MODEL_DIR] [--calib CALIB.json]

Each OUT_DIR is what ``inc_sparsegpt.py`` or ``llmc_oneshot.py`` wrote (``model/`` and ``result.json``).
Runs in any environment with torch and transformers; imports neither nc_prune nor the reference libraries.
Use the project's (transformers 5): 4.57 (INC's env) ignores the ``rope_parameters`` that transformers 5 writes. For every output:

* the saved model is loaded with ``AutoModelForCausalLM.from_pretrained``;
* every ``Linear`` inside the decoder blocks must be pruned: ``1x1`` — its zero fraction within
  ``--tol`` of the target; ``N:M`` — exactly N zeros in every group of M consecutive inputs of a row;
* every other ``Linear`` (``lm_head``) and the embeddings must be dense, unless ``--allow-outside``;
* the zeros counted after loading must equal those ``result.json`` recorded before saving;
* with ``--dense``, RoPE settings must match the dense model's and, with ``--calib``, the logits on the
  calibration ids must be finite (their next-token loss is printed, dense and pruned).

With two or more outputs of the same pattern the masks are compared pairwise (fraction of weights on which
the two agree about being zero, and the largest weight difference). Exits 1 if any check fails.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _refcommon import load_input_ids  # noqa: E402


def _blocks_prefix(model):
    """Name of the decoder block list (the first ModuleList holding Linears)."""
    import torch
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and any(isinstance(m, torch.nn.Linear) for m in mod.modules()):
            return name + "."
    return None


def _rope(config):
    rp = getattr(config, "rope_parameters", None)
    if isinstance(rp, dict) and "rope_theta" in rp:
        return float(rp["rope_theta"]), rp.get("rope_type", "default")
    rs = getattr(config, "rope_scaling", None) or {}
    return float(getattr(config, "rope_theta", 0.0)), rs.get("rope_type", rs.get("type", "default"))


def _nll(model, ids, torch):
    with torch.no_grad():
        x = torch.from_numpy(ids.reshape(-1, ids.shape[-1]))
        logits = model(input_ids=x).logits.float()
        finite = bool(torch.isfinite(logits).all())
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
    return finite, float(loss)


def check_one(out_dir, args, torch, transformers, dense_rope, calib_ids):
    res = json.load(open(os.path.join(out_dir, "result.json")))
    pattern, target = res["pattern"], float(res["target_sparsity"])
    tag = f"{res['system']}:{res['method']}:{pattern}"
    model = transformers.AutoModelForCausalLM.from_pretrained(os.path.join(out_dir, "model"), dtype=torch.float32)
    model.eval()
    prefix = _blocks_prefix(model)
    problems, lines, weights = [], [], {}
    nm = tuple(int(x) for x in pattern.split(":")) if ":" in pattern else None
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Embedding):
            if int((mod.weight == 0).sum()) > 0.01 * mod.weight.numel():
                problems.append(f"{name}: embedding has {(mod.weight == 0).float().mean():.3f} zeros")
        if not isinstance(mod, torch.nn.Linear):
            continue
        w = mod.weight.detach()
        weights[name] = w
        z = (w == 0)
        s = float(z.float().mean())
        saved = res["layers"].get(name, {}).get("zeros")
        if saved is not None and saved != int(z.sum()):
            problems.append(f"{name}: {int(z.sum())} zeros after loading, {saved} recorded before saving")
        inside = prefix is not None and name.startswith(prefix)
        if not inside:
            if s > 0.01 and not args.allow_outside:
                problems.append(f"{name}: outside the blocks but {s:.3f} sparse")
            lines.append(f"  {name:40s} {s:.4f} (outside blocks)")
            continue
        if nm is None:
            ok = abs(s - target) <= args.tol
            lines.append(f"  {name:40s} {s:.4f}")
            if not ok:
                problems.append(f"{name}: sparsity {s:.4f}, target {target} (tol {args.tol})")
        else:
            n, m = nm
            g = z.reshape(w.shape[0], -1, m).sum(-1)
            exact = float((g == n).float().mean())
            lines.append(f"  {name:40s} {s:.4f}  groups with exactly {n} zeros of {m}: {exact:.4f}")
            if exact != 1.0:
                problems.append(f"{name}: only {exact:.4f} of groups have exactly {n} zeros of {m} "
                                f"(min {int(g.min())}, max {int(g.max())})")
    rope = _rope(model.config)
    if dense_rope is not None and rope != dense_rope:
        problems.append(f"RoPE {rope} after loading, dense model has {dense_rope}")
    info = {"tag": tag, "pattern": pattern, "weights": weights, "rope": rope}
    if calib_ids is not None:
        finite, loss = _nll(model, calib_ids, torch)
        info["nll"] = loss
        if not finite:
            problems.append("non-finite logits on the calibration ids")
    print(f"{out_dir}  [{tag}, target {target}, blocks {prefix!r}, rope {rope}"
          + (f", calib NLL {info['nll']:.4f}" if "nll" in info else "") + "]")
    print("\n".join(lines))
    for p in problems:
        print(f"  FAIL {p}")
    print(f"  {'OK' if not problems else 'FAILED'}")
    return info, problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out_dirs", nargs="+")
    p.add_argument("--dense", help="the unpruned model directory (RoPE check, dense NLL)")
    p.add_argument("--calib", help="calibration ids (.json/.npz) for a finite-logits check and NLL")
    p.add_argument("--tol", type=float, default=0.01, help="1x1: allowed |sparsity - target| per layer")
    p.add_argument("--allow-outside", action="store_true", help="allow sparse layers outside the blocks")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import transformers

    calib_ids = load_input_ids(args.calib) if args.calib else None
    dense_rope = None
    if args.dense:
        dense = transformers.AutoModelForCausalLM.from_pretrained(args.dense, dtype=torch.float32).eval()
        dense_rope = _rope(dense.config)
        if calib_ids is not None:
            finite, loss = _nll(dense, calib_ids, torch)
            print(f"{args.dense}  [dense, rope {dense_rope}, calib NLL {loss:.4f}]")
        del dense
    infos, failed = [], False
    for d in args.out_dirs:
        info, problems = check_one(d, args, torch, transformers, dense_rope, calib_ids)
        infos.append((d, info))
        failed |= bool(problems)
    pairs = [(a, b) for a, b in itertools.combinations(infos, 2) if a[1]["pattern"] == b[1]["pattern"]]
    if pairs:
        print("mask agreement (fraction of weights both call zero or both call nonzero) / max |w_a - w_b|:")
    for (da, a), (db, b) in pairs:
        names = sorted(set(a["weights"]) & set(b["weights"]))
        agree = sum(int(((a["weights"][n] == 0) == (b["weights"][n] == 0)).sum()) for n in names)
        total = sum(a["weights"][n].numel() for n in names)
        diff = max(float((a["weights"][n] - b["weights"][n]).abs().max()) for n in names)
        print(f"  {a['tag']:28s} vs {b['tag']:28s} {agree / total:.6f} / {diff:.3g}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
