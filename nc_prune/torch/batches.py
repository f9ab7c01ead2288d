"""Calibration and scoring batches as users write them, and running the model on one.

A batch is one of

* a dict or other mapping — the model is called as ``model(**batch)`` (a tokenizer's ``BatchEncoding``, with
  or without ``labels``);
* a pair ``(inputs, target)`` (a tuple or list of two) — ``inputs`` is a tensor (``model(inputs)``), a dict
  (``model(**inputs)``) or a tuple/list (``model(*inputs)``); ``target`` goes to ``loss_func(output, target)``;
* a one-item tuple/list ``(inputs,)``, or a tensor — the model is called on the inputs alone.

>>> import torch
>>> split_batch({"input_ids": torch.zeros(2, 3)})[1] is None
True
>>> describe(({"input_ids": torch.zeros(2, 3, dtype=torch.long)}, torch.zeros(2)))
'tuple(dict(input_ids: Tensor[2, 3] int64), Tensor[2] float32)'
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any, Callable, Optional, Tuple

import torch
from torch import nn

from ..core.errors import ConfigError


def describe(batch: Any, depth: int = 0) -> str:
    """The structure of a batch, for error messages (types, tensor shapes and dtypes; no values)."""
    if isinstance(batch, torch.Tensor):
        return f"Tensor[{', '.join(map(str, batch.shape))}] {str(batch.dtype).replace('torch.', '')}"
    if depth > 2:
        return type(batch).__name__
    if isinstance(batch, Mapping):
        inner = ", ".join(f"{k}: {describe(v, depth + 1)}" for k, v in list(batch.items())[:8])
        return f"dict({inner}{', ...' if len(batch) > 8 else ''})"
    if isinstance(batch, (list, tuple)):
        inner = ", ".join(describe(v, depth + 1) for v in batch[:8])
        return f"{type(batch).__name__}({inner}{', ...' if len(batch) > 8 else ''})"
    return type(batch).__name__


def split_batch(batch: Any) -> Tuple[Any, Optional[Any]]:
    """``(inputs, target)`` of a batch; ``target`` is None when the batch carries none."""
    if isinstance(batch, (list, tuple)) and not isinstance(batch, torch.Tensor):
        if len(batch) == 0:
            raise ConfigError("an empty batch (a tuple or list with no items); a batch is a dict, a tensor, "
                              "(inputs,) or (inputs, target)")
        if len(batch) == 1:
            return batch[0], None
        if len(batch) == 2:
            return batch[0], batch[1]
        raise ConfigError(f"a batch of {len(batch)} items ({describe(batch)}) is ambiguous; pass (inputs, target) "
                          f"with the model's inputs grouped in a tuple or dict, or a dict passed as **batch")
    return batch, None


def call_model(model: nn.Module, inputs: Any) -> Any:
    """The model's output on ``inputs`` (a dict as keywords, a tuple/list as positions, else one argument)."""
    if isinstance(inputs, Mapping):  # a dict, or a tokenizer's BatchEncoding
        return model(**inputs)
    if isinstance(inputs, (list, tuple)):
        return model(*inputs)
    return model(inputs)


def run_batch(model: nn.Module, batch: Any) -> Tuple[Any, Optional[Any]]:
    """``(output, target)``; a batch the model rejects is an error that names the structure it saw."""
    inputs, target = split_batch(batch)
    try:
        return call_model(model, inputs), target
    except (TypeError, ValueError, RuntimeError, IndexError) as exc:
        raise ConfigError(
            f"the model rejected a batch of structure {describe(batch)}: {type(exc).__name__}: {exc}. Batches are "
            f"dicts (passed as **batch), (inputs, target) pairs whose inputs are a tensor, a dict or a tuple, "
            f"or tensors"
        ) from exc


def batch_loss(model: nn.Module, batch: Any, loss_func: Optional[Callable]) -> torch.Tensor:
    """The loss of one batch: ``loss_func(output, target)`` (or ``loss_func(output)`` without a target), else
    the output's ``loss`` (transformers models given ``labels``)."""
    out, target = run_batch(model, batch)
    if loss_func is not None:
        return loss_func(out, target) if target is not None else loss_func(out)
    loss = out.get("loss") if isinstance(out, Mapping) else getattr(out, "loss", None)
    if loss is None:
        raise ConfigError(
            f"scoring by gradients needs a loss: pass loss_func(output, target), or batches with labels for a model "
            f"whose output has a .loss (the batch seen: {describe(batch)})"
        )
    return loss


def text_batches(tokenizer: Any, text: str, samples: int = 32, length: int = 256, batch_size: int = 4,
                 seed: Optional[int] = None) -> list:
    """Calibration batches from a text: ``samples`` windows of ``length`` tokens, grouped ``batch_size`` at a
    time as ``{"input_ids": LongTensor[batch, length]}``.

    The windows are evenly spaced over the tokenized text, or, with ``seed``, drawn at random positions
    (the same seed, the same windows). A text shorter than one window is an error that says how long it is.
    """
    ids = tokenizer(text, return_attention_mask=False, verbose=False)["input_ids"]  # long text: no max-length warning
    if len(ids) < length:
        raise ConfigError(f"the calibration text has {len(ids)} tokens, fewer than one window of {length}; give a "
                          f"longer text or a smaller length")
    last = len(ids) - length
    if seed is None:
        starts = sorted({round(i * last / max(samples - 1, 1)) for i in range(samples)})
    else:
        starts = sorted(random.Random(seed).sample(range(last + 1), min(samples, last + 1)))
    windows = torch.tensor([ids[s:s + length] for s in starts], dtype=torch.long)
    return [{"input_ids": windows[i:i + batch_size]} for i in range(0, len(windows), batch_size)]
