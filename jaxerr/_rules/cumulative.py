"""cumsum, cumprod, cummax, cummin (``jnp.cumsum``, ``jnp.cumprod``, ``lax.cummax``...).

* ``cummax`` / ``cummin``: exact, monotone and 1-Lipschitz in the max norm: every
  field is reduced along the prefix, the error bound is the largest one so far.
* ``cumsum``: the ``k``-th prefix is a sum of ``k`` terms; XLA on CPU evaluates it as
  a tree of additions each rounded to the output format (measured in bfloat16), so
  the bound is the larger of the accumulation model's and ``gamma_{k-1} S_k + k eta``
  (see ``windows.sum_coefficients``).
* ``cumprod``: the ``k``-th prefix is a product of ``k`` computed factors in some tree
  order; with ``w = u + eta`` every multiplication satisfies
  ``|fl(ab) - ab| <= w max(1, |ab|)``, and by induction over the tree the rounding
  error is at most ``((1 + w)^(k-1) - 1) prod_i max(1, |x^_i|)``. The propagated error
  is ``sum_i |dx_i| prod_{j != i} H_j`` (``H``: magnitudes over the hull), evaluated
  with an associative scan of ``(P, E) * (P', E') = (P P', E P' + P E')``.
"""

from __future__ import annotations

import math

import jax.lax as lax
import jax.numpy as jnp
import numpy as np

from .. import _compat
from .. import _formats as F
from .._domains.interval import Discrete, Real, imul, mag
from . import register_rule
from ._common import c
from .windows import sum_coefficients

P = _compat.prim


def _along(v, axis, ndim):
    """A static per-position vector shaped to broadcast along ``axis``."""
    shape = [1] * ndim
    shape[axis] = -1
    return jnp.asarray(v).reshape(shape)


def _positions(L: int, reverse: bool):
    """Prefix length of every position along the axis."""
    k = np.arange(1, L + 1)
    return k[::-1].copy() if reverse else k


def _cumsum_bounds(x, axis, reverse, L):
    adt = x.dtype
    g = F.gamma(max(L, 1), float(np.finfo(adt).eps) / 2)
    s = lax.cumsum(x, axis=axis, reverse=reverse)
    a = lax.cumsum(jnp.abs(x), axis=axis, reverse=reverse)
    slack = F.add_up(F.scale_up(F.scale_up(a, 1.0 + 2 * g), g), c(2 * L * float(np.finfo(adt).tiny), adt))
    return F.sub_dn(s, slack), F.add_up(s, slack)


@register_rule(P("cumsum"))
def cumsum_rule(ctx, a, *, axis, reverse=False, **_):
    value = ctx.value(a.value)
    if isinstance(a, Discrete):
        return Discrete(lax.cumsum(a.lo, axis=axis, reverse=reverse),
                        lax.cumsum(a.hi, axis=axis, reverse=reverse), value)
    L = a.shape[axis]
    nd = len(a.shape)
    adt = a.lo.dtype
    if L == 0:
        return a
    sum_coefficients(ctx, L)  # flags an infinite gamma once
    coefs = [sum_coefficients_quiet(ctx, k) for k in range(1, L + 1)]
    ks = _positions(L, reverse)
    A = _along(np.array([F.const_up(coefs[k - 1][0], adt) for k in ks]), axis, nd)
    B = _along(np.array([F.const_up(coefs[k - 1][1], adt) for k in ks]), axis, nd)
    Cc = _along(np.array([F.const_up(coefs[k - 1][2] if k > 1 else 0.0, adt) for k in ks]), axis, nd)

    def up(x):
        return _cumsum_bounds(x, axis, reverse, L)[1]

    lo, _ = _cumsum_bounds(a.lo, axis, reverse, L)
    _, hi = _cumsum_bounds(a.hi, axis, reverse, L)
    rlo, _ = _cumsum_bounds(a.clo, axis, reverse, L)
    _, rhi = _cumsum_bounds(a.chi, axis, reverse, L)
    S = up(mag(a.clo, a.chi))
    rho = F.where(A == 0, 0.0, F.mul_up(S, A))  # A may be inf where gamma does not exist
    rho = F.add_up(rho, F.mul_up(mag(rlo, rhi), B))
    rho = F.add_up(rho, Cc)
    err = rho if a.exact else F.add_up(up(a.err), rho)
    clo, chi = F.sub_dn(rlo, rho), F.add_up(rhi, rho)
    nonneg = lax.cummin(a.clo, axis=axis, reverse=reverse) >= 0
    nonpos = lax.cummax(a.chi, axis=axis, reverse=reverse) <= 0
    clo = F.where(nonneg, jnp.maximum(clo, 0.0), clo)
    chi = F.where(nonpos, jnp.minimum(chi, 0.0), chi)
    return Real(lo, hi, clo, chi, err, value)


def sum_coefficients_quiet(ctx, n: int):
    """:func:`windows.sum_coefficients` without diagnostics (one per prefix length)."""

    class _Quiet:
        fmt = ctx.fmt
        acc = ctx.acc

        @staticmethod
        def flag(*_a, **_k):
            pass

    return sum_coefficients(_Quiet, n)


def _cum_extreme(ctx, a, axis, reverse, is_max):
    value = ctx.value(a.value)
    op = lax.cummax if is_max else lax.cummin

    def f(x):
        return op(x, axis=axis, reverse=reverse)

    if isinstance(a, Discrete):
        return Discrete(f(a.lo), f(a.hi), value)
    return Real(f(a.lo), f(a.hi), f(a.clo), f(a.chi), lax.cummax(a.err, axis=axis, reverse=reverse),
                value, exact=a.exact)


@register_rule(P("cummax"))
def cummax_rule(ctx, a, *, axis, reverse=False, **_):
    return _cum_extreme(ctx, a, axis, reverse, True)


@register_rule(P("cummin"))
def cummin_rule(ctx, a, *, axis, reverse=False, **_):
    return _cum_extreme(ctx, a, axis, reverse, False)


def _scan(fn, xs, axis, reverse):
    return lax.associative_scan(fn, xs, reverse=reverse, axis=axis)


@register_rule(P("cumprod"))
def cumprod_rule(ctx, a, *, axis, reverse=False, **_):
    value = ctx.value(a.value)
    if isinstance(a, Discrete):
        certain = jnp.all(a.lo == a.hi)
        info = jnp.iinfo(value.dtype)
        return Discrete(F.where(certain, value, info.min), F.where(certain, value, info.max), value)
    L = a.shape[axis]
    nd = len(a.shape)
    adt = a.lo.dtype
    if L == 0:
        return a

    def iprod(p, q):
        return imul(p, q)

    lo, hi = _scan(iprod, (a.lo, a.hi), axis, reverse)
    rlo, rhi = _scan(iprod, (a.clo, a.chi), axis, reverse)
    # rounding: ((1 + w)^(k-1) - 1) * prod max(1, |x^_i|), w = u + eta
    fmt = ctx.fmt
    # (1 + w)^m - 1 <= gamma_m(w) = m w / (1 - m w)
    w = math.nextafter(fmt.unit_roundoff + fmt.underflow, math.inf)
    ks = _positions(L, reverse)
    coef = [F.const_up(F.gamma(int(k) - 1, w), adt) for k in ks]
    Gk = _along(np.array(coef), axis, nd)

    def mul_up(p, q):
        return F.mul_up(p, q)

    Q = _scan(mul_up, jnp.maximum(mag(a.clo, a.chi), 1.0), axis, reverse)
    rho = F.where(Gk == 0, 0.0, F.mul_up(Q, Gk))
    if a.exact:
        err = rho
    else:
        H = mag(*a.hull())

        def pe(p, q):
            (p1, e1), (p2, e2) = p, q
            return F.mul_up(p1, p2), F.add_up_nn(F.mul_up(e1, p2), F.mul_up(p1, e2))

        _, E = _scan(pe, (H, a.err), axis, reverse)
        err = F.add_up_nn(E, rho)
    clo, chi = F.sub_dn(rlo, rho), F.add_up(rhi, rho)
    return Real(lo, hi, clo, chi, err, value)
