"""conv_general_dilated (``flax.linen.Conv``, ``ConvTranspose``, ``jax.lax.conv*``).

A convolution is bilinear and every output element is a sum of at most
``n = (input features per group) x (kernel window size)`` products (padding and
dilation holes contribute exact zeros, so fewer terms only make the bound safer).
The rule is the one of ``dot_general`` (see ``linear.py``): midpoint-radius range
``[ac ± ar]*[bc ± br] ⊆ ac*bc ± (|ac|*br + ar*(|bc| + br))`` evaluated with the
convolution itself, and the error
``|fl(x^ * w^) - x * w| <= |x^| * |dw| + |dx| * |w| + a S + b Y + c`` with
``S = |x^| * |w^|`` and ``(a, b, c)`` the accumulation model's coefficients for
``n`` terms (``auto``: float32 accumulation for narrower formats, which is what XLA
does for bfloat16/float16 convolutions on CPU). Every convolution of nonnegative
arrays in the analysis is rounded upward (``1 + 2 gamma_{n+1}`` and ``2 n tiny``).
"""

from __future__ import annotations

import math

import jax.lax as lax
import jax.numpy as jnp
import numpy as np

from .. import _compat
from .. import _formats as F
from .._domains.interval import Discrete
from . import register_rule
from ._common import c
from .linear import _int_dot, bilinear, value_is_analysis_product

P = _compat.prim


def conv_terms(rhs_shape, dimension_numbers) -> int:
    """Number of products summed into one output element: the kernel's input
    features (already divided by ``feature_group_count``) times its window size."""
    rhs_spec = dimension_numbers.rhs_spec
    return int(math.prod(rhs_shape[d] for d in rhs_spec[1:]))


def conv_params(params, adt):
    """The equation's parameters for a convolution evaluated in the analysis dtype."""
    p = dict(params)
    p["precision"] = (lax.Precision.HIGHEST, lax.Precision.HIGHEST)
    p["preferred_element_type"] = np.dtype(adt)
    return p


class _Convs:
    """The convolution of the equation in the analysis dtype, with upward-rounded
    variants for nonnegative operands (the interface ``linear.bilinear`` expects)."""

    def __init__(self, params, n: int, adt):
        self.params = conv_params(params, adt)
        self.n = n
        self.adt = adt
        u_an = float(np.finfo(adt).eps) / 2
        self.g_an = F.gamma(n + 1, u_an)
        self.slack = 2 * n * float(np.finfo(adt).tiny)

    def dot(self, x, y):
        return P("conv_general_dilated").bind(
            jnp.asarray(x).astype(self.adt), jnp.asarray(y).astype(self.adt), **self.params
        )

    def _up(self, r):
        return F.add_up_nn(F.scale_up(r, 1 + 2 * self.g_an), c(self.slack, self.adt))

    def dot_up(self, x, y):
        return self._up(self.dot(x, y))

    def dots_up(self, lhs_list, y):
        # one convolution each, not concatenated along the batch: see linear._Dots
        return [self.dot_up(t, y) for t in lhs_list]


@register_rule(P("conv_general_dilated"))
def conv_general_dilated_rule(ctx, a, b, **params):
    if isinstance(a, Discrete) or isinstance(b, Discrete):
        return _int_dot(ctx, a, b, ctx.value(a.value, b.value))
    n = conv_terms(b.shape, params["dimension_numbers"])
    value = None if value_is_analysis_product(ctx, a, b) else ctx.value(a.value, b.value)
    return bilinear(ctx, a, b, _Convs(params, n, ctx.adt), value)
