"""Torch-Pruning's side of ``benchmarks/slim_speed.py``; runs in Torch-Pruning's environment (``tp_env.sh``).

    python tp_driver.py --kind bert --layers 12 --scale 1 --fraction 0.25 --state dense.pt --out tp.pt

Builds the case's model with ``slim_models`` (the same code nc_prune's side uses), loads the dense weights
nc_prune's side saved, removes ``fraction`` of the heads and FFN channels of every layer (or of every conv's
channels) with Torch-Pruning, checks the pruned model still runs, and saves it whole (``torch.save``) for the
benchmark to time. Prints one JSON line: what Torch-Pruning did and how long it took.

* BERT and ResNet-50: ``tp.pruner.MetaPruner`` with L2 magnitude importance and a uniform ratio — for BERT
  whole heads (``prune_num_heads=True``, ``prune_head_dims=False``) and the FFN channels, the hidden size
  left alone (the layers writing it are ignored), as Torch-Pruning's own BERT example does;
* Llama: Torch-Pruning's dependency graph does not finish grouping the attention of transformers 5's Llama
  (``get_pruning_group`` on ``k_proj`` still runs after 100 s on a one-layer model), so ``MetaPruner`` cannot
  be used. The FFN channels are pruned through the dependency graph's groups (``up``/``gate`` rows and the
  ``down`` column together), ranked by the same L2 importance; the KV heads (with the query heads sharing
  them) through Torch-Pruning's pruning functions on q/k/v rows and o columns, ranked by the group's L2 norm.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import slim_models as sm  # noqa: E402
import torch_pruning as tp  # noqa: E402


def _tp_forward(model, x):
    return model(**x) if isinstance(x, dict) else model(x)


def _tp_output(out):
    return out.last_hidden_state.sum() if hasattr(out, "last_hidden_state") else out.sum()


def prune_bert(model, x, fraction: float) -> dict:
    heads, ignored = {}, [model.pooler.dense]
    for name, m in model.named_modules():
        if name.endswith("attention.self"):
            heads.update({m.query: m.num_attention_heads, m.key: m.num_attention_heads, m.value: m.num_attention_heads})
        if name.endswith("output.dense"):  # attention.output.dense and output.dense write the hidden size
            ignored.append(m)
    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.MagnitudeImportance(p=2),
                                  pruning_ratio=fraction, ignored_layers=ignored, num_heads=heads,
                                  prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=fraction,
                                  forward_fn=_tp_forward, output_transform=_tp_output)
    pruner.step()
    for name, m in model.named_modules():  # Torch-Pruning changes the weights; the module keeps its counts
        if name.endswith("attention.self"):
            m.num_attention_heads = pruner.num_heads[m.query]
            m.all_head_size = m.query.out_features
    return {"api": "MetaPruner"}


def prune_resnet(model, x, fraction: float) -> dict:
    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.MagnitudeImportance(p=2),
                                  pruning_ratio=fraction, ignored_layers=[model.fc])
    pruner.step()
    return {"api": "MetaPruner"}


def prune_llama(model, x, fraction: float) -> dict:
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=x, forward_fn=_tp_forward,
                                                  output_transform=_tp_output)
    importance = tp.importance.MagnitudeImportance(p=2)
    cfg = model.config
    head_dim = cfg.head_dim
    kv, per_kv = cfg.num_key_value_heads, cfg.num_attention_heads // cfg.num_key_value_heads
    drop_kv = int(round(kv * fraction))
    for layer in model.layers:
        mlp = layer.mlp
        channels = mlp.up_proj.out_features
        group = graph.get_pruning_group(mlp.up_proj, tp.prune_linear_out_channels, idxs=list(range(channels)))
        score = importance(group)
        drop = torch.argsort(score)[: int(round(channels * fraction))].tolist()
        graph.get_pruning_group(mlp.up_proj, tp.prune_linear_out_channels, idxs=drop).prune()

        attn = layer.self_attn
        k = attn.k_proj.weight.view(kv, head_dim, -1)
        v = attn.v_proj.weight.view(kv, head_dim, -1)
        q = attn.q_proj.weight.view(kv, per_kv * head_dim, -1)
        o = attn.o_proj.weight.view(-1, kv, per_kv * head_dim)
        norm = (k.pow(2).sum((1, 2)) + v.pow(2).sum((1, 2)) + q.pow(2).sum((1, 2)) + o.pow(2).sum((0, 2)))
        gone = torch.argsort(norm)[:drop_kv].tolist()
        kv_rows = [g * head_dim + i for g in gone for i in range(head_dim)]
        q_rows = [g * per_kv * head_dim + i for g in gone for i in range(per_kv * head_dim)]
        tp.prune_linear_out_channels(attn.k_proj, kv_rows)
        tp.prune_linear_out_channels(attn.v_proj, kv_rows)
        tp.prune_linear_out_channels(attn.q_proj, q_rows)
        tp.prune_linear_in_channels(attn.o_proj, q_rows)
        # Llama's attention reshapes with -1 heads; keep the module's and the config's counts true anyway
        if hasattr(attn, "num_key_value_groups"):
            attn.num_key_value_groups = per_kv
    cfg.num_key_value_heads = kv - drop_kv
    cfg.num_attention_heads = (kv - drop_kv) * per_kv
    cfg.intermediate_size = model.layers[0].mlp.up_proj.out_features
    return {"api": "DependencyGraph groups (FFN) + pruning functions (heads)"}


PRUNE = {"bert": prune_bert, "resnet50": prune_resnet, "llama": prune_llama}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", required=True, choices=sorted(PRUNE))
    p.add_argument("--layers", type=int, required=True)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--fraction", type=float, required=True)
    p.add_argument("--state", required=True, help="the dense state dict nc_prune's side saved")
    p.add_argument("--out", required=True)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--size", type=int, default=32)
    args = p.parse_args()
    shape = sm.Shape(args.layers, args.scale)
    model = sm.build(args.kind, shape)
    model.load_state_dict(torch.load(args.state, weights_only=True))
    x = sm.inputs(args.kind, args.batch, args.size)
    before = sm.params(model)
    start = time.perf_counter()
    info = PRUNE[args.kind](model, x, args.fraction)
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        sm.forward(model, x)  # the pruned model must still run
    torch.save(model, args.out)
    print(json.dumps({**info, "seconds": round(seconds, 2), "params_before": before, "params_after": sm.params(model),
                      "torch_pruning": tp.__version__ if hasattr(tp, "__version__") else "unknown"}))


if __name__ == "__main__":
    main()
