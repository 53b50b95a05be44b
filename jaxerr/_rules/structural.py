"""Rules for primitives that only move, copy or index data.

A structural primitive is applied to every field of the value (range ends,
computed range ends, error, centre value) with the equation's own parameters:
moving data commutes with taking bounds, and it introduces no rounding.
Indexing with uncertain indices joins the whole operand (any element may be read).
"""

from __future__ import annotations

import jax.numpy as jnp

from .. import _compat
from .. import _formats as F
from .._domains.interval import Discrete, Real
from .._interpreter import is_float_dtype
from . import register_rule

P = _compat.prim

_REAL_FIELDS = ("lo", "hi", "clo", "chi", "err")


def _bind_fields(prim, operands, params):
    first = operands[0]
    if isinstance(first, Real):
        outs = {}
        for f in _REAL_FIELDS:
            outs[f] = prim.bind(*[getattr(o, f) for o in operands], **params)
        return outs
    return {f: prim.bind(*[getattr(o, f) for o in operands], **params) for f in ("lo", "hi")}


def structural(ctx, *operands, **params):
    prim = ctx.eqn.primitive
    value = ctx.value(*[o.value for o in operands])
    f = _bind_fields(prim, operands, params)
    if isinstance(operands[0], Real):
        exact = all(o.exact for o in operands)
        point = all(o.point for o in operands)
        return Real(f["lo"], f["hi"], f["clo"], f["chi"], f["err"], value, exact=exact, point=point)
    return Discrete(f["lo"], f["hi"], value)


#: Primitives that move data; their outputs are not elementwise functions of inputs
#: of the same shape, so the interpreter's elementwise NaN poisoning skips them.
STRUCTURAL: set = set()


def def_structural(*prims):
    """Register :func:`structural` for primitives that only move data."""
    register_rule(*prims)(structural)
    STRUCTURAL.update(p for p in prims if p is not None)


def_structural(
    P("broadcast_in_dim"),
    P("reshape"),
    P("transpose"),
    P("squeeze"),
    P("expand_dims"),
    P("concatenate"),
    P("slice"),
    P("rev"),
    P("pad"),
    P("stack"),  # jax >= 0.9: jnp.stack
)


@register_rule(P("split"))
def split_rule(ctx, operand, **params):
    """``split`` (jax >= 0.4.36: ``jnp.split``): each field split alike."""
    prim = ctx.eqn.primitive
    values = ctx.value(operand.value)
    if isinstance(operand, Real):
        parts = [prim.bind(getattr(operand, f), **params) for f in _REAL_FIELDS]
        return [Real(*fs, v, exact=operand.exact, point=operand.point) for *fs, v in zip(*parts, values)]
    los, his = prim.bind(operand.lo, **params), prim.bind(operand.hi, **params)
    return [Discrete(lo, hi, v) for lo, hi, v in zip(los, his, values)]


if P("split") is not None:
    STRUCTURAL.add(P("split"))

_IDENTITY = (P("copy"), P("copy_p"), P("stop_gradient"), P("optimization_barrier"),
             P("sharding_constraint"), P("device_put"), P("name"))


@register_rule(*_IDENTITY)
def identity_rule(ctx, *operands, **params):
    """Operations that return their operands unchanged."""
    vals = ctx.value(*[o.value for o in operands])
    if not ctx.eqn.primitive.multiple_results:
        vals = [vals]
    outs = []
    for o, v in zip(operands, vals):
        if isinstance(o, Real):
            outs.append(Real(o.lo, o.hi, o.clo, o.chi, o.err, v, exact=o.exact, point=o.point))
        else:
            outs.append(Discrete(o.lo, o.hi, v))
    return outs if ctx.eqn.primitive.multiple_results else outs[0]


@register_rule(P("iota"))
def iota_rule(ctx, **params):
    value = ctx.value()
    if is_float_dtype(value.dtype):
        v = value.astype(ctx.adt)
        return Real(v, v, v, v, jnp.zeros_like(v), value, exact=True, point=True)
    return Discrete(value, value, value)


# ---------------------------------------------------------------------------
# indexing with traced indices
# ---------------------------------------------------------------------------


def _join_all(x, shape, value):
    """Every element of x may end up in every output position."""
    if isinstance(x, Real):
        lo = jnp.full(shape, jnp.min(x.lo))
        hi = jnp.full(shape, jnp.max(x.hi))
        clo = jnp.full(shape, jnp.min(x.clo))
        chi = jnp.full(shape, jnp.max(x.chi))
        err = jnp.maximum(F.sub_up(chi, lo), F.sub_up(hi, clo))
        return Real(lo, hi, clo, chi, err, value)
    return Discrete(jnp.full(shape, jnp.min(x.lo)), jnp.full(shape, jnp.max(x.hi)), value)


def _where_certain(certain, a, b):
    if isinstance(a, Real):
        return Real(*(F.where(certain, getattr(a, f), getattr(b, f)) for f in _REAL_FIELDS), a.value)
    return Discrete(F.where(certain, a.lo, b.lo), F.where(certain, a.hi, b.hi), a.value)


def _indexed(ctx, operand, index_ops, params, extra=()):
    """Bind the indexing primitive on each field with the indices' centre values."""
    prim = ctx.eqn.primitive
    idx_vals = [i.value for i in index_ops]
    value = ctx.value(operand.value, *[e.value for e in extra], *idx_vals)
    fields = ("lo", "hi", "clo", "chi", "err") if isinstance(operand, Real) else ("lo", "hi")
    outs = {
        f: prim.bind(getattr(operand, f), *[getattr(e, f) for e in extra], *idx_vals, **params)
        for f in fields
    }
    certain = jnp.asarray(True)
    for i in index_ops:
        certain = certain & jnp.all(i.lo == i.hi)
    if isinstance(operand, Real):
        out = Real(outs["lo"], outs["hi"], outs["clo"], outs["chi"], outs["err"], value)
    else:
        out = Discrete(outs["lo"], outs["hi"], value)
    joined = _join_all(operand, value.shape, value)
    for e in extra:
        j2 = _join_all(e, value.shape, value)
        if isinstance(joined, Real):
            lo, hi = jnp.minimum(joined.lo, j2.lo), jnp.maximum(joined.hi, j2.hi)
            clo, chi = jnp.minimum(joined.clo, j2.clo), jnp.maximum(joined.chi, j2.chi)
            # the computed program may take an element of one operand where the exact
            # one takes the other's (fuzz seed 9061: the update written at another
            # index): the error spans the whole union, not each operand's own spread
            err = jnp.maximum(F.sub_up(chi, lo), F.sub_up(hi, clo))
            joined = Real(lo, hi, clo, chi, err, value)
    ctx.flag(~certain, "indices depend on uncertain values; every element may be read")
    return _where_certain(certain, out, joined)


STRUCTURAL.update(p for p in _IDENTITY if p is not None)
STRUCTURAL.update(p for p in (P("dynamic_slice"), P("dynamic_update_slice"), P("gather")) if p is not None)


@register_rule(P("dynamic_slice"))
def dynamic_slice_rule(ctx, operand, *idx, **params):
    return _indexed(ctx, operand, idx, params)


@register_rule(P("dynamic_update_slice"))
def dynamic_update_slice_rule(ctx, operand, update, *idx, **params):
    return _indexed(ctx, operand, idx, params, extra=(update,))


@register_rule(P("gather"))
def gather_rule(ctx, operand, indices, **params):
    return _indexed(ctx, operand, (indices,), params)
