"""Affine rules for dot_general and reduce_sum (the mixing operations).

Before a mixing operation each non-constant operand's independent terms become
fresh shared symbols (``affine.prepare``), so that what went into the sum keeps its
sign through it. Then, for ``z = x · y`` (a contraction of ``n`` terms):

* exact: ``X · Y`` as a bilinear map of forms: ``c_x · c_y``, generators
  ``c_x · G_y + G_x · c_y``, independent ``|c_x| · r_y + r_x · |c_y| + rad X · rad Y``;
* error: ``x^ · y^ - x · y = X · Ey + Ex · (Y + Ey)`` (form products again) plus the
  accumulation model's ``a S + b |z^| + c`` with ``S = |x^| · |y^|``
  (``Accumulation.coefficients``: the same terms as the interval rule).

The analysis' own matmuls are rounded: ``gamma_{n+2}`` (analysis roundoff) times the
product of the magnitudes goes into the independent term, computed by matmuls of
nonnegative arrays rounded upward.
"""

from __future__ import annotations

import math

import jax.lax as lax
import jax.numpy as jnp
import numpy as np

from .. import _compat
from .. import _formats as F
from .._domains.affine import Affine, Form, add_nn, fadd, fwiden, tiny, u_an
from .._domains.interval import Discrete
from . import interval_rules
from ._common import accumulation_coefficients, c, nearest, partial_sums_overflow
from .affine_arith import _comp_mag
from .affine_common import fallback, make, prep, register_affine

P = _compat.prim


class _Dot:
    def __init__(self, dn, n: int, lhs_ndim: int, adt):
        self.dn = dn
        self.n = n
        (lc, _), (lb, _) = dn
        self.nb = len(lb)
        self.n_lfree = lhs_ndim - len(lc) - len(lb)
        self.adt = adt
        self.g = F.gamma(n + 2, u_an(adt))
        self.slack = 2 * (n + 1) * tiny(adt)

    def dot(self, x, y, dn=None):
        return lax.dot_general(x, y, dn or self.dn, precision=lax.Precision.HIGHEST,
                               preferred_element_type=self.adt)

    def up(self, x, y):
        """Upper bound of x · y for nonnegative x, y."""
        r = self.dot(x, y)
        return F.add_up_nn(F.scale_up(r, 1 + 2 * self.g), c(self.slack, self.adt))

    def gl(self, G, y):
        """(K, out) from G (K, *x) · y."""
        (lc, rc), (lb, rb) = self.dn
        dn = ((tuple(d + 1 for d in lc), tuple(rc)), (tuple(d + 1 for d in lb), tuple(rb)))
        return jnp.moveaxis(self.dot(G, y, dn), self.nb, 0)

    def gr(self, x, G):
        """(K, out) from x · G (K, *y)."""
        (lc, rc), (lb, rb) = self.dn
        dn = ((tuple(lc), tuple(d + 1 for d in rc)), (tuple(lb), tuple(d + 1 for d in rb)))
        return jnp.moveaxis(self.dot(x, G, dn), self.nb + self.n_lfree, 0)


def fdot(D: _Dot, p: Form, q: Form, out_like) -> Form:
    """The bilinear contraction of two forms (see the module docstring)."""
    if p.nil or q.nil:
        return Form.zero(out_like)
    cz = D.dot(p.c, q.c)
    ap, aq = jnp.abs(p.c), jnp.abs(q.c)
    r = F.scale_up(D.up(ap, aq), D.g)
    G = None
    terms = None
    if q.G is not None:
        G = D.gr(p.c, q.G)
        terms = D.up(ap, q.gs)
    if p.G is not None:
        g2 = D.gl(p.G, q.c)
        G = g2 if G is None else G + g2
        t = D.up(p.gs, aq)
        terms = t if terms is None else F.add_up_nn(terms, t)
    if G is not None:
        K = G.shape[0]
        r = F.add_up_nn(r, F.add_up_nn(F.scale_up(terms, D.g), c(K * D.slack, D.adt)))
    if q.r is not None:
        r = F.add_up_nn(r, D.up(ap, q.r))
    if p.r is not None:
        r = F.add_up_nn(r, D.up(p.r, aq))
    p_unc = p.G is not None or p.r is not None
    q_unc = q.G is not None or q.r is not None
    if p_unc and q_unc:
        r = F.add_up_nn(r, D.up(p.rad(), q.rad()))
    return Form(cz, G, r)


def _is_const(a: Affine) -> bool:
    return a.x.G is None and a.x.r is None and not a.boxed


def bilinear(ctx, D, a: Affine, b: Affine, value, n: int) -> Affine:
    """The affine rule of a bilinear primitive whose every output is a sum of ``n``
    products (dot_general, conv_general_dilated), for prepared operands; ``D`` supplies
    the primitive on forms (``fdot``) and ``up`` (upper bound for nonnegative operands)."""
    ca, cb, cc = accumulation_coefficients(ctx, n, products=True)
    x = fdot(D, a.x, b.x, None)
    if a.exact and b.exact:
        e = Form(jnp.zeros_like(x.c))
    else:
        bhat = fadd(b.x, b.e)
        t1 = None if b.exact else fdot(D, a.x, b.e, x.c)
        t2 = None if a.exact else fdot(D, a.e, bhat, x.c)
        e = t1 if t2 is None else (t2 if t1 is None else fadd(t1, t2))
    # accumulation: a S + b |z^| + c with S = |x^| · |y^| (the primitive)
    S = D.up(_comp_mag(a.x, a.e), _comp_mag(b.x, b.e))
    acc = F.scale_up(S, ca)
    if cb != 0:
        zmag = F.add_up_nn(F.add_up_nn(x.mag(), e.mag()), acc)
        acc = F.add_up_nn(acc, nearest(zmag, cb))
    acc = F.add_up_nn(acc, c(cc, ctx.adt))
    ovf = partial_sums_overflow(ctx, S, ca, cb, cc)
    if ovf is not None:
        acc = F.where(ovf, jnp.inf, acc)  # a partial sum may overflow: no bound
    return make(ctx, x, fwiden(e, acc), value, a, b)


@register_affine(P("dot_general"))
def dot_general_rule(ctx, a, b, *, dimension_numbers, **params):
    if isinstance(a, Discrete) or isinstance(b, Discrete):
        return fallback(interval_rules[P("dot_general")])(ctx, a, b, dimension_numbers=dimension_numbers, **params)
    value = ctx.value(a.value, b.value)
    (lc, _), _ = dimension_numbers
    n = int(math.prod(a.shape[d] for d in lc))
    a, b = prep(ctx, a, b, promote=(True, True))
    return bilinear(ctx, _Dot(dimension_numbers, n, len(a.shape), ctx.adt), a, b, value, n)


def _sum_up(x, axes, n: int):
    """Upper bound of the sum of nonnegative ``x`` over ``axes``."""
    adt = x.dtype
    g = F.gamma(max(n, 1), u_an(adt))
    s = jnp.sum(x, axis=axes)
    return F.add_up_nn(F.scale_up(s, 1 + 2 * g), c(2 * n * tiny(adt), adt))


def fsum(f: Form, axes: tuple, n: int) -> Form:
    if f.nil:
        return Form.zero(jnp.sum(f.c, axis=axes))
    adt = f.c.dtype
    g = F.gamma(max(n, 1), u_an(adt))
    cz = jnp.sum(f.c, axis=axes)
    r = F.scale_up(_sum_up(jnp.abs(f.c), axes, n), g)
    G = None
    if f.G is not None:
        G = jnp.sum(f.G, axis=tuple(d + 1 for d in axes))
        K = G.shape[0]
        r = F.add_up_nn(r, F.add_up_nn(F.scale_up(_sum_up(f.gs, axes, n), g), c(K * 2 * n * tiny(adt), adt)))
    if f.r is not None:
        r = F.add_up_nn(r, _sum_up(f.r, axes, n))
    return Form(cz, G, r)


@register_affine(P("reduce_sum"))
def reduce_sum_rule(ctx, a, *, axes, **params):
    if isinstance(a, Discrete):
        return fallback(interval_rules[P("reduce_sum")])(ctx, a, axes=axes, **params)
    value = ctx.value(a.value)
    axes = tuple(axes)
    n = int(math.prod(a.shape[d] for d in axes))
    (a,) = prep(ctx, a, promote=(True,))
    ca, cb, cc = accumulation_coefficients(ctx, n, products=False)
    x = fsum(a.x, axes, n)
    e = fsum(a.e, axes, n)
    S = _sum_up(_comp_mag(a.x, a.e), axes, n)
    acc = F.scale_up(S, ca)
    if cb != 0:
        zmag = F.add_up_nn(F.add_up_nn(x.mag(), e.mag()), acc)
        acc = F.add_up_nn(acc, nearest(zmag, cb))
    acc = F.add_up_nn(acc, c(cc if n > 1 else 0.0, ctx.adt))
    ovf = partial_sums_overflow(ctx, S, ca, cb, cc) if n > 2 else None
    if ovf is not None:
        acc = F.where(ovf, jnp.inf, acc)  # a partial sum may overflow: no bound
    if e.nil:
        e = Form(e.c, None, acc)
    else:
        e = fwiden(e, acc)
    return make(ctx, x, e, value, a)


_ = (np, add_nn)
