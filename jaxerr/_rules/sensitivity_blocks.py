"""Interval jets of elementwise unary blocks (``domain="first_order"``).

A *unary block* (``_patterns.UnaryBlock``) is a composite elementwise function
``y = h(a)`` of one variable, such as GELU ``a * 0.5 (1 + tanh(c (a + k a^3)))`` or
SiLU ``a * logistic(a)``. The first-order analysis treats it as one operation: one
local event (the rounding error of the whole block at its computed operand, bounded
by the interval domain) and the derivative ``h'`` and curvature ``h''`` of the exact
block (``_first_order``).

:func:`jet` encloses ``(h, h', h'')`` over a range of ``a``: forward Taylor arithmetic
on intervals, one rule per primitive (``JETS``), every operation rounded outward.
For ``v = f(u)``: ``v' = f'(u) u'`` and ``v'' = f''(u) u'^2 + f'(u) u''``; for
``v = u w``: ``v' = u' w + u w'`` and ``v'' = u'' w + 2 u' w' + u w''``. Each factor is
an enclosure over the whole range, so each result encloses the true value at every
point of the range (the chain and product rules hold pointwise). Literals are the
program's constants, exact.

This module knows nothing about tapes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.lax as lax
import jax.numpy as jnp
import numpy as np

from .. import _compat
from .. import _formats as F
from .._domains.interval import iadd, imul, isqr, isub, mag, mig
from .arithmetic import _ipow_range
from .elementwise import _enclose
from .sensitivity import _erf_d, _logistic_d, _logistic_d2, _tanh_d, _tanh_d2

P = _compat.prim

Pair = tuple[Any, Any]
#: (value, first derivative, second derivative), each an enclosure (lo, hi)
Jet = tuple[Pair, Pair, Pair]

JETS: dict[Any, Callable[..., Jet]] = {}


def _register(*prims: Any) -> Callable[[Callable[..., Jet]], Callable[..., Jet]]:
    def deco(fn):
        for p in prims:
            if p is not None:
                JETS[p] = fn
        return fn

    return deco


class _R:
    """A range (``lo``, ``hi``) for the derivative helpers of ``sensitivity``."""

    __slots__ = ("lo", "hi")

    def __init__(self, lo: Any, hi: Any):
        self.lo, self.hi = lo, hi


def _zero(x: Any) -> Pair:
    z = jnp.zeros_like(x)
    return z, z


def _neg(a: Pair) -> Pair:
    return -a[1], -a[0]


def _twice(a: Pair) -> Pair:
    return a[0] * 2, a[1] * 2  # exact (an overflow gives inf, which encloses)


def _compose(u: Jet, f: Pair, d1: Pair, d2: Pair) -> Jet:
    """``f(u)`` from enclosures of ``f``, ``f'``, ``f''`` over ``u``'s value range."""
    _, u1, u2 = u
    return f, imul(d1, u1), iadd(imul(d2, isqr(u1)), imul(d1, u2))


def constant(val: Any, like: Any) -> Jet:
    """A literal: the program's constant, enclosed in the analysis dtype."""
    x = float(np.asarray(val, np.float64))
    dt = like.dtype
    lo = jnp.full_like(like, F.const_dn(x, dt))
    hi = jnp.full_like(like, F.const_up(x, dt))
    return (lo, hi), _zero(like), _zero(like)


@_register(P("add"))
def _add(a: Jet, b: Jet, **_) -> Jet:
    return iadd(a[0], b[0]), iadd(a[1], b[1]), iadd(a[2], b[2])


@_register(P("sub"))
def _sub(a: Jet, b: Jet, **_) -> Jet:
    return isub(a[0], b[0]), isub(a[1], b[1]), isub(a[2], b[2])


@_register(P("neg"))
def _neg_rule(a: Jet, **_) -> Jet:
    return _neg(a[0]), _neg(a[1]), _neg(a[2])


@_register(P("copy"), P("copy_p"), P("convert_element_type"))
def _identity(a: Jet, **_) -> Jet:
    return a  # the exact value is unchanged (a conversion's rounding is the block's event)


@_register(P("mul"))
def _mul(a: Jet, b: Jet, **_) -> Jet:
    (a0, a1, a2), (b0, b1, b2) = a, b
    v1 = iadd(imul(a1, b0), imul(a0, b1))
    v2 = iadd(iadd(imul(a2, b0), _twice(imul(a1, b1))), imul(a0, b2))
    return imul(a0, b0), v1, v2


@_register(P("div"))
def _div(a: Jet, b: Jet, **_) -> Jet:
    # by a constant only (``_patterns._block_member``): multiply by its reciprocal
    (blo, bhi), _, _ = b
    one = jnp.ones_like(blo)
    r = (F.div_dn(one, bhi), F.div_up(one, blo))
    bad = (blo <= 0) & (bhi >= 0)
    r = (F.where(bad, -jnp.inf, r[0]), F.where(bad, jnp.inf, r[1]))
    return imul(a[0], r), imul(a[1], r), imul(a[2], r)


def _pow_pair(u: Pair, n: int) -> Pair:
    if n == 0:
        one = jnp.ones_like(u[0])
        return one, one
    if n == 1:
        return u
    return _ipow_range(u[0], u[1], n)


def _scale(p: Pair, k: float) -> Pair:
    lo, hi = F.mul_dn(p[0], k), F.mul_up(p[1], k)
    return (lo, hi) if k >= 0 else (hi, lo)


@_register(P("integer_pow"))
def _integer_pow(a: Jet, *, y: int, **_) -> Jet:
    n = int(y)
    u = a[0]
    return _compose(a, _pow_pair(u, n), _scale(_pow_pair(u, n - 1), float(n)),
                    _scale(_pow_pair(u, max(n - 2, 0)), float(n * (n - 1))))


@_register(P("square"))
def _square(a: Jet, **_) -> Jet:
    return _integer_pow(a, y=2)


def _monotone(fn: Any, prim: Any, u: Pair, decreasing: bool = False) -> Pair:
    f_dn, f_up = _enclose(fn, prim)
    if decreasing:  # fn is the increasing -f
        return -f_up(u[1]), -f_dn(u[0])
    return f_dn(u[0]), f_up(u[1])


@_register(P("tanh"))
def _tanh(a: Jet, **_) -> Jet:
    u = a[0]
    t = _monotone(jnp.tanh, P("tanh"), u)
    t = (jnp.maximum(t[0], -1.0), jnp.minimum(t[1], 1.0))
    o = _R(*t)
    return _compose(a, t, _tanh_d(_R(*u), o), _tanh_d2(_R(*u), o))


@_register(P("logistic"))
def _logistic(a: Jet, **_) -> Jet:
    u = a[0]
    s = _monotone(jax.nn.sigmoid, P("logistic"), u)
    s = (jnp.maximum(s[0], 0.0), jnp.minimum(s[1], 1.0))
    o = _R(*s)
    return _compose(a, s, _logistic_d(_R(*u), o), _logistic_d2(_R(*u), o))


@_register(P("exp"))
def _exp(a: Jet, **_) -> Jet:
    e = _monotone(jnp.exp, P("exp"), a[0])
    e = (jnp.maximum(e[0], 0.0), e[1])
    return _compose(a, e, e, e)


#: max over x of |x exp(-x^2)| = exp(-1/2) / sqrt(2), rounded up, times 4 / sqrt(pi)
_ERF_D2_MAX = 4 / math.sqrt(math.pi) * math.exp(-0.5) / math.sqrt(2) * (1 + 1e-6)
_FOUR_OVER_SQRT_PI = (4 / math.sqrt(math.pi) * (1 - 1e-15), 4 / math.sqrt(math.pi) * (1 + 1e-15))


def _erf_d2(u: Pair) -> Pair:
    """``erf''(x) = -(4 / sqrt(pi)) x exp(-x^2)`` over ``u``."""
    exp_dn, exp_up = _enclose(jnp.exp, P("exp"))
    mn, mx = jnp.minimum(mig(*u), 1e4), jnp.minimum(mag(*u), 1e4)
    e = (jnp.maximum(exp_dn(-F.mul_up(mx, mx)), 0.0), exp_up(-F.mul_dn(mn, mn)))
    k = (jnp.full_like(u[0], _FOUR_OVER_SQRT_PI[0]), jnp.full_like(u[0], _FOUR_OVER_SQRT_PI[1]))
    lo, hi = _neg(imul(k, imul(u, e)))
    return jnp.maximum(lo, -_ERF_D2_MAX), jnp.minimum(hi, _ERF_D2_MAX)


@_register(P("erf"))
def _erf(a: Jet, **_) -> Jet:
    u = a[0]
    v = _monotone(jax.scipy.special.erf, P("erf"), u)
    v = (jnp.maximum(v[0], -1.0), jnp.minimum(v[1], 1.0))
    return _compose(a, v, _erf_d(_R(*u), None), _erf_d2(u))


@_register(P("erfc"))
def _erfc(a: Jet, **_) -> Jet:
    u = a[0]
    v = _monotone(lambda x: -lax.erfc(x), P("erfc"), u, decreasing=True)
    v = (jnp.maximum(v[0], 0.0), jnp.minimum(v[1], 2.0))
    return _compose(a, v, _neg(_erf_d(_R(*u), None)), _neg(_erf_d2(u)))


def jet(block: Any, lo: Any, hi: Any) -> Jet:
    """Enclosures of ``(h, h', h'')`` of the exact block over ``[lo, hi]`` (elementwise).
    A NaN anywhere (``0 * inf``) becomes the whole line.

    ``h`` and ``h'`` are also enclosed in the centred (mean value) form,
    ``h'(x) in h'(m) + h''([lo, hi]) ([lo, hi] - m)`` with ``m`` the midpoint (``h'(m)``
    from the jet of the point ``m``), and intersected with the plain forms: the plain
    interval evaluation reads ``x`` several times (GELU: three) and overestimates
    ``h'``'s width about that many times over a range."""
    v, d1, d2 = _plain_jet(block, lo, hi)
    m = F.where(jnp.isfinite(lo) & jnp.isfinite(hi), lo / 2 + hi / 2, lo)
    m = jnp.clip(m, lo, hi)
    vm, d1m, _ = _plain_jet(block, m, m)
    dev = (F.sub_dn(lo, m), F.sub_up(hi, m))
    v = _meet(v, iadd(vm, imul(d1, dev)))
    d1 = _meet(d1, iadd(d1m, imul(d2, dev)))
    return v, d1, d2


def _meet(a: Pair, b: Pair) -> Pair:
    """Intersection of two enclosures of the same quantity (a NaN side is ignored)."""
    lo = F.where(jnp.isnan(b[0]), a[0], jnp.maximum(a[0], b[0]))
    hi = F.where(jnp.isnan(b[1]), a[1], jnp.minimum(a[1], b[1]))
    return lo, hi


def _plain_jet(block: Any, lo: Any, hi: Any) -> Jet:
    one = jnp.ones_like(lo)
    env: dict[Any, Jet] = {block.root: ((lo, hi), (one, one), _zero(lo))}
    for eqn in block.eqns:
        ops = [constant(v.val, lo) if isinstance(v, _compat.Literal) else env[v] for v in eqn.invars]
        env[eqn.outvars[0]] = JETS[eqn.primitive](*ops, **eqn.params)
    out = env[block.out]

    def clean(p: Pair) -> Pair:
        bad = jnp.isnan(p[0]) | jnp.isnan(p[1])
        return F.where(bad, -jnp.inf, p[0]), F.where(bad, jnp.inf, p[1])

    return clean(out[0]), clean(out[1]), clean(out[2])
