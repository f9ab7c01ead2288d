"""Pruning under torch.distributed: 2 gloo processes on CPU, started once for the whole module.

Each rank runs every scenario on its half of the same global batches; the parent process runs the same
scenarios in one process on the whole batches, and the masks must be identical (``torch.equal``) on both
ranks and with the single-process run.
"""

from __future__ import annotations

import os
import socket
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from nc_prune import WeightPruningConfig
from nc_prune.torch import prepare_pruning, strip
from nc_prune.torch.distributed import RankMismatchError, mask_checksums

WORLD = 2
BATCH = 16  # global batch; each rank takes BATCH // WORLD rows
STEPS = 7
LAYERS = ("0", "2")  # "4" is the head: left dense

# 4x1 with global scope: 768 of the 1,536 weights, ranked across the two layers
GLOBAL_4X1 = {("magnitude", "4x1", "global"): {"0": 112, "2": 656},
              ("snip_momentum", "4x1", "global"): {"0": 160, "2": 608}}
COMBOS = [(t, p, s) for t in ("magnitude", "snip_momentum") for p in ("4x1", "2:4") for s in ("local", "global")]


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))


def batch(step, rank=None):
    g = torch.Generator().manual_seed(1000 + step)
    x, y = torch.randn(BATCH, 16, generator=g), torch.randint(0, 4, (BATCH,), generator=g)
    if rank is None:
        return x, y
    n = BATCH // WORLD
    return x[rank * n:(rank + 1) * n], y[rank * n:(rank + 1) * n]


def config(ptype, pattern, scope, prefix=""):
    # op_names spelled with DDP's "module." prefix in half the scenarios: the same layers must be selected
    return WeightPruningConfig(pruning_type=ptype, pattern=pattern, pruning_scope=scope, target_sparsity=0.5,
                               start_step=1, end_step=5, pruning_frequency=2,
                               op_names=[f"{prefix}0", f"{prefix}2"])


def train(model, opt, steps, rank=None, first=0, corrupt=None):
    for step in range(first, first + steps):
        x, y = batch(step, rank)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        if corrupt is not None:
            corrupt(step)
        opt.step()


def masks_of(inner):
    return {n: getattr(inner, n).weight_prune_mask.clone() for n in LAYERS}


def single_process(ptype, pattern, scope):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    pruning = prepare_pruning(model, config(ptype, pattern, scope), opt)
    train(model, opt, STEPS)
    return {"masks": masks_of(model), "step": pruning.global_step, "weights": [p.detach().clone() for p in model.parameters()]}


# ---- what each rank runs ------------------------------------------------------------------------------
def _ddp_scenarios(rank):
    from torch.nn.parallel import DistributedDataParallel as DDP

    out = {}
    for i, (ptype, pattern, scope) in enumerate(COMBOS):
        wrap_first = i % 2 == 0  # DDP before prepare_pruning, or wrapped afterwards
        model = make_model()
        if wrap_first:
            model = DDP(model)
            opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
            pruning = prepare_pruning(model, config(ptype, pattern, scope, prefix="module." if i % 4 else ""), opt)
        else:
            opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
            pruning = prepare_pruning(model, config(ptype, pattern, scope, prefix="module." if i % 4 else ""), opt)
            model = DDP(model)
        train(model, opt, STEPS, rank)
        out[(ptype, pattern, scope)] = {"masks": masks_of(model.module), "step": pruning.global_step,
                                        "weights": [p.detach().clone() for p in model.module.parameters()]}
    return out


def _divergence(rank, check):
    """snip_momentum under DDP; rank 1 corrupts layer 2's running scores after the backward of pruning step 3
    (before it, DDP's broadcast_buffers would copy rank 0's score buffers back at the next forward)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    prepare_pruning(model, config("snip_momentum", "4x1", "local"), opt, check_masks_across_ranks=check)
    model = DDP(model)

    def corrupt(step):
        if rank == 1 and step == 3:
            score = model.module[2].weight_prune_score
            score.copy_(torch.rand(score.shape, generator=torch.Generator().manual_seed(5)))

    try:
        train(model, opt, 4, rank, corrupt=corrupt)
    except RankMismatchError as exc:
        return {"error": str(exc)}
    return {"error": None, "masks": masks_of(model.module)}


def _oneshot(rank, wrap):
    """One-shot snip_momentum from 4 batches per rank: an unwrapped model has its gradients averaged by
    nc_prune, a DDP model by DDP's backward."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = make_model()
    target = DDP(model) if wrap else model
    cfg = WeightPruningConfig(pruning_type="snip_momentum", pattern="4x1", target_sparsity=0.5, pruning_scope="global")
    prepare_pruning(target, cfg, dataloader=[batch(s, rank) for s in range(4)], loss_func=nn.functional.cross_entropy)
    return masks_of(model)


# ---- one-shot from calibration data: sparse_gpt and wanda ---------------------------------------------
CALIB = [("wanda", "1x1"), ("wanda", "2:4"), ("sparse_gpt", "2:4")]
CALIB_COMBOS = [(kind, m, p) for kind in ("mlp", "llama") for m, p in CALIB]
SPARSEGPT_ATOL = 1e-5  # updated weights vs one process on all batches: only the summation order differs


def llama():
    import transformers

    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=100, max_position_embeddings=64, bos_token_id=0, eos_token_id=0))


def calibration_batches(kind, rank=None):
    """Unequal shares with different statistics, so that the token counts weigh: rank 0 has 3 batches, rank 1
    one. MLP: 48 rows on rank 0, 16 rows on rank 1 drawn with other feature scales. Llama: 3 x (2, 8) tokens
    from ids 2..49 on rank 0, one (2, 12) batch from ids 50..99 on rank 1 (another length). None: rank 0's
    batches then rank 1's, what one process is fed."""
    if kind == "mlp":
        g0, g1 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(8)
        shares = [[torch.randn(16, 16, generator=g0) for _ in range(3)],
                  [torch.randn(16, 16, generator=g1) * torch.linspace(0.2, 5.0, 16)]]
    else:
        g = torch.Generator().manual_seed(9)
        shares = [[{"input_ids": torch.randint(2, 50, (2, 8), generator=g)} for _ in range(3)],
                  [{"input_ids": torch.randint(50, 100, (2, 12), generator=g)}]]
    return shares[0] + shares[1] if rank is None else shares[rank]


def calibrated_model(kind):
    return make_model() if kind == "mlp" else llama()


def calib_config(method, pattern):
    return WeightPruningConfig(pruning_type=method, pattern=pattern, target_sparsity=0.5)


def calibrated_state(model, pruning):
    return {"masks": {n: m.clone() for n, m in pruning.masks.items()},
            "weights": {n: model.get_submodule(n).weight.detach().clone() for n in pruning.masks}}


def _calibrated(rank):
    """sparse_gpt and wanda from each rank's own batches, on the plain model and through DDP (every other
    combination), with nc_prune's collectives counted."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    from nc_prune.torch.distributed import count_collectives

    out = {}
    for i, (kind, method, pattern) in enumerate(CALIB_COMBOS):
        model = calibrated_model(kind)
        target = DDP(model) if i % 2 else model
        with count_collectives() as log:
            pruning = prepare_pruning(target, calib_config(method, pattern),
                                      dataloader=calibration_batches(kind, rank))
        out[(kind, method, pattern)] = dict(calibrated_state(model, pruning), calls=dict(log.calls),
                                            bytes=dict(log.bytes), ranks=pruning.calibration.ranks,
                                            tokens=pruning.calibration.tokens, ddp=bool(i % 2))
    return out


class Gated(nn.Module):
    """Runs its Linear only on batches of 16 rows or more (an expert some batches are never routed to)."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(32, 32)

    def forward(self, x):
        return self.inner(x) if x.shape[0] >= 16 else x


def gated_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), Gated(), nn.Linear(32, 4))


def gated_batches(rank=None):
    """Rank 0: two batches of 16 rows; rank 1: two of 8 rows, so "1.inner" sees no input on rank 1."""
    g = torch.Generator().manual_seed(11)
    shares = [[torch.randn(16, 16, generator=g) for _ in range(2)], [torch.randn(8, 16, generator=g) for _ in range(2)]]
    return shares[0] + shares[1] if rank is None else shares[rank]


def gated_config():
    return WeightPruningConfig(pruning_type="sparse_gpt", pattern="2:4", target_sparsity=0.5,
                               op_names=["0", "1.inner"])


def _calibrated_gated(rank):
    model = gated_model()
    pruning = prepare_pruning(model, gated_config(), dataloader=gated_batches(rank))
    return calibrated_state(model, pruning)


def _calibrated_diverged(rank):
    """Wanda on the MLP with layer 2's weights changed on rank 1 only: the statistics agree (reduced), the
    masks of layer 2 do not, and the mask check after one-shot pruning says so on both ranks. Then batches
    rejected on rank 1 only — by the MLP's first block (in the statistics pass), by Llama's embedding (in the
    check before the blocks): both ranks stop, none waits in a collective, no weight changes."""
    from nc_prune.core.errors import ConfigError, PruningStateError

    out = {}
    model = make_model()
    if rank == 1:
        with torch.no_grad():
            model[2].weight.mul_(torch.rand(model[2].weight.shape, generator=torch.Generator().manual_seed(3)))
    try:
        prepare_pruning(model, calib_config("wanda", "1x1"), dataloader=calibration_batches("mlp", rank))
        out["mismatch"] = None
    except RankMismatchError as exc:
        out["mismatch"] = str(exc)
    for kind, bad in (("mlp", torch.randn(16, 7)),  # 7 features where the model takes 16
                      ("llama", {"input_ids": torch.full((2, 8), 200)})):  # ids past the vocabulary
        model = calibrated_model(kind)
        batches = calibration_batches(kind, rank) if rank == 0 else [bad]
        before = [p.detach().clone() for p in model.parameters()]
        try:
            prepare_pruning(model, calib_config("sparse_gpt", "2:4"), dataloader=batches)
            out[kind] = None
        except (ConfigError, PruningStateError) as exc:
            out[kind] = f"{type(exc).__name__}: {exc}"
        out[kind + "_unchanged"] = all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    return out


def _resume(rank, tmp):
    """DDP checkpoint with state_dict at step 3 (rank 0 saves), loaded into new objects on every rank."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    cfg = config("snip_momentum", "4x1", "global")
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    prepare_pruning(model, cfg, opt)
    ddp = DDP(model)
    train(ddp, opt, 3, rank)
    path = os.path.join(tmp, "ddp_ckpt.pt")
    if rank == 0:
        torch.save({"model": ddp.module.state_dict(), "optimizer": opt.state_dict()}, path)
    dist.barrier()
    fresh = make_model()
    opt2 = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    pruning = prepare_pruning(fresh, cfg, opt2)
    ckpt = torch.load(path)
    fresh.load_state_dict(ckpt["model"])
    opt2.load_state_dict(ckpt["optimizer"])
    resumed_at = pruning.global_step
    ddp2 = DDP(fresh)
    train(ddp2, opt2, STEPS - 3, rank, first=3)
    return {"resumed_at": resumed_at, "step": pruning.global_step, "masks": masks_of(fresh),
            "weights": [p.detach().clone() for p in fresh.parameters()]}


def _fsdp_model(mesh, widths=(32, 32)):
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, widths[0]), nn.ReLU(), nn.Linear(widths[0], widths[1]), nn.ReLU(),
                          nn.Linear(widths[1], 4))
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def _fsdp_scenarios(rank):
    """FSDP2 (fully_shard, DTensor weights sharded on dim 0): masks and scores are sharded like the weights."""
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (WORLD,))
    out = {}
    for ptype, pattern, scope in COMBOS:
        model = _fsdp_model(mesh)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        pruning = prepare_pruning(model, config(ptype, pattern, scope), opt)
        train(model, opt, STEPS, rank)
        layers = {n: getattr(model, n) for n in LAYERS}
        out[(ptype, pattern, scope)] = {
            "masks": {n: m.weight_prune_mask.full_tensor() for n, m in layers.items()},
            "local_shapes": {n: tuple(m.weight_prune_mask.to_local().shape) for n, m in layers.items()},
            "placements": {n: str(m.weight_prune_mask.placements) for n, m in layers.items()},
            "score_shapes": {n: tuple(m.weight_prune_score.to_local().shape) for n, m in layers.items()
                             if hasattr(m, "weight_prune_score")},
            "step": pruning.global_step,
            "weights": [p.full_tensor() for p in model.parameters()]}
    try:  # 36 rows on 2 ranks: shards of 18 rows cut through 4x1 blocks
        prepare_pruning(_fsdp_model(mesh, (36, 32)), config("magnitude", "4x1", "local"))
        out["bad_rows"] = None
    except ValueError as exc:
        out["bad_rows"] = str(exc)
    ok = prepare_pruning(_fsdp_model(mesh, (36, 32)), config("magnitude", "2:4", "local"))
    ok.prune_now()  # 2:4 groups lie within a row: any row shard fits
    out["bad_rows_2in4"] = {n: getattr(ok.model, n).weight_prune_mask.full_tensor() for n in LAYERS}
    return out


def _full(t):
    return t.full_tensor() if hasattr(t, "full_tensor") else t.clone()


def _fsdp_state(model, opt, pruning):
    """Everything a continuation depends on, as whole tensors: weights, masks, scores, momentum, step."""
    layers = {n: getattr(model, n) for n in LAYERS}
    return {"step": pruning.global_step,
            "weights": [_full(p.detach()) for p in model.parameters()],
            "masks": {n: _full(m.weight_prune_mask) for n, m in layers.items()},
            "scores": {n: _full(m.weight_prune_score) for n, m in layers.items()},
            "momentum": [_full(opt.state[p]["momentum_buffer"]) for p in model.parameters()]}


def _fsdp_resume(rank, tmp):
    """FSDP2 checkpoint with torch.distributed.checkpoint at step 3 (every rank writes its shards), loaded into
    a new model, optimizer and pruning on every rank; then strip and the full state dict."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_state_dict,
                                                         set_state_dict)
    from torch.distributed.device_mesh import init_device_mesh

    from nc_prune.torch import sparsity_report, strip

    mesh = init_device_mesh("cpu", (WORLD,))
    path = os.path.join(tmp, "fsdp_dcp")
    cfg = config("snip_momentum", "4x1", "global")
    model = _fsdp_model(mesh)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    pruning = prepare_pruning(model, cfg, opt)
    train(model, opt, 3, rank)
    msd, osd = get_state_dict(model, opt)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=path)
    out = {"report_at_3": pruning.report().to_dict()}
    train(model, opt, STEPS - 3, rank, first=3)
    out["straight"] = _fsdp_state(model, opt, pruning)

    fresh = _fsdp_model(mesh)
    opt2 = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    pruning2 = prepare_pruning(fresh, cfg, opt2)
    state = dict(zip(("model", "optim"), get_state_dict(fresh, opt2)))  # steps the empty optimizer with lr=0
    out["step_after_init"] = pruning2.global_step
    dcp.load(state, checkpoint_id=path)
    set_state_dict(fresh, opt2, model_state_dict=state["model"], optim_state_dict=state["optim"])
    out["resumed_at"] = pruning2.global_step
    train(fresh, opt2, STEPS - 3, rank, first=3)
    out["resumed"] = _fsdp_state(fresh, opt2, pruning2)
    out["report"] = pruning2.report().to_dict()
    out["report_text"] = str(sparsity_report(fresh))
    strip(fresh)
    full = get_model_state_dict(fresh, options=StateDictOptions(full_state_dict=True))
    out["stripped"] = {k: _full(v) for k, v in full.items()}
    return out


def _fsdp_comm(rank):
    """Bytes nc_prune hands to collectives in one global FSDP2 mask update (count_collectives)."""
    from torch.distributed.device_mesh import init_device_mesh

    from nc_prune.torch.distributed import count_collectives

    pruning = prepare_pruning(_fsdp_model(init_device_mesh("cpu", (WORLD,))), config("magnitude", "4x1", "global"))
    (pruner,) = pruning.pruners
    with count_collectives() as log:
        pruner.compute_new_masks(5)
    with count_collectives() as report_log:
        pruning.report()
    return {"bytes": dict(log.bytes), "calls": dict(log.calls), "report": dict(report_log.bytes)}


def _worker(rank, port, tmp):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    results = {}
    try:
        results["ddp"] = _ddp_scenarios(rank)
        results["diverged"] = _divergence(rank, check=True)
        results["diverged_unchecked"] = _divergence(rank, check=False)
        results["oneshot_plain"] = _oneshot(rank, wrap=False)
        results["oneshot_ddp"] = _oneshot(rank, wrap=True)
        results["calibrated"] = _calibrated(rank)
        results["calibrated_diverged"] = _calibrated_diverged(rank)
        results["calibrated_gated"] = _calibrated_gated(rank)
        results["resume"] = _resume(rank, tmp)
        results["fsdp"] = _fsdp_scenarios(rank)
        results["fsdp_resume"] = _fsdp_resume(rank, tmp)
        results["fsdp_comm"] = _fsdp_comm(rank)
    except Exception:
        results["crash"] = traceback.format_exc()
    finally:
        torch.save(results, os.path.join(tmp, f"rank{rank}.pt"))
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def spawned(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("dist"))
    mp.spawn(_worker, args=(_free_port(), tmp), nprocs=WORLD, join=True)
    out = [torch.load(os.path.join(tmp, f"rank{r}.pt")) for r in range(WORLD)]
    for r, res in enumerate(out):
        assert "crash" not in res, f"rank {r}:\n{res['crash']}"
    return out, tmp


@pytest.fixture(scope="module")
def ranks(spawned):
    return spawned[0]


def _same_masks(a, b):
    return set(a) == set(b) and all(torch.equal(a[n], b[n]) for n in a)


# ---- DDP ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("combo", COMBOS, ids=["-".join(c) for c in COMBOS])
def test_ddp_masks_equal_on_both_ranks_and_single_process(ranks, combo):
    ptype, pattern, scope = combo
    r0, r1 = ranks[0]["ddp"][combo], ranks[1]["ddp"][combo]
    ref = single_process(*combo)
    assert _same_masks(r0["masks"], r1["masks"])
    assert _same_masks(r0["masks"], ref["masks"])
    assert r0["step"] == r1["step"] == ref["step"] == STEPS
    pruned = {n: int((~m).sum()) for n, m in ref["masks"].items()}
    assert pruned == GLOBAL_4X1.get(combo, {"0": 256, "2": 512})  # 2:4, and local scope: half of every layer
    if pattern == "4x1":
        blocks = ref["masks"]["2"].reshape(8, 4, 32)  # 4 rows x 1 column
        assert (blocks.all(dim=1) | ~blocks.any(dim=1)).all()
    else:
        groups = ref["masks"]["0"].reshape(32, 4, 4)  # 2 of every 4 inputs
        assert ((~groups).sum(dim=2) == 2).all()
    for a, b, c in zip(r0["weights"], r1["weights"], ref["weights"]):
        assert torch.equal(a, b)  # DDP keeps the ranks bit-identical
        assert torch.allclose(a, c, atol=1e-5)  # the single process sums the batch in another order
        assert torch.equal(a == 0, c == 0)


def test_ddp_checksum_catches_a_corrupted_rank_naming_the_layer(ranks):
    e0, e1 = ranks[0]["diverged"]["error"], ranks[1]["diverged"]["error"]
    assert e0 is not None and e1 is not None  # both ranks raise: none hangs in a collective
    for e in (e0, e1):
        assert "the masks of 1 layer(s) differ between the ranks of the process group at step 3" in e
        assert "'2' (pruned weights: " in e and "'0'" not in e
        assert "check_masks_across_ranks=False" in e
    # turned off, the same corruption goes through and the ranks end with different masks for layer 2 only
    u0, u1 = ranks[0]["diverged_unchecked"], ranks[1]["diverged_unchecked"]
    assert u0["error"] is None and u1["error"] is None
    assert torch.equal(u0["masks"]["0"], u1["masks"]["0"])
    assert not torch.equal(u0["masks"]["2"], u1["masks"]["2"])
    assert int((~u0["masks"]["2"]).sum()) == int((~u1["masks"]["2"]).sum()) == 376  # 36.7 % at step 3


@pytest.mark.parametrize("which", ["oneshot_plain", "oneshot_ddp"])
def test_oneshot_gradient_scores_are_reduced_across_ranks(ranks, which):
    model = make_model()
    cfg = WeightPruningConfig(pruning_type="snip_momentum", pattern="4x1", target_sparsity=0.5, pruning_scope="global")
    prepare_pruning(model, cfg, dataloader=[batch(s) for s in range(4)], loss_func=nn.functional.cross_entropy)
    ref = masks_of(model)
    assert _same_masks(ranks[0][which], ranks[1][which])
    assert _same_masks(ranks[0][which], ref)
    assert sum(int((~m).sum()) for m in ref.values()) == 768


def _single_calibrated(kind, method, pattern, batches):
    model = calibrated_model(kind)
    pruning = prepare_pruning(model, calib_config(method, pattern), dataloader=batches)
    return calibrated_state(model, pruning), pruning


@pytest.mark.parametrize("combo", CALIB_COMBOS, ids=["-".join(c) for c in CALIB_COMBOS])
def test_oneshot_calibration_statistics_are_reduced_across_ranks(ranks, combo):
    kind, method, pattern = combo
    r0, r1 = ranks[0]["calibrated"][combo], ranks[1]["calibrated"][combo]
    ref, single = _single_calibrated(kind, method, pattern, calibration_batches(kind))
    assert single.calibration.ranks == 1 and r0["ranks"] == r1["ranks"] == WORLD
    tokens = (48, 16) if kind == "mlp" else (48, 24)  # rows reaching the first block on each rank
    assert (r0["tokens"], r1["tokens"]) == tokens and single.calibration.tokens == sum(tokens)
    assert _same_masks(r0["masks"], r1["masks"])
    assert _same_masks(r0["masks"], ref["masks"])
    layers = {"mlp": 2, "llama": 2 * 7}[kind]  # the MLP's "0" and "2"; Llama: 7 per block (heads stay dense)
    assert len(ref["masks"]) == layers
    for n, keep in ref["masks"].items():
        assert int((~keep).sum()) == keep.numel() // 2, n
    for n in ref["weights"]:
        assert torch.equal(r0["weights"][n], r1["weights"][n]), n  # the ranks are bit-identical
        assert torch.equal(r0["weights"][n] == 0, ref["weights"][n] == 0), n
        if method == "wanda":  # kept weights unchanged
            assert torch.equal(r0["weights"][n], ref["weights"][n]), n
        else:  # SparseGPT's update (measured: bit-identical, the sums are added in the same order here)
            assert torch.allclose(r0["weights"][n], ref["weights"][n], rtol=0, atol=SPARSEGPT_ATOL), n
    # one process fed rank 1's batches first adds the statistics in another order: same masks, and SparseGPT's
    # weights within the tolerance (measured: at most 3.7e-7 on the MLP, 5.7e-7 on Llama)
    other, _ = _single_calibrated(kind, method, pattern, calibration_batches(kind, 1) + calibration_batches(kind, 0))
    assert _same_masks(r0["masks"], other["masks"])
    for n in ref["weights"]:
        assert torch.allclose(r0["weights"][n], other["weights"][n], rtol=0, atol=SPARSEGPT_ATOL), n
    # the token weighting matters on these batches: the mean of the two ranks' means (rank 1's share counted
    # as often as rank 0's tokens outnumber it) gives other masks
    share = calibration_batches(kind, 1)
    unweighted, _ = _single_calibrated(kind, method, pattern,
                                       calibration_batches(kind, 0) + share * (tokens[0] // tokens[1]))
    assert not _same_masks(unweighted["masks"], ref["masks"])


def test_oneshot_calibration_reduces_once_per_block_and_checks_the_masks(ranks):
    """What the MLP's one-shot run sends per rank: one all_reduce to agree the batches were accepted (one int64
    per rank); per block with pruned layers ("0", then "2") one of the token count and a failure flag per rank,
    and one per statistic (float32 Σx² of 16 and 32 features for Wanda, Σxxᵀ for SparseGPT); then the mask
    check (4 int64 per layer)."""
    agree, counts, check = 8 * WORLD, 2 * 8 * (1 + WORLD), 2 * 4 * 8
    for method, pattern in CALIB:
        stats = 4 * (16 + 32) if method == "wanda" else 4 * (16 ** 2 + 32 ** 2)
        for r in ranks:
            res = r["calibrated"][("mlp", method, pattern)]
            assert res["calls"] == {"all_reduce": 1 + 2 * 2 + 1}
            assert res["bytes"] == {"all_reduce": agree + counts + stats + check}


def test_a_layer_no_batch_of_a_rank_reached_takes_part_with_zero_statistics(ranks):
    model = gated_model()
    pruning = prepare_pruning(model, gated_config(), dataloader=gated_batches())
    ref = calibrated_state(model, pruning)
    assert sorted(ref["masks"]) == ["0", "1.inner"]
    for r in ranks:
        got = r["calibrated_gated"]
        assert _same_masks(got["masks"], ref["masks"])
        for n in ref["weights"]:
            assert torch.allclose(got["weights"][n], ref["weights"][n], rtol=0, atol=SPARSEGPT_ATOL), n


def test_mask_check_runs_after_calibrated_one_shot_and_a_refused_batch_stops_every_rank(ranks):
    for r in ranks:
        res = r["calibrated_diverged"]
        e = res["mismatch"]
        assert e is not None and "differ between the ranks of the process group after one-shot pruning" in e
        assert "the masks of 1 layer(s)" in e and "'2' (pruned weights: 512" in e
        assert res["mlp_unchanged"] and res["llama_unchanged"]
    r0, r1 = ranks[0]["calibrated_diverged"], ranks[1]["calibrated_diverged"]
    assert r1["mlp"].startswith("PruningStateError: one-shot pruning failed in block 0 (.0): RuntimeError: mat1")
    assert r0["mlp"] == (
        "PruningStateError: one-shot pruning failed in block 0 (.0): PruningStateError: collecting the calibration "
        "statistics failed on rank(s) [1] of the process group (see their error); every rank stops here. Pruned so "
        "far: blocks none (0 layers); the other blocks are unchanged")
    assert r1["llama"].startswith("ConfigError: the model rejected a calibration batch")
    assert r0["llama"] == ("ConfigError: checking the calibration batches failed on rank(s) [1] of the process "
                           "group (see their error); every rank stops here")


def test_oneshot_calibration_on_a_world_of_one_rank_sends_nothing():
    from nc_prune.torch.distributed import count_collectives

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        with count_collectives() as log:
            got, pruning = _single_calibrated("mlp", "sparse_gpt", "2:4", calibration_batches("mlp"))
    finally:
        dist.destroy_process_group()
    ref, _ = _single_calibrated("mlp", "sparse_gpt", "2:4", calibration_batches("mlp"))
    assert log.calls == {} and pruning.calibration.ranks == 1
    assert _same_masks(got["masks"], ref["masks"])
    assert all(torch.equal(got["weights"][n], ref["weights"][n]) for n in ref["weights"])


def test_ddp_resume_from_state_dict_continues_exactly(ranks):
    combo = ("snip_momentum", "4x1", "global")
    straight = ranks[0]["ddp"][combo]
    for r in ranks:
        res = r["resume"]
        assert res["resumed_at"] == 3 and res["step"] == STEPS
        assert _same_masks(res["masks"], straight["masks"])
        assert all(torch.equal(a, b) for a, b in zip(res["weights"], straight["weights"]))


# ---- FSDP2 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("combo", COMBOS, ids=["-".join(c) for c in COMBOS])
def test_fsdp2_sharded_masks_equal_the_single_process_masks(ranks, combo):
    r0, r1 = ranks[0]["fsdp"][combo], ranks[1]["fsdp"][combo]
    ref = single_process(*combo)
    assert _same_masks(r0["masks"], ref["masks"]) and _same_masks(r1["masks"], ref["masks"])
    assert r0["step"] == r1["step"] == STEPS
    for r in (r0, r1):
        assert r["local_shapes"] == {"0": (16, 16), "2": (16, 32)}  # each rank holds half the rows
        assert r["placements"] == {"0": "(Shard(dim=0),)", "2": "(Shard(dim=0),)"}
        if combo[0] == "snip_momentum":
            assert r["score_shapes"] == {"0": (16, 16), "2": (16, 32)}
    assert {n: int((~m).sum()) for n, m in r0["masks"].items()} == GLOBAL_4X1.get(combo, {"0": 256, "2": 512})
    for a, c in zip(r0["weights"], ref["weights"]):
        assert torch.allclose(a, c, atol=1e-5) and torch.equal(a == 0, c == 0)


def test_fsdp2_row_shards_must_hold_whole_blocks(ranks):
    for r in ranks:
        e = r["fsdp"]["bad_rows"]
        assert e is not None and "layer '0': this rank holds rows" in e
        assert "of its (36, 16) weight, which cuts through the 4-row blocks of pattern '4x1'" in e
        assert "ceil(36 / world_size) divisible by 4" in e
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 36), nn.ReLU(), nn.Linear(36, 32), nn.ReLU(), nn.Linear(32, 4))
    single = prepare_pruning(model, config("magnitude", "2:4", "local"))
    single.prune_now()
    assert _same_masks(ranks[0]["fsdp"]["bad_rows_2in4"], masks_of(model))
    assert int((~ranks[1]["fsdp"]["bad_rows_2in4"]["0"]).sum()) == 36 * 16 // 2


# ---- single-process pieces ----------------------------------------------------------------------------
def test_checksum_sees_positions_not_only_counts():
    a = torch.ones(8, 8, dtype=torch.bool)
    b = a.clone()
    a[0, 1] = False
    b[1, 0] = False
    ca, cb = mask_checksums([a, b])
    assert int(ca[0]) == int(cb[0]) == 1 and int(ca[1]) != int(cb[1])
    assert torch.equal(mask_checksums([a]), mask_checksums([a.clone()]))


def test_module_prefix_in_op_names_selects_the_inner_layers_without_touching_the_config():
    cfg = WeightPruningConfig(pattern="4x1", target_sparsity=0.5, pruning_type="magnitude",
                              op_names=["module.2", r"^module\.0$"], excluded_op_names=["_orig_mod.module.4"])
    before = cfg.to_dict()
    pruning = prepare_pruning(make_model(), cfg)
    assert sorted(pruning.masks) == ["0", "2"]
    assert cfg.to_dict() == before
    pruning.prune_now()
    assert pruning.report().total_zeros == 0.5 * (16 * 32 + 32 * 32)


def test_check_flag_must_be_a_bool():
    with pytest.raises(TypeError, match="check_masks_across_ranks must be True or False, got 'no'"):
        prepare_pruning(make_model(), WeightPruningConfig(), check_masks_across_ranks="no")


# ---- FSDP2 checkpoint (torch.distributed.checkpoint), report, strip ---------------------------------------
def _single_run(steps):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    pruning = prepare_pruning(model, config("snip_momentum", "4x1", "global"), opt)
    train(model, opt, steps)
    return model, pruning


def test_fsdp2_dcp_resume_continues_bit_for_bit(ranks, spawned):
    import torch.distributed.checkpoint as dcp

    for r in ranks:
        res = r["fsdp_resume"]
        assert res["step_after_init"] == 0  # get_state_dict's lr=0 optimizer step is not counted
        assert res["resumed_at"] == 3
        a, b = res["straight"], res["resumed"]
        assert a["step"] == b["step"] == STEPS
        for key in ("masks", "scores"):
            assert set(a[key]) == set(b[key]) == set(LAYERS)
            assert all(torch.equal(a[key][n], b[key][n]) for n in LAYERS), key
        for key in ("weights", "momentum"):
            assert len(a[key]) == len(b[key]) == 6
            assert all(torch.equal(x, y) for x, y in zip(a[key], b[key])), key
        assert {n: int((~m).sum()) for n, m in b["masks"].items()} == {"0": 160, "2": 608}
    # the checkpoint holds the pruning state, masks and scores in one chunk per rank (16 of the 32 rows each)
    meta = dcp.FileSystemReader(os.path.join(spawned[1], "fsdp_dcp")).read_metadata().state_dict_metadata
    for key in ("model.0.weight_prune_mask", "model.0.weight_prune_score", "model.2.weight_prune_mask"):
        chunks = sorted((tuple(c.offsets), tuple(c.sizes)) for c in meta[key].chunks)
        assert chunks[0][0][0] == 0 and chunks[1][0][0] == 16 and all(c[1][0] == 16 for c in chunks)
    assert "model.nc_prune_step" in meta and "model.nc_prune_plan" in meta


def test_fsdp2_strip_gives_the_single_process_model(ranks):
    model, pruning = _single_run(STEPS)
    masks = masks_of(model)
    strip(model)
    ref = model.state_dict()
    assert sorted(ref) == ["0.bias", "0.weight", "2.bias", "2.weight", "4.bias", "4.weight"]
    for r in ranks:
        res = r["fsdp_resume"]
        assert _same_masks(res["resumed"]["masks"], masks)
        got = res["stripped"]
        assert sorted(got) == sorted(ref)  # no mask, score, step or plan left
        for k in ref:
            assert torch.equal(got[k] == 0, ref[k] == 0), k
            assert torch.allclose(got[k], ref[k], atol=1e-5), k
        assert int((got["0.weight"] == 0).sum()) == 160 and int((got["2.weight"] == 0).sum()) == 608
        plain = make_model()
        plain.load_state_dict(got)  # loads into an unpruned copy of the architecture (strict)


def test_fsdp2_report_counts_the_whole_model_on_every_rank(ranks):
    single = {}
    for steps in (3, STEPS):
        _, pruning = _single_run(steps)
        single[steps] = pruning.report().to_dict()
    text = str(pruning.report())
    assert "no op_names regex matches" in text
    for r in ranks:
        res = r["fsdp_resume"]
        assert res["report_at_3"] == single[3]
        assert res["report"] == single[STEPS]
        layers = {row["name"]: row for row in res["report"]["layers"]}
        assert [(n, row["shape"], row["params"], row["zeros"], row["units"], row["pruned_units"])
                for n, row in layers.items()] == [("0", [32, 16], 512, 160, 128, 40),
                                                  ("2", [32, 32], 1024, 608, 256, 152), ("4", [4, 32], 128, 0, 0, 0)]
        assert res["report"]["total"]["params"] == 1664 and res["report"]["total"]["zeros"] == 768
        at3 = {row["name"]: (row["zeros"], row["pruned_units"]) for row in res["report_at_3"]["layers"]}
        assert at3 == {"0": (72, 18), "2": (244, 61), "4": (0, 0)}  # 316 zeros, 79 of 384 blocks at step 3
        assert res["report_text"] == text  # sparsity_report(model) prints the same table, note included


def test_dcp_state_init_step_is_not_a_pruning_step():
    """get_state_dict(model, optimizer) on a fresh optimizer steps it once with lr=0 and zero gradients
    (torch's _init_optim_state): with start_step=0 that step would otherwise prune on nothing and count."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    cfg = WeightPruningConfig(pruning_type="magnitude", pattern="4x1", target_sparsity=0.5, pruning_scope="local",
                              start_step=0, end_step=0, op_names=list(LAYERS))
    pruning = prepare_pruning(model, cfg, opt)
    before = [p.detach().clone() for p in model.parameters()]
    get_state_dict(model, opt)
    assert pruning.global_step == 0 and int(model.nc_prune_step) == 0
    assert all(bool(m.all()) for m in pruning.masks.values())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert opt.param_groups[0]["lr"] == 0.1 and len(opt.state) == 6  # torch's step did run: momentum exists
    train(model, opt, 1)  # the first real step is step 0 and prunes
    assert pruning.global_step == 1
    assert {n: int((~m).sum()) for n, m in pruning.masks.items()} == {"0": 256, "2": 512}


def test_a_real_step_at_lr_zero_still_counts():
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    pruning = prepare_pruning(model, config("magnitude", "4x1", "local"), opt)
    train(model, opt, 2)  # lr 0 (a warm-up) but real gradients: counted
    assert pruning.global_step == 2


def test_the_model_step_buffer_is_the_one_step_counter():
    """The session and every pruner read the step from the model's nc_prune_step buffer: a load_state_dict
    (no pruning hook runs) is the step all of them use next, and the run goes on as the uninterrupted one."""
    import copy

    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    pruning = prepare_pruning(model, config("snip_momentum", "4x1", "global"), opt)
    train(model, opt, 3)
    saved = copy.deepcopy({"model": model.state_dict(), "optimizer": opt.state_dict()})
    train(model, opt, 4, first=3)
    assert {id(p.step_counter) for p in pruning.pruners} == {id(pruning.session.step_counter)}
    assert int(model.nc_prune_step) == pruning.session.global_step == pruning.pruners[0].global_step == 7
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optimizer"])
    assert pruning.session.global_step == pruning.pruners[0].global_step == 3
    assert pruning.pruners[0].is_pruning_step() and not pruning.session.is_done()  # 3: a pruning step (1, 3, 5)
    train(model, opt, 4, first=3)
    straight = single_process("snip_momentum", "4x1", "global")
    assert pruning.global_step == straight["step"] == 7
    assert _same_masks(masks_of(model), straight["masks"])
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), straight["weights"]))


def test_fsdp2_communication_per_global_mask_update(ranks):
    """What one global 4x1 update of the 2 pruned layers sends per rank: 4 all_reduces (the layers' pruned
    counts, then the radix select's per-layer digit histograms) and one all_gather of 2 int64 per layer (row
    offset, tied units); the report sends 2 int64 per layer (zeros, pruned units) for its 3 layers."""
    assert ranks[0]["fsdp_comm"] == ranks[1]["fsdp_comm"] == {
        "bytes": {"all_reduce": 1_056_832, "all_gather": 32}, "calls": {"all_reduce": 4, "all_gather": 1},
        "report": {"all_reduce": 48}}
