"""First-order sensitivity of a recognised softmax as one block (``_patterns``).

The block ``e = exp(d)``, ``S = sum_A(e)``, ``p = e / S`` (``d = x - c``, the shifted
exponent) is passed back in one step. Its rounding events are parametrised
*relatively*: ``e_i = exp(d_i)(1 + rho_i)`` and ``S = (sum e)(1 + sigma)``, with
``|rho_i| <= R_i = T(exp(d_lo))/exp(d_lo)`` (``T(M) = a M + b``, the transcendental
budget, so ``T(M)/M`` is decreasing) and ``|sigma| <= s = (a + b + c/sum e_lo)/(1 - b)``
(the accumulation model ``a sum|e| + b|S^| + c``); where that ``R_i`` is 1 or more (an
``exp`` that underflows: a masked logit) the event is absolute instead,
``e_i = exp(d_i) + alpha_i`` with ``|alpha_i| <= A_i = T(exp(d_hi))`` and ``rho_i = 0``,
``dp/dalpha_i = (g_i - sum_A g q) / (S (1 + t sigma))``. The division's own rounding stays
the tape's event on ``p``. With ``q_i = e_i / sum e`` (the ratio of the states, not
of two independent ranges):

    dp/dd    = q (g - sum_A g q) / (1 + t sigma)          (the cotangent of d)
    dp/drho_i = (dp/dd)_i / (1 + t rho_i)
    dp/dsigma = -(sum_A g q) / (1 + t sigma)^2

and ``q_i`` lies in the sharp softmax range ``[E_i^lo / (E_i^lo + sum_{j != i} E_j^hi),
E_i^hi / (E_i^hi + sum_{j != i} E_j^lo)]`` over ``E_j = exp(d_j)(1 + rho_j)`` on ``d``'s
path range. So every factor is a ratio of one state, never ``e^hi / S^lo``: a
dominant element keeps ``q`` near 1 however wide ``d``'s range is.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from .. import _compat
from .. import _formats as F
from .._domains import first_order as C
from .._domains.first_order import Cot
from .._domains.interval import Real
from ._common import transcendental_rounding
from .elementwise import _enclose

_exp_dn, _exp_up = _enclose(jnp.exp, _compat.prim("exp"))


def _sum_up(x, axes):
    n = max(1, int(np.prod([jnp.shape(x)[a] for a in axes])))
    gam = F.gamma(n, float(np.finfo(x.dtype).eps) / 2)
    s = jnp.sum(x, axis=axes, keepdims=True)
    return F.add_up_nn(F.scale_up(s, 1 + 2 * gam), F.static_up(2 * n * float(np.finfo(x.dtype).tiny), x.dtype))


def _sum_dn(x, axes):
    """Lower bound of the sum of a nonnegative array (>= 0)."""
    n = max(1, int(np.prod([jnp.shape(x)[a] for a in axes])))
    gam = F.gamma(n, float(np.finfo(x.dtype).eps) / 2)
    s = jnp.sum(x, axis=axes, keepdims=True)
    return jnp.maximum(F.mul_dn(s, 1 - 2 * gam) - 2 * n * float(np.finfo(x.dtype).tiny), 0.0)


def block_ranges(exp_ctx, sum_ctx, d: Real, axes: tuple[int, ...]) -> dict[str, Any]:
    """Relative event bounds ``R`` (per element), ``s`` (per group, keepdims) and the
    sharp range ``[q_lo, q_hi]`` of ``q`` over ``d``'s path range."""
    el = _exp_dn(d.lo)
    eh = _exp_up(d.hi)
    T = transcendental_rounding(exp_ctx, el, _compat.prim("exp"))
    R = F.where(el > 0, F.div_up(T, el), jnp.inf)
    # where exp underflows (a masked logit: exp(-1e4) is 0) the relative budget is
    # unbounded (R >= 1): there the event is absolute instead, |e^ - exp(d)| <= A =
    # T(e^hi) (T increases with the magnitude), and rho = 0. (Not where R < 1: on a
    # wide path range T(e^hi) is far above T(e^lo); with 1/2 as the threshold the
    # block of softmax(x @ w) @ v in bfloat16 lost its 2.5x gain over the plain rules)
    absolute = ~(R < 1.0)
    A = F.where(absolute, transcendental_rounding(exp_ctx, eh, _compat.prim("exp")), 0.0)
    R = F.where(absolute, 0.0, R)
    # where d's path range reaches -inf (Flax's finfo(float32).min mask is -inf in
    # bfloat16 and float16: the exact d is finite, the computed one -inf) the element is
    # *cut*: e_i moves from its exact to its computed value as one absolute event, both
    # in [0, e^hi + A] (so |alpha_i| <= e^hi + A), and no sensitivity flows back to d_i
    # (``block_cot``), so the infinite event of the mask constant meets an exactly-zero
    # cotangent
    cut = jnp.isneginf(d.lo)
    A = F.where(cut, F.add_up_nn(eh, A), A)
    El = F.where(absolute, jnp.maximum(F.sub_dn(el, A), 0.0), jnp.maximum(F.mul_dn(el, F.sub_dn(1.0, R)), 0.0))
    Eh = F.where(absolute, F.add_up(eh, A), F.mul_up(eh, F.add_up(1.0, R)))
    sl, sh = _sum_dn(El, axes), _sum_up(Eh, axes)
    n = max(1, int(np.prod([jnp.shape(d.lo)[a] for a in axes])))
    a, b, cc = sum_ctx.acc.coefficients(n, sum_ctx.fmt, products=False)
    dt = sl.dtype
    num = F.add_up_nn(F.add_up(F.static_up(a, dt), F.static_up(b, dt)), F.div_up(F.static_up(cc, dt), sl))
    s = F.div_up(num, F.sub_dn(jnp.ones_like(sl), F.static_up(b, dt)))
    s = F.where((sl > 0) & (b < 0.5) & jnp.isfinite(num), s, jnp.inf)
    # sum_{j != i} E_j: sh >= sum_j E_j^hi and sl <= sum_j E_j^lo
    others_hi = jnp.maximum(F.sub_up(sh, Eh), 0.0)
    others_lo = jnp.maximum(F.sub_dn(sl, El), 0.0)
    q_lo = jnp.maximum(F.div_dn(El, F.add_up(El, others_hi)), 0.0)
    # (the divisors' lower bounds are clamped at 0: down() of a result below the smallest
    # normal is negative, and a negative divisor turns an upper bound into a negative
    # number; fuzz seed 34033. x / 0 is inf, 0 / 0 NaN: both mean no claim below)
    q_hi = jnp.minimum(F.div_up(Eh, jnp.maximum(F.add_dn(Eh, others_lo), 0.0)), 1.0)
    bad = ~(jnp.isfinite(q_lo) & jnp.isfinite(q_hi))
    q_lo = F.where(bad, 0.0, q_lo)
    q_hi = F.where(bad, 1.0, q_hi)
    return dict(R=R, A=A, sl=sl, s=s, q_lo=q_lo, q_hi=q_hi, cut=cut)


def p_range(blk: dict[str, Any]) -> tuple[Any, Any]:
    """Enclosure of ``q / (1 + t sigma)`` (before the division's own rounding)."""
    s = blk["s"]
    lo = F.div_dn(blk["q_lo"], F.add_up(1.0, s))
    hi = F.div_up(blk["q_hi"], jnp.maximum(F.sub_dn(1.0, s), 0.0))
    return jnp.maximum(lo, 0.0), jnp.minimum(F.where(jnp.isnan(hi), jnp.inf, hi), jnp.inf)


def block_cot(g: Cot, blk: dict[str, Any], axes: tuple[int, ...]) -> tuple[Cot, Cot, Any]:
    """(cotangent of ``d``, cotangent of the group sums ``sum_A g q`` (keepdims), the
    worst-case contribution of the relative events ``rho`` and ``sigma``)."""
    shape = jnp.shape(g.mid)
    n = max(1, int(np.prod([shape[a] for a in axes])))
    gq = C.scale(g, blk["q_lo"], blk["q_hi"])
    row = C.linear(gq, lambda t: jnp.sum(t, axis=axes, keepdims=True), n)

    G = C.add(g, -C.linear(row, lambda t: jnp.broadcast_to(t, shape), 1))
    cd = C.scale(G, blk["q_lo"], blk["q_hi"])
    s = blk["s"]
    one_m_s = jnp.maximum(F.sub_dn(1.0, s), 0.0)
    cd = C.scale(cd, F.div_dn(1.0, F.add_up(1.0, s)), F.div_up(1.0, one_m_s))
    cd = C.mask(cd, ~blk["cut"])  # cut elements: their whole change is the event alpha
    R = blk["R"]
    wr = F.div_up(R, jnp.maximum(F.sub_dn(1.0, R), 0.0))
    t_rho = F.where(R == 0, 0.0, F.mul_up(cd.mag(), wr))
    # (lower bounds of the divisors clamped at 0, as in block_ranges: with s >= 1, a sum
    # that may underflow to 0, mul_dn(0, 0) is -tiny and these weights were -1e38, a
    # negative contribution; fuzz seed 34033. Now they are inf: no claim)
    ws = F.div_up(s, jnp.maximum(F.mul_dn(one_m_s, one_m_s), 0.0))
    t_sig = F.where(s == 0, 0.0, F.mul_up(row.mag(), ws))
    # absolute events (underflowing exps): dp/dalpha_i = G_i / (S (1 + t sigma)), with
    # S >= sl over every state
    A = blk["A"]
    wa = F.div_up(1.0, jnp.maximum(F.mul_dn(blk["sl"], one_m_s), 0.0))
    t_abs = F.where(A == 0, 0.0, F.mul_up(F.mul_up(G.mag(), A), wa))
    contrib = F.add_up_nn(F.add_up_nn(_total(t_rho), _total(t_sig)), _total(t_abs))
    return cd, row, F.where(jnp.isnan(contrib), jnp.inf, contrib)


def _total(t):
    n = max(1, int(np.prod(jnp.shape(t))))
    gam = F.gamma(n, float(np.finfo(t.dtype).eps) / 2)
    return F.add_up_nn(F.scale_up(jnp.sum(t), 1 + 2 * gam), F.static_up(2 * n * float(np.finfo(t.dtype).tiny), t.dtype))
