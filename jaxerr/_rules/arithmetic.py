"""Rules for + - * / neg max min abs sign square integer_pow pow clamp.

For ``z = op(x, y)`` with exact operands ``x, y`` and computed ``x^, y^``:
``|fl(op(x^, y^)) - op(x, y)| <= |op(x^, y^) - op(x, y)| + |fl(r) - r|``; the
first term is the propagated error (a Lipschitz bound of ``op`` over the hull
of exact and computed ranges), the second the rounding of this equation.
"""

from __future__ import annotations

import jax.numpy as jnp

from .. import _compat
from .. import _formats as F
from .._domains.interval import (
    Discrete,
    Real,
    hull_of,
    iadd,
    idiv,
    imul,
    isqr,
    isub,
    mag,
    mig,
    tighten,
)
from . import discrete, register_rule
from ._common import (
    c,
    computed_mag,
    exact_mag,
    hull_mag,
    invalid,
    is_pow2_literal,
    result,
    rounding,
    underflow_only,
)

P = _compat.prim


def _rt(x: Real) -> tuple:
    return x.clo, x.chi


def _ex(x: Real) -> tuple:
    return x.lo, x.hi


def _infinite_sum(r: Real, a: tuple, b: tuple) -> Real:
    """``r`` with the computed range ``[-inf, -inf]`` (``[inf, inf]``) where the computed
    sum of terms in the ranges ``a`` and ``b`` is certainly ``-inf`` (``+inf``): one
    term is ``-inf`` and the other is below ``+inf`` (IEEE: ``-inf + x = -inf``). The
    outward-rounded interval sum gives NaN there (``up(-inf)``), which says "may be
    NaN"; a masked attention logit ``finfo(float32).min`` in bfloat16 minus the row
    maximum is such a sum."""
    inf = jnp.inf
    neg = ((a[1] == -inf) & (b[1] < inf)) | ((b[1] == -inf) & (a[1] < inf))
    pos = ((a[0] == inf) & (b[0] > -inf)) | ((b[0] == inf) & (a[0] > -inf))
    clo = F.where(neg, -inf, F.where(pos, inf, r.clo))
    chi = F.where(neg, -inf, F.where(pos, inf, r.chi))
    return Real(r.lo, r.hi, clo, chi, r.err, r.value, exact=r.exact, point=r.point)


@register_rule(P("add"), P("add_any"), P("add_jaxvals"))
def add_rule(ctx, a, b, **_):
    if isinstance(a, Discrete):
        return discrete.int_binop(ctx, a, b)
    lo, hi = iadd(_ex(a), _ex(b))
    rlo, rhi = iadd(_rt(a), _rt(b))
    rho = rounding(ctx, mag(rlo, rhi))
    prop = None if (a.exact and b.exact) else F.add_up(a.err, b.err)
    r = result(ctx, lo, hi, rlo, rhi, prop, rho, ctx.value(a.value, b.value), sign_preserving=True)
    return _infinite_sum(r, _rt(a), _rt(b))


@register_rule(P("sub"))
def sub_rule(ctx, a, b, **_):
    if isinstance(a, Discrete):
        return discrete.int_binop(ctx, a, b)
    lo, hi = isub(_ex(a), _ex(b))
    rlo, rhi = isub(_rt(a), _rt(b))
    rho = rounding(ctx, mag(rlo, rhi))
    prop = None if (a.exact and b.exact) else F.add_up(a.err, b.err)
    r = result(ctx, lo, hi, rlo, rhi, prop, rho, ctx.value(a.value, b.value), sign_preserving=True)
    return _infinite_sum(r, _rt(a), (-b.chi, -b.clo))


@register_rule(P("neg"))
def neg_rule(ctx, a, **_):
    if isinstance(a, Discrete):
        return discrete.int_unop(ctx, a)
    return Real(-a.hi, -a.lo, -a.chi, -a.clo, a.err, ctx.value(a.value), exact=a.exact)


def _square(ctx, a: Real, value) -> Real:
    lo, hi = isqr(_ex(a))
    rlo, rhi = isqr(_rt(a))
    rho = rounding(ctx, rhi)
    # x^2 - x'^2 = (x - x')(x + x'): |.| <= err * (|x| + |x'|)
    prop = F.mul_up(a.err, F.add_up(exact_mag(a), computed_mag(a)))
    return result(ctx, lo, hi, rlo, rhi, prop, rho, value, clamp_lo=jnp.zeros_like(lo))


@register_rule(P("mul"))
def mul_rule(ctx, a, b, **_):
    if isinstance(a, Discrete):
        return discrete.int_binop(ctx, a, b)
    value = ctx.value(a.value, b.value)
    ia, ib = ctx.eqn.invars
    if ia is ib and not isinstance(ia, _compat.Literal):
        return _square(ctx, a, value)
    lo, hi = imul(_ex(a), _ex(b))
    rlo, rhi = imul(_rt(a), _rt(b))
    M = mag(rlo, rhi)
    exact_scaling = (b.exact and is_pow2_literal(ib)) or (a.exact and is_pow2_literal(ia))
    rho = underflow_only(ctx, M) if exact_scaling else rounding(ctx, M)
    if a.exact and b.exact:
        prop = None
    else:
        # x'y' - xy = x'(y' - y) + y(x' - x)
        prop = F.add_up(F.mul_up(computed_mag(a), b.err), F.mul_up(exact_mag(b), a.err))
        if a.exact:
            prop = F.mul_up(computed_mag(a), b.err)
        elif b.exact:
            prop = F.mul_up(exact_mag(b), a.err)
    return result(ctx, lo, hi, rlo, rhi, prop, rho, value, sign_preserving=True)


@register_rule(P("div"))
def div_rule(ctx, a, b, **_):
    if isinstance(a, Discrete):
        return discrete.int_binop(ctx, a, b)
    value = ctx.value(a.value, b.value)
    lo, hi = idiv(_ex(a), _ex(b))
    rlo, rhi = idiv(_rt(a), _rt(b))
    M = mag(rlo, rhi)
    if b.exact and is_pow2_literal(ctx.eqn.invars[1]):
        rho = underflow_only(ctx, M)
    else:
        rho = _recip_rounding(ctx, M, mag(a.clo, a.chi))
    mb_c = mig(b.clo, b.chi)
    mb_e = mig(b.lo, b.hi)
    # x'/y' - x/y = (x' - x)/y' - x (y' - y)/(y' y)
    t1 = F.div_up(a.err, mb_c)
    # divided one factor at a time: a lower bound mul_dn(mb_c, mb_e) of a product below
    # the smallest normal is negative (a negative abs_err; found by fuzzing, seed 10029)
    t2 = F.div_up(F.div_up(F.mul_up(exact_mag(a), b.err), mb_c), mb_e)
    prop = F.add_up(F.where(a.err == 0, 0.0, t1), F.where(b.err == 0, 0.0, t2)).astype(lo.dtype)
    # (x * fl(1/y) keeps the sign, but is not one correctly rounded operation)
    r = result(ctx, lo, hi, rlo, rhi, prop, rho, value, sign_preserving=True, single_rounding=False)
    hull_lo, hull_hi = b.hull()
    bad = (hull_lo <= 0) & (hull_hi >= 0)
    fmt = ctx.fmt
    if not F.is_exact_format(fmt) and not (b.exact and is_pow2_literal(ctx.eqn.invars[1])):
        # XLA may compute x * (1/y), and 1/y overflows for |y| < 1/max_finite
        small = mig(hull_lo, hull_hi) < F.static_up(1.0 / fmt.max_finite, lo.dtype)
        ctx.flag(small & ~bad, "divisor below 1/max_finite: XLA's x * (1/y) may overflow to inf")
        r = Real(r.lo, r.hi, F.where(small, -jnp.inf, r.clo), F.where(small, jnp.inf, r.chi),
                 F.where(small, jnp.inf, r.err), r.value)
    return invalid(ctx, bad, r, "the divisor's range contains 0, so the quotient is unbounded")


def _recip_rounding(ctx, M, xmag):
    """Rounding bound of a division ``x / y`` with ``|x / y| <= M`` and ``|x| <= xmag`` that
    also covers XLA's rewrite of a division by a broadcast value into ``x * (1/y)``
    (measured on CPU: up to 1 ulp, and ``3e38 / 3e38 = 0`` when ``1/y`` underflows):
    ``fl(x fl(1/y)) = (x/y)(1 + d1)(1 + d2) + x e1 + e2`` with ``|e1| < smallest normal``
    (1/y flushed or subnormal), so ``|err| <= (2u + u^2) M + xmag 2^emin (1 + u) + eta``."""
    fmt = ctx.fmt
    if F.is_exact_format(fmt):
        return rounding(ctx, M)
    u = fmt.unit_roundoff
    dt = M.dtype
    rel = F.scale_up(M, 2 * u + u * u)
    flush = F.scale_up(xmag, fmt.smallest_normal * (1 + 2 * u))
    return F.add_up_nn(F.add_up_nn(rel, flush), c(fmt.underflow, dt))


def _extreme(ctx, a, b, fn, a_wins):
    """max/min are exact and 1-Lipschitz: err <= max(err_a, err_b), and where one operand
    certainly wins (``a_wins(a_hull, b_hull)``) its own error. An infinite error of either
    operand still counts: XLA's max/min propagate NaN."""
    if isinstance(a, Discrete):
        return discrete.int_binop(ctx, a, b)
    ha, hb = a.hull(), b.hull()
    err = F.where(a_wins(ha, hb), a.err, F.where(a_wins(hb, ha), b.err, jnp.maximum(a.err, b.err)))
    err = F.where(jnp.isinf(a.err) | jnp.isinf(b.err), jnp.inf, err)
    return Real(
        fn(a.lo, b.lo),
        fn(a.hi, b.hi),
        fn(a.clo, b.clo),
        fn(a.chi, b.chi),
        err,
        ctx.value(a.value, b.value),
        exact=a.exact and b.exact,
    )


@register_rule(P("max"))
def max_rule(ctx, a, b, **_):
    return _extreme(ctx, a, b, jnp.maximum, lambda x, y: x[0] > y[1])


@register_rule(P("min"))
def min_rule(ctx, a, b, **_):
    return _extreme(ctx, a, b, jnp.minimum, lambda x, y: x[1] < y[0])


@register_rule(P("clamp"))
def clamp_rule(ctx, lo_op, x, hi_op, **_):
    """clamp(lo, x, hi) = min(max(x, lo), hi)."""
    if isinstance(x, Discrete):
        return discrete.int_clamp(ctx, lo_op, x, hi_op)
    value = ctx.value(lo_op.value, x.value, hi_op.value)
    m = max_rule(_NoValueCtx(ctx), x, lo_op)
    r = min_rule(_NoValueCtx(ctx), m, hi_op)
    return Real(r.lo, r.hi, r.clo, r.chi, r.err, value, exact=r.exact)


class _NoValueCtx:
    """Ctx stand-in for composing rules: skips value evaluation."""

    def __init__(self, ctx):
        self._ctx = ctx

    def __getattr__(self, k):
        return getattr(self._ctx, k)

    def value(self, *vals, **_):
        return vals[0]


@register_rule(P("abs"))
def abs_rule(ctx, a, **_):
    if isinstance(a, Discrete):
        return discrete.int_unop(ctx, a)
    return Real(
        mig(a.lo, a.hi),
        mag(a.lo, a.hi),
        mig(a.clo, a.chi),
        mag(a.clo, a.chi),
        a.err,
        ctx.value(a.value),
        exact=a.exact,
    )


@register_rule(P("sign"))
def sign_rule(ctx, a, **_):
    if isinstance(a, Discrete):
        return discrete.int_unop(ctx, a)
    return piecewise_constant(ctx, a, jnp.sign)


def piecewise_constant(ctx, a: Real, fn) -> Real:
    """Monotone non-decreasing, exactly computed, piecewise-constant ``fn`` (floor, sign, ...):
    exact and computed results differ by at most ``fn(hull_hi) - fn(hull_lo)``."""
    hlo, hhi = a.hull()
    lo, hi = fn(a.lo), fn(a.hi)
    clo, chi = fn(a.clo), fn(a.chi)
    err = F.sub_up(fn(hhi), fn(hlo))
    err = F.where(a.err == 0, jnp.zeros_like(err), err)
    if a.exact:
        return Real(lo, hi, clo, chi, err, ctx.value(a.value), exact=True)
    return tighten(Real(lo, hi, clo, chi, err, ctx.value(a.value)))


@register_rule(P("floor"))
def floor_rule(ctx, a, **_):
    return piecewise_constant(ctx, a, jnp.floor)


@register_rule(P("ceil"))
def ceil_rule(ctx, a, **_):
    return piecewise_constant(ctx, a, jnp.ceil)


@register_rule(P("round"))
def round_rule(ctx, a, rounding_method=None, **_):
    # round-half-away or half-even: both monotone non-decreasing step functions
    import jax.lax as lax

    return piecewise_constant(ctx, a, lambda t: lax.round(t, rounding_method))


@register_rule(P("square"))
def square_rule(ctx, a, **_):
    if isinstance(a, Discrete):
        return discrete.int_unop(ctx, a)
    return _square(ctx, a, ctx.value(a.value))


# ---------------------------------------------------------------------------
# integer_pow
# ---------------------------------------------------------------------------


def _ipow_mag(m, n: int, up: bool):
    """m**n for m >= 0 by repeated multiplication, rounded up (or down)."""
    mul = F.mul_up if up else F.mul_dn
    r = jnp.ones_like(m)
    for _ in range(n):
        r = mul(r, m)
    return r


def _ipow_roundings(n: int) -> int:
    """The number of roundings in the error of x**n (n >= 1) computed by any
    multiplication chain (XLA's binary powering): n - 1, not the number of multiplications.

    Expand the chain into a product tree with the n factors x as leaves: it has n - 1
    multiplication nodes, and a rounding ``(1 + d)`` of a shared intermediate appears
    once per use, so the result is ``x**n prod (1 + d_j)^(m_j)`` with ``sum m_j = n - 1``
    (``x**4 = (x^2)^2``: ``(1 + d1)^2 (1 + d2)``, up to 3u, which the fuzzer found
    against the former count of 2 multiplications: seed 18070)."""
    return max(0, n - 1)


def _ipow_range(lo, hi, n: int):
    """Range of x**n over [lo, hi] (n >= 1), rounded outward."""
    if n % 2 == 0:
        return _ipow_mag(mig(lo, hi), n, False), _ipow_mag(mag(lo, hi), n, True)
    # odd: increasing
    lo_v = F.where(lo >= 0, _ipow_mag(jnp.abs(lo), n, False), -_ipow_mag(jnp.abs(lo), n, True))
    hi_v = F.where(hi >= 0, _ipow_mag(jnp.abs(hi), n, True), -_ipow_mag(jnp.abs(hi), n, False))
    return lo_v, hi_v


@register_rule(P("integer_pow"))
def integer_pow_rule(ctx, a, *, y: int, **_):
    if isinstance(a, Discrete):
        return discrete.int_unop(ctx, a)
    value = ctx.value(a.value)
    n = int(y)
    if n == 0:
        one = jnp.ones_like(a.lo)
        return Real(one, one, one, one, jnp.zeros_like(one), value, exact=True)
    if n == 1:
        return Real(a.lo, a.hi, a.clo, a.chi, a.err, value, exact=a.exact)
    k = abs(n)
    fmt = ctx.fmt
    elo, ehi = _ipow_range(a.lo, a.hi, k)
    rlo, rhi = _ipow_range(a.clo, a.chi, k)
    nr = _ipow_roundings(k)
    hm = hull_mag(a)
    # rounding of the k-fold product: gamma_nm |x'|^k + underflow terms amplified by
    # at most max(1, |x'|)^k
    M = mag(rlo, rhi)
    g = F.gamma(nr, fmt.unit_roundoff)
    amp = _ipow_mag(jnp.maximum(hm, 1.0), k, True)
    rho = F.add_up(F.scale_up(M, g), F.scale_up(amp, nr * fmt.underflow))
    # |x'^k - x^k| <= k max(|x|,|x'|)^(k-1) err
    prop = F.mul_up(F.scale_up(_ipow_mag(hm, k - 1, True), float(k)), a.err)
    if n > 0:
        clamp_lo = jnp.zeros_like(elo) if k % 2 == 0 else None
        return result(ctx, elo, ehi, rlo, rhi, prop, rho, value, clamp_lo=clamp_lo)
    # negative power: 1 / x^k, one more rounded division
    base = result(ctx, elo, ehi, rlo, rhi, prop, rho, value)
    one = Real(*(jnp.ones_like(a.lo),) * 4, jnp.zeros_like(a.lo), value, exact=True)
    r = div_rule(_PowCtx(ctx), one, base)
    # x^k is rounded to the format before the division: where it may overflow, XLA's
    # result is 1/inf = 0 while 1/x^k is small and finite, which no overflow check of
    # the result sees (float16 696**-2: computed 0, exact 2.06e-6; fuzz seed 22039).
    # base's computed range bounds every intermediate product of the chain (each at most
    # max(1, |x'|^k) up to the chain's rounding) and the last one before its rounding
    # There the computed result is that of the division or (+-)0, whose error is |x**n|.
    ovf = ~(mag(base.clo, base.chi) < F.const_dn(fmt.finite_below, base.chi.dtype))  # NaN: may
    ctx.flag(ovf, f"integer_pow x**{n}: the power x**{k} may overflow the format before the "
                  "division (XLA computes 1 / x**k, which is then 0): abs_err includes |x**n|")
    zero = jnp.zeros_like(r.clo)
    err = F.where(ovf, jnp.maximum(r.err, mag(r.lo, r.hi)), r.err)
    return Real(r.lo, r.hi, F.where(ovf, jnp.minimum(r.clo, zero), r.clo),
                F.where(ovf, jnp.maximum(r.chi, zero), r.chi), err, value)


class _PowCtx(_NoValueCtx):
    """Ctx for the internal division of a negative integer power (no literal operands)."""

    class _E:
        invars = (object(), object())

    @property
    def eqn(self):
        return _PowCtx._E

    def value(self, *vals, **_):
        return vals[1]


# ---------------------------------------------------------------------------
# pow(x, y) = exp(y log x), x > 0
# ---------------------------------------------------------------------------


def _pow_dn(x, y):
    return F.down_rel(jnp.power(x, y), 64.0)


def _pow_up(x, y):
    return F.up_rel(jnp.power(x, y), 64.0)


def _corners(xlo, xhi, ylo, yhi):
    lo, hi = hull_of(
        [_pow_dn(x, y) for x in (xlo, xhi) for y in (ylo, yhi)],
        [_pow_up(x, y) for x in (xlo, xhi) for y in (ylo, yhi)],
    )
    return jnp.maximum(lo, 0.0), hi


@register_rule(P("pow"))
def pow_rule(ctx, a, b, **_):
    if isinstance(a, Discrete) or isinstance(b, Discrete):
        raise NotImplementedError("pow with an integer operand: please report")
    value = ctx.value(a.value, b.value)
    lo, hi = _corners(a.lo, a.hi, b.lo, b.hi)
    rlo, rhi = _corners(a.clo, a.chi, b.clo, b.chi)
    hxlo, hxhi = a.hull()
    hylo, hyhi = b.hull()
    from ._common import transcendental_rounding

    rho = transcendental_rounding(ctx, mag(rlo, rhi), P("pow"))
    # d/dx = y x^(y-1): |y| * max x^(y-1); d/dy = x^y log x
    one = jnp.ones_like(hylo)
    # y-1 range: [hylo-1, hyhi-1] (computed outward)
    _, pm1_hi = _corners(hxlo, hxhi, F.sub_dn(hylo, one), F.sub_up(hyhi, one))
    ly = mag(hylo, hyhi)
    dx = F.mul_up(ly, pm1_hi)
    _, p_hi = _corners(hxlo, hxhi, hylo, hyhi)
    logmax = jnp.maximum(
        jnp.abs(F.down_rel(jnp.log(jnp.maximum(hxlo, 0.0)), 64.0)),
        jnp.abs(F.up_rel(jnp.log(hxhi), 64.0)),
    )
    logmax = F.add_up(logmax, c(1e-6, logmax.dtype))
    dy = F.mul_up(p_hi, logmax)
    prop = F.add_up(
        F.where(a.err == 0, 0.0, F.mul_up(dx, a.err)).astype(lo.dtype),
        F.where(b.err == 0, 0.0, F.mul_up(dy, b.err)).astype(lo.dtype),
    )
    r = result(ctx, lo, hi, rlo, rhi, prop, rho, value, clamp_lo=jnp.zeros_like(lo))
    bad = hxlo <= 0
    return invalid(
        ctx, bad, r, "pow(x, y) needs x > 0 over the whole range (exact and computed); got a range reaching <= 0"
    )
