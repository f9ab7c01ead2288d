"""Prune a tiny BERT classifier while fine-tuning it, written the way INC 2.x pruning scripts are written.

``BertForSequenceClassification`` from a tiny ``BertConfig`` (hidden 32, 2 layers, 2 heads, intermediate 64),
random token ids and labels from a fixed seed, a training loop driving ``compression_manager.callbacks``.
``tests/conformance/test_inc_scripts.py`` runs this file as it is (nc_prune) and with the two lines between
the ``imports`` markers replaced by INC's imports; nothing else differs.

    python bert_prune.py scenarios.json   # runs the file's "bert" scenarios, prints each layer's sparsity

Scenarios are the dicts described in ``resnet_prune.py``.
"""

import json
import re
import sys

import torch
from transformers import BertConfig, BertForSequenceClassification

# >>> imports
from nc_prune import WeightPruningConfig
from nc_prune.torch import prepare_compression
# <<< imports

VOCAB, SEQ, BATCH, LABELS = 64, 8, 4, 2


def build_model():
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=16, num_labels=LABELS,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(config)


def prunable_layers(model):
    return [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]


def init_weights(model, seed):
    """Weights drawn from one generator in name order, so every transformers version starts from the same numbers."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / p.shape[-1]) ** 0.5)


def zero_blocks(model, op_names, block, ratio, seed):
    """Zero ``ratio`` of the ``block`` (rows x cols) blocks of the matching layers."""
    g = torch.Generator().manual_seed(seed)
    bh, bw = block
    with torch.no_grad():
        for name, m in prunable_layers(model):
            if not any(re.search(p, name) for p in op_names):
                continue
            o, c = m.weight.shape
            n = (o // bh) * (c // bw)
            keep = torch.ones(n)
            keep[torch.randperm(n, generator=g)[: int(n * ratio)]] = 0
            blocks = m.weight.reshape(o // bh, bh, c // bw, bw) * keep.reshape(o // bh, 1, c // bw, 1)
            m.weight.copy_(blocks.reshape(o, c))


def make_data(seed, steps):
    g = torch.Generator().manual_seed(seed + 1000)
    input_ids = torch.randint(0, VOCAB, (steps, BATCH, SEQ), generator=g)
    labels = torch.randint(0, LABELS, (steps, BATCH), generator=g)
    return input_ids, labels


def run(scenario):
    seed = scenario.get("seed", 0)
    torch.manual_seed(seed)
    model = build_model()
    init_weights(model, seed)
    if "prezero" in scenario:
        zero_blocks(model, **scenario["prezero"])
    layers = prunable_layers(model)
    initial = {name: m.weight.detach().clone() for name, m in layers}
    probe = scenario.get("probe")

    config = WeightPruningConfig(scenario["pruning_configs"], **scenario["globals"])
    compression_manager = prepare_compression(model=model, confs=config)
    compression_manager.callbacks.on_train_begin()

    optimizer = torch.optim.AdamW(model.parameters(), lr=scenario.get("lr", 1e-3), weight_decay=0.01)
    epochs, steps_per_epoch = scenario["epochs"], scenario["steps_per_epoch"]
    input_ids, labels = make_data(seed, epochs * steps_per_epoch)

    zeros_per_step, loss_returned = [], []
    after_first_step = None
    for epoch in range(epochs):
        model.train()
        compression_manager.callbacks.on_epoch_begin(epoch)
        for local_step in range(steps_per_epoch):
            step = epoch * steps_per_epoch + local_step
            batch = {"input_ids": input_ids[step], "attention_mask": torch.ones_like(input_ids[step]),
                     "labels": labels[step]}
            compression_manager.callbacks.on_step_begin(local_step)
            outputs = model(**batch)
            loss = outputs.loss
            returned = compression_manager.callbacks.on_after_compute_loss(batch, outputs, loss)
            optimizer.zero_grad()
            loss.backward()
            compression_manager.callbacks.on_before_optimizer_step()
            optimizer.step()
            compression_manager.callbacks.on_after_optimizer_step()
            compression_manager.callbacks.on_step_end()
            zeros_per_step.append([int((m.weight == 0).sum()) for _, m in layers])
            loss_returned.append(type(returned).__name__ if returned is not loss else "the loss")
            if probe is not None and after_first_step is None:
                after_first_step = dict(layers)[probe].weight.detach().clone()
        compression_manager.callbacks.on_epoch_end()
    compression_manager.callbacks.on_train_end()

    compression_manager.callbacks.on_before_eval()
    model.eval()
    with torch.no_grad():
        eval_loss = float(model(input_ids=input_ids[0], attention_mask=torch.ones_like(input_ids[0]),
                                labels=labels[0]).loss)
    compression_manager.callbacks.on_after_eval()

    return {
        "layers": [name for name, _ in layers],
        "initial": {name: w.numpy() for name, w in initial.items()},
        "final": {name: m.weight.detach().clone().numpy() for name, m in layers},
        "zeros_per_step": zeros_per_step,
        "loss_returned": loss_returned,
        "probe": None if probe is None else {"initial": initial[probe].numpy(),
                                             "after_first_step": after_first_step.numpy()},
        "eval_loss": eval_loss,
        "compression_manager": compression_manager,
    }


if __name__ == "__main__":
    for scenario in json.load(open(sys.argv[1])):
        if scenario.get("model") != "bert":
            continue
        result = run(scenario)
        print(scenario.get("id", ""))
        for name in result["layers"]:
            w = result["final"][name]
            print(f"  {name:48s} {tuple(w.shape)!s:10s} sparsity {float((w == 0).mean()):.4f}")
