"""coreai_opt-style pruning parametrizations on the nc_prune engine.

``PruneImplBase`` subclasses are ``torch.nn.utils.parametrize`` parametrizations; the schemes and
schedules are registered types built from the engine's patterns and sparsity curves.

>>> from torch import nn
>>> net = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
>>> impls = attach_prune_impl(net, MagnitudePruneImpl.with_args(
...     target_sparsity=0.5, pruning_scheme=BlockStructured(block_size=(4, 1)),
...     schedule=PolynomialDecaySchedule(total_iters=10)))
>>> update_model_sparsity(net, 10)["0.weight"]
0.5
>>> finalize_prune_impl(net)
['0.weight', '2.weight']
"""

from .attach import attach_prune_impl, finalize_prune_impl, prune_impls, update_model_sparsity
from .base import MagnitudePruneImpl, PruneImplBase
from .registry import PartialConstructor, RegistryMixin
from .schedules import ConstantSparsitySchedule, PolynomialDecaySchedule, SparsityScheduleBase
from .schemes import BlockStructured, ChannelStructured, NMStructured, PruningScheme, Unstructured, scheme_mask

__all__ = [
    "PruneImplBase", "MagnitudePruneImpl", "PartialConstructor", "RegistryMixin",
    "PruningScheme", "Unstructured", "ChannelStructured", "BlockStructured", "NMStructured", "scheme_mask",
    "SparsityScheduleBase", "ConstantSparsitySchedule", "PolynomialDecaySchedule",
    "attach_prune_impl", "finalize_prune_impl", "prune_impls", "update_model_sparsity",
]
