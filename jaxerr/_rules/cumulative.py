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
from ._common import c, guard_partial_sums, partial_sums_overflow
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
    ca, cb, cc = coefs[-1]  # the largest coefficients (every prefix is a partial sum of the last)
    ovf = partial_sums_overflow(ctx, S, float(ca), float(cb), float(cc), in_format=True) if L > 2 else None
    return guard_partial_sums(Real(lo, hi, clo, chi, err, value), ovf)


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


@register_rule(P("cumlogsumexp"))
def cumlogsumexp_rule(ctx, a, *, axis, reverse=False, **_):
    """``f_k = log sum_{i<=k} exp(x_i)``, evaluated by XLA as a chain of
    ``logaddexp(s, t) = max(s, t) + log1p(exp(-|s - t|))`` each of whose operations is
    rounded to the format.

    * range: ``f_k`` is increasing in every ``x_i`` and
      ``max_i x_i <= f_k <= max_i x_i + log k``; also ``M + log(sum exp(x_i - M))``
      (``M``: the row's largest value) with outward-rounded exp/log/sums;
    * error: ``f`` is 1-Lipschitz in the max norm (propagated: the largest input error
      so far). One ``logaddexp`` of computed values within ``D`` of exact sub-results
      of magnitude at most ``A_k = max|x^_i| + log k`` errs by at most
      ``E = u|r^| + eta + (u|s - t| + eta)/2 + (k_exp u_C + u) + eta + (k_log1p u_C + u) log 2 + eta``
      (``|d log1p(exp(-d))/dd| <= 1/2``, ``|d log1p(e)/de| <= 1``), with
      ``|r^| <= A + D`` and ``|s - t| <= 2 (A + D)``; errors pass 1-Lipschitz through
      later combinations, so a chain of ``k - 1`` (in any tree, depth at most
      ``k - 1``) gives ``D <= (k - 1) E``, and solving,
      ``E <= (2 u A + 2u + (k_exp + k_log1p) u_C + 4 eta) / (1 - 2 (k - 1) u)``.
    """
    from .elementwise import _enclose

    value = ctx.value(a.value)
    L = a.shape[axis]
    nd = len(a.shape)
    adt = a.lo.dtype
    if L == 0:
        return a
    ks = _positions(L, reverse)
    logk = _along(np.array([F.const_up(math.log(k) * (1 + 1e-15) if k > 1 else 0.0, adt) for k in ks]), axis, nd)
    cmax = lax.cummax
    exp_dn, exp_up = _enclose(jnp.exp, P("exp"))
    log_dn, log_up = _enclose(jnp.log, P("log"))

    def enclose(lo_x, hi_x):
        M_lo = jnp.max(lo_x, axis=axis, keepdims=True)
        M_hi = jnp.max(hi_x, axis=axis, keepdims=True)
        s_dn = _cumsum_bounds(jnp.maximum(exp_dn(F.sub_dn(lo_x, M_lo)), 0.0), axis, reverse, L)[0]
        s_up = _cumsum_bounds(exp_up(F.sub_up(hi_x, M_hi)), axis, reverse, L)[1]
        lo = F.add_dn(M_lo, log_dn(jnp.maximum(s_dn, 0.0)))
        hi = F.add_up(M_hi, log_up(s_up))
        lo = jnp.maximum(F.where(jnp.isnan(lo), -jnp.inf, lo), cmax(lo_x, axis=axis, reverse=reverse))
        hi = jnp.minimum(F.where(jnp.isnan(hi), jnp.inf, hi),
                         F.add_up(cmax(hi_x, axis=axis, reverse=reverse), logk))
        return lo, hi

    lo, hi = enclose(a.lo, a.hi)
    rlo, rhi = enclose(a.clo, a.chi)
    fmt = ctx.fmt
    cf = F.compute_format(fmt)
    k_e = F.transcendental_budget(P("exp"), cf)[0]
    k_l = F.transcendental_budget(P("log1p"), cf)[0]
    u, uc, eta = fmt.unit_roundoff, cf.unit_roundoff, fmt.underflow
    A = F.add_up(lax.cummax(mag(a.clo, a.chi), axis=axis, reverse=reverse), logk)
    num = F.add_up_nn(F.scale_up(A, 2 * u), F.static_up(2 * u + (k_e + k_l) * uc + 4 * eta + 2 * cf.underflow, adt))
    den = np.array([1.0 - 2.0 * (k - 1) * u for k in ks])
    steps = np.array([float(k - 1) for k in ks])
    # (k - 1) / (1 - 2 (k - 1) u), rounded up; inf where the chain is too long
    fac = np.where(den > 0, steps / np.where(den > 0, den, 1.0) * (1 + 1e-12), np.inf)
    if np.any(np.isinf(fac)):
        ctx.flag(True, f"cumlogsumexp over {L} terms in {fmt.name}: the worst-case bound does not exist")
    fac = _along(np.array([F.const_up(float(t), adt) for t in fac]), axis, nd)
    rho = F.where(fac == 0, 0.0, F.mul_up(num, fac))
    err = rho if a.exact else F.add_up_nn(lax.cummax(a.err, axis=axis, reverse=reverse), rho)
    return Real(lo, hi, F.sub_dn(rlo, rho), F.add_up(rhi, rho), err, value)
