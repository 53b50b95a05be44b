"""Affine rules for reduce_window_sum / max / min (``avg_pool``, ``max_pool``, ``min_pool``).

**Windowed sum** (linear): like ``reduce_sum`` in ``affine_linear``. The windowed sum of
a form is the form of the windowed sums: centre ``wsum(c)``, generators ``wsum(G[j])``
for every slot (``jax.vmap`` over the slot axis), independent term ``wsum(r)``
(independent symbols combine by magnitude); the analysis' own rounding of ``wsum(c)``
and ``wsum(G)`` (``gamma_n`` times the windowed sum of the magnitudes, rounded upward)
goes into the independent term. The error form is the windowed sum of the error form
plus the summation bound ``a S + b |z^| + c`` of ``windows.sum_coefficients`` (the
accumulation model, or every addition rounded to the format in any order, whichever is
larger, as for the interval rule), ``S`` the windowed sum of ``|x^|`` (inf where a
partial sum may overflow the format, ``_common.partial_sums_overflow``). Padding and
base-dilation holes contribute exact zeros. The operand's independent terms are
promoted to shared symbols first (when they fit in the budget).

**Windowed max / min** (exact operations, not linear): per output element, when the
window's maximum is attained by one element ``k`` for certain -- ``lo_k >= hi_j`` and
``clo_k >= chi_j`` for every other cell ``j`` of the window (exact and computed ranges),
so the exact and the computed executions both return cell ``k``'s value -- the result
is cell ``k``'s exact and error forms, symbols included (no rounding: the result *is*
that operand element). Everywhere else (an uncertain argmax, a window of padding only)
the interval rule's result on the operand's hull is used (``windows.py``: sound for
every point of the hull). Both claims are valid where they are used, so the choice per
element is sound; the selected element's independent term gets new independent symbols
(always sound).

Windows are gathered with static index arrays built from the window parameters at
trace time (``_patches``): for each output element and window cell, the flat index of
the operand element it reads, or none (padding, base-dilation holes).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from .. import _compat
from .. import _formats as F
from .._domains.affine import Form, fwhere, fwiden, tiny, u_an
from .._domains.interval import Discrete
from . import interval_rules
from ._common import c, nearest, partial_sums_overflow
from .affine_arith import _comp_mag
from .affine_common import fallback, make, prep, register_affine
from .affine_elementwise import computed_bounds
from .windows import _wparams, _wsum, sum_coefficients, window_sum_bounds

P = _compat.prim


# ---------------------------------------------------------------------------
# windowed sums
# ---------------------------------------------------------------------------


def _wup(x, wp, n: int):
    """Upper bound of the exact windowed sums of nonnegative ``x``."""
    return window_sum_bounds(x, wp, n)[1]


def fwsum(f: Form, wp, n: int) -> Form:
    """The windowed sum (``n`` cells per window) of a form, outward."""
    if f.nil:
        return Form.zero(_wsum(f.c, wp))
    adt = f.c.dtype
    g = F.gamma(max(n, 1), u_an(adt))
    cz = _wsum(f.c, wp)
    r = F.scale_up(_wup(jnp.abs(f.c), wp, n), g)
    G = None
    if f.G is not None:
        G = jax.vmap(lambda t: _wsum(t, wp))(f.G)
        K = G.shape[0]
        r = F.add_up_nn(r, F.add_up_nn(F.scale_up(_wup(f.gs, wp, n), g), c(K * 2 * n * tiny(adt), adt)))
    if f.r is not None:
        r = F.add_up_nn(r, _wup(f.r, wp, n))
    return Form(cz, G, r)


@register_affine(P("reduce_window_sum"))
def reduce_window_sum_rule(ctx, a, **params):
    if isinstance(a, Discrete):
        return fallback(interval_rules[P("reduce_window_sum")])(ctx, a, **params)
    value = ctx.value(a.value)
    wp = _wparams(params)
    n = int(math.prod(wp["window_dimensions"]))
    (a,) = prep(ctx, a, promote=(True,))
    ca, cb, cc = sum_coefficients(ctx, n)
    x = fwsum(a.x, wp, n)
    e = fwsum(a.e, wp, n)
    S = _wup(_comp_mag(a.x, a.e), wp, n)
    acc = F.scale_up(S, ca)
    if cb != 0:
        zmag = F.add_up_nn(F.add_up_nn(x.mag(), e.mag()), acc)
        acc = F.add_up_nn(acc, nearest(zmag, cb))
    acc = F.add_up_nn(acc, c(cc if n > 1 else 0.0, ctx.adt))
    # XLA rounds every partial windowed sum to the format: where one may overflow, no bound
    ovf = partial_sums_overflow(ctx, S, ca, cb, cc, in_format=True) if n > 2 else None
    if ovf is not None:
        acc = F.where(ovf, jnp.inf, acc)
    e = Form(e.c, None, acc) if e.nil else fwiden(e, acc)
    return make(ctx, x, e, value, a)


# ---------------------------------------------------------------------------
# windowed max / min
# ---------------------------------------------------------------------------


def _patches(shape: tuple, wp) -> tuple[np.ndarray, np.ndarray]:
    """``(idx, valid)`` of shape ``(*out_shape, W)``: the flat operand index each window
    cell reads, and whether it reads one (False: padding or a base-dilation hole)."""
    per_dim = []
    for s, w, st, (plo, phi), bd, wd in zip(shape, wp["window_dimensions"], wp["window_strides"],
                                           wp["padding"], wp["base_dilation"], wp["window_dilation"]):
        dil = (s - 1) * bd + 1 if s > 0 else 0
        padded = dil + plo + phi
        span = (w - 1) * wd + 1
        n_out = max(0, (padded - span) // st + 1)
        p = np.arange(n_out)[:, None] * st + np.arange(w)[None, :] * wd - plo  # (out, w)
        ok = (p >= 0) & (p < dil) & (p % bd == 0)
        per_dim.append((np.where(ok, p // bd, 0), ok))
    nd = len(shape)
    strides = [int(math.prod(shape[d + 1:])) for d in range(nd)]
    out_shape = tuple(pd[0].shape[0] for pd in per_dim)
    win = tuple(pd[0].shape[1] for pd in per_dim)
    idx = np.zeros(out_shape + win, np.int64)
    valid = np.ones(out_shape + win, bool)
    for d, (pos, ok) in enumerate(per_dim):
        view = [1] * (2 * nd)
        view[d] = pos.shape[0]
        view[nd + d] = pos.shape[1]
        idx = idx + pos.reshape(view) * strides[d]
        valid = valid & ok.reshape(view)
    W = int(math.prod(win))
    return idx.reshape(out_shape + (W,)), valid.reshape(out_shape + (W,))


def _select(f: Form, flat_idx) -> Form:
    """The form's elements at the (traced) flat indices ``flat_idx``."""
    if f.nil:
        return Form.zero(jnp.reshape(f.c, (-1,))[flat_idx])

    def take(t):
        return None if t is None else jnp.reshape(t, (-1,))[flat_idx]

    G = None
    if f.G is not None:
        K = f.G.shape[0]
        G = jnp.reshape(f.G, (K, -1))[:, flat_idx]
    return Form(take(f.c), G, take(f.r), take(f.gs))


def _window_extreme(ctx, a, is_max: bool, **params):
    prim = P("reduce_window_max") if is_max else P("reduce_window_min")
    base = fallback(interval_rules[prim])
    if isinstance(a, Discrete):
        return base(ctx, a, **params)
    (a,) = prep(ctx, a)
    # the interval result on the hull: used where the extreme cell is uncertain (it also
    # flags windows made only of padding)
    fb = base(ctx, a, **params)
    wp = _wparams(params)
    idx_np, valid_np = _patches(tuple(a.shape), wp)
    if idx_np.shape[:-1] != tuple(fb.shape):  # pragma: no cover - defensive
        return fb
    idx = jnp.asarray(idx_np)
    valid = jnp.asarray(valid_np)
    xl, xh = a.x.bounds()
    cl, ch = computed_bounds(a)
    if not is_max:  # min(x) = -max(-x)
        xl, xh, cl, ch = -xh, -xl, -ch, -cl

    def patch(t, fill):
        return F.where(valid, jnp.reshape(t, (-1,))[idx], jnp.full(idx.shape, fill, t.dtype))

    pl, ph, pcl, pch = (patch(t, -jnp.inf) for t in (xl, xh, cl, ch))
    k = jnp.argmax(pl, axis=-1)
    cells = jnp.arange(idx.shape[-1]).reshape((1,) * k.ndim + (idx.shape[-1],))
    one = cells == k[..., None]
    others_h = jnp.max(F.where(one, -jnp.inf, ph), axis=-1)
    others_ch = jnp.max(F.where(one, -jnp.inf, pch), axis=-1)
    kl = jnp.take_along_axis(pl, k[..., None], axis=-1)[..., 0]
    kcl = jnp.take_along_axis(pcl, k[..., None], axis=-1)[..., 0]
    k_valid = jnp.take_along_axis(valid, k[..., None], axis=-1)[..., 0]
    certain = k_valid & (kl >= others_h) & (kcl >= others_ch)
    flat = jnp.take_along_axis(idx, k[..., None], axis=-1)[..., 0]
    x = fwhere(certain, _select(a.x, flat), fb.x)
    e = fwhere(certain, _select(a.e, flat), fb.e)
    return make(ctx, x, e, fb.value, a)


@register_affine(P("reduce_window_max"))
def reduce_window_max_rule(ctx, a, **params):
    return _window_extreme(ctx, a, True, **params)


@register_affine(P("reduce_window_min"))
def reduce_window_min_rule(ctx, a, **params):
    return _window_extreme(ctx, a, False, **params)
