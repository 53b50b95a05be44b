"""``domain="affine"``: the interpreter run over :class:`~jaxerr._domains.affine.Affine` values.

The interpreter is the same equation loop as for intervals; this module only builds
the :class:`~jaxerr._interpreter.Domain` (rules, constant and finalize hooks), turns
the arguments into affine values (an ``Interval`` argument's box becomes one shared
symbol per element, when it fits in the budget) and the outputs back into intervals.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from . import _formats as F
from ._domains.affine import Affine, Form, Pool, from_real, prepare, shard_generators, to_real
from ._domains.interval import Real
from ._interpreter import Config, Ctx, DiagnosticCollector, Domain, interpret

DEFAULT_SYMBOLS = 1024


def _load_rules() -> dict[Any, Any]:
    from ._rules import (  # noqa: F401
        affine_arith,
        affine_conv,
        affine_elementwise,
        affine_linear,
        affine_structural,
        affine_windows,
        interval_rules,
    )
    from ._rules.affine_common import affine_rules, fallback

    return {p: affine_rules.get(p) or fallback(r) for p, r in interval_rules.items()}


def _sanitize(f: Form, bad: Any) -> Form:
    """Where ``bad`` (or where the form is not finite) nothing is known."""
    if f.nil:
        return f
    c = f.c
    rad = f.rad()
    bad = bad | ~jnp.isfinite(c) | jnp.isnan(rad)
    G = f.G
    if G is not None:
        G = F.where((bad | ~jnp.isfinite(f.gs))[None], jnp.zeros_like(G), G)
        gs = F.where(bad | ~jnp.isfinite(f.gs), jnp.zeros_like(f.gs), f.gs)
    else:
        gs = None
    r = jnp.zeros_like(c) if f.r is None else f.r
    r = F.where(bad | (f.gs is not None and ~jnp.isfinite(f.gs)) if f.gs is not None else bad,
                jnp.full_like(c, jnp.inf), r)
    c = F.where(bad, jnp.zeros_like(c), c)
    return Form(c, G, r, gs)


def _finalize(ctx: Ctx, aval: Any, out: Any, invals: list[Any]) -> Any:
    if not isinstance(out, Affine):
        return out
    out = shard_generators(out, ctx.config.state) if isinstance(ctx.config.state, Pool) else out
    from ._rules.affine_elementwise import computed_bounds
    from ._rules.structural import STRUCTURAL

    no = jnp.zeros(out.shape, bool)
    x = _sanitize(out.x, no)
    if out.exact:
        return Affine(x, out.e, out.value, out.stamp, out.boxed)
    big = ctx.fmt.max_finite
    clo, chi = computed_bounds(Affine(x, out.e, out.value))
    bad = (clo < -big) | (chi > big) | jnp.isnan(clo) | jnp.isnan(chi)
    if ctx.eqn.primitive not in STRUCTURAL:
        for v in invals:
            if isinstance(v, Affine) and not v.exact and (v.shape == out.shape or len(v.shape) == 0):
                bad = bad | jnp.isinf(v.e.mag())
    e = _sanitize(out.e, bad)
    return Affine(x, e, out.value, out.stamp, out.boxed)


def affine_outputs(jaxpr: Any, consts: list[Any], values: list[Any], config: Config,
                   diag: DiagnosticCollector, symbols: int, symbol_sharding: Any = None) -> list[Any]:
    """Interpret ``jaxpr`` in the affine domain; ``values`` are the interval domain's
    argument values. Returns intervals (Real) / Discrete values.

    ``symbol_sharding``: None, or ``(mesh, axis_name)``: every generator array (shape
    ``(symbols, ...)``) is constrained to be split along its symbol axis over that mesh
    axis, so that XLA's SPMD partitioner spreads the symbols over devices. The bounds
    are valid either way; the sums over the symbol axis (``gsum``) are then partial
    sums per device plus a cross-device reduction, whose rounding ``gsum``'s ``gamma_K``
    factor covers in any order."""
    from ._bound import DOMAIN as _INTERVAL
    from ._bound import _constant

    shard = None
    if symbol_sharding is not None:
        from ._compat import shard_leading_axis

        mesh, axis = symbol_sharding

        def shard(G):
            return shard_leading_axis(G, mesh, axis)

    pool = Pool(symbols, shard)
    cfg = dataclasses.replace(config, state=pool)

    def constant(val, aval, config_):
        r = _constant(val, aval, config_)
        return from_real(r, stamp=pool.T) if isinstance(r, Real) else r

    # control flow falls back to the interval rules on interval hulls: their bodies are
    # evaluated by the interval domain
    dom = Domain(rules=_load_rules(), constant=constant, finalize=_finalize, inner=_INTERVAL)
    args = []
    for v in values:
        if isinstance(v, Real):
            a = from_real(v, stamp=pool.T)
            if a.boxed:
                (a,) = prepare(pool, [a], [True])
            args.append(shard_generators(a, pool))
        else:
            args.append(v)
    outs = interpret(dom, jaxpr, consts, args, cfg, diag)
    return [to_real(o) if isinstance(o, Affine) else o for o in outs]
