"""First-order sensitivity rules of the layer primitives (see ``sensitivity.py``).

* ``conv_general_dilated``: bilinear, like ``dot_general``: the transpose (JAX's own
  vjp) at the midpoint of the other operand's path range, its radius and the float
  error of the transpose added to the radius.
* ``reduce_window_sum``, ``cumsum``, ``scatter-add``, ``split``: linear (0/1 maps).
* ``reduce_window_max`` / ``_min``: the Clarke gradient of each window's max: weight 1
  on the element that is certainly the window's extreme, ``[0, 1]`` on every element
  that may be (per window: an element can win one window and not another).
* ``sort`` / ``top_k``: a permutation where the order is certain on the whole path
  range (the interval rule's test), else the row is *cut*.
* ``scatter`` (set): linear when the indices are unique and certain, else cut.
* No rule (always a sound cut): ``cummax``, ``cummin``, ``cumprod``, generic
  ``reduce_window``.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.lax as lax
import jax.numpy as jnp
import numpy as np

from .. import _compat
from .._domains import first_order as C
from .._domains.first_order import Cot
from .._domains.interval import Real
from .conv import conv_params
from .sensitivity import _linear_transpose, bilinear_cot, linear_rule, register_sensitivity
from .sorting import _hull, _ordered, _take

P = _compat.prim


# ---------------------------------------------------------------------------
# conv_general_dilated
# ---------------------------------------------------------------------------


@register_sensitivity(P("conv_general_dilated"))
def conv_rule(ctx, gs, ins, outs, **params):
    g = gs[0]
    a, b = ins
    if not (isinstance(a, Real) and isinstance(b, Real)):
        return [None, None], jnp.ones(jnp.shape(outs[0].lo), bool)
    adt = ctx.adt
    cp = conv_params(params, adt)
    dn = params["dimension_numbers"]
    bshape, oshape = jnp.shape(b.lo), jnp.shape(outs[0].lo)

    def conv(x, y):
        return P("conv_general_dilated").bind(x, y, **cp)

    def transpose(k, other, cot):
        if k == 0:
            _, vjp = jax.vjp(lambda x: conv(x, other), jnp.zeros(jnp.shape(a.lo), adt))
        else:
            _, vjp = jax.vjp(lambda y: conv(other, y), jnp.zeros(bshape, adt))
        return vjp(cot.astype(adt))[0]

    # terms summed into one transposed entry
    n_lhs = max(1, int(np.prod(bshape)) // max(1, bshape[dn.rhs_spec[1]]))
    n_rhs = max(1, int(np.prod(oshape)) // max(1, oshape[dn.out_spec[1]]) * int(params.get("batch_group_count", 1)))

    segs = getattr(ctx, "segments", None) or [None, None]

    def cot_for(k, other: Real):
        n = n_lhs if k == 0 else n_rhs
        return bilinear_cot(g, other, lambda oth, cot: transpose(k, oth, cot), n, adt, segs[1 - k])

    return [cot_for(0, b) if ctx.need[0] else None, cot_for(1, a) if ctx.need[1] else None], None


# ---------------------------------------------------------------------------
# windows and prefix sums: linear
# ---------------------------------------------------------------------------


def _linear_sum_rule(n_sum_of):
    """A rule for a primitive linear in its single floating operand whose transpose
    sums at most ``n_sum_of(params, in_shape)`` cotangent entries per input entry."""

    def rule(ctx, gs, ins, outs, **params):
        if not isinstance(ins[0], Real) or not ctx.need[0]:
            return [None] * len(ins), None
        _, T = _linear_transpose(ctx, ins, params)
        n = n_sum_of(params, jnp.shape(ins[0].lo))
        return [C.linear(gs[0], lambda t: T(t, 0), n)] + [None] * (len(ins) - 1), None

    return rule


register_sensitivity(P("reduce_window_sum"))(
    _linear_sum_rule(lambda p, s: int(math.prod(p["window_dimensions"]))))
register_sensitivity(P("cumsum"))(_linear_sum_rule(lambda p, s: int(s[p["axis"]])))
register_sensitivity(P("scatter-add"), P("scatter_add"))(linear_rule)


@register_sensitivity(P("scatter"))
def scatter_rule(ctx, gs, ins, outs, *, unique_indices=False, **params):
    if unique_indices:
        return linear_rule(ctx, gs, ins, outs, unique_indices=unique_indices, **params)
    # duplicate indices: which update wins is unspecified; cut
    return [None] * len(ins), jnp.ones(jnp.shape(outs[0].lo), bool)


@register_sensitivity(P("split"))
def split_rule(ctx, gs, ins, outs, *, axis, **_):
    parts_mid, parts_rad = [], []
    for g, o in zip(gs, outs):
        shape = jnp.shape(o.lo)
        if g is None:
            z = jnp.zeros(shape, ctx.adt)
            parts_mid.append(z)
            parts_rad.append(z)
        else:
            parts_mid.append(g.mid)
            parts_rad.append(g.rad)
    return [Cot(jnp.concatenate(parts_mid, axis=axis), jnp.concatenate(parts_rad, axis=axis))], None


# ---------------------------------------------------------------------------
# windowed max / min: per-window Clarke gradient
# ---------------------------------------------------------------------------


def _patches(x, params, fill):
    """The window elements of every output, stacked on a new leading axis (W, *out)."""
    wd, ws = params["window_dimensions"], params["window_strides"]
    pad, bd, wdl = params["padding"], params["base_dilation"], params["window_dilation"]
    cfg = [(lo, hi, d - 1) for (lo, hi), d in zip(pad, bd)]
    xp = lax.pad(x, jnp.asarray(fill, x.dtype), cfg)
    out_shape = [(xp.shape[i] - (wd[i] - 1) * wdl[i] - 1) // ws[i] + 1 for i in range(x.ndim)]
    slices = []
    for off in itertools.product(*[range(w) for w in wd]):
        start = [o * d for o, d in zip(off, wdl)]
        limit = [s + (n - 1) * st + 1 for s, n, st in zip(start, out_shape, ws)]
        slices.append(lax.slice(xp, start, limit, ws))
    return jnp.stack(slices)


def _window_extreme_rule(is_max):
    def rule(ctx, gs, ins, outs, **params):
        a, o, g = ins[0], outs[0], gs[0]
        if not isinstance(a, Real):
            return [None], None
        adt = ctx.adt
        W = int(math.prod(params["window_dimensions"]))
        if is_max:
            hi = _patches(a.hi, params, -jnp.inf)
            possible = hi >= o.lo[None]
        else:
            lo = _patches(a.lo, params, jnp.inf)
            possible = lo <= o.hi[None]
        certain = possible & (jnp.sum(possible, axis=0) == 1)[None]
        gb = Cot(jnp.broadcast_to(g.mid[None], possible.shape), jnp.broadcast_to(g.rad[None], possible.shape))
        pc = C.unit_interval(gb, certain, possible)
        zero = jnp.zeros(jnp.shape(a.lo), adt)
        _, vjp = jax.vjp(lambda x: _patches(x, params, 0.0), zero)
        return [C.linear(pc, lambda t: vjp(t.astype(adt))[0], W)], None

    return rule


register_sensitivity(P("reduce_window_max"))(_window_extreme_rule(True))
register_sensitivity(P("reduce_window_min"))(_window_extreme_rule(False))


# ---------------------------------------------------------------------------
# sort and top_k: permutations where the order is certain
# ---------------------------------------------------------------------------


def _unpermute(g: Cot | None, perm, keep, axis, shape, adt) -> Cot | None:
    """The cotangent of the operand of ``y = take_along_axis(x, perm)`` (a permutation
    or an injective selection along ``axis``), zero where not ``keep``."""
    if g is None:
        return None
    g = C.mask(g, keep)

    def T(t):
        _, vjp = jax.vjp(lambda x: jnp.take_along_axis(x, perm, axis=axis), jnp.zeros(shape, adt))
        return vjp(t.astype(adt))[0]

    return C.linear(g, T, 1)


@register_sensitivity(P("sort"))
def sort_rule(ctx, gs, ins, outs, *, dimension, is_stable=False, num_keys=1, **_):
    axis = int(dimension)
    key = ins[0]
    shape = tuple(jnp.shape(key.lo))
    iota = lax.broadcasted_iota(jnp.int32, shape, axis)
    perm = lax.sort([x.value for x in ins[:num_keys]] + [iota], dimension=axis,
                    is_stable=is_stable, num_keys=num_keys)[-1]
    hl, hh = _hull(key)
    if shape[axis] > 1:
        ok = _ordered(_take(hl, perm, axis), _take(hh, perm, axis), axis,
                      stable_ties=bool(is_stable) and num_keys == 1, descending=False)
        certain = jnp.all(ok, axis=axis, keepdims=True)
    else:
        certain = jnp.ones(shape[:axis] + (1,) + shape[axis + 1:], bool)
    keep = jnp.broadcast_to(certain, shape)
    cots = []
    for i, (x, g) in enumerate(zip(ins, gs)):
        if isinstance(x, Real) and ctx.need[i]:
            cots.append(_unpermute(g, perm, keep, axis, shape, ctx.adt))
        else:
            cots.append(None)
    return cots, ~keep


@register_sensitivity(P("top_k"))
def top_k_rule(ctx, gs, ins, outs, *, k, axis=-1, **_):
    a = ins[0]
    if not isinstance(a, Real) or gs[0] is None:
        return [None], None
    # the interval rule's certainty test, on the path ranges
    from .sorting import top_k_rule as _interval_top_k

    class _Ctx:  # the interval rule needs the centre values and a diagnostics sink
        def value(self, v):
            return ctx.value(v)

        def flag(self, *_a, **_k):
            pass

    _, idx = _interval_top_k(_Ctx(), a, k=k, axis=axis)
    certain = idx.lo == idx.hi
    nd = len(jnp.shape(a.lo))
    ax = int(axis) % nd
    return [_unpermute(gs[0], idx.value.astype(jnp.int32), certain, ax, jnp.shape(a.lo), ctx.adt)], ~certain
