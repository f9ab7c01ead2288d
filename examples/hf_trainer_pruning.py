"""Pruning inside ``transformers.Trainer``: a tiny BERT trained and pruned to 4x1 blocks, resumed, stripped.

    python examples/hf_trainer_pruning.py            # about 15 s on 2 CPU cores
    python examples/hf_trainer_pruning.py --quick    # a few seconds (CI)

Offline: the model is built from a config (no hub), the data is made here. The task: in a sequence of 16
tokens (vocabulary 32), is the first token smaller than the last? ``HFPruningCallback`` prunes every Linear of
the encoder and the pooler (the classifier head stays dense) with ``snip_momentum`` to 50 % per layer in 4x1
blocks while Trainer trains (400 steps; pruning every 40 up to step 240), checkpoints half-way, and the run is
resumed from that checkpoint in a new Trainer: it ends bit for bit where the uninterrupted run ends.
``strip`` then leaves a plain model, saved with ``trainer.save_model`` and loaded back with ``from_pretrained``.
Measured (seed 0, one thread, transformers 5.24): dense 98.8 %, 4x1 at 50 % 98.2 % test accuracy.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from nc_prune import WeightPruningConfig
from nc_prune.torch import sparsity_report, strip
from nc_prune.torch.integrations import HFPruningCallback


def make_data(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 32, (n, 16), generator=g)
    labels = (ids[:, 0] < ids[:, -1]).long()
    return [{"input_ids": i, "labels": int(y)} for i, y in zip(ids, labels)]


def make_model() -> BertForSequenceClassification:
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(
        vocab_size=32, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=2))


def accuracy(model, data) -> float:
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=torch.stack([d["input_ids"] for d in data])).logits
    return float((logits.argmax(-1) == torch.tensor([d["labels"] for d in data])).float().mean())


def train(out: Path, steps: int, config: WeightPruningConfig | None, resume: str | None = None):
    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=32, max_steps=steps,
                             learning_rate=2e-3, warmup_steps=steps // 10, save_strategy="steps",
                             save_steps=steps // 2, report_to=[], use_cpu=True, disable_tqdm=True,
                             logging_strategy="no", seed=0)
    callback = HFPruningCallback(config) if config is not None else None
    trainer = Trainer(model=make_model(), args=args, train_dataset=make_data(4096, seed=1),
                      callbacks=[callback] if callback else None)
    trainer.train(resume_from_checkpoint=resume)
    return trainer, callback


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps only (CI)")
    steps = 40 if parser.parse_args().quick else 400
    torch.set_num_threads(1)  # a model this small runs fastest on one thread (2 threads on a busy 2-core box: 20x slower)
    test = make_data(512, seed=2)
    # prune from step 0 to 60 % of the run, every tenth of it; the last 40 % fine-tune with the masks held
    # pruning_scope="local": each layer to 50 % (the default, "global", ranks all layers together)
    config = WeightPruningConfig(pruning_type="snip_momentum", pattern="4x1", target_sparsity=0.5,
                                 pruning_scope="local", start_step=0, end_step=int(0.6 * steps),
                                 pruning_frequency=steps // 10)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dense, _ = train(tmp / "dense", steps, None)
        print(f"dense, {steps} steps: test accuracy {accuracy(dense.model, test):.3f}")
        trainer, callback = train(tmp / "run", steps, config)
        print(callback.pruning.report())
        print(f"pruning step {callback.pruning.global_step} = Trainer global_step {trainer.state.global_step}")
        print(f"4x1 at 50%, {steps} steps: test accuracy {accuracy(trainer.model, test):.3f}")

        half = tmp / "run" / f"checkpoint-{steps // 2}"
        resumed, _ = train(tmp / "resumed", steps, config, resume=str(half))
        same = all(torch.equal(a, b) for a, b in zip(trainer.model.state_dict().values(),
                                                      resumed.model.state_dict().values()))
        print(f"resumed from {half.name}: the same weights, masks and step bit for bit: {same}")
        assert same

        strip(trainer.model)  # masks applied a last time, nc_prune's buffers removed
        trainer.save_model(str(tmp / "pruned"))
        plain = BertForSequenceClassification.from_pretrained(str(tmp / "pruned"))
        total = sparsity_report(plain)
        print(f"saved and reloaded with from_pretrained: {total.total_zeros:,} zeros "
              f"(pruned layers at 50%), test accuracy {accuracy(plain, test):.3f}")


if __name__ == "__main__":
    main()
