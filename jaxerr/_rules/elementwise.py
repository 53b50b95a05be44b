"""Rules for monotone elementwise functions: exp exp2 log log1p expm1 tanh logistic erf sqrt rsqrt.

For increasing ``f`` and exact/computed operand ranges ``X``, ``X^`` with hull
``H``: the exact result lies in ``f(X)``; ``|f(x^) - f(x)| <= sup_H |f'| * err``
(mean value theorem, or Hölder for sqrt at 0); the computed result is ``f(x^)``
plus the primitive's documented error budget (``_formats.TRANSCENDENTAL_BUDGETS``).
The analysis evaluates ``f`` itself in floats and widens every such value by
``_formats.analysis_budget(prim)`` units of its own roundoff.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from .. import _compat
from .. import _formats as F
from .._domains.interval import mag, mig, tighten
from . import register_rule
from ._common import c, invalid, result, rounding, transcendental_rounding

P = _compat.prim


def _enclose(fn, prim, abs_slack: float = 0.0):
    """(lower, upper) evaluators of ``fn`` with outward widening for the analysis: the
    analysis evaluates ``prim`` with XLA too, so it widens by twice the backend budget."""

    def k_of(x):
        return F.analysis_budget(prim, x.dtype)

    def widen(x, y, sign):
        k = k_of(x)
        y = F.up_rel(y, k) if sign > 0 else F.down_rel(y, k)
        if prim is P("exp2"):
            fmt = F.FORMATS["float64" if x.dtype == jnp.float64 else "float32"]
            extra = F.mul_up(jnp.abs(y), F.scale_up(jnp.abs(x), F.exp2_extra_rel(2.0, fmt)))
            y = y + sign * extra
        if abs_slack:
            y = y + sign * c(abs_slack * float(jnp.finfo(x.dtype).eps), x.dtype)
        return y

    def dn(x):
        return widen(x, fn(x), -1)

    def up(x):
        return widen(x, fn(x), +1)

    return dn, up


def _monotone(ctx, a, prim, fn, deriv, *, abs_slack=0.0, clamp_lo=None, bad=None, bad_msg="",
              correctly_rounded=False, holder=None):
    value = ctx.value(a.value)
    f_dn, f_up = _enclose(fn, prim, abs_slack)
    lo, hi = f_dn(a.lo), f_up(a.hi)
    rlo, rhi = f_dn(a.clo), f_up(a.chi)
    M = mag(rlo, rhi)
    hlo, hhi = a.hull()
    if correctly_rounded:
        rho = rounding(ctx, M)
    else:
        rho = transcendental_rounding(ctx, M, prim, xmag=mag(a.clo, a.chi))
    if a.exact:
        prop = None
    else:
        L = deriv(hlo, hhi, f_up)
        prop = F.mul_up(L, a.err)
        prop = F.where(a.err == 0, jnp.zeros_like(prop), prop)
        if holder is not None:
            prop = jnp.minimum(prop, holder(a.err))
    cl = None if clamp_lo is None else jnp.full_like(lo, clamp_lo)
    r = result(ctx, lo, hi, rlo, rhi, prop, rho, value, clamp_lo=cl)
    # the computed value at x is within the rounding bound of f(x) with |f(x)| itself,
    # so each end of the computed range needs only its own (smaller) rounding term
    xm = mag(a.clo, a.chi)

    def rho_at(m):
        return rounding(ctx, m) if correctly_rounded else transcendental_rounding(ctx, m, prim, xmag=xm)

    clo = jnp.maximum(r.clo, F.sub_dn(rlo, rho_at(jnp.abs(rlo))))
    chi = jnp.minimum(r.chi, F.add_up(rhi, rho_at(jnp.abs(rhi))))
    r = tighten(type(r)(r.lo, r.hi, clo, chi, r.err, r.value))
    if bad is not None:
        r = invalid(ctx, bad(hlo, hhi), r, bad_msg)
    return r


@register_rule(P("exp"))
def exp_rule(ctx, a, **_):
    return _monotone(ctx, a, P("exp"), jnp.exp, lambda lo, hi, f_up: f_up(hi), clamp_lo=0.0)


@register_rule(P("exp2"))
def exp2_rule(ctx, a, **_):
    ln2 = math.log(2) * (1 + 1e-15)
    return _monotone(
        ctx, a, P("exp2"), jnp.exp2, lambda lo, hi, f_up: F.mul_up(c(ln2, hi.dtype), f_up(hi)), clamp_lo=0.0
    )


@register_rule(P("expm1"))
def expm1_rule(ctx, a, **_):
    exp_up = _enclose(jnp.exp, P("exp"))[1]
    return _monotone(ctx, a, P("expm1"), jnp.expm1, lambda lo, hi, f_up: exp_up(hi), clamp_lo=-1.0)


@register_rule(P("log"))
def log_rule(ctx, a, **_):
    return _monotone(
        ctx,
        a,
        P("log"),
        jnp.log,
        lambda lo, hi, f_up: F.div_up(jnp.ones_like(lo), lo),
        abs_slack=4.0,
        bad=lambda lo, hi: lo <= 0,
        bad_msg="log of a range reaching <= 0 (exact or computed operand); the result is unbounded",
    )


@register_rule(P("log1p"))
def log1p_rule(ctx, a, **_):
    return _monotone(
        ctx,
        a,
        P("log1p"),
        jnp.log1p,
        lambda lo, hi, f_up: F.div_up(jnp.ones_like(lo), F.add_dn(jnp.ones_like(lo), lo)),
        bad=lambda lo, hi: lo <= -1,
        bad_msg="log1p of a range reaching <= -1; the result is unbounded",
    )


def _tanh_deriv(lo, hi, f_up):
    # tanh' = 1 - tanh^2 is even and decreasing in |x|: its largest value on the range
    # is at mig, 1 - tanh(mig)^2 <= 1 - t^2 for a lower bound 0 <= t <= tanh(mig)
    # (the older bound min(1, 4 exp(-2 mig)) is 1 up to |x| = 0.69, where tanh' is 0.64)
    d = mig(lo, hi)
    t = jnp.clip(_enclose(jnp.tanh, P("tanh"))[0](d), 0.0, 1.0)
    exp_up = _enclose(jnp.exp, P("exp"))[1]
    return jnp.minimum(jnp.minimum(1.0, F.mul_up(c(4.0, lo.dtype), exp_up(-2 * d))),
                       F.sub_up(1.0, F.mul_dn(t, t)))


@register_rule(P("tanh"))
def tanh_rule(ctx, a, **_):
    return _monotone(ctx, a, P("tanh"), jnp.tanh, _tanh_deriv)


def _logistic_deriv(lo, hi, f_up):
    # s' = s (1 - s) is even in x and decreasing in |x|: at mig, with s = logistic(-mig)
    # in (0, 1/2], s (1 - s) <= s_hi (1 - s_lo) for an enclosure [s_lo, s_hi] of s
    d = mig(lo, hi)
    exp_up = _enclose(jnp.exp, P("exp"))[1]
    s_dn, s_up = _enclose(jax.nn.sigmoid, P("logistic"))
    s_lo, s_hi = jnp.clip(s_dn(-d), 0.0, 0.5), jnp.clip(s_up(-d), 0.0, 0.5)
    return jnp.minimum(jnp.minimum(0.25, exp_up(-d)), F.mul_up(s_hi, F.sub_up(1.0, s_lo)))


@register_rule(P("logistic"))
def logistic_rule(ctx, a, **_):
    return _monotone(ctx, a, P("logistic"), jax.nn.sigmoid, _logistic_deriv, clamp_lo=0.0)


def _erf_deriv(lo, hi, f_up):
    # exp(-d^2) decreases in d and is 0 in every format past d = 27: capping d keeps
    # d*d finite (mul_dn of an overflowing product is NaN, which made the bound inf for
    # operands past sqrt(max finite), e.g. erf(3e30) in float32); the cap only raises
    # the bound
    d = jnp.minimum(mig(lo, hi), 1e4)
    exp_up = _enclose(jnp.exp, P("exp"))[1]
    return F.mul_up(c(2 / math.sqrt(math.pi) * (1 + 1e-15), lo.dtype), exp_up(-F.mul_dn(d, d)))


@register_rule(P("erf"))
def erf_rule(ctx, a, **_):
    return _monotone(ctx, a, P("erf"), jax.scipy.special.erf, _erf_deriv)


def _neg_erfc(x):
    import jax.lax as lax

    return -lax.erfc(x)


@register_rule(P("erfc"))
def erfc_rule(ctx, a, **_):
    """erfc is decreasing: analyse the increasing -erfc and negate the result."""
    r = _monotone(ctx, a, P("erfc"), _neg_erfc, _erf_deriv)  # r.value is erfc(x) itself
    return type(r)(-r.hi, -r.lo, -r.chi, -r.clo, r.err, r.value)


def _sqrt_deriv(lo, hi, f_up):
    # a lower bound of sqrt(lo) that is >= 0 (down(0) is -tiny: the derivative bound
    # 0.5 / s would be negative, found by fuzzing); s == 0 gives inf (Hölder takes over)
    s = jnp.maximum(F.down(jnp.sqrt(jnp.maximum(lo, 0.0))), 0.0)
    return F.div_up(jnp.full_like(lo, 0.5), s)


@register_rule(P("sqrt"))
def sqrt_rule(ctx, a, **_):
    return _monotone(
        ctx,
        a,
        P("sqrt"),
        lambda x: jnp.sqrt(jnp.maximum(x, 0.0)),
        _sqrt_deriv,
        clamp_lo=0.0,
        correctly_rounded=True,
        # |sqrt(a) - sqrt(b)| <= sqrt(|a - b|): finite even when the range touches 0
        holder=lambda e: F.up(jnp.sqrt(e)),
        bad=lambda lo, hi: lo < 0,
        bad_msg="sqrt of a range reaching below 0 (exact or computed operand); the result may be NaN",
    )


def _rsqrt_prop(lo, err):
    """Upper bound of sup |d rsqrt| * err = err / (2 lo^1.5) for lo > 0, as
    (0.5 / sqrt(lo)) * (err / lo): no intermediate lo^1.5 that underflows (a negative
    or zero lower bound of it made the bound negative or inf; found by fuzzing)."""
    s = jnp.maximum(F.down(jnp.sqrt(jnp.maximum(lo, 0.0))), 0.0)
    return F.mul_up(F.div_up(jnp.full_like(lo, 0.5), s), F.div_up(err, lo))


def _rsqrt(x):
    import jax.lax as lax

    return lax.rsqrt(x)


@register_rule(P("rsqrt"))
def rsqrt_rule(ctx, a, **_):
    # decreasing: evaluate as -(increasing function of x) on the flipped operand
    value = ctx.value(a.value)
    f_dn, f_up = _enclose(_rsqrt, P("rsqrt"))
    lo, hi = f_dn(a.hi), f_up(a.lo)
    rlo, rhi = f_dn(a.chi), f_up(a.clo)
    rho = transcendental_rounding(ctx, mag(rlo, rhi), P("rsqrt"))
    hlo, hhi = a.hull()
    prop = None if a.exact else _rsqrt_prop(hlo, a.err)
    if prop is not None:
        prop = F.where(a.err == 0, jnp.zeros_like(prop), prop)
    r = result(ctx, lo, hi, rlo, rhi, prop, rho, value, clamp_lo=jnp.zeros_like(lo))
    return invalid(
        ctx, hlo <= 0, r, "rsqrt of a range reaching <= 0 (exact or computed operand); the result is unbounded"
    )
