"""scatter-add, scatter, scatter-min/max (``x.at[i].add/set/min/max(u)``), and split.

``scatter-add`` with certain indices: each output element is its operand element plus
the ``m`` updates sent to it (``m`` counted by scattering ones), summed with ``m``
additions, each rounded to the output format, in some order (XLA on CPU applies the
updates one by one): ``|computed - exact| <= sum|dx_i| + gamma_m S + m eta`` with
``S`` the sum of the computed magnitudes. With uncertain indices the result is not
bounded (inf and a diagnostic).

``scatter`` (set) with certain indices moves data; where several updates go to one
place the winner is unspecified, so every field takes the hull over those updates
(a ``scatter-min`` / ``scatter-max`` after the ``scatter``). With uncertain indices,
an element may be its operand or any update: the hull of both, error the spread.
"""

from __future__ import annotations

import jax.lax as lax
import jax.numpy as jnp
import numpy as np

from .. import _compat
from .. import _formats as F
from .._domains.interval import Discrete, Real, mag
from . import register_rule
from ._common import c, guard_partial_sums, invalid, partial_sums_overflow
from .structural import STRUCTURAL

P = _compat.prim


def _sargs(params):
    return dict(dimension_numbers=params["dimension_numbers"],
                indices_are_sorted=params.get("indices_are_sorted", False),
                unique_indices=params.get("unique_indices", False),
                mode=params.get("mode"))


def _certain(idx: Discrete):
    return jnp.all(idx.lo == idx.hi)


@register_rule(P("scatter-add"), P("scatter_add"))
def scatter_add_rule(ctx, operand, indices, updates, **params):
    value = ctx.value(operand.value, indices.value, updates.value)
    kw = _sargs(params)
    iv = indices.value

    def sa(x, u):
        return lax.scatter_add(x, iv, u, **kw)

    certain = _certain(indices)
    if isinstance(operand, Discrete):
        lo, hi = sa(operand.lo, updates.lo), sa(operand.hi, updates.hi)
        info = jnp.iinfo(value.dtype)
        return Discrete(F.where(certain, lo, info.min), F.where(certain, hi, info.max), value)
    adt = ctx.adt
    m_max = int(np.prod(jnp.shape(updates.lo))) + 1  # static bound on terms per output
    g_an = F.gamma(m_max, float(np.finfo(adt).eps) / 2)
    slack_c = c(2 * m_max * float(np.finfo(adt).tiny), adt)

    def bounds(x, u):
        s = sa(x, u)
        a = sa(jnp.abs(x), jnp.abs(u))
        slack = F.add_up(F.scale_up(F.scale_up(a, 1.0 + 2 * g_an), g_an), slack_c)
        return F.sub_dn(s, slack), F.add_up(s, slack)

    lo, _ = bounds(operand.lo, updates.lo)
    _, hi = bounds(operand.hi, updates.hi)
    rlo, _ = bounds(operand.clo, updates.clo)
    _, rhi = bounds(operand.chi, updates.chi)
    S = bounds(mag(operand.clo, operand.chi), mag(updates.clo, updates.chi))[1]
    # number of additions into each output element (exact small integers)
    cnt = sa(jnp.zeros_like(operand.lo), jnp.ones_like(updates.lo))
    fmt = ctx.fmt
    nu = F.scale_up(cnt, fmt.unit_roundoff)
    den = F.sub_dn(jnp.ones_like(nu), nu)
    gam = F.where(den > 0, F.div_up(nu, jnp.maximum(den, F.static_up(1e-30, adt))), jnp.inf)
    gam = F.where(cnt == 0, 0.0, gam)
    ctx.flag(den <= 0, f"scatter-add of too many updates into one element for {fmt.name} "
                       "(m*u >= 1): the error bound is inf")
    rho = F.add_up_nn(F.where(S == 0, 0.0, F.mul_up(S, gam)), F.scale_up(cnt, fmt.underflow))
    err = rho
    if not (operand.exact and updates.exact):
        err = F.add_up_nn(bounds(operand.err, updates.err)[1], rho)
    out = Real(lo, hi, F.sub_dn(rlo, rho), F.add_up(rhi, rho), err, value)
    # the running sums are rounded to the format: each is at most S (1 + gamma) + c
    out = guard_partial_sums(out, partial_sums_overflow(ctx, S, gam, 0.0, float(m_max * fmt.underflow),
                                                        in_format=True))
    bad = jnp.broadcast_to(~certain, jnp.shape(lo))
    return invalid(ctx, bad, out, "scatter-add indices depend on uncertain values")


@register_rule(P("scatter"))
def scatter_rule(ctx, operand, indices, updates, **params):
    value = ctx.value(operand.value, indices.value, updates.value)
    kw = _sargs(params)
    iv = indices.value

    def put(x, u, combine):
        y = lax.scatter(x, iv, u, **kw)
        return combine(y, iv, u, **kw)

    def lower(x, u):
        return put(x, u, lax.scatter_min)

    def upper(x, u):
        return put(x, u, lax.scatter_max)

    certain = _certain(indices)

    if isinstance(operand, Discrete):
        lo = F.where(certain, lower(operand.lo, updates.lo), _min_all(operand.lo, updates.lo))
        hi = F.where(certain, upper(operand.hi, updates.hi), _max_all(operand.hi, updates.hi))
        return Discrete(lo, hi, value)
    lo = lower(operand.lo, updates.lo)
    hi = upper(operand.hi, updates.hi)
    clo = lower(operand.clo, updates.clo)
    chi = upper(operand.chi, updates.chi)
    err = upper(operand.err, updates.err)
    # uncertain indices: the operand element or any update
    jlo, jhi = _min_all(operand.lo, updates.lo), _max_all(operand.hi, updates.hi)
    jclo, jchi = _min_all(operand.clo, updates.clo), _max_all(operand.chi, updates.chi)
    jerr = jnp.maximum(F.sub_up(jchi, jlo), F.sub_up(jhi, jclo))
    jerr = F.where(jnp.isinf(_max_all(operand.err, updates.err)), jnp.inf, jerr)
    ctx.flag(~certain, "scatter indices depend on uncertain values; every update may land anywhere")
    sel = [F.where(certain, a, b) for a, b in ((lo, jlo), (hi, jhi), (clo, jclo), (chi, jchi), (err, jerr))]
    return Real(*sel, value, exact=operand.exact and updates.exact)


@register_rule(P("scatter_min"), P("scatter_max"))
def scatter_extreme_rule(ctx, operand, indices, updates, **params):
    """``x.at[i].min(u)`` / ``.max(u)``: exact, monotone and 1-Lipschitz in the max norm
    (every field combined the same way, errors by their maximum); uncertain indices:
    inf and a diagnostic."""
    value = ctx.value(operand.value, indices.value, updates.value)
    kw = _sargs(params)
    iv = indices.value
    op = lax.scatter_min if ctx.eqn.primitive is P("scatter_min") else lax.scatter_max
    certain = _certain(indices)
    if isinstance(operand, Discrete):
        info = jnp.iinfo(value.dtype)
        return Discrete(F.where(certain, op(operand.lo, iv, updates.lo, **kw), info.min),
                        F.where(certain, op(operand.hi, iv, updates.hi, **kw), info.max), value)
    fields = [op(getattr(operand, f), iv, getattr(updates, f), **kw) for f in ("lo", "hi", "clo", "chi")]
    err = lax.scatter_max(operand.err, iv, updates.err, **kw)
    out = Real(*fields, err, value, exact=operand.exact and updates.exact)
    bad = jnp.broadcast_to(~certain, jnp.shape(out.lo))
    return invalid(ctx, bad, out, "scatter-min/max indices depend on uncertain values")


def _min_all(x, u):
    return jnp.minimum(x, jnp.min(u))


def _max_all(x, u):
    return jnp.maximum(x, jnp.max(u))


@register_rule(P("split"))
def split_rule(ctx, operand, **params):
    prim = P("split")
    values = ctx.value(operand.value)
    if isinstance(operand, Real):
        parts = {f: prim.bind(getattr(operand, f), **params) for f in ("lo", "hi", "clo", "chi", "err")}
        return [Real(*(parts[f][i] for f in ("lo", "hi", "clo", "chi", "err")), v,
                     exact=operand.exact, point=operand.point) for i, v in enumerate(values)]
    parts = {f: prim.bind(getattr(operand, f), **params) for f in ("lo", "hi")}
    return [Discrete(parts["lo"][i], parts["hi"][i], v) for i, v in enumerate(values)]


if P("split") is not None:
    STRUCTURAL.add(P("split"))
