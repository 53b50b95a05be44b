"""Rules that produce or consume integers and booleans: comparisons, select_n,
convert_element_type, logical ops and integer arithmetic.

A :class:`Discrete` carries ``[lo, hi]`` containing both the exact and the
computed value; ``lo == hi`` means certain. Integer arithmetic is interval
arithmetic; integer overflow is not modelled (indices in jaxprs stay small), and
an uncertain operand of an operation without an interval rule widens the result
to the dtype's full range.
"""

from __future__ import annotations

import jax.lax as lax
import jax.numpy as jnp
import numpy as np

from .. import _compat
from .. import _formats as F
from .._domains.interval import Discrete, Real, tighten
from .._interpreter import is_float_dtype
from . import register_rule
from ._common import c

P = _compat.prim


def _full_range(dtype, shape):
    if dtype == jnp.bool_:
        return jnp.zeros(shape, bool), jnp.ones(shape, bool)
    info = jnp.iinfo(dtype)
    return jnp.full(shape, info.min, dtype), jnp.full(shape, info.max, dtype)


def _as_int(x):
    return x.astype(jnp.int32) if x.dtype == jnp.bool_ else x


def int_binop(ctx, a: Discrete, b: Discrete) -> Discrete:
    prim = ctx.eqn.primitive
    value = ctx.value(a.value, b.value)
    alo, ahi, blo, bhi = a.lo, a.hi, b.lo, b.hi
    if prim is P("add"):
        lo, hi = alo + blo, ahi + bhi
    elif prim is P("sub"):
        lo, hi = alo - bhi, ahi - blo
    elif prim is P("mul"):
        cs = [alo * blo, alo * bhi, ahi * blo, ahi * bhi]
        lo = jnp.minimum(jnp.minimum(cs[0], cs[1]), jnp.minimum(cs[2], cs[3]))
        hi = jnp.maximum(jnp.maximum(cs[0], cs[1]), jnp.maximum(cs[2], cs[3]))
    elif prim is P("max"):
        lo, hi = jnp.maximum(alo, blo), jnp.maximum(ahi, bhi)
    elif prim is P("min"):
        lo, hi = jnp.minimum(alo, blo), jnp.minimum(ahi, bhi)
    else:
        certain = (alo == ahi) & (blo == bhi)
        flo, fhi = _full_range(value.dtype, value.shape)
        lo = F.where(certain, value, flo)
        hi = F.where(certain, value, fhi)
    return Discrete(lo.astype(value.dtype), hi.astype(value.dtype), value)


def int_unop(ctx, a: Discrete) -> Discrete:
    prim = ctx.eqn.primitive
    value = ctx.value(a.value)
    if prim is P("neg"):
        lo, hi = -a.hi, -a.lo
    elif prim is P("abs"):
        lo = F.where((a.lo <= 0) & (a.hi >= 0), 0, jnp.minimum(jnp.abs(a.lo), jnp.abs(a.hi)))
        hi = jnp.maximum(jnp.abs(a.lo), jnp.abs(a.hi))
    elif prim is P("sign"):
        lo, hi = jnp.sign(a.lo), jnp.sign(a.hi)
    else:
        certain = a.lo == a.hi
        flo, fhi = _full_range(value.dtype, value.shape)
        lo = F.where(certain, value, flo)
        hi = F.where(certain, value, fhi)
    return Discrete(lo.astype(value.dtype), hi.astype(value.dtype), value)


def int_clamp(ctx, lo_op: Discrete, x: Discrete, hi_op: Discrete) -> Discrete:
    value = ctx.value(lo_op.value, x.value, hi_op.value)
    lo = jnp.minimum(jnp.maximum(x.lo, lo_op.lo), hi_op.lo)
    hi = jnp.minimum(jnp.maximum(x.hi, lo_op.hi), hi_op.hi)
    return Discrete(lo.astype(value.dtype), hi.astype(value.dtype), value)


# ---------------------------------------------------------------------------
# comparisons
# ---------------------------------------------------------------------------


def _ranges(x):
    """(lo, hi) containing both the exact and the computed value."""
    if isinstance(x, Real):
        return x.hull()
    return _as_int(x.lo), _as_int(x.hi)


def _is_point(x):
    if isinstance(x, Real):
        lo, hi = x.hull()
        return lo == hi
    return x.lo == x.hi


def _compare(ctx, a, b, certainly_true, certainly_false):
    value = ctx.value(a.value, b.value)
    alo, ahi = _ranges(a)
    blo, bhi = _ranges(b)
    t = certainly_true(alo, ahi, blo, bhi)
    f = certainly_false(alo, ahi, blo, bhi)
    lo = t
    hi = jnp.logical_not(f)
    return Discrete(jnp.broadcast_to(lo, value.shape), jnp.broadcast_to(hi, value.shape), value)


@register_rule(P("lt"))
def lt_rule(ctx, a, b, **_):
    return _compare(ctx, a, b, lambda al, ah, bl, bh: ah < bl, lambda al, ah, bl, bh: al >= bh)


@register_rule(P("le"))
def le_rule(ctx, a, b, **_):
    return _compare(ctx, a, b, lambda al, ah, bl, bh: ah <= bl, lambda al, ah, bl, bh: al > bh)


@register_rule(P("gt"))
def gt_rule(ctx, a, b, **_):
    return _compare(ctx, a, b, lambda al, ah, bl, bh: al > bh, lambda al, ah, bl, bh: ah <= bl)


@register_rule(P("ge"))
def ge_rule(ctx, a, b, **_):
    return _compare(ctx, a, b, lambda al, ah, bl, bh: al >= bh, lambda al, ah, bl, bh: ah < bl)


@register_rule(P("eq"))
def eq_rule(ctx, a, b, **_):
    def t(al, ah, bl, bh):
        return (al == ah) & (bl == bh) & (al == bl)

    def f(al, ah, bl, bh):
        return (ah < bl) | (bh < al)

    return _compare(ctx, a, b, t, f)


@register_rule(P("ne"))
def ne_rule(ctx, a, b, **_):
    def t(al, ah, bl, bh):
        return (ah < bl) | (bh < al)

    def f(al, ah, bl, bh):
        return (al == ah) & (bl == bh) & (al == bl)

    return _compare(ctx, a, b, t, f)


# ---------------------------------------------------------------------------
# logical ops on booleans (bitwise on integers: certain operands only)
# ---------------------------------------------------------------------------


@register_rule(P("and"))
def and_rule(ctx, a, b, **_):
    value = ctx.value(a.value, b.value)
    if value.dtype == jnp.bool_:
        return Discrete(a.lo & b.lo, a.hi & b.hi, value)
    return int_binop(ctx, a, b)


@register_rule(P("or"))
def or_rule(ctx, a, b, **_):
    value = ctx.value(a.value, b.value)
    if value.dtype == jnp.bool_:
        return Discrete(a.lo | b.lo, a.hi | b.hi, value)
    return int_binop(ctx, a, b)


@register_rule(P("not"))
def not_rule(ctx, a, **_):
    value = ctx.value(a.value)
    if value.dtype == jnp.bool_:
        return Discrete(~a.hi, ~a.lo, value)
    return int_unop(ctx, a)


for _name in ("xor", "rem", "shift_left", "shift_right_logical", "shift_right_arithmetic"):
    register_rule(P(_name))(lambda ctx, a, b, **_: int_binop(ctx, a, b))


# ---------------------------------------------------------------------------
# select_n
# ---------------------------------------------------------------------------


@register_rule(P("select_n"))
def select_n_rule(ctx, pred, *cases, **_):
    """out = cases[pred]. A certain predicate picks; an uncertain one joins the
    possible cases, and then exact and computed may come from different cases."""
    value = ctx.value(pred.value, *[x.value for x in cases])
    plo, phi = _as_int(pred.lo), _as_int(pred.hi)
    if plo.shape != value.shape:
        plo = jnp.broadcast_to(plo, value.shape)
        phi = jnp.broadcast_to(phi, value.shape)
    certain = plo == phi
    n = len(cases)
    idx = jnp.clip(plo, 0, n - 1)
    possible = [(plo <= i) & (i <= phi) for i in range(n)]

    def pick(fields):
        return lax.select_n(idx, *fields) if n > 1 else fields[0]

    def join_min(fields, fill):
        out = F.where(possible[0], fields[0], fill)
        for p, f in zip(possible[1:], fields[1:]):
            out = jnp.minimum(out, F.where(p, f, fill))
        return out

    def join_max(fields, fill):
        out = F.where(possible[0], fields[0], fill)
        for p, f in zip(possible[1:], fields[1:]):
            out = jnp.maximum(out, F.where(p, f, fill))
        return out

    if isinstance(cases[0], Discrete):
        los = [_as_int(x.lo) for x in cases]
        his = [_as_int(x.hi) for x in cases]
        big = jnp.iinfo(jnp.int32).max if los[0].dtype != jnp.int64 else jnp.iinfo(jnp.int64).max
        lo = F.where(certain, pick(los), join_min(los, big))
        hi = F.where(certain, pick(his), join_max(his, -big))
        return Discrete(lo.astype(value.dtype), hi.astype(value.dtype), value)

    inf = jnp.inf
    fields = {k: [getattr(x, k) for x in cases] for k in ("lo", "hi", "clo", "chi", "err")}
    picked = {k: pick(v) for k, v in fields.items()}
    lo = join_min(fields["lo"], inf)
    hi = join_max(fields["hi"], -inf)
    clo = join_min(fields["clo"], inf)
    chi = join_max(fields["chi"], -inf)
    spread = jnp.maximum(F.sub_up(chi, lo), F.sub_up(hi, clo))
    # a possible case whose computed value may be NaN makes the result possibly NaN
    spread = F.where(join_max(fields["err"], 0.0) == jnp.inf, jnp.inf, spread)
    return tighten(Real(
        F.where(certain, picked["lo"], lo),
        F.where(certain, picked["hi"], hi),
        F.where(certain, picked["clo"], clo),
        F.where(certain, picked["chi"], chi),
        F.where(certain, picked["err"], spread),
        value,
    ))


# ---------------------------------------------------------------------------
# convert_element_type
# ---------------------------------------------------------------------------


def _conversion_exact(src, dst) -> bool:
    return dst.precision >= src.precision and dst.emin <= src.emin and dst.max_finite >= src.max_finite


@register_rule(P("convert_element_type"))
def convert_rule(ctx, a, *, new_dtype, **_):
    value = ctx.value(a.value)
    adt = ctx.adt
    if isinstance(a, Real):
        if is_float_dtype(new_dtype):
            if ctx.override:
                return Real(a.lo, a.hi, a.clo, a.chi, a.err, value, exact=a.exact)
            src = F.format_of_dtype(ctx.eqn.invars[0].aval.dtype)
            dst = F.format_of_dtype(new_dtype)
            if _conversion_exact(src, dst):
                return Real(a.lo, a.hi, a.clo, a.chi, a.err, value, exact=a.exact)
            u = dst.unit_roundoff
            M = jnp.maximum(jnp.abs(a.clo), jnp.abs(a.chi))
            rho = F.add_up(F.scale_up(M, u), c(dst.underflow, adt))
            return Real(
                a.lo, a.hi, F.sub_dn(a.clo, rho), F.add_up(a.chi, rho), F.add_up(a.err, rho), value
            )
        # float -> int (truncation toward zero) or bool (x != 0)
        hlo, hhi = a.hull()
        if new_dtype == jnp.bool_:
            lo = (hhi < 0) | (hlo > 0)
            hi = jnp.logical_not((hlo == 0) & (hhi == 0))
            return Discrete(lo, hi, value)
        info = jnp.iinfo(new_dtype)
        out_of_range = (hlo < info.min) | (hhi > info.max) | jnp.isnan(hlo) | jnp.isnan(hhi)
        ctx.flag(out_of_range, f"float -> {np.dtype(new_dtype).name} conversion of a range outside the integer type")
        tlo = jnp.trunc(jnp.clip(hlo, info.min, info.max))
        thi = jnp.trunc(jnp.clip(hhi, info.min, info.max))
        lo = F.where(out_of_range, info.min, tlo).astype(new_dtype)
        hi = F.where(out_of_range, info.max, thi).astype(new_dtype)
        return Discrete(lo, hi, value)
    # from integer / bool
    if is_float_dtype(new_dtype):
        fmt = ctx.fmt
        lo = F.down(a.lo.astype(adt))
        hi = F.up(a.hi.astype(adt))
        certain = a.lo == a.hi
        M = jnp.maximum(jnp.abs(lo), jnp.abs(hi))
        rho = F.add_up(F.scale_up(M, fmt.unit_roundoff), c(fmt.underflow, adt))
        # an integer is exact in the format when |v| <= 2**p
        small = M <= 2.0 ** min(fmt.precision, 60)
        rho = F.where(small & (M <= fmt.max_finite), jnp.zeros_like(rho), rho)
        lo_e = F.where(small, a.lo.astype(adt), lo)
        hi_e = F.where(small, a.hi.astype(adt), hi)
        spread = F.sub_up(hi_e, lo_e)
        err = F.where(certain, rho, F.add_up(spread, rho))
        # an exactly converted integer (rho == 0) keeps its computed range: the outward
        # step of sub_dn/add_up would widen 0 to [-tiny, tiny] and make `x != 0` uncertain
        clo = F.where(rho == 0, lo_e, F.sub_dn(lo_e, rho))
        chi = F.where(rho == 0, hi_e, F.add_up(hi_e, rho))
        return Real(lo_e, hi_e, clo, chi, err, value)
    if new_dtype == jnp.bool_:
        lo = (a.lo > 0) | (a.hi < 0)
        hi = jnp.logical_not((a.lo == 0) & (a.hi == 0))
        return Discrete(lo, hi, value)
    return Discrete(a.lo.astype(new_dtype), a.hi.astype(new_dtype), value)


@register_rule(P("is_finite"))
def is_finite_rule(ctx, a, **_):
    value = ctx.value(a.value)
    fmt = ctx.fmt
    # the exact value is a real number, so "finite" is always possible
    finite = (a.clo >= -fmt.max_finite) & (a.chi <= fmt.max_finite)
    return Discrete(finite, jnp.ones_like(finite), value)
