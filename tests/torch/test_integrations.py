"""HFPruningCallback (transformers.Trainer), LightningPruningCallback (Lightning) and Accelerate, on tiny models.

Every run is offline and small: a 2-layer BERT with hidden size 32 (13 prunable Linear layers, 17,408 prunable
weights) or a 16-32-32-4 MLP, random data made here, 6-8 optimizer steps.
"""

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from nc_prune import WeightPruningConfig
from nc_prune.core.errors import ConfigError, PruningStateError

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate")

from transformers import (BertConfig, BertForSequenceClassification, Trainer, TrainerCallback,  # noqa: E402
                          TrainingArguments)

from nc_prune.torch import strip  # noqa: E402
from nc_prune.torch.integrations import HFPruningCallback  # noqa: E402

#: 4x1 blocks, 50 % in every layer, pruning at steps 0, 2 and 4 (the schedule ends at optimizer step 4).
CONFIG = dict(pruning_type="snip_momentum", pattern="4x1", target_sparsity=0.5, start_step=0, end_step=4,
              pruning_frequency=2, pruning_scope="local")
# (out, in) of the pruned Linear layers of the tiny BERT: per encoder layer q, k, v, attention output,
# intermediate, output; then the pooler. The classifier (2x32) is the head and stays dense.
BERT_LAYERS = {**{f"bert.encoder.layer.{i}.{name}": shape for i in range(2) for name, shape in [
    ("attention.self.query", (32, 32)), ("attention.self.key", (32, 32)), ("attention.self.value", (32, 32)),
    ("attention.output.dense", (32, 32)), ("intermediate.dense", (64, 32)), ("output.dense", (32, 64))]},
    "bert.pooler.dense": (32, 32)}
BERT_PRUNABLE = sum(o * i for o, i in BERT_LAYERS.values())


def tiny_bert(fix_accumulation_loss=False):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=16, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, num_labels=2)
    model = BertForSequenceClassification(config)
    if fix_accumulation_loss:
        # BERT's forward takes **kwargs, so transformers 5 assumes its loss is already divided for gradient
        # accumulation (num_items_in_batch) and does not divide it; the classification loss is a plain mean, so
        # accumulated gradients come out N times too large. Say so on this instance: Trainer then divides.
        model.accepts_loss_kwargs = False
    return model


def tiny_data(n=32):
    g = torch.Generator().manual_seed(1)
    return [{"input_ids": torch.randint(0, 64, (8,), generator=g), "labels": i % 2} for i in range(n)]


def hf_args(out, **kw):
    base = dict(output_dir=str(out), per_device_train_batch_size=4, max_steps=6, save_strategy="no", report_to=[],
                use_cpu=True, disable_tqdm=True, logging_strategy="no", learning_rate=1e-3, seed=0)
    base.update(kw)
    return TrainingArguments(**base)


def hf_run(out, callbacks=None, model=None, resume=None, **kw):
    model = model if model is not None else tiny_bert()
    cb = HFPruningCallback(WeightPruningConfig(**CONFIG))
    trainer = Trainer(model=model, args=hf_args(out, **kw), train_dataset=tiny_data(), callbacks=[cb] + (callbacks or []))
    trainer.train(resume_from_checkpoint=resume)
    return trainer, cb


def pruned_modules(model):
    return {n: m for n, m in model.named_modules() if "weight_prune_mask" in m._buffers}


def assert_exact_4x1(model, layers):
    """Every listed layer: exactly half its weights zero, in whole 4x1 blocks, exactly where the mask is off."""
    modules = dict(model.named_modules())
    for name, (out, inp) in layers.items():
        w = modules[name].weight.detach()
        assert tuple(w.shape) == (out, inp)
        assert int((w == 0).sum()) == out * inp // 2, name
        blocks = (w == 0).reshape(out // 4, 4, inp)  # 4 consecutive output rows x 1 input column
        assert bool((blocks.all(dim=1) | ~blocks.any(dim=1)).all()), f"{name}: a 4x1 block is partly zero"
        mask = modules[name].weight_prune_mask
        assert int((~mask).sum()) == out * inp // 2 and bool((w[~mask] == 0).all()), name


class Recorder(TrainerCallback):
    """Zero counts of every pruned layer and the masks after each optimizer step."""

    def __init__(self):
        self.zeros, self.masks, self.steps = [], [], []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        mods = pruned_modules(model)
        self.steps.append(state.global_step)
        self.zeros.append(sum(int((m.weight == 0).sum()) for m in mods.values()))
        self.masks.append({n: m.weight_prune_mask.clone() for n, m in mods.items()})


# ---- transformers.Trainer ----------------------------------------------------------------------------------
def test_hf_trainer_prunes_to_exact_4x1_and_keeps_zeros(tmp_path):
    rec = Recorder()
    trainer, cb = hf_run(tmp_path, callbacks=[rec])
    model = trainer.model
    assert set(pruned_modules(model)) == set(BERT_LAYERS)
    assert_exact_4x1(model, BERT_LAYERS)
    assert int((model.classifier.weight == 0).sum()) == 0  # the head stays dense
    assert cb.pruning.global_step == trainer.state.global_step == 6
    assert rec.steps == [1, 2, 3, 4, 5, 6]
    # pruning at steps 0, 2, 4 (inside optimizer steps 1, 3, 5): sparsity grows there and is final from step 5 on
    assert rec.zeros[0] > 0 and rec.zeros[0] == rec.zeros[1] < rec.zeros[2] == rec.zeros[3] < rec.zeros[4]
    assert rec.zeros[4] == rec.zeros[5] == BERT_PRUNABLE // 2 == 8704
    # after the schedule ends, AdamW's momentum does not revive a pruned weight: same masks, same zeros
    assert all(torch.equal(rec.masks[4][n], rec.masks[5][n]) for n in BERT_LAYERS)
    report = cb.pruning.report()
    assert report.total_zeros == 8704 and report["bert.pooler.dense"].ratio == 0.5


def test_hf_gradient_accumulation_counts_optimizer_steps(tmp_path):
    """4 samples per step as 1x4 or 2 micro-batches of 2: same step count, same masks, same weights."""
    whole, cb1 = hf_run(tmp_path / "a", model=tiny_bert(fix_accumulation_loss=True))
    accum, cb2 = hf_run(tmp_path / "b", model=tiny_bert(fix_accumulation_loss=True), per_device_train_batch_size=2,
                        gradient_accumulation_steps=2)
    assert cb2.pruning.global_step == accum.state.global_step == 6 == cb1.pruning.global_step
    a, b = whole.model.state_dict(), accum.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if k.endswith("_prune_mask"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a if k.endswith("weight")) < 1e-5  # summation order only
    assert_exact_4x1(accum.model, BERT_LAYERS)


def test_hf_resume_from_checkpoint_is_bit_identical(tmp_path):
    straight, _ = hf_run(tmp_path / "a", save_strategy="steps", save_steps=3)
    ckpt = tmp_path / "a" / "checkpoint-3"
    from safetensors.torch import load_file
    saved = load_file(str(ckpt / "model.safetensors"))
    assert int(saved["nc_prune_step"]) == 3  # the step counter and masks are in Trainer's checkpoint
    assert sum(1 for k in saved if k.endswith("_prune_mask")) == 13
    assert sum(1 for k in saved if k.endswith("_prune_score")) == 13  # snip_momentum's running scores too

    resumed, cb = hf_run(tmp_path / "b", resume=str(ckpt))
    assert cb.pruning.global_step == resumed.state.global_step == 6
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert_exact_4x1(resumed.model, BERT_LAYERS)


def test_hf_save_model_writes_zeros_and_strip_gives_a_plain_model(tmp_path):
    trainer, _ = hf_run(tmp_path / "run")
    trainer.save_model(str(tmp_path / "pruned"))
    loaded = BertForSequenceClassification.from_pretrained(str(tmp_path / "pruned"))  # masks: unexpected keys
    modules = dict(loaded.named_modules())
    assert all(int((modules[n].weight == 0).sum()) == o * i // 2 for n, (o, i) in BERT_LAYERS.items())

    strip(trainer.model)
    trainer.save_model(str(tmp_path / "plain"))
    from safetensors.torch import load_file
    keys = set(load_file(str(tmp_path / "plain" / "model.safetensors")))
    assert not any("prune" in k for k in keys)
    plain = BertForSequenceClassification.from_pretrained(str(tmp_path / "plain"))
    assert_zeros = {n: int((dict(plain.named_modules())[n].weight == 0).sum()) for n in BERT_LAYERS}
    assert assert_zeros == {n: o * i // 2 for n, (o, i) in BERT_LAYERS.items()}


def test_hf_bf16_mixed_precision_on_cpu(tmp_path):
    trainer, cb = hf_run(tmp_path, bf16=True)
    assert trainer.accelerator.mixed_precision == "bf16"
    assert trainer.model.bert.pooler.dense.weight.dtype == torch.float32  # autocast: fp32 master weights
    assert_exact_4x1(trainer.model, BERT_LAYERS)
    assert cb.pruning.global_step == 6


def test_hf_refuses_one_shot_configs():
    for kind, pattern in (("sparse_gpt", "1x1"), ("wanda", "2:4"), ("retrain_free", "channelx1")):
        with pytest.raises(ConfigError, match=rf"pruning_type='{kind}'.*HFPruningCallback.*dataloader="):
            HFPruningCallback(WeightPruningConfig(pruning_type=kind, pattern=pattern, target_sparsity=0.5))


def test_hf_callback_reused_on_a_second_model_is_refused(tmp_path):
    cb = HFPruningCallback(WeightPruningConfig(**CONFIG))
    Trainer(model=tiny_bert(), args=hf_args(tmp_path), train_dataset=tiny_data(), callbacks=[cb])
    with pytest.raises(PruningStateError, match="already prunes another model.*new HFPruningCallback"):
        Trainer(model=tiny_bert(), args=hf_args(tmp_path), train_dataset=tiny_data(), callbacks=[cb])


def test_hf_no_optimizer_is_an_error(tmp_path):
    cb = HFPruningCallback(WeightPruningConfig(**CONFIG))
    args = hf_args(tmp_path)
    state, control = transformers.TrainerState(), transformers.TrainerControl()
    with pytest.raises(ConfigError, match="found no optimizer"):
        cb.on_train_begin(args, state, control, model=tiny_bert(), optimizer=None)


def test_hf_resume_when_the_checkpoint_could_not_reach_the_masks(tmp_path):
    hf_run(tmp_path / "a", max_steps=3, save_strategy="steps", save_steps=3)
    ckpt = str(tmp_path / "a" / "checkpoint-3")
    # the callback added after Trainer.__init__: the checkpoint loads before the model has pruning buffers
    late = Trainer(model=tiny_bert(), args=hf_args(tmp_path / "b"), train_dataset=tiny_data())
    late.add_callback(HFPruningCallback(WeightPruningConfig(**CONFIG)))
    with pytest.raises(PruningStateError, match=r"resumes at optimizer step 3.*Trainer\(\.\.\., callbacks="):
        late.train(resume_from_checkpoint=ckpt)
    # a dense checkpoint (no pruning state in it) resumed with pruning: the two step counts would disagree
    dense = Trainer(model=tiny_bert(), args=hf_args(tmp_path / "c", max_steps=3, save_strategy="steps",
                                                    save_steps=3), train_dataset=tiny_data())
    dense.train()
    with pytest.raises(PruningStateError, match="checkpoint without pruning state"):
        hf_run(tmp_path / "d", resume=str(tmp_path / "c" / "checkpoint-3"))


def test_hf_second_train_without_resume_is_refused(tmp_path):
    trainer, cb = hf_run(tmp_path, max_steps=2)
    with pytest.raises(PruningStateError, match="pruned for 2 optimizer steps but the framework starts at step 0"):
        trainer.train()


def test_importing_nc_prune_torch_imports_no_framework():
    code = ("import sys, nc_prune.torch, nc_prune.torch.integrations as i; "
            "assert not {'transformers', 'lightning', 'pytorch_lightning'} & set(sys.modules), sys.modules.keys(); "
            "assert 'HFPruningCallback' in dir(i)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd()] + sys.path))
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# ---- Accelerate ---------------------------------------------------------------------------------------------
def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))


def _accelerate_run(order, accumulation, batch):
    from accelerate import Accelerator
    from nc_prune.torch import prepare_pruning
    model = _mlp()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=accumulation)
    g = torch.Generator().manual_seed(1)
    data = torch.utils.data.TensorDataset(torch.randn(64, 16, generator=g), torch.randint(0, 4, (64,), generator=g))
    loader = torch.utils.data.DataLoader(data, batch_size=batch)
    config = WeightPruningConfig(**CONFIG)
    if order == "before":
        pruning = prepare_pruning(model, config, optimizer)
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    else:
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
        pruning = prepare_pruning(model, config, optimizer)  # the AcceleratedOptimizer: looked through
    for x, y in loader:
        with accelerator.accumulate(model):
            accelerator.backward(nn.functional.cross_entropy(model(x), y))
            optimizer.step()
            optimizer.zero_grad()
    return pruning, model.state_dict()


def test_accelerate_prepare_before_or_after_prepare_pruning():
    runs = {(order, acc): _accelerate_run(order, acc, 8 // acc) for order in ("before", "after") for acc in (1, 2)}
    ref = runs[("before", 1)][1]
    for (order, acc), (pruning, state) in runs.items():
        assert pruning.global_step == 8, (order, acc)  # 64 samples / 8 per optimizer step
        assert int((~state["0.weight_prune_mask"]).sum()) == 256 and int((~state["2.weight_prune_mask"]).sum()) == 512
        assert int((state["0.weight"] == 0).sum()) == 256 and int((state["2.weight"] == 0).sum()) == 512
        assert all(torch.equal(ref[k], state[k]) for k in ref if k.endswith("_prune_mask")), (order, acc)
        if acc == 1:
            assert all(torch.equal(ref[k], state[k]) for k in ref), order  # the order makes no difference


# ---- Lightning ----------------------------------------------------------------------------------------------
def _lightning():
    try:
        import lightning.pytorch as pl
    except ImportError:
        try:
            import pytorch_lightning as pl
        except ImportError:
            pytest.skip("neither lightning nor pytorch_lightning is installed (pip install 'nc-prune[integrations]')")
    return pl


def _lightning_run(out, epochs=2, ckpt=None, batch=8, accumulation=1, precision="32-true", config=None,
                   callbacks=()):
    pl = _lightning()
    from nc_prune.torch.integrations import LightningPruningCallback

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _mlp()

        def training_step(self, batch, index):
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-2)

    module = Module()
    g = torch.Generator().manual_seed(1)
    data = torch.utils.data.TensorDataset(torch.randn(32, 16, generator=g), torch.randint(0, 4, (32,), generator=g))
    cb = LightningPruningCallback(WeightPruningConfig(**(config or dict(CONFIG, end_step=6))))
    saver = pl.callbacks.ModelCheckpoint(dirpath=str(out), save_top_k=-1, every_n_epochs=1)
    trainer = pl.Trainer(max_epochs=epochs, callbacks=[cb, saver, *callbacks], logger=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", accumulate_grad_batches=accumulation,
                         precision=precision, deterministic=True)
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=batch), ckpt_path=ckpt)
    return trainer, module, cb


MLP_LAYERS = {"net.0": (32, 16), "net.2": (32, 32)}  # net.4 (4x32) is the head


def test_lightning_prunes_to_exact_4x1_with_snip_scores(tmp_path):
    pl = _lightning()
    zeros = []

    class Zeros(pl.Callback):
        def on_train_batch_end(self, trainer, module, *args):
            zeros.append(int((module.net[0].weight == 0).sum()) + int((module.net[2].weight == 0).sum()))

    trainer, module, cb = _lightning_run(tmp_path, callbacks=[Zeros()])
    assert cb.pruning.global_step == trainer.global_step == 8  # 2 epochs x 4 batches
    assert_exact_4x1(module, MLP_LAYERS)
    assert int((module.net[4].weight == 0).sum()) == 0
    # pruning steps 0, 2, 4, 6: growing there, 768 = half of 512 + 1024 from step 7 on, kept through step 8
    assert zeros[0] == zeros[1] < zeros[2] == zeros[3] < zeros[4] == zeros[5] < zeros[6] == zeros[7] == 768


def test_lightning_resume_from_checkpoint_is_bit_identical(tmp_path):
    _, straight, _ = _lightning_run(tmp_path / "a")
    ckpt = tmp_path / "a" / "epoch=0-step=4.ckpt"
    state = torch.load(str(ckpt), weights_only=True)["state_dict"]
    assert int(state["nc_prune_step"]) == 4 and int((~state["net.0.weight_prune_mask"]).sum()) > 0
    trainer, resumed, cb = _lightning_run(tmp_path / "b", ckpt=str(ckpt))
    assert cb.pruning.global_step == trainer.global_step == 8
    a, b = straight.state_dict(), resumed.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_lightning_gradient_accumulation_counts_optimizer_steps(tmp_path):
    _, whole, _ = _lightning_run(tmp_path / "a")
    trainer, accum, cb = _lightning_run(tmp_path / "b", batch=4, accumulation=2)
    assert cb.pruning.global_step == trainer.global_step == 8
    a, b = whole.state_dict(), accum.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if k.endswith("_prune_mask"))
    assert_exact_4x1(accum, MLP_LAYERS)


def test_lightning_bf16_mixed_on_cpu(tmp_path):
    trainer, module, cb = _lightning_run(tmp_path, precision="bf16-mixed")
    assert cb.pruning.global_step == trainer.global_step == 8
    assert_exact_4x1(module, MLP_LAYERS)


def test_lightning_refuses_one_shot_configs():
    _lightning()
    from nc_prune.torch.integrations import LightningPruningCallback
    with pytest.raises(ConfigError, match="pruning_type='wanda'.*LightningPruningCallback"):
        LightningPruningCallback(WeightPruningConfig(pruning_type="wanda", pattern="2:4", target_sparsity=0.5))


def test_hf_model_init_is_refused_naming_the_fix(tmp_path):
    trainer = Trainer(model_init=tiny_bert, args=hf_args(tmp_path), train_dataset=tiny_data(),
                      callbacks=[HFPruningCallback(WeightPruningConfig(**CONFIG))])
    with pytest.raises(PruningStateError, match=r"model_init=.*pass Trainer\(model=\.\.\.\)"):
        trainer.train()


def test_hf_model_already_pruned_by_prepare_pruning_is_refused(tmp_path):
    from nc_prune.torch import prepare_pruning
    model = tiny_bert()
    pruning = prepare_pruning(model, WeightPruningConfig(**CONFIG))  # noqa: F841  (kept alive: it is live)
    with pytest.raises(PruningStateError, match="already being pruned.*drop the prepare_pruning call"):
        Trainer(model=model, args=hf_args(tmp_path), train_dataset=tiny_data(),
                callbacks=[HFPruningCallback(WeightPruningConfig(**CONFIG))])
