"""Affine rules for elementwise functions: exp exp2 expm1 log log1p tanh logistic erf
erfc sqrt rsqrt integer_pow square, and the piecewise-linear max min abs clamp.

**Linearisation (smooth f).** Over the exact operand's range ``[l, h] = c ± rad``, with
an outward enclosure ``[d_lo, d_hi]`` of ``f'`` on it and ``a = (d_lo + d_hi) / 2``:

    f(x) = f(c) + a (x - c) + t,   |t| <= max(d_hi - a, a - d_lo) |x - c|

(mean value theorem: ``f(x) - f(c) = f'(z)(x - c)``), so the result keeps ``a G`` as
its generators and gets ``|a| r + w rad + rad(f(c))`` as independent term. Where the
plain interval enclosure ``f([l, h])`` is narrower (wide ranges, saturation) that is
used instead (``a = 0``).

**Error.** ``fl(f(x^)) - f(x) = (f(x^) - f(x)) + rho`` and
``f(x^) - f(x) = f'(z) e`` with ``z`` in the hull of exact and computed ranges; with
``[D_lo, D_hi]`` enclosing ``f'`` there and ``b`` its midpoint the error form is
``b e + (half-width) |e| + rho``: first order in the operand's error, with the
operand's error symbols kept. ``rho`` is the primitive's rounding budget
(``_common.transcendental_rounding``, or ``u |r| + eta`` for sqrt and square).

**Piecewise linear (max, min, abs, relu).** ``max(a, b) = b + relu(a - b)`` and
``min(a, b) = a - relu(a - b)`` hold for exact and computed values alike (max and
min are exact operations); ``relu`` and ``abs`` use the chord through ``(l, f(l))``
and ``(h, f(h))`` where the range straddles 0, with the remainder bounded at the
breakpoints ``l, 0, h`` (exact for a piecewise-linear function).
"""

from __future__ import annotations

import math

import jax
import jax.lax as lax
import jax.numpy as jnp

from .. import _compat
from .. import _formats as F
from .._domains.affine import Affine, Form, fadd, fcentred, fscale, fwiden, to_real
from .._domains.interval import Discrete, mag, mig
from . import interval_rules
from ._common import c as const
from ._common import rounding, transcendental_rounding
from .affine_common import fallback, invalid, make, prep, register_affine
from .arithmetic import _ipow_mag, _ipow_range, _ipow_roundings
from .elementwise import _enclose

P = _compat.prim


def _mid_rad(lo, hi):
    mid = lo / 2 + hi / 2
    rad = jnp.maximum(F.sub_up(hi, mid), F.sub_up(mid, lo))
    return mid, rad


def _half(lo, hi):
    """(midpoint a, w >= max(hi - a, a - lo))."""
    a = lo / 2 + hi / 2
    return a, jnp.maximum(F.sub_up(hi, a), F.sub_up(a, lo))


def computed_bounds(a: Affine):
    """Outward bounds of the computed value ``x + e`` (the tighter of the forms' hull and
    the value's interval claim)."""
    r = to_real(a)
    return r.clo, r.chi


def exact_bounds(a: Affine):
    """Outward bounds of the exact value (forms' hull meet the interval claim)."""
    r = to_real(a)
    return r.lo, r.hi


def _u(dt) -> float:
    return float(jnp.finfo(dt).eps) / 2


def smooth(ctx, a: Affine, *, enc, deriv, frange, rho, bad=None, bad_msg="", holder=None, value=None):
    """Apply a smooth elementwise ``f`` to ``a`` (see the module docstring).

    ``enc(t) -> (lo, hi)`` encloses ``f(t)``; ``deriv(l, h)`` and ``frange(l, h)`` enclose
    ``f'`` and ``f`` over ``[l, h]``; ``rho(M, xmag)`` bounds the rounding of computing ``f``
    with ``|f| <= M`` at ``|x| <= xmag`` (None: an exact operation); ``holder(m)`` bounds
    ``|f(x^) - f(x)|`` for ``|x^ - x| <= m`` where the derivative enclosure is infinite.

    The exact part is linearised around the midpoint ``m`` of the tightest known range
    ``[l, h]`` of the operand (its forms' hull meet its interval claim):
    ``f(x) = f(m) + alpha (x - m) + t`` with ``|t| <= w |x - m| <= w rad([l, h])``
    (mean value theorem, ``f'`` in ``alpha +- w`` on ``[l, h]``, which holds ``x`` and
    ``m``), and ``x - m = (X.c - m) + (X - X.c)`` keeps the operand's generators."""
    (a,) = prep(ctx, a)
    value = ctx.value(a.value) if value is None else value
    X, E = a.x, a.e
    view = to_real(a)
    l, h = view.lo, view.hi
    dt = l.dtype
    u = _u(dt)
    m, radm = _mid_rad(l, h)
    fl_, fh_ = enc(m)
    fm, frad = _mid_rad(fl_, fh_)
    dlo, dhi = deriv(l, h)
    alpha, w = _half(dlo, dhi)
    # a derivative enclosure that is not one (dlo > dhi, NaN) gives no linearisation
    w = F.where(dlo <= dhi, w, jnp.full_like(w, jnp.inf))
    # centre fm + alpha (X.c - m), three roundings (each <= u |result|, + underflow)
    dc = X.c - m
    p = alpha * dc
    cc = fm + p
    slack = F.add_up_nn(F.add_up_nn(F.mul_up(jnp.abs(alpha), F.up_nn(jnp.abs(dc) * u)), F.up_nn(jnp.abs(p) * u)),
                        F.up_nn(jnp.abs(cc) * u))
    slack = F.add_up_nn(slack, F.static_up(3 * float(jnp.finfo(dt).tiny), dt))
    aff_extra = F.add_up_nn(F.add_up_nn(F.mul_up(w, radm), frad), slack)
    ilo, ihi = frange(l, h)
    imid, irad = _mid_rad(ilo, ihi)
    # the interval enclosure where the linearisation's remainder alone is wider (wide
    # ranges, saturation; correlated generators are worth keeping otherwise), or where
    # the linearisation is not finite
    use_iv = ~(aff_extra < irad) | ~jnp.isfinite(alpha) | ~jnp.isfinite(cc)
    alpha0 = F.where(use_iv, jnp.zeros_like(alpha), alpha)
    xz = fcentred(X, F.where(use_iv, imid, cc), alpha0, F.where(use_iv, irad, aff_extra))

    clo, chi = view.clo, view.chi
    Hl, Hh = jnp.minimum(l, clo), jnp.maximum(h, chi)
    if rho is None:
        r = None
    else:
        rlo, rhi = frange(clo, chi)
        r = rho(mag(rlo, rhi), mag(clo, chi))
    if a.exact:
        ez = Form(jnp.zeros_like(fm), None, r, nil=r is None)
    else:
        Dlo, Dhi = deriv(Hl, Hh)
        beta, wb = _half(Dlo, Dhi)
        magE = jnp.minimum(E.mag(), view.err)
        fin = jnp.isfinite(beta) & jnp.isfinite(wb) & (Dlo <= Dhi)
        beta0 = F.where(fin, beta, jnp.zeros_like(beta))
        extra = F.where(fin, F.mul_up(wb, magE), jnp.full_like(magE, jnp.inf))
        if holder is not None:
            extra = F.where(fin, extra, holder(magE))
        extra = F.where(magE == 0, jnp.zeros_like(extra), extra)
        ez = fwiden(fscale(E, beta0, extra=extra), r)
    out = make(ctx, xz, ez, value, a)
    if bad is not None:
        out = invalid(ctx, bad(Hl, Hh), out, bad_msg)
    return out


def _trans_rho(ctx, prim):
    return lambda M, xmag: transcendental_rounding(ctx, M, prim, xmag=xmag)


def _inc_range(f_dn, f_up):
    return lambda lo, hi: (f_dn(lo), f_up(hi))


def _enc(f_dn, f_up):
    return lambda t: (f_dn(t), f_up(t))


def _monotone(ctx, a, prim, fn, deriv, **kw):
    if isinstance(a, Discrete):
        return fallback(interval_rules[prim])(ctx, a)
    f_dn, f_up = _enclose(fn, prim)
    return smooth(ctx, a, enc=_enc(f_dn, f_up), deriv=deriv, frange=_inc_range(f_dn, f_up),
                  rho=_trans_rho(ctx, prim), **kw)


_exp_dn, _exp_up = _enclose(jnp.exp, P("exp"))


@register_affine(P("exp"))
def exp_rule(ctx, a, **_):
    return _monotone(ctx, a, P("exp"), jnp.exp, lambda lo, hi: (_exp_dn(lo), _exp_up(hi)))


@register_affine(P("expm1"))
def expm1_rule(ctx, a, **_):
    return _monotone(ctx, a, P("expm1"), jnp.expm1, lambda lo, hi: (_exp_dn(lo), _exp_up(hi)))


_LN2 = math.log(2)


@register_affine(P("exp2"))
def exp2_rule(ctx, a, **_):
    e2_dn, e2_up = _enclose(jnp.exp2, P("exp2"))

    def deriv(lo, hi):
        return (F.mul_dn(const(_LN2 * (1 - 1e-15), lo.dtype), e2_dn(lo)),
                F.mul_up(const(_LN2 * (1 + 1e-15), hi.dtype), e2_up(hi)))

    return _monotone(ctx, a, P("exp2"), jnp.exp2, deriv)


def _recip_pos(lo, hi):
    """Enclosure of 1/t over [lo, hi] with lo > 0 (NaN/inf otherwise: caller flags)."""
    one = jnp.ones_like(lo)
    return F.div_dn(one, hi), F.div_up(one, lo)


@register_affine(P("log"))
def log_rule(ctx, a, **_):
    return _monotone(ctx, a, P("log"), jnp.log, _recip_pos,
                     bad=lambda lo, hi: lo <= 0,
                     bad_msg="log of a range reaching <= 0 (exact or computed operand); the result is unbounded")


@register_affine(P("log1p"))
def log1p_rule(ctx, a, **_):
    def deriv(lo, hi):
        one = jnp.ones_like(lo)
        return _recip_pos(F.add_dn(one, lo), F.add_up(one, hi))

    return _monotone(ctx, a, P("log1p"), jnp.log1p, deriv,
                     bad=lambda lo, hi: lo <= -1,
                     bad_msg="log1p of a range reaching <= -1; the result is unbounded")


def _even_decreasing(dfun_bounds):
    """Derivative enclosure of an f whose f' is even and decreasing in |t|."""

    def deriv(lo, hi):
        return dfun_bounds(mig(lo, hi), mag(lo, hi))

    return deriv


_tanh_dn, _tanh_up = _enclose(jnp.tanh, P("tanh"))


def _tanh_d(m_small, m_big):
    one = jnp.ones_like(m_small)
    t_small = jnp.clip(_tanh_dn(m_small), 0.0, 1.0)
    t_big = jnp.clip(_tanh_up(m_big), 0.0, 1.0)
    d_hi = jnp.minimum(F.sub_up(one, F.mul_dn(t_small, t_small)), 1.0)
    d_lo = jnp.maximum(F.sub_dn(one, F.mul_up(t_big, t_big)), 0.0)
    return d_lo, d_hi


@register_affine(P("tanh"))
def tanh_rule(ctx, a, **_):
    return _monotone(ctx, a, P("tanh"), jnp.tanh, _even_decreasing(_tanh_d))


_sig_dn, _sig_up = _enclose(jax.nn.sigmoid, P("logistic"))


def _logistic_d(m_small, m_big):
    one = jnp.ones_like(m_small)
    s_small = jnp.clip(_sig_dn(m_small), 0.5, 1.0)
    s_big = jnp.clip(_sig_up(m_big), 0.5, 1.0)
    d_hi = jnp.minimum(F.mul_up(s_small, F.sub_up(one, s_small)), 0.25)
    d_lo = jnp.maximum(F.mul_dn(s_big, F.sub_dn(one, s_big)), 0.0)
    return d_lo, d_hi


@register_affine(P("logistic"))
def logistic_rule(ctx, a, **_):
    return _monotone(ctx, a, P("logistic"), jax.nn.sigmoid, _even_decreasing(_logistic_d))


_C_ERF = 2 / math.sqrt(math.pi)


def _erf_d(m_small, m_big):
    dt = m_small.dtype
    # capped: exp(-m^2) is 0 past m = 27 anyway, and mul_dn of an overflowing m*m is NaN
    m_small = jnp.minimum(m_small, 1e4)
    d_hi = F.mul_up(const(_C_ERF * (1 + 1e-15), dt), _exp_up(-F.mul_dn(m_small, m_small)))
    d_lo = F.mul_dn(const(_C_ERF * (1 - 1e-15), dt), _exp_dn(-F.mul_up(m_big, m_big)))
    return jnp.maximum(d_lo, 0.0), d_hi


@register_affine(P("erf"))
def erf_rule(ctx, a, **_):
    return _monotone(ctx, a, P("erf"), jax.scipy.special.erf, _even_decreasing(_erf_d))


@register_affine(P("erfc"))
def erfc_rule(ctx, a, **_):
    if isinstance(a, Discrete):
        return fallback(interval_rules[P("erfc")])(ctx, a)
    f_dn, f_up = _enclose(lax.erfc, P("erfc"))

    def deriv(lo, hi):
        d_lo, d_hi = _erf_d(mig(lo, hi), mag(lo, hi))
        return -d_hi, -d_lo

    return smooth(ctx, a, enc=_enc(f_dn, f_up), deriv=deriv, frange=lambda lo, hi: (f_dn(hi), f_up(lo)),
                  rho=_trans_rho(ctx, P("erfc")))


@register_affine(P("sqrt"))
def sqrt_rule(ctx, a, **_):
    if isinstance(a, Discrete):
        return fallback(interval_rules[P("sqrt")])(ctx, a)
    f_dn, f_up = _enclose(lambda t: jnp.sqrt(jnp.maximum(t, 0.0)), P("sqrt"))

    def deriv(lo, hi):
        half = jnp.full_like(lo, 0.5)
        s_lo = F.down(jnp.sqrt(jnp.maximum(lo, 0.0)))
        # f' = 1/(2 sqrt t) is unbounded as t -> 0: no finite upper bound unless sqrt(lo) > 0
        d_hi = F.where(s_lo > 0, F.div_up(half, s_lo), jnp.full_like(lo, jnp.inf))
        return F.div_dn(half, F.up(jnp.sqrt(jnp.maximum(hi, 0.0)))), d_hi

    return smooth(ctx, a, enc=_enc(f_dn, f_up), deriv=deriv, frange=_inc_range(f_dn, f_up),
                  rho=lambda M, xmag: rounding(ctx, M),
                  holder=lambda m: F.up(jnp.sqrt(m)),
                  bad=lambda lo, hi: lo < 0,
                  bad_msg="sqrt of a range reaching below 0 (exact or computed operand); the result may be NaN")


@register_affine(P("rsqrt"))
def rsqrt_rule(ctx, a, **_):
    if isinstance(a, Discrete):
        return fallback(interval_rules[P("rsqrt")])(ctx, a)
    f_dn, f_up = _enclose(lax.rsqrt, P("rsqrt"))

    def deriv(lo, hi):
        # f' = -rsqrt(t) / (2 t), increasing towards 0 on t > 0
        half = jnp.full_like(lo, 0.5)
        big = F.div_up(F.mul_up(half, f_up(lo)), lo)
        small = F.div_dn(F.mul_dn(half, f_dn(hi)), hi)
        return -big, -small

    return smooth(ctx, a, enc=_enc(f_dn, f_up), deriv=deriv, frange=lambda lo, hi: (f_dn(hi), f_up(lo)),
                  rho=_trans_rho(ctx, P("rsqrt")),
                  bad=lambda lo, hi: lo <= 0,
                  bad_msg="rsqrt of a range reaching <= 0 (exact or computed operand); the result is unbounded")


def _ipow(ctx, a, n: int, value=None):
    """x**n for n >= 2 (binary powering: gamma_{n-1} |x^|^n plus underflow terms, as the
    interval rule)."""
    fmt = ctx.fmt

    def frange(lo, hi):
        return _ipow_range(lo, hi, n)

    def deriv(lo, hi):
        dlo, dhi = _ipow_range(lo, hi, n - 1)
        nn = jnp.asarray(float(n), lo.dtype)
        return F.mul_dn(dlo, nn), F.mul_up(dhi, nn)

    nr = _ipow_roundings(n)
    g = F.gamma(nr, fmt.unit_roundoff)

    def rho(M, xmag):
        if n == 2:
            return rounding(ctx, M)
        amp = _ipow_mag(jnp.maximum(xmag, 1.0), n, True)
        return F.add_up(F.scale_up(M, g), F.scale_up(amp, nr * fmt.underflow))

    return smooth(ctx, a, enc=lambda t: _ipow_range(t, t, n), deriv=deriv, frange=frange, rho=rho, value=value)


@register_affine(P("integer_pow"))
def integer_pow_rule(ctx, a, *, y, **params):
    n = int(y)
    if isinstance(a, Discrete) or n < 2:
        return fallback(interval_rules[P("integer_pow")])(ctx, a, y=y, **params)
    return _ipow(ctx, a, n)


@register_affine(P("square"))
def square_rule(ctx, a, **params):
    if isinstance(a, Discrete):
        return fallback(interval_rules[P("square")])(ctx, a, **params)
    return _ipow(ctx, a, 2)


# ---------------------------------------------------------------------------
# piecewise linear: relu / abs (kink at 0), max, min, clamp
# ---------------------------------------------------------------------------


def _imul(a_lo, a_hi, b_lo, b_hi):
    cand_dn = [F.mul_dn(x, y) for x in (a_lo, a_hi) for y in (b_lo, b_hi)]
    cand_up = [F.mul_up(x, y) for x in (a_lo, a_hi) for y in (b_lo, b_hi)]
    lo, hi = cand_dn[0], cand_up[0]
    for t in cand_dn[1:]:
        lo = jnp.minimum(lo, t)
    for t in cand_up[1:]:
        hi = jnp.maximum(hi, t)
    return lo, hi


def kink_forms(X: Form, E: Form, comp_bounds, s1: float, s2: float):
    """Forms of ``f(x)`` and ``f(x^) - f(x)`` for ``f(t) = s1 t (t < 0), s2 t (t >= 0)``;
    ``comp_bounds``: bounds of the computed ``x^ = x + e``."""
    l, h = X.bounds()
    dt = l.dtype
    chord = (s2 * h - s1 * l) / (h - l)
    alpha = F.where(l >= 0, jnp.full_like(l, s2), F.where(h <= 0, jnp.full_like(l, s1), chord))
    alpha = F.where(jnp.isfinite(alpha), alpha, jnp.full_like(l, (s1 + s2) / 2))
    # theta(t) = f(t) - alpha t is piecewise linear: extremes at l, h and 0 (theta(0) = 0)
    lo_t, hi_t = jnp.zeros_like(l), jnp.zeros_like(l)
    for t in (l, h):
        s = F.where(t < 0, jnp.full_like(t, s1), jnp.full_like(t, s2))
        d_lo, d_hi = F.sub_dn(s, alpha), F.sub_up(s, alpha)
        d_lo = F.where(s == alpha, jnp.zeros_like(d_lo), d_lo)
        d_hi = F.where(s == alpha, jnp.zeros_like(d_hi), d_hi)
        p_lo, p_hi = _imul(d_lo, d_hi, t, t)
        lo_t, hi_t = jnp.minimum(lo_t, p_lo), jnp.maximum(hi_t, p_hi)
    inf = ~(jnp.isfinite(l) & jnp.isfinite(h))
    t_mid = F.where(inf, jnp.zeros_like(l), lo_t / 2 + hi_t / 2)
    t_rad = jnp.maximum(F.sub_up(hi_t, t_mid), F.sub_up(t_mid, lo_t))
    t_rad = F.where(lo_t == hi_t, jnp.zeros_like(t_rad), t_rad)
    t_rad = F.where(inf, jnp.full_like(t_rad, jnp.inf), t_rad)
    exact_alpha = (alpha == s1) | (alpha == s2) if {s1, s2} <= {0.0, 1.0, -1.0} else False
    xz = fscale(X, alpha, exact_mult=exact_alpha)
    c2 = xz.c + t_mid
    sl = F.where(t_mid == 0, jnp.zeros_like(c2), F.up_nn(jnp.abs(c2) * (float(jnp.finfo(dt).eps) / 2)))
    xz = Form(c2, xz.G, add_nn_(add_nn_(xz.r, t_rad), sl), xz.gs)
    if E.nil:
        return xz, E
    clo, chi = comp_bounds
    Hl, Hh = jnp.minimum(l, clo), jnp.maximum(h, chi)
    lam_lo = F.where(Hl >= 0, jnp.full_like(l, s2), F.where(Hh <= 0, jnp.full_like(l, s1), jnp.full_like(l, min(s1, s2))))
    lam_hi = F.where(Hl >= 0, jnp.full_like(l, s2), F.where(Hh <= 0, jnp.full_like(l, s1), jnp.full_like(l, max(s1, s2))))
    beta, wb = _half(lam_lo, lam_hi)
    wb = F.where(lam_lo == lam_hi, jnp.zeros_like(wb), wb)
    magE = E.mag()
    extra = F.where(wb == 0, jnp.zeros_like(magE), F.mul_up(wb, magE))
    ez = fscale(E, beta, exact_mult=(beta == 0) | (jnp.abs(beta) == 1), extra=extra)
    return xz, ez


def add_nn_(a, b):
    if a is None:
        return b
    return F.add_up_nn(a, b)


def _aff_forms_sub(a: Affine, b: Affine):
    return fadd(a.x, b.x, -1), fadd(a.e, b.e, -1)


def _scalar_const(ctx, k: int):
    """The value of operand ``k`` if it is a scalar literal, else None."""
    v = ctx.eqn.invars[k]
    val = getattr(v, "val", None)
    if val is None:
        return None
    try:
        import numpy as np

        arr = np.asarray(val, dtype=np.float64)
    except Exception:
        return None
    return float(arr.reshape(())) if arr.size == 1 else None


def _is_zero_const(ctx, k: int) -> bool:
    return _scalar_const(ctx, k) == 0.0


def _kink_bounds(dx: Form, de: Form):
    if de.nil:
        return dx.bounds()
    cc = dx.c + de.c
    rad = F.add_up_nn(F.add_up_nn(dx.rad(), de.rad()), F.up_nn(jnp.abs(cc) * (float(jnp.finfo(cc.dtype).eps) / 2)))
    return F.sub_dn(cc, rad), F.add_up(cc, rad)


def maxmin_forms(a: Affine, b: Affine, is_max: bool, b_is_zero: bool = False):
    """Forms of ``max(a, b)`` / ``min(a, b)`` for synced operands of one shape:
    ``max = b + relu(a - b)``, ``min = a - relu(a - b)`` (exact and computed alike)."""
    if b_is_zero and b.exact:
        dx, de = a.x, a.e
    else:
        dx, de = _aff_forms_sub(a, b)
    rx, re = kink_forms(dx, de, _kink_bounds(dx, de), 0.0, 1.0)
    # b + relu(a - b) holds for finite operands only (inf - inf is NaN): where either
    # operand's exact range is not finite, nothing is claimed
    dl, dh = dx.bounds()
    nonfinite = ~(jnp.isfinite(dl) & jnp.isfinite(dh))
    rx, re = fpoison_where(rx, nonfinite), fpoison_where(re, nonfinite)
    if is_max:
        if b_is_zero and b.exact:
            x, e = rx, re
        else:
            x, e = fadd(b.x, rx), fadd(b.e, re)
    else:
        x, e = fadd(a.x, rx, -1), fadd(a.e, re, -1)
    if not e.nil and not (a.exact and b.exact):
        # XLA's max/min propagate NaN: an operand that may be NaN poisons the result
        inf = jnp.isinf(a.err()) | jnp.isinf(b.err())
        e = fpoison_where(e, inf)
    return x, e


def fpoison_where(f: Form, bad):
    from .._domains.affine import fpoison

    return fpoison(f, bad)


def _extreme(ctx, a, b, is_max: bool):
    from .._domains.affine import abroadcast
    from .affine_common import out_shape

    if isinstance(a, Discrete) or isinstance(b, Discrete):
        prim = P("max") if is_max else P("min")
        return fallback(interval_rules[prim])(ctx, a, b)
    value = ctx.value(a.value, b.value)
    if a is b:
        return Affine(a.x, a.e, value, a.stamp, a.boxed)
    # max(-inf, x) = min(+inf, x) = x exactly, NaN included (jax.nn.softmax writes
    # max(-inf, reduce_max(x))); the decomposition below would form -inf - x
    neutral = -math.inf if is_max else math.inf
    for k, other in ((0, b), (1, a)):
        if _scalar_const(ctx, k) == neutral and not isinstance(other, Discrete):
            (o,) = prep(ctx, other)
            o = abroadcast(o, out_shape(ctx))
            return make(ctx, o.x, o.e, value, o)
    a, b = prep(ctx, a, b)
    shape = out_shape(ctx)
    a, b = abroadcast(a, shape), abroadcast(b, shape)
    x, e = maxmin_forms(a, b, is_max, _is_zero_const(ctx, 1))
    return make(ctx, x, e, value, a, b)


@register_affine(P("max"))
def max_rule(ctx, a, b, **_):
    return _extreme(ctx, a, b, True)


@register_affine(P("min"))
def min_rule(ctx, a, b, **_):
    return _extreme(ctx, a, b, False)


@register_affine(P("abs"))
def abs_rule(ctx, a, **_):
    if isinstance(a, Discrete):
        return fallback(interval_rules[P("abs")])(ctx, a)
    value = ctx.value(a.value)
    (a,) = prep(ctx, a)
    x, e = kink_forms(a.x, a.e, _kink_bounds(a.x, a.e), -1.0, 1.0)
    return make(ctx, x, e, value, a)


@register_affine(P("clamp"))
def clamp_rule(ctx, lo_op, x, hi_op, **_):
    """clamp(lo, x, hi) = min(max(x, lo), hi)."""
    from .._domains.affine import abroadcast
    from .affine_common import out_shape

    if isinstance(x, Discrete):
        return fallback(interval_rules[P("clamp")])(ctx, lo_op, x, hi_op)
    value = ctx.value(lo_op.value, x.value, hi_op.value)
    lo_op, x, hi_op = prep(ctx, lo_op, x, hi_op)
    shape = out_shape(ctx)
    lo_op, x, hi_op = (abroadcast(t, shape) for t in (lo_op, x, hi_op))
    m = Affine(*maxmin_forms(x, lo_op, True), value, x.stamp, x.boxed)
    xf, ef = maxmin_forms(m, hi_op, False)
    return make(ctx, xf, ef, value, lo_op, x, hi_op)
