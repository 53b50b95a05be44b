"""Shared building blocks of the interval rules: rounding-error terms and result assembly."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import jax.numpy as jnp
import numpy as np

from .. import _compat
from .. import _formats as F
from .._domains.interval import Real, mag


def c(x: float, dtype: Any) -> Any:
    """A static constant rounded up into ``dtype``."""
    return F.static_up(x, dtype)


def rounding(ctx, M: Any) -> Any:
    """Bound on ``|fl(r) - r|`` for a correctly rounded basic operation with ``|r| <= M``.

    Round to nearest errs by at most half an ulp of ``r``'s binade,
    ``u 2^floor(log2 |r|) <= u 2^floor(log2 M)`` (FPTaylor's "improved rounding
    model"): up to 2x below ``u M``, exact (a power of two), and used only where ``M``
    and that power of two are normal numbers of the analysis dtype (the exponent bits
    are exact there); elsewhere ``u M``. Plus the format's underflow term ``eta`` (results below
    its smallest normal)."""
    fmt = ctx.fmt
    return F.add_up_nn(nearest(M, fmt.unit_roundoff), c(fmt.underflow, M.dtype))


def nearest(M: Any, u: float) -> Any:
    """Bound on ``|fl(r) - r|`` for rounding to nearest a normal ``r`` with ``|r| <= M``
    into a format with unit roundoff ``u`` (a power of two): ``u 2^floor(log2 M)``
    where ``M`` and that bound are normal numbers of the analysis dtype, else ``u M``.
    No underflow term (the caller adds the format's ``eta``)."""
    old = F.scale_up(M, u)
    if u > 0:
        tiny = float(np.finfo(M.dtype).tiny)
        binade = F.pow2_floor(M) * u  # u 2^floor(log2 M), exact (u is a power of 2)
        ok = jnp.isfinite(M) & (M >= tiny) & (binade >= tiny)
        old = F.where(ok, jnp.minimum(old, binade), old)
    return old


def underflow_only(ctx, M: Any) -> Any:
    """Bound for an operation that is exact except for underflow (e.g. scaling by 2**k)."""
    return jnp.full_like(M, c(ctx.fmt.underflow, M.dtype))


def transcendental_rounding(ctx, M: Any, prim: Any, xmag: Any = None) -> Any:
    """Bound on ``|computed f(r) - f(r)|`` with ``|f(r)| <= M`` under the documented budget:
    evaluation in the compute format (budget ``k_rel``, ``k_abs``), then one rounding to a
    narrower output format, plus the terms of lowerings that are not 'upcast, evaluate,
    round once' (exp2 via exp(x ln2): needs ``xmag >= |x|``; logistic, expm1, pow in
    narrow formats)."""
    fmt = ctx.fmt
    cf = F.compute_format(fmt)
    k_rel, k_abs = F.transcendental_budget(prim, cf)
    uc = cf.unit_roundoff
    rel = k_rel * uc
    r = F.add_up_nn(F.scale_up(M, rel), c(k_abs * uc + cf.underflow, M.dtype))
    if prim is _compat.prim("exp2"):
        r = F.add_up(r, F.mul_up(M, F.scale_up(xmag, F.exp2_extra_rel(1.0, fmt))))
    narrow = fmt.precision < cf.precision
    if narrow and prim in F.NARROW_EXTRA_BUDGETS:
        k_n = F.NARROW_EXTRA_BUDGETS[prim]
        r = F.add_up(F.add_up(r, F.scale_up(M, k_n * fmt.unit_roundoff)), c(k_n * fmt.underflow, M.dtype))
        if prim is _compat.prim("logistic"):
            # 1/(1 + exp(-x)) with exp(-x) overflowing the narrow format gives 0
            r = F.add_up(r, c(1.0 / fmt.max_finite, M.dtype))
    if narrow:
        # then rounded once more to the narrower output format
        r = F.add_up_nn(r, F.add_up_nn(F.scale_up(F.add_up_nn(M, r), fmt.unit_roundoff), c(fmt.underflow, M.dtype)))
    else:
        r = F.add_up_nn(r, c(fmt.underflow, M.dtype))
    return r


def accumulation_coefficients(ctx, n: int, products: bool) -> tuple[float, float, float]:
    """The accumulation model's ``(a, b, c)`` for ``n`` terms in this equation's format;
    flags the equation when the worst-case ``gamma`` does not exist (``n u >= 1``)."""
    fmt, acc = ctx.fmt, ctx.acc
    ca, cb, cc = acc.coefficients(n, fmt, products=products)
    if math.isinf(ca):
        what = "accumulation" if products else "summation"
        ctx.flag(
            True,
            f"the worst-case bound gamma_{acc.depth(n, products)} of '{acc}' {what} of {n} terms "
            f"in {fmt.name} is infinite (n*u >= 1), so the error bound is inf; use "
            "accumulation='pairwise', 'blocked:B' or 'wide:float32'",
        )
    return ca, cb, cc


def _acc_limit(ctx, in_format: bool = False) -> float | None:
    thr = ctx.fmt.max_finite if in_format else ctx.acc.accumulator(ctx.fmt).max_finite
    return thr if math.isfinite(thr) else None


def partial_sums_overflow(ctx, S: Any, ca: Any, cb: float, cc: float, in_format: bool = False) -> Any:
    """Where a partial sum may overflow the accumulator (a boolean mask), or ``None``.

    A sum of terms whose computed magnitudes add up to at most ``S`` has, in every
    summation order, partial sums of magnitude at most ``S`` exactly and ``S (1 + a +
    b) + c`` computed (``(a, b, c)``: the accumulation model's coefficients for the
    whole sum, which bound every partial sum's error too), so none overflows when that
    is at most the accumulator's largest finite value (rounding to nearest is monotone
    and the largest finite value is representable). The final result's own overflow is
    checked by the domain's finalize hook. Without this check ``-44372 + -25032 +
    48280`` in float8_e5m2 (the partial sum -69404 rounds to -inf) was bounded as
    finite (fuzz seed 3000). ``in_format``: the partial sums are rounded to the
    operation's format whatever the accumulation model (XLA's windowed, cumulative and
    scatter sums). ``ca`` may be an array (per-element coefficients).
    """
    thr = _acc_limit(ctx, in_format)
    if thr is None or (isinstance(ca, float) and ca == 0):
        return None
    if isinstance(ca, float):
        bound = F.scale_up(S, 1 + ca + cb)
    else:
        bound = F.add_up_nn(S, F.where(S == 0, 0.0, F.mul_up(S, ca)))
    bound = F.add_up_nn(bound, c(cc, S.dtype))
    return ~(bound <= thr)  # NaN counts as overflow


def partial_sums_overflow_err(ctx, err: Any, ca: float, cb: float, cc: float) -> Any:
    """:func:`partial_sums_overflow` for a rule whose error bound ``err >= a S`` holds
    but which does not form ``S`` (bilinear rules fold it into their matmuls):
    ``err <= a (M - c) / (1 + a + b)`` implies ``S (1 + a + b) + c <= M``. The test only
    over-approximates ``S`` by ``err / a``; it reports a false overflow only where the
    propagated error is itself of the order of ``a M``."""
    thr = _acc_limit(ctx)
    if thr is None or ca == 0 or not math.isfinite(ca):
        return None
    lim = Fraction(ca) * (Fraction(thr) - Fraction(cc)) / (1 + Fraction(ca) + Fraction(cb))
    f = float(lim)
    if Fraction(f) > lim:
        f = math.nextafter(f, -math.inf)
    return ~(err <= F.const_dn(f, err.dtype))


def guard_partial_sums(r: Real, ovf: Any) -> Real:
    """``r`` with an unbounded computed range and error where ``ovf`` (a partial sum may
    overflow); the domain's finalize hook reports it as an overflow of the equation."""
    if ovf is None:
        return r
    return Real(r.lo, r.hi, F.where(ovf, -jnp.inf, r.clo), F.where(ovf, jnp.inf, r.chi),
                F.where(ovf, jnp.inf, r.err), r.value)


def result(ctx, lo, hi, rt_lo, rt_hi, prop, rho, value, clamp_lo=None, clamp_hi=None,
           sign_preserving=False, single_rounding=True) -> Real:
    """Assemble a Real from the exact range, the range ``[rt_lo, rt_hi]`` of the operation
    applied exactly to the computed operands, the propagated error and the rounding bound.

    ``sign_preserving``: the operation is correctly rounded (round to nearest is
    monotone and 0 is representable), so a nonnegative ``r`` rounds to a
    nonnegative value and a nonpositive one to a nonpositive value.

    ``single_rounding`` (with ``sign_preserving``): the result is one correctly rounded
    operation, so each end of the computed range moves by that end's own rounding
    only. Not for a division, which XLA may compute as ``x * (1/y)`` with ``1/y``
    flushed to 0 (``3e38 / 3e38`` or ``2.6e13 / 1.6e38`` gives 0: fuzz seed 40068)."""
    clo = F.sub_dn(rt_lo, rho)
    chi = F.add_up(rt_hi, rho)
    if sign_preserving:
        clo = F.where(rt_lo >= 0, jnp.maximum(clo, 0.0), clo)
        chi = F.where(rt_hi <= 0, jnp.minimum(chi, 0.0), chi)
    if sign_preserving and single_rounding:
        # round to nearest is monotone: fl(r) >= fl(rt_lo) >= rt_lo - rounding(|rt_lo|),
        # an error bound at the end itself rather than at the largest magnitude (a
        # variance max(0, v) + eps stays >= eps (1 - u) - eta, not eps - u max(v))
        r_lo = rounding(ctx, jnp.abs(rt_lo))
        r_hi = rounding(ctx, jnp.abs(rt_hi))
        clo = jnp.maximum(clo, F.where(jnp.isfinite(rt_lo), F.sub_dn(rt_lo, r_lo), clo))
        chi = jnp.minimum(chi, F.where(jnp.isfinite(rt_hi), F.add_up(rt_hi, r_hi), chi))
        # nor does it overflow below the format's threshold: -max_finite - 3 rounds to
        # -max_finite (a Flax mask value finfo(dtype).min minus a row maximum)
        fmt = ctx.fmt
        big = c(fmt.max_finite, clo.dtype)
        thr = F.const_dn(fmt.finite_below, clo.dtype)
        clo = F.where(rt_lo > -thr, jnp.maximum(clo, -big), clo)
        chi = F.where(rt_hi < thr, jnp.minimum(chi, big), chi)
    if clamp_lo is not None:
        clo = jnp.maximum(clo, clamp_lo)
    if clamp_hi is not None:
        chi = jnp.minimum(chi, clamp_hi)
    err = rho if prop is None else F.add_up_nn(prop, rho)
    return Real(lo, hi, clo, chi, err, value)


def invalid(ctx, bad: Any, r: Real, what: str) -> Real:
    """Where ``bad``: the analysis cannot bound the result (domain error): everything infinite."""
    ctx.flag(bad, what)
    inf = jnp.inf
    return Real(
        F.where(bad, -inf, r.lo),
        F.where(bad, inf, r.hi),
        F.where(bad, -inf, r.clo),
        F.where(bad, inf, r.chi),
        F.where(bad, inf, r.err),
        r.value,
    )


def computed_mag(x: Real) -> Any:
    return mag(x.clo, x.chi)


def exact_mag(x: Real) -> Any:
    return mag(x.lo, x.hi)


def hull_mag(x: Real) -> Any:
    return mag(*x.hull())


def is_pow2_literal(v: Any) -> bool:
    """True if the jaxpr operand is a literal/const whose value is a power of two (or zero)."""
    val = getattr(v, "val", None)
    if val is None:
        return False
    try:
        a = np.asarray(val, dtype=np.float64)
    except Exception:
        return False
    if a.size != 1:
        return False
    x = abs(float(a.reshape(())))
    if x == 0:
        return True
    if not math.isfinite(x):
        return False
    m, _ = math.frexp(x)
    return m == 0.5
