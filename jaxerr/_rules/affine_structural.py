"""Affine rules for primitives that only move data.

A structural primitive is applied to the centre, the independent term and the
generator sums as they are, and to the generators with ``jax.vmap`` over the slot
axis: moving data commutes with the affine combination of symbols, and introduces
no rounding. The results get new independent symbols (their positions changed;
treating them as new is always sound).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .. import _compat
from .._domains.affine import Affine, Form
from .._domains.interval import Discrete
from . import interval_rules
from .affine_common import fallback, make, prep, register_affine
from .structural import _IDENTITY

P = _compat.prim


def _fstruct(bind, forms, K):
    if all(f.nil for f in forms):
        return Form.zero(bind(*[f.c for f in forms]))
    c = bind(*[f.c for f in forms])
    r = None
    if any(f.r is not None for f in forms):
        r = bind(*[jnp.zeros_like(f.c) if f.r is None else f.r for f in forms])
    G, gs = None, None
    if any(f.G is not None for f in forms):
        Gs = [jnp.zeros((K,) + tuple(jnp.shape(f.c)), f.c.dtype) if f.G is None else f.G for f in forms]
        G = jax.vmap(bind)(*Gs)
        gs = bind(*[jnp.zeros_like(f.c) if f.gs is None else f.gs for f in forms])
    return Form(c, G, r, gs)


def structural_rule(ctx, *operands, **params):
    prim = ctx.eqn.primitive
    if not isinstance(operands[0], Affine) or not all(isinstance(o, Affine) for o in operands):
        return fallback(interval_rules[prim])(ctx, *operands, **params)
    value = ctx.value(*[o.value for o in operands])
    ops = prep(ctx, *operands)
    K = ctx.config.state.K

    def bind(*xs):
        return prim.bind(*xs, **params)

    x = _fstruct(bind, [o.x for o in ops], K)
    e = _fstruct(bind, [o.e for o in ops], K)
    return make(ctx, x, e, value, *ops)


register_affine(
    P("broadcast_in_dim"),
    P("reshape"),
    P("transpose"),
    P("squeeze"),
    P("expand_dims"),
    P("concatenate"),
    P("slice"),
    P("rev"),
    P("pad"),
)(structural_rule)


@register_affine(*_IDENTITY)
def identity_rule(ctx, *operands, **params):
    vals = ctx.value(*[o.value for o in operands])
    if not ctx.eqn.primitive.multiple_results:
        vals = [vals]
    outs = []
    for o, v in zip(operands, vals):
        if isinstance(o, Affine):
            outs.append(Affine(o.x, o.e, v, o.stamp, o.boxed))
        else:
            outs.append(Discrete(o.lo, o.hi, v))
    return outs if ctx.eqn.primitive.multiple_results else outs[0]
