"""Affine rule for conv_general_dilated (``nn.Conv``, ``nn.ConvTranspose``, ``lax.conv*``).

A convolution is a bilinear map like ``dot_general``, whose every output is a sum of
``n = (input features per group) x (kernel window size)`` products (padding and
dilation holes are exact zeros: fewer terms only make the bound safer). The rule is
``affine_linear``'s for ``dot_general`` with the contraction replaced by the
convolution itself:

* exact: ``X * W`` as a bilinear map of forms (``affine_linear.fdot``): centre
  ``c_x * c_w``, generators ``c_x * G_w + G_x * c_w`` (the convolution applied to every
  slot's generator, ``jax.vmap`` over the slot axis; exact in real arithmetic because
  the convolution is linear in each argument), independent term
  ``|c_x| * r_w + r_x * |c_w| + rad X * rad W``;
* error: ``x^ * w^ - x * w = X * Ew + Ex * (W + Ew)`` (form products again), plus the accumulation model's ``a S + b |z^| + c`` with
  ``S = |x^| * |w^|`` (the same coefficients as the interval rule in ``conv.py``);
  where a partial sum may overflow the accumulator (``_common.partial_sums_overflow``)
  the error bound is inf.

Before the convolution the operands' independent terms become fresh shared symbols
(``prep(..., promote=...)``) when they fit in the budget, so that the rounding errors
of the previous layer keep their signs through the kernel.

The analysis' own convolutions are rounded: ``gamma_{n+2}`` (analysis roundoff) times
the convolution of the magnitudes, computed by convolutions of nonnegative arrays
rounded upward, goes into the independent term (``fdot``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .. import _compat
from .. import _formats as F
from .._domains.affine import tiny, u_an
from .._domains.interval import Discrete
from . import interval_rules
from ._common import c
from .affine_common import fallback, prep, register_affine
from .affine_linear import bilinear
from .conv import conv_params, conv_terms

P = _compat.prim


class _Conv:
    """The equation's convolution in the analysis dtype, with the interface of
    ``affine_linear._Dot`` that ``fdot`` uses."""

    def __init__(self, params, n: int, adt):
        self.params = conv_params(params, adt)
        self.n = n
        self.adt = adt
        self.g = F.gamma(n + 2, u_an(adt))
        self.slack = 2 * (n + 1) * tiny(adt)

    def dot(self, x, y):
        return P("conv_general_dilated").bind(jnp.asarray(x, self.adt), jnp.asarray(y, self.adt), **self.params)

    def up(self, x, y):
        """Upper bound of the convolution of nonnegative ``x`` and ``y``."""
        r = self.dot(x, y)
        return F.add_up_nn(F.scale_up(r, 1 + 2 * self.g), c(self.slack, self.adt))

    def gl(self, G, y):
        """(K, out) from the generators G (K, *x) convolved with y."""
        return jax.vmap(lambda g: self.dot(g, y))(G)

    def gr(self, x, G):
        """(K, out) from x convolved with the kernel generators G (K, *w)."""
        return jax.vmap(lambda g: self.dot(x, g))(G)


@register_affine(P("conv_general_dilated"))
def conv_general_dilated_rule(ctx, a, b, **params):
    if isinstance(a, Discrete) or isinstance(b, Discrete):
        return fallback(interval_rules[P("conv_general_dilated")])(ctx, a, b, **params)
    value = ctx.value(a.value, b.value)
    n = conv_terms(b.shape, params["dimension_numbers"])
    a, b = prep(ctx, a, b, promote=(True, True))
    return bilinear(ctx, _Conv(params, n, ctx.adt), a, b, value, n)
