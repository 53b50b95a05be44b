"""reduce_window_sum / max / min and generic reduce_window (avg_pool, max_pool, min_pool).

A windowed sum of ``n`` terms (``n`` = window size; padding and base-dilation holes
contribute exact zeros) is bounded like ``reduce_sum``:
``|computed - exact| <= sum|dx_i| + a S + b Y + c``, where ``(a, b, c)`` covers both
the accumulation model and what XLA on CPU runs (one rounding in the output format
after every addition, in any order: ``gamma_{n-1}``; measured: a bfloat16
``reduce_window_sum`` rounds each addition). Windowed max/min are exact operations,
monotone and 1-Lipschitz in the max norm: the fields are reduced with the same
window. A generic ``reduce_window`` whose body is a single ``add``/``max``/``min`` is
the same computation with the initial value as one more term. Padding cells (edges and
base-dilation holes) are skipped, as XLA on CPU does (measured: ``reduce_window(x, 2.,
add, (2,), (1,), 'SAME')`` of ``[1, 2, 3, 4]`` ends in ``6 = 2 + 4``; the StableHLO
specification would pad with the initial value, which only matters for ``add`` with a
nonzero initial value and padding).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from .. import _compat
from .. import _formats as F
from .._domains.interval import Discrete, Real, mag
from . import register_rule
from ._common import (
    accumulation_coefficients,
    c,
    guard_partial_sums,
    nearest,
    partial_sums_overflow,
)

P = _compat.prim

_WINDOW_KEYS = ("window_dimensions", "window_strides", "padding", "base_dilation", "window_dilation")


def sum_coefficients(ctx, n: int) -> tuple[float, float, float]:
    """``(a, b, c)`` with ``|computed - exact| <= a S + b Y + c`` for a sum of ``n`` terms
    evaluated either under the accumulation model or, as XLA does for windowed and
    cumulative sums and scatter-add, with every addition rounded to the output format
    in any order (``gamma_{n-1} S + n eta``)."""
    ca, cb, cc = accumulation_coefficients(ctx, n, products=False)
    fmt = ctx.fmt
    g = F.gamma(max(n - 1, 0), fmt.unit_roundoff)
    if math.isinf(g) and not math.isinf(ca):
        ctx.flag(True, f"a sum of {n} terms with every addition rounded to {fmt.name} has no "
                       "worst-case bound (n*u >= 1): the error bound is inf")
    return max(ca, g), cb, max(cc, n * fmt.underflow)


def _wparams(params):
    return {k: params[k] for k in _WINDOW_KEYS}


def _wsum(x, wp):
    return P("reduce_window_sum").bind(x, **wp)


def window_sum_bounds(x, wp, n: int):
    """(lower, upper) bounds of the exact windowed sums of ``x`` computed in floats."""
    adt = x.dtype
    g = F.gamma(max(n, 1), float(np.finfo(adt).eps) / 2)
    s = _wsum(x, wp)
    a = _wsum(jnp.abs(x), wp)
    slack = F.add_up(F.scale_up(F.scale_up(a, 1.0 + 2 * g), g), c(2 * n * float(np.finfo(adt).tiny), adt))
    return F.sub_dn(s, slack), F.add_up(s, slack)


def _window_sum(ctx, a: Real, wp, n: int, value, init: Real | None = None) -> Real:
    """Windowed sum of ``a`` (``n`` terms per window), plus ``init`` as one more term."""
    n_terms = n + (1 if init is not None else 0)
    ca, cb, cc = sum_coefficients(ctx, n_terms)

    def up(x):
        return window_sum_bounds(x, wp, n)[1]

    lo, _ = window_sum_bounds(a.lo, wp, n)
    _, hi = window_sum_bounds(a.hi, wp, n)
    rlo, _ = window_sum_bounds(a.clo, wp, n)
    _, rhi = window_sum_bounds(a.chi, wp, n)
    S = up(mag(a.clo, a.chi))
    prop = None if a.exact else up(a.err)
    if init is not None:
        lo, hi = F.add_dn(lo, init.lo), F.add_up(hi, init.hi)
        rlo, rhi = F.add_dn(rlo, init.clo), F.add_up(rhi, init.chi)
        S = F.add_up_nn(S, mag(init.clo, init.chi))
        if not init.exact:
            prop = init.err if prop is None else F.add_up_nn(prop, init.err)
    rho = F.scale_up(S, ca)
    if cb != 0:
        rho = F.add_up(rho, nearest(mag(rlo, rhi), cb))
    rho = F.add_up(rho, c(cc if n_terms > 1 else 0.0, lo.dtype))
    err = rho if prop is None else F.add_up(prop, rho)
    clo, chi = F.sub_dn(rlo, rho), F.add_up(rhi, rho)
    if init is None:
        # terms all computed >= 0 (<= 0): the computed sum is too, in any order
        nonneg = P("reduce_window_min").bind(a.clo, **wp) >= 0
        nonpos = P("reduce_window_max").bind(a.chi, **wp) <= 0
        clo = F.where(nonneg, jnp.maximum(clo, 0.0), clo)
        chi = F.where(nonpos, jnp.minimum(chi, 0.0), chi)
    ovf = partial_sums_overflow(ctx, S, ca, cb, cc, in_format=True) if n_terms > 2 else None
    return guard_partial_sums(Real(lo, hi, clo, chi, err, value), ovf)


@register_rule(P("reduce_window_sum"))
def reduce_window_sum_rule(ctx, a, **params):
    value = ctx.value(a.value)
    wp = _wparams(params)
    if isinstance(a, Discrete):
        return Discrete(_wsum(a.lo, wp), _wsum(a.hi, wp), value)
    n = int(math.prod(wp["window_dimensions"]))
    return _window_sum(ctx, a, wp, n, value)


def _window_extreme(a, wp, prim, value, init=None):
    def red(x):
        return prim.bind(x, **wp)

    if isinstance(a, Discrete):
        lo, hi = red(a.lo), red(a.hi)
        if init is not None:
            comb = jnp.maximum if prim is P("reduce_window_max") else jnp.minimum
            lo, hi = comb(lo, init.lo), comb(hi, init.hi)
        return Discrete(lo, hi, value)
    fields = [red(getattr(a, f)) for f in ("lo", "hi", "clo", "chi")]
    # max of the errors over the window (1-Lipschitz); a window made only of padding
    # reads the identity (-inf / +inf) in every field and has no error
    err = jnp.maximum(P("reduce_window_max").bind(a.err, **wp), 0.0)
    if init is not None:
        comb = jnp.maximum if prim is P("reduce_window_max") else jnp.minimum
        fields = [comb(f, getattr(init, k)) for f, k in zip(fields, ("lo", "hi", "clo", "chi"))]
        err = jnp.maximum(err, init.err)
    return Real(*fields, err, value, exact=a.exact and (init is None or init.exact))


def _padding_only(ctx, out, is_max):
    """A window that covers only padding gives -inf (+inf): not a finite value, so no
    error bound (inf, with a diagnostic)."""
    if not isinstance(out, Real):
        return out
    empty = jnp.isinf(out.hi) & (out.hi < 0) if is_max else jnp.isinf(out.lo) & (out.lo > 0)
    ctx.flag(empty, "a window covers only padding: its result is infinite")
    return Real(out.lo, out.hi, out.clo, out.chi, F.where(empty, jnp.inf, out.err), out.value)


@register_rule(P("reduce_window_max"))
def reduce_window_max_rule(ctx, a, **params):
    out = _window_extreme(a, _wparams(params), P("reduce_window_max"), ctx.value(a.value))
    return _padding_only(ctx, out, True)


@register_rule(P("reduce_window_min"))
def reduce_window_min_rule(ctx, a, **params):
    out = _window_extreme(a, _wparams(params), P("reduce_window_min"), ctx.value(a.value))
    return _padding_only(ctx, out, False)


def _body_op(params):
    """The single primitive of a reduce_window body ``(acc, x) -> op(acc, x)``, or None."""
    body = params.get("jaxpr")
    jx = getattr(body, "jaxpr", body)
    if jx is None or len(jx.eqns) != 1 or len(jx.invars) != 2 or len(jx.outvars) != 1:
        return None
    (eqn,) = jx.eqns
    if eqn.outvars[0] is not jx.outvars[0] or set(eqn.invars) != set(jx.invars):
        return None
    if params.get("consts"):
        return None
    return eqn.primitive


@register_rule(P("reduce_window"))
def reduce_window_rule(ctx, *operands, **params):
    op = _body_op(params)
    supported = {P("add"): "add", P("max"): "max", P("min"): "min"}
    if len(operands) != 2 or op not in supported:
        raise NotImplementedError(
            f"{ctx.describe()}: jaxerr supports a generic reduce_window only with one operand "
            "and a body that is a single add, max or min (got "
            f"{len(operands) // 2} operand(s), body {params.get('jaxpr')}); use lax.reduce_window "
            "with lax.add / lax.max / lax.min, or register a rule with jaxerr.register_rule"
        )
    x, init = operands
    (value,) = ctx.value(x.value, init.value)
    wp = _wparams(params)
    if supported[op] == "add":
        if isinstance(x, Discrete):
            return [Discrete(_wsum(x.lo, wp) + init.lo, _wsum(x.hi, wp) + init.hi, value)]
        n = int(math.prod(wp["window_dimensions"]))
        return [_window_sum(ctx, x, wp, n, value, init=init)]
    prim = P("reduce_window_max") if supported[op] == "max" else P("reduce_window_min")
    return [_window_extreme(x, wp, prim, value, init=init)]
