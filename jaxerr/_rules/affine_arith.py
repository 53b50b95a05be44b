"""Affine rules for + - * / neg, select_n and float conversions.

``z = x op y`` with exact forms ``X, Y`` and error forms ``Ex, Ey``:

* ``+``/``-``: exact ``X ± Y``; error ``Ex ± Ey + rho`` (``rho = u |z^| + eta``);
* ``*``: exact ``X Y`` (bilinear part kept, ``rad(X) rad(Y)`` remainder); error
  ``x^ y^ - x y = X Ey + Ex (Y + Ey)``, each product a form product, plus ``rho``;
* ``/``: ``x / y = x * (1/y)`` with ``1/y`` linearised as a smooth function (no
  rounding) and one rounding ``rho`` of the quotient.

``x - x`` (one variable twice) is exactly 0 with no error; ``x + x`` is ``2x``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .. import _compat
from .. import _formats as F
from .._domains.affine import (
    Affine,
    Form,
    abroadcast,
    fadd,
    fmul,
    fscale,
    fwhere,
    fwiden,
    to_real,
    zero_generators,
)
from .._domains.interval import Discrete, Real, mag
from .._domains.interval import mig as mag_min
from .._interpreter import is_float_dtype
from . import interval_rules
from ._common import c as const
from ._common import is_pow2_literal, rounding, underflow_only
from .affine_common import fallback, invalid, make, out_shape, prep, register_affine, to_affine
from .affine_elementwise import computed_bounds, exact_bounds, smooth
from .arithmetic import _recip_rounding

P = _compat.prim


def _binary_prep(ctx, a, b):
    a, b = prep(ctx, a, b)
    shape = out_shape(ctx)
    return abroadcast(a, shape), abroadcast(b, shape)


def _comp_mag(x: Form, e: Form):
    """Upper bound of ``|x + e|``."""
    if e.nil:
        return x.mag()
    cc = x.c + e.c
    rad = F.add_up_nn(F.add_up_nn(x.rad(), e.rad()), F.up_nn(jnp.abs(cc) * (float(jnp.finfo(cc.dtype).eps) / 2)))
    return F.add_up_nn(jnp.abs(cc), rad)


def _vmag(a: Affine):
    """Upper bound of ``|computed value|`` of an operand (forms and interval claim)."""
    r = to_real(a)
    return jnp.minimum(_comp_mag(a.x, a.e), mag(r.clo, r.chi))


def _addsub(ctx, a, b, s: int):
    prim = P("add") if s == 1 else P("sub")
    if isinstance(a, Discrete) or isinstance(b, Discrete):
        return fallback(interval_rules[prim])(ctx, a, b)
    value = ctx.value(a.value, b.value)
    if a is b:
        (a,) = prep(ctx, a)
        if s == -1:
            z = jnp.zeros_like(a.x.c)
            if a.exact:
                return Affine(Form(z), Form.zero(z), value, a.stamp, False)
            # x^ - x^ is 0 only where x^ is finite: inf - inf and NaN - NaN are NaN
            # (fuzz seed 5042: x overflowing float8_e4m3fn to NaN)
            bad = ~(a.e.mag() < jnp.inf)
            # (an error centre: exactly 0 where finite; the domain's finalize turns inf into r)
            return Affine(Form(z), Form(F.where(bad, jnp.inf, z)), value, a.stamp, False)
        two = jnp.full_like(a.x.c, 2.0)
        x = fscale(a.x, two, exact_mult=True)
        e = fscale(a.e, two, exact_mult=True)
        # 2 x^ is exact unless it underflows (flushed subnormals) or overflows (finalize)
        e = fwiden(e, underflow_only(ctx, a.x.c))
        return make(ctx, x, e, value, a)
    a, b = _binary_prep(ctx, a, b)
    x = fadd(a.x, b.x, s)
    e = fadd(a.e, b.e, s)
    ra, rb = to_real(a), to_real(b)
    if s == 1:
        slo, shi = F.add_dn(ra.clo, rb.clo), F.add_up(ra.chi, rb.chi)
    else:
        slo, shi = F.sub_dn(ra.clo, rb.chi), F.sub_up(ra.chi, rb.clo)
    rho = rounding(ctx, jnp.minimum(_comp_mag(x, e), mag(slo, shi)))
    return make(ctx, x, fwiden(e, rho), value, a, b)


@register_affine(P("add"), P("add_any"))
def add_rule(ctx, a, b, **_):
    return _addsub(ctx, a, b, 1)


@register_affine(P("sub"))
def sub_rule(ctx, a, b, **_):
    return _addsub(ctx, a, b, -1)


@register_affine(P("neg"))
def neg_rule(ctx, a, **_):
    if isinstance(a, Discrete):
        return fallback(interval_rules[P("neg")])(ctx, a)
    return Affine(a.x.neg(), a.e.neg() if not a.e.nil else a.e, ctx.value(a.value), a.stamp, a.boxed)


def _product_error(a: Affine, b: Affine) -> Form:
    """Form of ``x^ y^ - x y`` (no rounding of the product itself)."""
    if a.exact and b.exact:
        return Form.zero(a.x.c)
    bc = fadd(b.x, b.e)  # the computed y^
    t1 = fmul(a.x, b.e) if not b.exact else None
    t2 = fmul(a.e, bc) if not a.exact else None
    if t1 is None:
        return t2
    if t2 is None:
        return t1
    return fadd(t1, t2)


@register_affine(P("mul"))
def mul_rule(ctx, a, b, **_):
    if isinstance(a, Discrete) or isinstance(b, Discrete):
        return fallback(interval_rules[P("mul")])(ctx, a, b)
    ia, ib = ctx.eqn.invars
    if a is b and not isinstance(ia, _compat.Literal):
        from .affine_elementwise import _ipow

        return _ipow(ctx, a, 2, value=ctx.value(a.value, b.value))
    value = ctx.value(a.value, b.value)
    a, b = _binary_prep(ctx, a, b)
    x = fmul(a.x, b.x)
    e = _product_error(a, b)
    M = F.mul_up(_vmag(a), _vmag(b))
    exact_scaling = (b.exact and is_pow2_literal(ib)) or (a.exact and is_pow2_literal(ia))
    rho = underflow_only(ctx, M) if exact_scaling else rounding(ctx, M)
    return make(ctx, x, fwiden(e, rho), value, a, b)


def _recip(ctx, b: Affine) -> Affine:
    """Forms of ``1/y`` (exact) and ``1/y^ - 1/y`` (no rounding)."""
    one = lambda t: jnp.ones_like(t)  # noqa: E731

    def enc(t):
        return F.div_dn(one(t), t), F.div_up(one(t), t)

    def deriv(lo, hi):
        m_small, m_big = _mig(lo, hi), mag(lo, hi)
        # (m_small^2 rounded down is clamped at 0: below the smallest normal it is
        # negative, and -1/(negative) would be a huge positive lower bound; 1/0 is inf)
        sq = jnp.maximum(F.mul_dn(m_small, m_small), 0.0)
        return -F.div_up(one(lo), sq), -F.div_dn(one(lo), F.mul_up(m_big, m_big))

    def frange(lo, hi):
        return F.div_dn(one(lo), hi), F.div_up(one(lo), lo)

    return smooth(ctx, b, enc=enc, deriv=deriv, frange=frange, rho=None, value=b.value)


def _mig(lo, hi):
    from .._domains.interval import mig

    return mig(lo, hi)


@register_affine(P("div"))
def div_rule(ctx, a, b, **_):
    if isinstance(a, Discrete) or isinstance(b, Discrete):
        return fallback(interval_rules[P("div")])(ctx, a, b)
    value = ctx.value(a.value, b.value)
    a, b = _binary_prep(ctx, a, b)
    hlo, hhi = _hull(b)
    bad = (hlo <= 0) & (hhi >= 0)
    # keep the reciprocal finite where the divisor is bad (the result is poisoned there)
    safe = jnp.ones_like(b.x.c)
    if not b.exact or True:
        bx = Form(F.where(bad, safe, b.x.c), b.x.G, None if b.x.r is None else F.where(bad, 0 * safe, b.x.r), None)
        be = b.e if b.e.nil else Form(F.where(bad, 0 * safe, b.e.c), b.e.G, None if b.e.r is None else F.where(bad, 0 * safe, b.e.r), None)
        if b.x.G is not None:
            bx = Form(bx.c, zero_generators(b.x.G, bad), bx.r)
        if not b.e.nil and b.e.G is not None:
            be = Form(be.c, zero_generators(b.e.G, bad), be.r)
        iv = b.iv
        if iv is not None:
            one, zero = jnp.ones_like(iv.lo), jnp.zeros_like(iv.lo)
            w = lambda t, v: F.where(bad, v, t)  # noqa: E731
            iv = Real(w(iv.lo, one), w(iv.hi, one), w(iv.clo, one), w(iv.chi, one), w(iv.err, zero), iv.value,
                      exact=iv.exact, point=iv.point)
        b = Affine(bx, be, b.value, b.stamp, b.boxed, iv)
    r = _recip(ctx, b)
    x = fmul(a.x, r.x)
    e = _product_error(a, r)
    xmag = _vmag(a)
    bclo, bchi = computed_bounds(b)
    rmag = jnp.minimum(_comp_mag(r.x, r.e), F.div_up(jnp.ones_like(bclo), mag_min(bclo, bchi)))
    M = F.mul_up(xmag, rmag)
    pow2 = b.exact and is_pow2_literal(ctx.eqn.invars[1])
    # XLA may compute x * (1/y) (a division by a broadcast or a constant): 2u, not u
    # (fuzz seed 2049: x / 0.333...); the interval rule's bound, same argument
    rho = underflow_only(ctx, M) if pow2 else _recip_rounding(ctx, M, xmag)
    out = make(ctx, x, fwiden(e, rho), value, a, b)
    if not pow2 and not F.is_exact_format(ctx.fmt):
        # and 1/y overflows for |y| < 1/max_finite
        small = mag_min(hlo, hhi) < F.static_up(1.0 / ctx.fmt.max_finite, hlo.dtype)
        out = invalid(ctx, small & ~bad, out, "divisor below 1/max_finite: XLA's x * (1/y) may overflow to inf")
    return invalid(ctx, bad, out, "the divisor's range contains 0, so the quotient is unbounded")


def _hull(a: Affine):
    lo, hi = exact_bounds(a)
    clo, chi = computed_bounds(a)
    return jnp.minimum(lo, clo), jnp.maximum(hi, chi)


# ---------------------------------------------------------------------------
# select_n, conversions
# ---------------------------------------------------------------------------


@register_affine(P("select_n"))
def select_n_rule(ctx, pred, *cases, **params):
    if not isinstance(cases[0], Affine):
        return fallback(interval_rules[P("select_n")])(ctx, pred, *cases, **params)
    joined = fallback(interval_rules[P("select_n")])(ctx, pred, *cases, **params)
    cases = prep(ctx, *cases)
    shape = out_shape(ctx)
    cases = [abroadcast(c_, shape) for c_ in cases]
    plo = jnp.broadcast_to(pred.lo.astype(jnp.int32), shape)
    phi = jnp.broadcast_to(pred.hi.astype(jnp.int32), shape)
    certain = plo == phi
    x, e = cases[-1].x, cases[-1].e
    for i in range(len(cases) - 2, -1, -1):
        x = fwhere(plo == i, cases[i].x, x)
        if not (e.nil and cases[i].e.nil):
            e = fwhere(plo == i, cases[i].e if not cases[i].e.nil else Form(jnp.zeros(shape, x.c.dtype)),
                       e if not e.nil else Form(jnp.zeros(shape, x.c.dtype)))
    (joined,) = prep(ctx, joined)
    x = fwhere(certain, x, joined.x)
    je = joined.e if not joined.e.nil else Form(jnp.zeros(shape, x.c.dtype))
    e = fwhere(certain, e if not e.nil else Form(jnp.zeros(shape, x.c.dtype)), je)
    return make(ctx, x, e, joined.value, *cases, joined)


def _conversion_exact(src, dst) -> bool:
    return dst.precision >= src.precision and dst.emin <= src.emin and dst.max_finite >= src.max_finite


@register_affine(P("convert_element_type"))
def convert_rule(ctx, a, *, new_dtype, **params):
    if not (isinstance(a, Affine) and is_float_dtype(new_dtype)):
        return fallback(interval_rules[P("convert_element_type")])(ctx, a, new_dtype=new_dtype, **params)
    value = ctx.value(a.value)
    if ctx.override:
        return Affine(a.x, a.e, value, a.stamp, a.boxed)
    src = F.format_of_dtype(ctx.eqn.invars[0].aval.dtype)
    dst = F.format_of_dtype(new_dtype)
    if _conversion_exact(src, dst):
        return Affine(a.x, a.e, value, a.stamp, a.boxed)
    (a,) = prep(ctx, a)
    adt = ctx.adt
    M = _comp_mag(a.x, a.e)
    rho = F.add_up(F.scale_up(M, dst.unit_roundoff), const(dst.underflow, adt))
    e = Form(jnp.zeros_like(a.x.c), None, rho) if a.exact else fwiden(a.e, rho)
    return make(ctx, a.x, e, value, a)


_ = (np, to_affine)
