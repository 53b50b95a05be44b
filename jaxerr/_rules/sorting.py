"""sort (``jnp.sort``, ``jnp.argsort``, multi-operand ``lax.sort``) and top_k.

Order statistics are monotone in every argument, so the ``j``-th smallest of ``x``
lies between the ``j``-th smallest of ``lo`` and of ``hi`` (the same for the
computed range), and sorting is 1-Lipschitz in the max norm: the sorted keys' error
is at most the largest error of the row.

Operands carried along (the indices of ``argsort``, the other operands and later
keys of a multi-operand sort, the indices of ``top_k``) follow the permutation of
the first key. The permutation is *certain* in a row when, along the centre's
order, consecutive elements of the first key have disjoint hulls (exact and
computed ranges together), or are equal exact points under a stable sort; then the
carried fields are permuted like the centre. Otherwise every element of the row may
land at every position: the carried operand is joined over the row (its error bound
becomes the spread of the joined ranges, since the exact and the computed execution
may pick different elements), ``top_k`` indices become ``[0, n-1]``, and a
diagnostic says so.
"""

from __future__ import annotations

import jax.lax as lax
import jax.numpy as jnp

from .. import _compat
from .. import _formats as F
from .._domains.interval import Discrete, Real
from . import register_rule

P = _compat.prim

_FIELDS = ("lo", "hi", "clo", "chi", "err")


def _hull(x):
    if isinstance(x, Real):
        return x.hull()
    return x.lo.astype(jnp.float32), x.hi.astype(jnp.float32)


def _take(x, perm, axis):
    return jnp.take_along_axis(x, perm, axis=axis)


def _ordered(hl, hh, axis, stable_ties: bool, descending: bool):
    """Per adjacent pair along ``axis`` (hull ends already in the centre's order):
    the first certainly comes before the second."""
    n = hl.shape[axis]
    a_lo = lax.slice_in_dim(hl, 0, n - 1, axis=axis)
    a_hi = lax.slice_in_dim(hh, 0, n - 1, axis=axis)
    b_lo = lax.slice_in_dim(hl, 1, n, axis=axis)
    b_hi = lax.slice_in_dim(hh, 1, n, axis=axis)
    strict = (a_lo > b_hi) if descending else (a_hi < b_lo)
    if stable_ties:
        # equal exact points: every execution ties them, a stable order keeps the centre's
        strict = strict | ((a_lo == a_hi) & (b_lo == b_hi) & (a_lo == b_lo))
    return strict


def _joined(x, axis, shape):
    """Every element of the row may be at every position."""
    def red(f, v):
        return jnp.broadcast_to(f(v, axis=axis, keepdims=True), shape)

    if isinstance(x, Real):
        lo, hi = red(jnp.min, x.lo), red(jnp.max, x.hi)
        clo, chi = red(jnp.min, x.clo), red(jnp.max, x.chi)
        err = jnp.maximum(F.sub_up(chi, lo), F.sub_up(hi, clo))
        err = F.where(jnp.isinf(red(jnp.max, x.err)), jnp.inf, err)
        return {"lo": lo, "hi": hi, "clo": clo, "chi": chi, "err": err}
    return {"lo": red(jnp.min, x.lo), "hi": red(jnp.max, x.hi)}


def _permuted(x, perm, certain, axis, value):
    """Operand ``x`` carried along the permutation ``perm`` of the centre."""
    shape = jnp.shape(perm)
    joined = _joined(x, axis, shape)
    fields = _FIELDS if isinstance(x, Real) else ("lo", "hi")
    out = {f: F.where(certain, _take(getattr(x, f), perm, axis), joined[f]) for f in fields}
    if isinstance(x, Real):
        return Real(out["lo"], out["hi"], out["clo"], out["chi"], out["err"], value)
    return Discrete(out["lo"], out["hi"], value)


@register_rule(P("sort"))
def sort_rule(ctx, *operands, dimension, is_stable=False, num_keys=1, **_):
    values = ctx.value(*[o.value for o in operands])
    axis = int(dimension)
    key = operands[0]
    n = key.shape[axis]
    shape = tuple(key.shape)

    def srt(x):
        return lax.sort(x, dimension=axis)

    # the centre's permutation
    iota = lax.broadcasted_iota(jnp.int32, shape, axis)
    perm = lax.sort([o.value for o in operands[:num_keys]] + [iota], dimension=axis,
                    is_stable=is_stable, num_keys=num_keys)[-1]
    hl, hh = _hull(key)
    if n > 1:
        ok = _ordered(_take(hl, perm, axis), _take(hh, perm, axis), axis,
                      stable_ties=bool(is_stable) and num_keys == 1, descending=False)
        certain = jnp.all(ok, axis=axis, keepdims=True)
    else:
        certain = jnp.ones(shape[:axis] + (1,) + shape[axis + 1:], bool)
    outs = []
    if isinstance(key, Real):
        err = F.where(certain, _take(key.err, perm, axis),
                      jnp.broadcast_to(jnp.max(key.err, axis=axis, keepdims=True), shape))
        outs.append(Real(srt(key.lo), srt(key.hi), srt(key.clo), srt(key.chi), err, values[0],
                         exact=key.exact))
    else:
        outs.append(Discrete(srt(key.lo), srt(key.hi), values[0]))
    for x, v in zip(operands[1:], values[1:]):
        outs.append(_permuted(x, perm, certain, axis, v))
    if len(operands) > 1:
        ctx.flag(~certain, "the sort order depends on uncertain values; the operands sorted "
                           "along are joined over the row")
    return outs


@register_rule(P("top_k"))
def top_k_rule(ctx, a, *, k, axis=-1, **_):
    vals, idx = ctx.value(a.value)
    nd = len(a.shape)
    ax = int(axis) % nd
    n = a.shape[ax]
    k = int(k)

    def tk(x):
        xm = jnp.moveaxis(x, ax, -1)
        return jnp.moveaxis(lax.top_k(xm, k)[0], -1, ax)

    hl, hh = _hull(a)
    idx32 = idx.astype(jnp.int32)
    sl, sh = _take(hl, idx32, ax), _take(hh, idx32, ax)
    certain = jnp.ones(jnp.shape(idx)[:ax] + (1,) + jnp.shape(idx)[ax + 1:], bool)
    if k > 1:
        certain = certain & jnp.all(_ordered(sl, sh, ax, True, descending=True), axis=ax, keepdims=True)
    if k < n:
        # the k-th selected is certainly above every element not selected (or an equal
        # exact point with a larger index: top_k prefers the lower index)
        pos = lax.broadcasted_iota(jnp.int32, jnp.shape(hl), ax)
        chosen = jnp.zeros(jnp.shape(hl), bool)
        for j in range(k):
            chosen = chosen | (pos == lax.slice_in_dim(idx32, j, j + 1, axis=ax))
        last_lo = lax.slice_in_dim(sl, k - 1, k, axis=ax)
        last_hi = lax.slice_in_dim(sh, k - 1, k, axis=ax)
        last_i = lax.slice_in_dim(idx32, k - 1, k, axis=ax)
        below = (hh < last_lo) | ((hl == hh) & (last_lo == last_hi) & (hl == last_lo) & (pos > last_i))
        certain = certain & jnp.all(chosen | below, axis=ax, keepdims=True)
    if isinstance(a, Real):
        err = F.where(certain, _take(a.err, idx32, ax),
                      jnp.broadcast_to(jnp.max(a.err, axis=ax, keepdims=True), jnp.shape(idx)))
        out = Real(tk(a.lo), tk(a.hi), tk(a.clo), tk(a.chi), err, vals, exact=a.exact)
    else:
        out = Discrete(tk(a.lo), tk(a.hi), vals)
    ctx.flag(~certain, "top_k indices depend on uncertain values (returned as [0, n-1])")
    ilo = F.where(certain, idx, 0).astype(idx.dtype)
    ihi = F.where(certain, idx, n - 1).astype(idx.dtype)
    return [out, Discrete(ilo, ihi, idx)]
