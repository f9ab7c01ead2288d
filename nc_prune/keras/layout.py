"""How each Keras weight is shown to the core: native kernel layout ↔ canonical layout.

The core works in one layout, ``(out, in, *kernel)`` — how torch stores ``Linear`` and ``Conv`` weights —
and views it 2-D as ``(out, prod(kernel)·in)`` with the input channel fastest. Keras stores kernels the
other way round. Every transform here is a transpose followed by a reshape, so it moves numbers without
changing them, and the inverse puts every number back where it was.

======================  ===========================  ============================  =============================
Keras layer             native kernel                canonical                     torch weight with the same
                                                                                   numbers
======================  ===========================  ============================  =============================
Dense                   ``(in, out)``                ``(out, in)``                 ``Linear.weight``
Conv1D/2D/3D            ``(*k, in/groups, out)``     ``(out, in/groups, *k)``      ``ConvNd.weight``
Conv1D/2D/3DTranspose   ``(*k, out, in)``            ``(out, in, *k)``             ``ConvTransposeNd.weight``
                                                                                   with axes 0 and 1 swapped
DepthwiseConv1D/2D      ``(*k, in, mult)``           ``(in·mult, 1, *k)``;         ``Conv2d(groups=in).weight``
                                                     filter ``i·mult + m``
SeparableConv           depthwise: as above;         as Depthwise and Conv         two convs, as above
                        pointwise ``(1.., in', out)``
EinsumDense             kernel axes split by the     ``(prod(out axes),            a ``Linear`` over the
                        equation into contracted     prod(in axes))``              flattened axes
                        (in) and kept (out) axes
======================  ===========================  ============================  =============================

So ``"4x1"`` is the same block everywhere: four consecutive output units (outputs of a Dense, filters of a
conv) at one input position, and a Keras ``Dense`` kernel ``K`` gets exactly the mask a torch ``Linear``
whose weight is ``K.T`` gets.

A ``MultiHeadAttention`` is pruned through its four ``EinsumDense`` projections: ``query``/``key``/``value``
(``"abc,cde->abde"``, kernel ``(dim, heads, head_dim)``) become ``(heads·head_dim, dim)`` with output unit
``h·head_dim + d`` (torch's ``in_proj`` order), and ``attention_output`` (``"abcd,cde->abe"``, kernel
``(heads, head_dim, dim)``) becomes ``(dim, heads·head_dim)``.

>>> import numpy as np
>>> k = np.arange(6).reshape(2, 3)          # a Dense kernel: 2 inputs, 3 outputs
>>> DENSE.to_canonical(k)                   # torch Linear layout (out, in)
array([[0, 3],
       [1, 4],
       [2, 5]])
>>> DENSE.from_canonical(DENSE.to_canonical(k), k.shape).tolist() == k.tolist()
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Tuple, Union

import numpy as np

from ..core.errors import ConfigError, PatternShapeError

Shape = Tuple[int, ...]


class Layout:
    """A native ↔ canonical transform: ``transpose(perm)`` then ``reshape``.

    Subclasses define :meth:`perm` (axis order taking the native array to canonical order) and, when
    axes are merged, :meth:`reshaped`.

    Attributes:
        name: short name used in errors and in ``get_prunable_weights`` declarations.
    """

    name = "layout"
    min_ndim = 2

    def perm(self, shape: Shape) -> Tuple[int, ...]:
        raise NotImplementedError

    def reshaped(self, permuted: Shape) -> Shape:
        """Canonical shape from the permuted native shape (no reshape by default)."""
        return permuted

    def canonical_shape(self, shape: Shape) -> Shape:
        """Canonical shape of a native weight of ``shape``."""
        self.check(shape)
        return self.reshaped(tuple(shape[i] for i in self.perm(shape)))

    def check(self, shape: Shape) -> None:
        if len(shape) < self.min_ndim:
            raise PatternShapeError(
                f"layout {self.name!r} needs a weight with at least {self.min_ndim} dimensions, got shape "
                f"{tuple(shape)}"
            )

    def to_canonical(self, native: np.ndarray) -> np.ndarray:
        """The native array in the canonical layout (a copy when the axes move)."""
        a = np.asarray(native)
        shape = self.canonical_shape(a.shape)
        return np.transpose(a, self.perm(a.shape)).reshape(shape)

    def from_canonical(self, canonical: np.ndarray, shape: Sequence[int]) -> np.ndarray:
        """Inverse of :meth:`to_canonical` for a native weight of ``shape``."""
        shape = tuple(int(s) for s in shape)
        c = np.asarray(canonical)
        want = self.canonical_shape(shape)
        if c.shape != want:
            raise PatternShapeError(
                f"layout {self.name!r}: canonical array has shape {c.shape}, expected {want} for native shape {shape}"
            )
        perm = self.perm(shape)
        permuted = c.reshape(tuple(shape[i] for i in perm))
        return np.ascontiguousarray(np.transpose(permuted, np.argsort(perm)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class CanonicalLayout(Layout):
    """The weight is already ``(out, in, *kernel)`` (e.g. a custom layer holding torch-layout weights)."""

    name = "canonical"

    def perm(self, shape):
        return tuple(range(len(shape)))


class DenseLayout(Layout):
    """``(in, out)`` → ``(out, in)``."""

    name = "dense"

    def check(self, shape):
        if len(shape) != 2:
            raise PatternShapeError(f"layout 'dense' needs a 2-D kernel (in, out), got shape {tuple(shape)}")

    def perm(self, shape):
        return (1, 0)


class ConvLayout(Layout):
    """``(*k, in, out)`` → ``(out, in, *k)``."""

    name = "conv"
    min_ndim = 3

    def perm(self, shape):
        n = len(shape) - 2
        return (n + 1, n) + tuple(range(n))


class ConvTransposeLayout(Layout):
    """``(*k, out, in)`` → ``(out, in, *k)`` (Keras stores transposed-conv kernels output-channel first)."""

    name = "conv_transpose"
    min_ndim = 3

    def perm(self, shape):
        n = len(shape) - 2
        return (n, n + 1) + tuple(range(n))


class DepthwiseLayout(ConvTransposeLayout):
    """``(*k, in, mult)`` → ``(in·mult, 1, *k)``; filter ``i·mult + m`` is channel ``i``'s ``m``-th filter.

    The same axis move as a transposed conv (the last two axes to the front), then ``in`` and ``mult``
    merge into the output axis.
    """

    name = "depthwise"

    def reshaped(self, permuted):
        return (permuted[0] * permuted[1], 1) + permuted[2:]


@dataclass(frozen=True, repr=False)
class EinsumLayout(Layout):
    """An ``EinsumDense`` kernel: kept axes become ``out``, contracted axes ``in``, both flattened.

    Attributes:
        out_axes: kernel axes whose letter appears in the output (in kernel order).
        in_axes: kernel axes summed over with the input.
    """

    out_axes: Tuple[int, ...]
    in_axes: Tuple[int, ...]
    name = "einsum"

    def check(self, shape):
        if len(shape) != len(self.out_axes) + len(self.in_axes):
            raise PatternShapeError(
                f"layout 'einsum' (out axes {self.out_axes}, in axes {self.in_axes}) does not match kernel shape "
                f"{tuple(shape)}"
            )

    def perm(self, shape):
        return self.out_axes + self.in_axes

    def reshaped(self, permuted):
        n_out = len(self.out_axes)
        return (math.prod(permuted[:n_out]), math.prod(permuted[n_out:]))

    def __repr__(self) -> str:
        return f"EinsumLayout(out_axes={self.out_axes}, in_axes={self.in_axes})"

    @classmethod
    def from_equation(cls, equation: str) -> "EinsumLayout":
        """Split the kernel axes of ``"input,kernel->output"``.

        >>> EinsumLayout.from_equation("abc,cde->abde")     # MHA query: kernel (dim, heads, head_dim)
        EinsumLayout(out_axes=(1, 2), in_axes=(0,))
        >>> EinsumLayout.from_equation("abcd,cde->abe")     # MHA output: kernel (heads, head_dim, dim)
        EinsumLayout(out_axes=(2,), in_axes=(0, 1))
        """
        text = equation.replace(" ", "").replace("...", "")
        try:
            inputs, output = text.split("->")
            lhs, kernel = inputs.split(",")
        except ValueError:
            raise ConfigError(
                f"EinsumDense equation {equation!r} is not of the form 'input,kernel->output'"
            ) from None
        out_axes, in_axes = [], []
        for axis, letter in enumerate(kernel):
            if letter in output:
                out_axes.append(axis)
            elif letter in lhs:
                in_axes.append(axis)
            else:
                raise ConfigError(
                    f"EinsumDense equation {equation!r}: kernel axis {letter!r} is neither contracted with the "
                    f"input nor kept in the output, so it has no place in the (out, in) view; declare the "
                    f"layer's weights with get_prunable_weights() and a 'canonical' layout instead"
                )
        if not out_axes or not in_axes:
            raise ConfigError(
                f"EinsumDense equation {equation!r} has no {'output' if not out_axes else 'input'} axis in its "
                f"kernel {kernel!r}; it cannot be viewed as (out, in)"
            )
        return cls(tuple(out_axes), tuple(in_axes))


CANONICAL = CanonicalLayout()
DENSE = DenseLayout()
CONV = ConvLayout()
CONV_TRANSPOSE = ConvTransposeLayout()
DEPTHWISE = DepthwiseLayout()

NAMED_LAYOUTS = {l.name: l for l in (CANONICAL, DENSE, CONV, CONV_TRANSPOSE, DEPTHWISE)}


def get_layout(spec: Union[str, Layout]) -> Layout:
    """A layout object from a name (``"dense"``, ``"conv"``, ``"conv_transpose"``, ``"depthwise"``,
    ``"canonical"``), an ``"einsum:<equation>"`` string, or a :class:`Layout`."""
    if isinstance(spec, Layout):
        return spec
    if isinstance(spec, str):
        if spec.startswith("einsum:"):
            return EinsumLayout.from_equation(spec[len("einsum:"):])
        if spec in NAMED_LAYOUTS:
            return NAMED_LAYOUTS[spec]
    raise ConfigError(
        f"unknown weight layout {spec!r}; use one of {', '.join(map(repr, NAMED_LAYOUTS))}, "
        f"'einsum:<equation>' or a nc_prune.keras.layout.Layout instance"
    )


def default_layout(ndim: int) -> Layout:
    """The Keras convention for a kernel of ``ndim`` dimensions: Dense for 2-D, Conv above."""
    if ndim == 2:
        return DENSE
    if ndim >= 3:
        return CONV
    raise PatternShapeError(f"a prunable weight needs at least 2 dimensions, got {ndim}")
