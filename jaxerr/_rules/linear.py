"""dot_general.

Exact range: midpoint-radius interval product (Rump):
``[ac ± ar]·[bc ± br] ⊆ ac·bc ± (|ac|·br + ar·(|bc| + br))``, with the float
evaluation of ``ac·bc`` covered by ``gamma_n(u_analysis) |ac|·|bc|``.

Error, with ``x^ = x + dx`` and ``w^ = w + dw`` (computed vs exact operands):
``|fl(x^·w^) - x·w| <= |x^|·|dw| + |dx|·|w| + a·S + b·Y + c`` where
``S = |x^|·|w^|`` bounds the sum of absolute products, ``Y`` the result, and
``(a, b, c)`` come from the accumulation model (``Accumulation.coefficients``).
Every matrix product of nonnegative arrays in the analysis is rounded upward.
"""

from __future__ import annotations

import math

import jax.lax as lax
import jax.numpy as jnp
import numpy as np

from .. import _compat
from .. import _formats as F
from .._domains.interval import Discrete, Real, mag
from . import register_rule
from ._common import (
    accumulation_coefficients,
    c,
    guard_partial_sums,
    partial_sums_overflow,
    partial_sums_overflow_err,
)

P = _compat.prim


def _shift_dims(dimension_numbers):
    """Dimension numbers for an lhs with one extra leading axis."""
    (lc, rc), (lb, rb) = dimension_numbers
    return ((tuple(d + 1 for d in lc), tuple(rc)), (tuple(d + 1 for d in lb), tuple(rb)))


class _Dots:
    def __init__(self, dimension_numbers, n: int, adt):
        self.dn = dimension_numbers
        self.n = n
        self.adt = adt
        u_an = float(np.finfo(adt).eps) / 2
        g = F.gamma(n + 1, u_an)
        self.g_an = g  # relative error of one analysis dot over nonnegative terms
        self.slack = 2 * n * float(np.finfo(adt).tiny)

    def dot(self, x, y, dn=None):
        return lax.dot_general(
            x, y, dn or self.dn, precision=lax.Precision.HIGHEST, preferred_element_type=self.adt
        )

    def _up(self, r):
        # sum of nonnegative terms: exact <= fl * (1 + 2 gamma) + underflow slack
        return F.add_up_nn(F.scale_up(r, 1 + 2 * self.g_an), c(self.slack, self.adt))

    def dot_up(self, x, y):
        """Upper bound of x·y for nonnegative x, y."""
        return self._up(self.dot(x, y))

    def dots_up(self, lhs_list, y):
        """Upper bounds of l·y for several nonnegative lhs sharing the rhs (one matmul)."""
        if len(lhs_list) == 1:
            return [self.dot_up(lhs_list[0], y)]
        stacked = jnp.stack(lhs_list)
        out = self._up(self.dot(stacked, y, _shift_dims(self.dn)))
        (_, _), (lb, _) = self.dn
        axis = len(lb)
        return [jnp.take(out, i, axis=axis) for i in range(len(lhs_list))]


def _mid_rad(x: Real):
    if x.point:
        return x.lo, None
    mid = F.where(x.lo == x.hi, x.lo, x.lo / 2 + x.hi / 2)
    rad = jnp.maximum(F.sub_up(x.hi, mid), F.sub_up(mid, x.lo))
    return mid, rad


def value_is_analysis_product(ctx, a, b) -> bool:
    """Whether the centre value of a bilinear equation is the analysis' own product of
    ``a.value`` and the exact point ``b`` (a program as written in the analysis dtype
    with exact weights): then one matmul serves as both (see :func:`bilinear`)."""
    adt = np.dtype(ctx.adt)
    return (not ctx.override and isinstance(a, Real) and isinstance(b, Real) and b.point and b.exact
            and np.dtype(a.value.dtype) == adt and np.dtype(b.value.dtype) == adt
            and all(np.dtype(v.aval.dtype) == adt for v in ctx.eqn.outvars))


@register_rule(P("dot_general"))
def dot_general_rule(ctx, a, b, *, dimension_numbers, **_):
    if isinstance(a, Discrete) or isinstance(b, Discrete):
        return _int_dot(ctx, a, b, ctx.value(a.value, b.value))
    (lc, _rc), _ = dimension_numbers
    n = int(math.prod(a.shape[d] for d in lc))
    value = None if value_is_analysis_product(ctx, a, b) else ctx.value(a.value, b.value)
    return bilinear(ctx, a, b, _Dots(dimension_numbers, n, ctx.adt), value)


def _value_rad(x: Real):
    """``(centre, radius)`` with the computed centre value as the centre: the exact
    range lies within ``value ± radius`` (``radius`` None for an exact point)."""
    if x.point and x.exact:
        return x.lo, None
    v = x.value
    return v, jnp.maximum(F.sub_up(x.hi, v), F.sub_up(v, x.lo))


def bilinear(ctx, a, b, D, value):
    """The rule of a bilinear primitive whose every output is a sum of ``D.n`` products
    (dot_general, conv_general_dilated). ``D`` supplies ``dot(x, y)`` (the primitive in
    the analysis dtype), ``dot_up`` / ``dots_up`` (upper bounds for nonnegative
    operands), ``g_an`` and ``slack`` (the analysis' own rounding of one product).

    ``value=None`` (only when :func:`value_is_analysis_product`): the exact range is
    formed around ``a.value`` instead of the midpoint of ``a``'s range (the radius
    covers the whole range either way), so the analysis' product of the centres is
    the equation's centre value too, and the program's own matmul is not repeated."""
    adt = ctx.adt
    n = D.n
    ca, cb, cc = accumulation_coefficients(ctx, n, products=True)

    # ---- exact range (midpoint-radius) ----
    ac, ar = _mid_rad(a) if value is not None else _value_rad(a)
    bc, br = _mid_rad(b)
    g = D.g_an
    ymid = D.dot(ac, bc)
    if value is None:
        value = ymid
    abs_ac, abs_bc = jnp.abs(ac), jnp.abs(bc)
    rb = abs_bc if br is None else F.add_up(abs_bc, br)  # >= max |w| over the exact range

    mag_ac = mag(a.clo, a.chi)  # >= |x^|
    rad_terms = []
    err_terms = []
    if a.point and a.exact and b.exact and br is None:
        # a single exact point times a single point (first layer, weights): radius
        # and error are both multiples of |x|·|w|, one matmul
        P = D.dot_up(abs_ac, rb)
        rad_terms.append(F.scale_up(P, g))
        if ca != 0:
            err_terms.append(F.scale_up(P, ca))
    else:
        # Group the nonnegative products by their rhs so each rhs costs one matmul.
        group: list[tuple[str, object]] = []
        if br is None:
            t = F.scale_up(abs_ac, g)
            group.append(("rad", t if ar is None else F.add_up_nn(t, ar)))
        else:
            rad_terms.append(D.dot_up(abs_ac, F.add_up_nn(br, F.scale_up(abs_bc, g))))
            if ar is not None:
                group.append(("rad", ar))
        err_lhs_rb = []
        if not a.exact:
            err_lhs_rb.append(a.err)  # |dx|·|w|
        if b.exact:
            # |w^| = |w| <= rb: S folds into the same product
            if ca != 0:
                err_lhs_rb.append(F.scale_up(mag_ac, ca))
        else:
            # |x^|·|dw| + ca |x^|·|w^| = |x^|·(|dw| + ca |w^|): one matmul
            rhs = b.err if ca == 0 else F.add_up_nn(b.err, F.scale_up(mag(b.clo, b.chi), ca))
            err_terms.append(D.dot_up(mag_ac, rhs))
        if err_lhs_rb:
            e = err_lhs_rb[0]
            for t in err_lhs_rb[1:]:
                e = F.add_up_nn(e, t)
            group.append(("err", e))
        outs = D.dots_up([t for _, t in group], rb) if group else []
        for (name, _), o in zip(group, outs):
            (rad_terms if name == "rad" else err_terms).append(o)

    rad = rad_terms[0] if rad_terms else jnp.zeros_like(ymid)
    for t in rad_terms[1:]:
        rad = F.add_up(rad, t)
    rad = F.add_up(rad, c(D.slack, adt))
    lo = F.sub_dn(ymid, rad)
    hi = F.add_up(ymid, rad)

    err = err_terms[0] if err_terms else jnp.zeros_like(ymid)
    for t in err_terms[1:]:
        err = F.add_up(err, t)
    if ctx.acc.accumulator(ctx.fmt).max_finite < 1e37:
        # a narrow accumulator (float16, float8): S itself, one more matmul
        ovf = partial_sums_overflow(ctx, D.dot_up(mag_ac, mag(b.clo, b.chi)), ca, cb, cc)
    else:
        # err >= ca S: no extra matmul (a false alarm needs an error near ca * 3e38)
        ovf = partial_sums_overflow_err(ctx, err, ca, cb, cc)
    if cb != 0:
        # wide accumulation: one final rounding of a result with |y^| <= |y| + err
        ymag = F.add_up(mag(lo, hi), err)
        err = F.add_up(err, F.scale_up(ymag, cb))
    err = F.add_up(err, c(cc, adt))
    clo = F.sub_dn(lo, err)
    chi = F.add_up(hi, err)
    return guard_partial_sums(Real(lo, hi, clo, chi, err, value), ovf)


def _int_dot(ctx, a, b, value):
    certain = jnp.all(a.lo == a.hi) & jnp.all(b.lo == b.hi)
    info = jnp.iinfo(value.dtype)
    lo = F.where(certain, value, jnp.full_like(value, info.min))
    hi = F.where(certain, value, jnp.full_like(value, info.max))
    return Discrete(lo, hi, value)
