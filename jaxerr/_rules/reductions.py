"""reduce_sum, reduce_max, reduce_min, argmax, argmin, reduce_and, reduce_or.

``reduce_sum`` of ``n`` terms: ``|computed - exact| <= sum|dx_i| + a·S + b·Y + c``
with ``S = sum |x^_i|`` and ``(a, b, c)`` from the accumulation model. max/min
are exact operations and 1-Lipschitz in the max norm.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from .. import _compat
from .. import _formats as F
from .._domains.interval import Discrete, Real, mag, nan_possible
from . import register_rule
from ._common import (
    accumulation_coefficients,
    c,
    guard_partial_sums,
    nearest,
    partial_sums_overflow,
)

P = _compat.prim


def _n_terms(shape, axes) -> int:
    return int(math.prod(shape[d] for d in axes))


def sum_bounds(x, axes, n: int):
    """(lower, upper) bounds of the exact sum of ``x`` over ``axes`` computed in floats."""
    adt = x.dtype
    g = F.gamma(max(n, 1), float(np.finfo(adt).eps) / 2)
    s = jnp.sum(x, axis=axes)
    a = jnp.sum(jnp.abs(x), axis=axes)
    slack = F.add_up(F.scale_up(F.scale_up(a, 1.0 + 2 * g), g), c(2 * n * float(np.finfo(adt).tiny), adt))
    return F.sub_dn(s, slack), F.add_up(s, slack)


def sum_up_nonneg(x, axes, n: int):
    return sum_bounds(x, axes, n)[1]


@register_rule(P("reduce_sum"))
def reduce_sum_rule(ctx, a, *, axes, **_):
    value = ctx.value(a.value)
    axes = tuple(axes)
    if isinstance(a, Discrete):
        lo = jnp.sum(a.lo, axis=axes).astype(value.dtype)
        hi = jnp.sum(a.hi, axis=axes).astype(value.dtype)
        return Discrete(lo, hi, value)
    n = _n_terms(a.shape, axes)
    ca, cb, cc = accumulation_coefficients(ctx, n, products=False)
    lo, _ = sum_bounds(a.lo, axes, n)
    _, hi = sum_bounds(a.hi, axes, n)
    rlo, _ = sum_bounds(a.clo, axes, n)
    _, rhi = sum_bounds(a.chi, axes, n)
    S = sum_up_nonneg(mag(a.clo, a.chi), axes, n)
    err = F.scale_up(S, ca)
    if cb != 0:
        err = F.add_up(err, nearest(mag(rlo, rhi), cb))
    rho = F.add_up(err, c(cc if n > 1 else 0.0, a.lo.dtype))
    prop = None if a.exact else sum_up_nonneg(a.err, axes, n)
    err = rho if prop is None else F.add_up(prop, rho)
    clo, chi = F.sub_dn(rlo, rho), F.add_up(rhi, rho)
    # a sum of terms that are all computed >= 0 (<= 0) is computed >= 0 (<= 0) in any
    # order: every partial sum is rounded monotonically and 0 is representable
    # (initial=: a sum over a zero-size axis is an exact 0)
    nonneg = jnp.min(a.clo, axis=axes, initial=jnp.inf) >= 0
    if math.isfinite(ca):
        # nonnegative terms: computed >= (sum of lower ends)(1 - a - b) - c
        shrink = F.sub_dn(F.sub_dn(jnp.ones_like(rlo), F.static_up(ca, rlo.dtype)), F.static_up(cb, rlo.dtype))
        pos_lo = F.sub_dn(F.mul_dn(rlo, shrink), c(cc, rlo.dtype))
        clo = F.where(nonneg, jnp.maximum(clo, pos_lo), clo)
    clo = F.where(nonneg, jnp.maximum(clo, 0.0), clo)
    chi = F.where(jnp.max(a.chi, axis=axes, initial=-jnp.inf) <= 0, jnp.minimum(chi, 0.0), chi)
    ovf = partial_sums_overflow(ctx, S, ca, cb, cc) if n > 2 else None
    return guard_partial_sums(Real(lo, hi, clo, chi, err, value), ovf)


def _reduce_fields(a, fn, axes, value):
    if any(jnp.shape(a.lo)[ax] == 0 for ax in axes):
        # a reduction over a zero-size axis is its identity, exactly (like XLA)
        def fn(x, axis, _f=fn):
            ident = jnp.array(_identity(_f, x.dtype), x.dtype)
            return jnp.full(tuple(d for i, d in enumerate(jnp.shape(x)) if i not in axis), ident)
        if not isinstance(a, Discrete):
            v = fn(a.lo, axes)
            return Real(v, v, v, v, jnp.zeros_like(v), value, exact=True)
    if isinstance(a, Discrete):
        return Discrete(fn(a.lo, axis=axes), fn(a.hi, axis=axes), value)
    if a.exact:
        return Real(fn(a.lo, axis=axes), fn(a.hi, axis=axes), fn(a.clo, axis=axes), fn(a.chi, axis=axes),
                    jnp.max(a.err, axis=axes), value, exact=True)
    return Real(
        fn(a.lo, axis=axes),
        fn(a.hi, axis=axes),
        fn(a.clo, axis=axes),
        fn(a.chi, axis=axes),
        _extreme_err(a, fn, axes),
        value,
    )


def _extreme_err(a, fn, axes):
    """max (min) is exact and 1-Lipschitz in the max norm, and an element whose hull
    lies entirely below (above) another element's hull is the maximum (minimum) neither
    of the exact nor of the computed values: ``|max c - max e| <= max err_i`` over the
    other elements. (A masked attention logit, computed ``-inf``, never decides the row
    maximum, so its infinite error does not count.) An element that may be NaN makes
    the result possibly NaN: XLA's max propagates NaN."""
    hlo, hhi = a.hull()
    if fn is jnp.max:
        beaten = hhi < jnp.max(hlo, axis=axes, keepdims=True)
    else:
        beaten = hlo > jnp.min(hhi, axis=axes, keepdims=True)
    err = jnp.max(F.where(beaten, jnp.zeros_like(a.err), a.err), axis=axes)
    return F.where(jnp.any(nan_possible(a), axis=axes), jnp.inf, err)


def _identity(fn, dtype):
    big = jnp.inf if jnp.issubdtype(dtype, jnp.floating) else (
        True if dtype == jnp.bool_ else jnp.iinfo(dtype).max)
    if fn is jnp.max:
        return -big if dtype != jnp.bool_ else False
    return big


@register_rule(P("reduce_max"))
def reduce_max_rule(ctx, a, *, axes, **_):
    return _reduce_fields(a, jnp.max, tuple(axes), ctx.value(a.value))


@register_rule(P("reduce_min"))
def reduce_min_rule(ctx, a, *, axes, **_):
    return _reduce_fields(a, jnp.min, tuple(axes), ctx.value(a.value))


@register_rule(P("reduce_and"))
def reduce_and_rule(ctx, a, *, axes, **_):
    return Discrete(jnp.all(a.lo, axis=tuple(axes)), jnp.all(a.hi, axis=tuple(axes)), ctx.value(a.value))


@register_rule(P("reduce_or"))
def reduce_or_rule(ctx, a, *, axes, **_):
    return Discrete(jnp.any(a.lo, axis=tuple(axes)), jnp.any(a.hi, axis=tuple(axes)), ctx.value(a.value))


def _arg_extreme(ctx, a, axes, index_dtype, largest: bool):
    value = ctx.value(a.value)
    (axis,) = axes
    n = a.shape[axis]
    if isinstance(a, Discrete):
        lo_r, hi_r = a.lo.astype(jnp.float32), a.hi.astype(jnp.float32)
    else:
        lo_r, hi_r = a.hull()
    if not largest:
        lo_r, hi_r = -hi_r, -lo_r
    k = jnp.expand_dims(value.astype(jnp.int32), axis)
    cand_lo = jnp.take_along_axis(lo_r, k, axis=axis)
    pos = jnp.arange(n).reshape([n if d == axis else 1 for d in range(lo_r.ndim)])
    others = F.where(pos == k, -jnp.inf, hi_r)
    certain = jnp.squeeze(cand_lo, axis) > jnp.max(others, axis=axis)
    lo = F.where(certain, value, 0).astype(index_dtype)
    hi = F.where(certain, value, n - 1).astype(index_dtype)
    return Discrete(lo, hi, value)


@register_rule(P("argmax"))
def argmax_rule(ctx, a, *, axes, index_dtype, **_):
    return _arg_extreme(ctx, a, tuple(axes), index_dtype, True)


@register_rule(P("argmin"))
def argmin_rule(ctx, a, *, axes, index_dtype, **_):
    return _arg_extreme(ctx, a, tuple(axes), index_dtype, False)
