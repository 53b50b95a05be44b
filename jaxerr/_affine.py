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
import numpy as np

from . import _compat
from . import _formats as F
from ._domains import affine as A
from ._domains.affine import Affine, Form, Pool, from_real, prepare, shard_generators, to_real
from ._domains.interval import Real
from ._interpreter import Config, Ctx, DiagnosticCollector, Domain, interpret

DEFAULT_SYMBOLS = 1024
# a value read by two or more equations gets its independent terms promoted to shared
# symbols (see :func:`_fanout_convert`) when it has at most K // FANOUT_DIVISOR elements
FANOUT_DIVISOR = 16


def _load_rules() -> dict[Any, Any]:
    from ._rules import (  # noqa: F401
        affine_arith,
        affine_control,
        affine_conv,
        affine_elementwise,
        affine_linear,
        affine_structural,
        affine_windows,
        interval_rules,
    )
    from ._rules.affine_common import affine_rules, fallback

    return {p: _reduced(affine_rules[p], r) if p in affine_rules else fallback(r)
            for p, r in interval_rules.items()}


def _reduced(arule: Any, irule: Any) -> Any:
    """The affine rule ``arule`` paired with the interval rule ``irule`` (the reduced
    product of the two domains): ``irule`` also runs on the operands' intervals
    (:func:`~jaxerr._domains.affine.to_real`: affine hull intersected with the operand's
    own interval claim), and its result rides along as the output's ``iv`` (finalized
    like the interval domain's by :func:`_finalize`). Both are valid claims about the
    same variable, so later rules may use whichever range is tighter (an affine product over
    a wide box can have a wider range than the interval product, and a square's range
    can even reach below 0). Diagnostics of the interval side are dropped: the affine
    rule reports its own."""

    def rule(ctx: Ctx, *operands: Any, **params: Any) -> Any:
        out = arule(ctx, *operands, **params)
        ivs = [to_real(o) if isinstance(o, Affine) else o for o in operands]
        quiet = dataclasses.replace(ctx, diag=DiagnosticCollector())
        iout = irule(quiet, *ivs, **params)
        multi = ctx.eqn.primitive.multiple_results
        outs = list(out) if multi else [out]
        iouts = list(iout) if multi else [iout]
        res = []
        for o, io in zip(outs, iouts):
            if isinstance(o, Affine) and isinstance(io, Real) and jnp.shape(io.lo) == o.shape:
                o = Affine(o.x, o.e, o.value, o.stamp, o.boxed, io)
            res.append(o)
        return res if multi else res[0]

    rule.__name__ = f"affine_reduced_{getattr(arule, '__name__', 'rule')}"
    rule.__wrapped__ = arule  # inspect.unwrap gives the affine rule itself
    return rule


def _sanitize(f: Form, bad: Any) -> Form:
    """Where ``bad`` (or where the form is not finite) nothing is known."""
    if f.nil:
        return f
    c = f.c
    rad = f.rad()
    bad = bad | ~jnp.isfinite(c) | jnp.isnan(rad)
    G = f.G
    if G is not None:
        G = A.zero_generators(G, bad | ~jnp.isfinite(f.gs))
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
    if out.iv is not None:
        from ._bound import DOMAIN as _INTERVAL

        quiet = dataclasses.replace(ctx, diag=DiagnosticCollector())
        ivs = [to_real(v) if isinstance(v, Affine) else v for v in invals]
        out = Affine(out.x, out.e, out.value, out.stamp, out.boxed, _INTERVAL.finalize(quiet, aval, out.iv, ivs))
    out = shard_generators(out, ctx.config.state) if isinstance(ctx.config.state, Pool) else out
    from ._rules.affine_elementwise import computed_bounds
    from ._rules.structural import STRUCTURAL

    no = jnp.zeros(out.shape, bool)
    x = _sanitize(out.x, no)
    if out.exact:
        return Affine(x, out.e, out.value, out.stamp, out.boxed, out.iv)
    big = ctx.fmt.max_finite
    clo, chi = computed_bounds(Affine(x, out.e, out.value))
    bad = (clo < -big) | (chi > big) | jnp.isnan(clo) | jnp.isnan(chi)
    if ctx.eqn.primitive not in STRUCTURAL:
        for v in invals:
            if isinstance(v, Affine) and not v.exact and (v.shape == out.shape or len(v.shape) == 0):
                bad = bad | jnp.isinf(v.e.mag())
    e = _sanitize(out.e, bad)
    iv = out.iv
    if iv is not None and not e.nil and jnp.shape(iv.err) == tuple(out.shape):
        # where the error form knows nothing (an infinite event upstream, e.g. Flax's
        # finfo(float32).min mask in bfloat16) but the interval companion bounds the
        # error (exp of a computed -inf is 0), go on with a fresh independent term
        reseed = (iv.err < jnp.inf) & ~(e.rad() < jnp.inf)
        e = A.fwhere(reseed, Form(jnp.zeros_like(e.c), None, iv.err.astype(e.c.dtype)), e)
    return Affine(x, e, out.value, out.stamp, out.boxed, out.iv)


def use_counts(jaxpr: Any, counts: dict[int, int] | None = None, keep: list[Any] | None = None) -> dict[int, int]:
    """``id(var) -> number of operand slots that read it`` over ``jaxpr`` and the bodies
    of its call equations (a body's invar counts the uses of the outer operand too, so
    a value shared between a call and another equation is seen as shared inside the
    call). ``keep`` holds the vars alive while the ids are in use."""
    counts = {} if counts is None else counts
    keep = [] if keep is None else keep
    for eqn in jaxpr.eqns:
        for v in eqn.invars:
            if isinstance(v, _compat.Literal):
                continue
            keep.append(v)
            counts[id(v)] = counts.get(id(v), 0) + 1
    for eqn in jaxpr.eqns:
        sub = _compat.call_subjaxpr(eqn)
        if sub is None:
            continue
        body = sub[0]
        inner = use_counts(body, None, keep)
        for outer, iv in zip(eqn.invars, body.invars):
            keep.append(iv)
            extra = 0 if isinstance(outer, _compat.Literal) else counts.get(id(outer), 0) - 1
            inner[id(iv)] = inner.get(id(iv), 0) + max(extra, 0)
        counts.update(inner)
    return counts


def _fanout_convert(counts: dict[int, int], pool: Pool):
    """The domain's ``convert`` hook: an operand whose variable is read by two or more
    equations (or twice by one) has its independent terms turned into shared symbols
    before the rule sees it (:func:`~jaxerr._domains.affine.prepare`, memoised per
    value, so every reader gets the same symbols).

    Why: an independent term stands for a number that is free *per use*; combining two
    uses of one variable by magnitude (``t / (t + 1)``: the rounding of the input ``t``
    in the numerator and the denominator) loses the cancellation between them. Every
    correlation between two operands of an equation comes from some variable with two
    readers, so promoting exactly those keeps all of them while spending symbols only
    where they can pay off. Exact: promotion replaces ``r xi`` by ``r eps`` with a
    fresh shared ``eps``, the same set of values. Values of more than
    ``K // FANOUT_DIVISOR`` elements are left alone (symbol budget)."""
    cap = max(1, pool.K // FANOUT_DIVISOR)

    def convert(ctx: Ctx, invals: list[Any]) -> list[Any]:
        out = list(invals)
        for i, (v, var) in enumerate(zip(invals, ctx.eqn.invars)):
            if not isinstance(v, Affine) or isinstance(var, _compat.Literal):
                continue
            if counts.get(id(var), 0) < 2:
                continue
            n = int(np.prod(v.shape)) if v.shape else 1
            if n > cap:
                continue
            want_x = v.boxed and v.x.r is not None
            want_e = (not v.e.nil) and v.e.r is not None
            if want_x or want_e:
                (out[i],) = prepare(pool, [v], [True])
        return out

    return convert


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
        if not isinstance(r, Real):
            return r
        a = from_real(r, stamp=pool.T)
        return Affine(a.x, a.e, a.value, a.stamp, a.boxed, r)

    # scan, while and cond bodies run in this domain (_rules/affine_control.py); the
    # interval rules they also run (a while condition, cond's join) evaluate bodies in
    # the interval domain (``inner``)
    keep: list[Any] = []
    counts = use_counts(jaxpr, None, keep)
    dom = Domain(rules=_load_rules(), constant=constant, finalize=_finalize, inner=_INTERVAL,
                 convert=_fanout_convert(counts, pool))
    args = []
    for v in values:
        if isinstance(v, Real):
            a = from_real(v, stamp=pool.T)
            a = Affine(a.x, a.e, a.value, a.stamp, a.boxed, v)
            if a.boxed:
                (a,) = prepare(pool, [a], [True])
            args.append(shard_generators(a, pool))
        else:
            args.append(v)
    outs = interpret(dom, jaxpr, consts, args, cfg, diag)
    return [to_real(o) if isinstance(o, Affine) else o for o in outs]
