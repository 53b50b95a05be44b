"""First-order sensitivity rules: how a cotangent enclosure passes back through each primitive.

A rule receives the enclosures ``gs`` of ``d output / d out`` for the equation's
outputs and the *path* values of its operands (``Real`` with ``[lo, hi]``
enclosing every state the operand passes through between the exact and the
computed execution) and returns enclosures of ``d output / d operand``, one per
operand (``None``: zero, or not a floating operand), and a ``cut`` mask.

Soundness argument (mean value theorem along the segment from no rounding errors
to the actual ones): the derivative of each primitive must be enclosed over the
whole path range of its operands. Where a primitive is not differentiable there
(a select whose predicate may flip, a floor that may jump, an index that may
change) the rule *cuts*: the output's deviation counts as one event bounded by
the interval domain's total error bound of that output, and nothing is passed
back for those elements. A primitive without a rule is cut entirely, which is
always sound and only loses tightness.
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
from .._domains import first_order as C
from .._domains.first_order import Cot
from .._domains.interval import Discrete, Real, idiv, mag, mig
from .elementwise import _enclose
from .structural import STRUCTURAL

P = _compat.prim

#: Primitive -> sensitivity rule ``(ctx, gs, ins, outs, **params) -> (cots, cut)``.
sensitivity_rules: dict[Any, Callable[..., Any]] = {}


def register_sensitivity(*prims: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def deco(fn):
        for p in prims:
            if p is not None:
                sensitivity_rules[p] = fn
        return fn

    return deco


def _is_real(x: Any) -> bool:
    return isinstance(x, Real)


def _fit(c: Cot | None, x: Any) -> Cot | None:
    """Sum a cotangent over the dimensions an elementwise primitive broadcast ``x``
    along (size-1 dimensions and scalars, which lax allows)."""
    if c is None or not _is_real(x):
        return None
    shape = tuple(jnp.shape(x.lo))
    cs = tuple(jnp.shape(c.mid))
    if shape == cs:
        return c
    if len(shape) == 0:
        axes = tuple(range(len(cs)))
    else:
        axes = tuple(d for d, (n, m) in enumerate(zip(shape, cs)) if n == 1 and m != 1)
    n_sum = max(1, int(np.prod(cs)) // max(1, int(np.prod(shape))))
    return C.linear(c, lambda t: jnp.sum(t, axis=axes).reshape(shape), n_sum)


def _fit_all(cots: list[Any], ins: list[Any]) -> list[Any]:
    return [_fit(c, x) for c, x in zip(cots, ins)]


# ---------------------------------------------------------------------------
# Linear primitives: transpose with JAX's own vjp at the centre
# ---------------------------------------------------------------------------

#: structural primitives whose transpose sums several cotangent entries
_SUMMING = {P("broadcast_in_dim"), P("gather")}


def _linear_transpose(ctx, ins, params):
    """Transposes of a primitive that is linear in its floating operands (the others
    fixed at their centre values), one per floating operand."""
    prim = ctx.eqn.primitive
    adt = ctx.adt
    real_idx = [i for i, x in enumerate(ins) if _is_real(x)]
    prims = [jnp.asarray(ins[i].value).astype(adt) for i in real_idx]

    def fn(*xs):
        ops = [x.value for x in ins]
        for i, x in zip(real_idx, xs):
            ops[i] = x
        return prim.bind(*ops, **params)

    def T(g, k):
        _, vjp = jax.vjp(fn, *prims)
        return vjp(g.astype(adt))[k]

    return real_idx, T


def _certain(d: Discrete) -> Any:
    return jnp.all(d.lo == d.hi)


def linear_rule(ctx, gs, ins, outs, **params):
    g = gs[0]
    prim = ctx.eqn.primitive
    # index operands must be certain on every path, else the read location may change
    cut = None
    for x in ins:
        if isinstance(x, Discrete):
            c = _certain(x)
            cut = ~c if cut is None else cut | ~c
    real_idx, T = _linear_transpose(ctx, ins, params)
    out_size = max(1, int(np.prod(jnp.shape(outs[0].lo))))
    cots = [None] * len(ins)
    for k, i in enumerate(real_idx):
        if not ctx.need[i]:
            continue
        in_size = max(1, int(np.prod(jnp.shape(ins[i].lo))))
        if prim is P("broadcast_in_dim"):
            n_sum = out_size // in_size
        elif prim is P("gather"):
            n_sum = out_size
        else:
            n_sum = 1
        cots[i] = C.linear(g, lambda t, k=k: T(t, k), n_sum)
    if cut is not None:
        # uncertain indices: the whole output is one event, nothing flows back
        cut_mask = jnp.broadcast_to(cut, jnp.shape(outs[0].lo))
        cots = [None if c is None else C.mask(c, ~cut) for c in cots]
        return cots, cut_mask
    return cots, None


for _p in STRUCTURAL | {P("reduce_sum"), P("dynamic_slice"), P("dynamic_update_slice"), P("gather")}:
    if _p is not None:
        sensitivity_rules[_p] = linear_rule


@register_sensitivity(P("split"))
def split_rule(ctx, gs, ins, outs, *, axis, **_):
    """The transpose of ``split`` concatenates the pieces' cotangents (no arithmetic)."""
    if not _is_real(ins[0]) or not ctx.need[0]:
        return [None], None
    mids, rads = [], []
    for g, o in zip(gs, outs):
        shape = jnp.shape(o.lo)
        mids.append(jnp.zeros(shape, ctx.adt) if g is None else g.mid)
        rads.append(jnp.zeros(shape, ctx.adt) if g is None else g.rad)
    return [Cot(jnp.concatenate(mids, axis=axis), jnp.concatenate(rads, axis=axis))], None


@register_sensitivity(P("copy"), P("copy_p"), P("stop_gradient"), P("optimization_barrier"),
                      P("sharding_constraint"), P("device_put"), P("name"),
                      P("convert_element_type"), P("reduce_precision"))
def identity_rule(ctx, gs, ins, outs, **_):
    """Identity on the values (``stop_gradient`` included: errors do flow through it);
    a float-to-float conversion is the identity plus its own rounding event."""
    cots = []
    for x, o, g in zip(ins, outs, list(gs) + [None] * (len(ins) - len(gs))):
        if _is_real(x) and _is_real(o):
            cots.append(g)
        elif isinstance(x, Discrete) and _is_real(o):
            # int -> float: exact where the integer is certain, else an event
            return [None] * len(ins), (x.lo != x.hi)
        else:
            cots.append(None)
    return cots, None


@register_sensitivity(P("add"), P("add_any"), P("add_jaxvals"))
def add_rule(ctx, gs, ins, outs, **_):
    g = gs[0]
    return _fit_all([g if _is_real(x) else None for x in ins], ins), None


@register_sensitivity(P("sub"))
def sub_rule(ctx, gs, ins, outs, **_):
    g = gs[0]
    a, b = ins
    return _fit_all([g if _is_real(a) else None, -g if _is_real(b) else None], ins), None


@register_sensitivity(P("neg"))
def neg_rule(ctx, gs, ins, outs, **_):
    return [-gs[0]], None


# ---------------------------------------------------------------------------
# Products
# ---------------------------------------------------------------------------


def _times(g: Cot, x: Real) -> Cot:
    if x.point:
        return C.scale_point(g, x.lo)
    return C.scale(g, x.lo, x.hi)


@register_sensitivity(P("mul"))
def mul_rule(ctx, gs, ins, outs, **_):
    g = gs[0]
    a, b = ins
    if not (_is_real(a) and _is_real(b)):
        return [None, None], jnp.zeros(jnp.shape(outs[0].lo), bool) | True
    return _fit_all([_times(g, b) if ctx.need[0] else None, _times(g, a) if ctx.need[1] else None], ins), None


@register_sensitivity(P("div"))
def div_rule(ctx, gs, ins, outs, **_):
    g = gs[0]
    a, b = ins
    q = outs[0]
    one = jnp.ones_like(b.lo)
    # d/da = 1/b, d/db = -(a/b)/b; q's path range encloses a/b
    ilo, ihi = idiv((one, one), (b.lo, b.hi))
    qlo, qhi = idiv((q.lo, q.hi), (b.lo, b.hi))
    return _fit_all([C.scale(g, ilo, ihi) if ctx.need[0] else None,
                     C.scale(g, -qhi, -qlo) if ctx.need[1] else None], ins), None


@register_sensitivity(P("square"))
def square_rule(ctx, gs, ins, outs, **_):
    a = ins[0]
    return [C.scale(gs[0], F.mul_dn(a.lo, 2.0), F.mul_up(a.hi, 2.0))], None


@register_sensitivity(P("integer_pow"))
def integer_pow_rule(ctx, gs, ins, outs, *, y, **_):
    from .arithmetic import _ipow_range

    n = int(y)
    a = ins[0]
    if n == 0:
        return [None], None
    if n == 1:
        return [gs[0]], None
    if n < 0:
        # d/dx x^n = n x^(n-1) = n * out / x
        qlo, qhi = idiv((outs[0].lo, outs[0].hi), (a.lo, a.hi))
        lo, hi = (F.mul_dn(qlo, float(n)), F.mul_up(qhi, float(n)))
        return [C.scale(gs[0], jnp.minimum(lo, hi), jnp.maximum(lo, hi))], None
    plo, phi = _ipow_range(a.lo, a.hi, n - 1) if n > 2 else (a.lo, a.hi)
    return [C.scale(gs[0], F.mul_dn(plo, float(n)), F.mul_up(phi, float(n)))], None


# ---------------------------------------------------------------------------
# Piecewise-linear: max, min, clamp, abs, select_n
# ---------------------------------------------------------------------------


def _extreme(ctx, gs, ins, outs, bigger):
    g = gs[0]
    a, b = ins
    if not _is_real(a):
        return [None, None], None
    a_wins = bigger(a, b)  # a certainly selected
    b_wins = bigger(b, a)
    tie = ~(a_wins | b_wins)
    if getattr(ctx, "kink_cut", False):
        # the driver knows a first-order bound of this output's deviation: where the
        # branch is uncertain, that bound is one event and nothing flows back, except
        # where the exact execution's branch is certain: there the cotangent goes on
        # through that operand and the driver charges a remainder event
        # (_first_order._Tape.kink_exact)
        ke = getattr(ctx, "kink_exact", None)
        if ke is not None:
            a_ex, b_ex, _ = ke
            a_wins, b_wins = a_wins | a_ex, b_wins | b_ex
            tie = tie & ~(a_ex | b_ex)
        return _fit_all([
            C.mask(g, a_wins) if ctx.need[0] else None,
            C.mask(g, b_wins) if ctx.need[1] else None,
        ], ins), tie
    return _fit_all([
        C.unit_interval(g, a_wins, tie) if ctx.need[0] else None,
        C.unit_interval(g, b_wins, tie) if ctx.need[1] else None,
    ], ins), None


@register_sensitivity(P("max"))
def max_rule(ctx, gs, ins, outs, **_):
    return _extreme(ctx, gs, ins, outs, lambda x, y: x.lo > y.hi)


@register_sensitivity(P("min"))
def min_rule(ctx, gs, ins, outs, **_):
    return _extreme(ctx, gs, ins, outs, lambda x, y: x.hi < y.lo)


@register_sensitivity(P("clamp"))
def clamp_rule(ctx, gs, ins, outs, **_):
    g = gs[0]
    lo_op, x, hi_op = ins
    if not _is_real(x):
        return [None, None, None], None
    below = x.hi < lo_op.lo  # certainly clamped to lo
    above = x.lo > hi_op.hi
    inside = (x.lo > lo_op.hi) & (x.hi < hi_op.lo)
    maybe_below = ~inside & ~above & (x.lo <= lo_op.hi)
    maybe_above = ~inside & ~below & (x.hi >= hi_op.lo)
    maybe_inside = ~below & ~above & ~inside

    def to(i, op, certain, possible):
        if not ctx.need[i]:
            return None
        return _fit(C.unit_interval(g, certain, possible), op)

    return [to(0, lo_op, below, maybe_below), C.unit_interval(g, inside, maybe_inside),
            to(2, hi_op, above, maybe_above)], None


@register_sensitivity(P("abs"))
def abs_rule(ctx, gs, ins, outs, **_):
    a = ins[0]
    one = jnp.ones_like(a.lo)
    lo = F.where(a.lo > 0, one, -one)
    hi = F.where(a.hi < 0, -one, one)
    return [C.scale(gs[0], lo, hi)], None


@register_sensitivity(P("select_n"))
def select_n_rule(ctx, gs, ins, outs, **_):
    g = gs[0]
    pred, *cases = ins
    certain = pred.lo == pred.hi
    which = pred.value.astype(jnp.int32)
    cots = [None]
    for j, c in enumerate(cases):
        cots.append(_fit(C.mask(g, certain & (which == j)), c) if _is_real(c) else None)
    return cots, jnp.broadcast_to(~certain, jnp.shape(outs[0].lo))


# ---------------------------------------------------------------------------
# Smooth elementwise functions: enclose the derivative over the operand's path range
# ---------------------------------------------------------------------------


def _unary(deriv):
    def rule(ctx, gs, ins, outs, **_):
        lo, hi = deriv(ins[0], outs[0])
        return [C.scale(gs[0], lo, hi)], None

    return rule


_exp_dn, _exp_up = _enclose(jnp.exp, P("exp"))

# exp' = exp: the output's path range encloses exp over the operand's
register_sensitivity(P("exp"))(_unary(lambda a, o: (o.lo, o.hi)))


def _exp2_d(a, o):
    ln2_lo, ln2_hi = math.log(2) * (1 - 1e-15), math.log(2) * (1 + 1e-15)
    return F.mul_dn(o.lo, ln2_lo), F.mul_up(o.hi, ln2_hi)


register_sensitivity(P("exp2"))(_unary(_exp2_d))
register_sensitivity(P("expm1"))(_unary(lambda a, o: (F.add_dn(o.lo, 1.0), F.add_up(o.hi, 1.0))))


def _recip(lo, hi):
    one = jnp.ones_like(lo)
    return idiv((one, one), (lo, hi))


register_sensitivity(P("log"))(_unary(lambda a, o: _recip(a.lo, a.hi)))
register_sensitivity(P("log1p"))(_unary(lambda a, o: _recip(F.add_dn(a.lo, 1.0), F.add_up(a.hi, 1.0))))


def _tanh_d(a, o):
    # 1 - t^2 over t in the output's range (|t| <= 1)
    tmin, tmax = mig(o.lo, o.hi), jnp.minimum(mag(o.lo, o.hi), 1.0)
    return F.sub_dn(1.0, F.mul_up(tmax, tmax)), F.sub_up(1.0, F.mul_dn(tmin, tmin))


register_sensitivity(P("tanh"))(_unary(_tanh_d))


def _logistic_d(a, o):
    # s (1 - s) for s in the output's range within [0, 1]: increasing below 1/2
    s_lo = jnp.clip(o.lo, 0.0, 1.0)
    s_hi = jnp.clip(o.hi, 0.0, 1.0)

    def f_dn(s):
        return F.mul_dn(s, F.sub_dn(1.0, s))

    def f_up(s):
        return F.mul_up(s, F.sub_up(1.0, s))

    lo = jnp.minimum(f_dn(s_lo), f_dn(s_hi))
    hi = F.where((s_lo <= 0.5) & (s_hi >= 0.5), 0.25, jnp.maximum(f_up(s_lo), f_up(s_hi)))
    return jnp.maximum(lo, 0.0), hi


register_sensitivity(P("logistic"))(_unary(_logistic_d))

_TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)


def _erf_d(a, o):
    # mn capped: exp(-mn^2) is 0 past mn = 27 anyway, and mul_dn of an overflowing mn*mn is NaN
    mn, mx = jnp.minimum(mig(a.lo, a.hi), 1e4), mag(a.lo, a.hi)
    lo = F.mul_dn(_exp_dn(-F.mul_up(mx, mx)), _TWO_OVER_SQRT_PI * (1 - 1e-15))
    hi = F.mul_up(_exp_up(-F.mul_dn(mn, mn)), _TWO_OVER_SQRT_PI * (1 + 1e-15))
    return jnp.maximum(lo, 0.0), hi


register_sensitivity(P("erf"))(_unary(_erf_d))
register_sensitivity(P("erfc"))(_unary(lambda a, o: tuple(-t for t in reversed(_erf_d(a, o)))))


def _sqrt_d(a, o):
    # 1 / (2 sqrt x) with sqrt x in the output's range
    lo, hi = _recip(F.mul_dn(o.lo, 2.0), F.mul_up(o.hi, 2.0))
    return lo, hi


register_sensitivity(P("sqrt"))(_unary(_sqrt_d))


def _rsqrt_d(a, o):
    # -x^(-3/2) / 2 = -r^3 / 2 with r = rsqrt(x) > 0 in the output's range
    r_lo = jnp.maximum(o.lo, 0.0)
    c_lo = F.mul_dn(F.mul_dn(r_lo, r_lo), r_lo)
    c_hi = F.mul_up(F.mul_up(o.hi, o.hi), o.hi)
    return -F.mul_up(c_hi, 0.5), -F.mul_dn(c_lo, 0.5)


register_sensitivity(P("rsqrt"))(_unary(_rsqrt_d))


# ---------------------------------------------------------------------------
# dot_general and reductions
# ---------------------------------------------------------------------------


@register_sensitivity(P("dot_general"))
def dot_general_rule(ctx, gs, ins, outs, *, dimension_numbers, **_):
    g = gs[0]
    a, b = ins
    if not (_is_real(a) and _is_real(b)):
        return [None, None], jnp.ones(jnp.shape(outs[0].lo), bool)
    adt = ctx.adt
    (lc, _), (lb, _) = dimension_numbers
    contract = int(np.prod([jnp.shape(a.lo)[d] for d in lc]))
    batch = int(np.prod([jnp.shape(a.lo)[d] for d in lb]))

    def dot(x, y):
        return lax.dot_general(x, y, dimension_numbers, precision=lax.Precision.HIGHEST,
                               preferred_element_type=adt)

    def transpose(k, other, cot):
        """The cotangent of operand k of ``dot`` at fixed ``other`` (linear in both)."""
        if k == 0:
            _, vjp = jax.vjp(lambda x: dot(x, other), jnp.zeros(jnp.shape(a.lo), adt))
        else:
            _, vjp = jax.vjp(lambda y: dot(other, y), jnp.zeros(jnp.shape(b.lo), adt))
        return vjp(cot)[0]

    segs = getattr(ctx, "segments", None) or [None, None]

    def cot_for(k, other: Real):
        # each transposed entry sums over the other operand's free dimensions
        n = max(1, int(np.prod(jnp.shape(other.lo))) // max(1, contract * batch))
        return bilinear_cot(g, other, lambda oth, cot: transpose(k, oth, cot), n, adt, segs[1 - k])

    return [cot_for(0, b) if ctx.need[0] else None, cot_for(1, a) if ctx.need[1] else None], None


def bilinear_cot(g: Cot, other: Real, transpose: Any, n: int, adt: Any, seg: Any = None) -> Cot:
    """The cotangent of one operand of a bilinear primitive (dot_general, conv): the
    transpose ``transpose(other, cot)`` of ``g`` by the other operand's enclosure, each
    entry a float sum of ``n`` terms. ``|g o - gm om| <= gr (|om| + orad) + |gm| orad``,
    plus the float error ``gamma |gm| |om|`` of the midpoint transpose.

    ``seg = (x0, D, e)``: the other operand is a rounded input whose states along the
    segment are exactly ``x0 + t (D + e')``, ``t`` in [0, 1], ``|e'| <= e`` (its only
    event, a known shift): then ``gm·o(t) = gm·xc + (t - 1/2) gm·D + t gm·e'`` with
    ``xc = x0 + D/2``, so the radius has the *signed* transpose ``|gm·D| / 2`` (which
    cancels across the contracted dimension) instead of ``|gm|·|D| / 2``."""
    gam = F.gamma(n + 1, float(np.finfo(adt).eps) / 2)
    slack = F.static_up(2 * (n + 1) * float(np.finfo(adt).tiny), adt)

    def t_up(cot, oth):  # upper bound of the transpose for nonnegative arrays
        return F.add_up_nn(F.scale_up(transpose(oth, cot), 1 + 2 * gam), slack)

    if seg is not None:
        x0, D, e = (jnp.asarray(v, adt) for v in seg)
        xc = x0 + D / 2  # |xc - (x0 + D/2)| <= u |xc| + tiny
        u = float(np.finfo(adt).eps) / 2
        tiny = float(np.finfo(adt).tiny)
        xc_err = F.add_up_nn(F.scale_up(jnp.abs(xc), 2 * u), F.static_up(2 * tiny, adt))
        mid = transpose(xc, g.mid)
        agm = jnp.abs(g.mid)
        rad = t_up(F.scale_up(agm, gam), jnp.abs(xc))  # the float midpoint transpose
        rad = F.add_up_nn(rad, t_up(g.rad, mag(other.lo, other.hi)))  # gr |o(t)|
        half = F.scale_up(jnp.abs(transpose(D, g.mid)), 0.5)
        rad = F.add_up_nn(rad, F.add_up_nn(half, F.scale_up(t_up(agm, jnp.abs(D)), gam)))
        rad = F.add_up_nn(rad, t_up(agm, F.add_up_nn(e, xc_err)))
        return Cot(mid, rad)

    if other.point:
        om, orad = other.lo, None
    else:
        om, orad = C.mid_rad(other.lo, other.hi)
    mid = transpose(om, g.mid)
    rad = t_up(F.add_up_nn(g.rad, F.scale_up(jnp.abs(g.mid), gam)), jnp.abs(om))
    if orad is not None:
        rad = F.add_up_nn(rad, t_up(g.mag(), orad))
    return Cot(mid, rad)


@register_sensitivity(P("reduce_max"))
def reduce_max_rule(ctx, gs, ins, outs, *, axes, **_):
    return _reduce_extreme(gs[0], ins[0], outs[0], axes, True)


@register_sensitivity(P("reduce_min"))
def reduce_min_rule(ctx, gs, ins, outs, *, axes, **_):
    return _reduce_extreme(gs[0], ins[0], outs[0], axes, False)


def _reduce_extreme(g, a, o, axes, is_max):
    """Clarke gradient of max: weight 1 on the element that is certainly the maximum,
    a weight in [0, 1] on every element that may be it."""
    keep = tuple(d for d in range(jnp.ndim(a.lo)) if d not in axes)

    def bc(t):
        return lax.broadcast_in_dim(t, jnp.shape(a.lo), keep)

    if is_max:
        possible = a.hi >= bc(o.lo)  # may reach the largest lower end
        n_possible = jnp.sum(possible, axis=axes)
    else:
        possible = a.lo <= bc(o.hi)
        n_possible = jnp.sum(possible, axis=axes)
    certain = possible & bc(n_possible == 1)
    gb = Cot(bc(g.mid), bc(g.rad))
    return [C.unit_interval(gb, certain, possible)], None




# ---------------------------------------------------------------------------
# Second derivatives of smooth unary primitives (the quadratic split of
# ``jaxerr/_gram.py``): an enclosure of f'' over the operand's path range
# ---------------------------------------------------------------------------

#: Primitive -> ``(a, o, **params) -> (lo, hi)`` enclosing ``f''(x)`` for every ``x`` in
#: the path range of the operand ``a`` (``o``: the output's path range, which encloses
#: ``f`` over it). Only primitives that are twice differentiable on the whole real line
#: (or on the range the rule checks) are listed.
second_derivatives: dict[Any, Callable[..., Any]] = {}


def _cubic_range(c: tuple[float, float, float, float], lo: Any, hi: Any,
                 crits: tuple[float, ...]) -> tuple[Any, Any]:
    """Range of ``c0 + c1 t + c2 t^2 + c3 t^3`` over ``[lo, hi]`` (finite, inside
    [-1, 1]), from its values at the ends and at the critical points ``crits`` inside,
    widened by a bound of the float evaluation error."""
    def ev(t):
        return c[0] + t * (c[1] + t * (c[2] + t * c[3]))

    def err(t):
        a = jnp.abs(t)
        return (abs(c[0]) + a * (abs(c[1]) + a * (abs(c[2]) + a * abs(c[3])))) * 1e-5

    vals = [ev(lo), ev(hi)]
    errs = [err(lo), err(hi)]
    for cp in crits:
        inside = (lo <= cp) & (hi >= cp)
        v = jnp.asarray(ev(jnp.asarray(cp, lo.dtype)), lo.dtype)
        vals.append(F.where(inside, v, vals[0]))
        errs.append(F.where(inside, err(jnp.asarray(cp, lo.dtype)), errs[0]))
    e = jnp.max(jnp.stack(errs), axis=0)
    e = F.add_up_nn(e, jnp.asarray(np.finfo(lo.dtype).tiny, lo.dtype))
    return F.sub_dn(jnp.min(jnp.stack(vals), axis=0), e), F.add_up(jnp.max(jnp.stack(vals), axis=0), e)


def _tanh_d2(a, o, **_):
    # tanh'' = -2 t (1 - t^2), t = tanh(x) in the output's range within [-1, 1]
    t_lo, t_hi = jnp.clip(o.lo, -1.0, 1.0), jnp.clip(o.hi, -1.0, 1.0)
    r = 1 / math.sqrt(3)
    return _cubic_range((0.0, -2.0, 0.0, 2.0), t_lo, t_hi, (-r, r))


def _logistic_d2(a, o, **_):
    # s (1 - s) (1 - 2 s) = s - 3 s^2 + 2 s^3, s in the output's range within [0, 1]
    s_lo, s_hi = jnp.clip(o.lo, 0.0, 1.0), jnp.clip(o.hi, 0.0, 1.0)
    r = math.sqrt(3) / 6
    return _cubic_range((0.0, 1.0, -3.0, 2.0), s_lo, s_hi, (0.5 - r, 0.5 + r))


def _ipow_d2(a, o, *, y, **_):
    from .arithmetic import _ipow_range

    n = int(y)
    k = float(n * (n - 1))
    if n == 2:
        one = jnp.ones_like(a.lo)
        return one * k, one * k
    plo, phi = _ipow_range(a.lo, a.hi, n - 2)
    lo, hi = F.mul_dn(plo, k), F.mul_up(phi, k)
    return jnp.minimum(lo, hi), jnp.maximum(lo, hi)


second_derivatives[P("tanh")] = _tanh_d2
second_derivatives[P("logistic")] = _logistic_d2
second_derivatives[P("exp")] = lambda a, o, **_: (jnp.maximum(o.lo, 0.0), o.hi)
second_derivatives[P("square")] = lambda a, o, **_: (jnp.full_like(a.lo, 2.0), jnp.full_like(a.lo, 2.0))
second_derivatives[P("integer_pow")] = _ipow_d2


# the layer primitives' rules (conv, windows, prefix sums, sort, scatter) register themselves
from . import sensitivity_layers as _sensitivity_layers  # noqa: E402, F401
