"""Affine rule for ``lax.scan`` (``nn.scan``, ``nn.RNN``, ``fori_loop`` with static bounds):
loop-carried affine forms with a fixed symbol budget.

The body is evaluated by the affine domain itself, once per iteration, inside a
``lax.scan`` of the analysis (no unrolling: the compiled analysis stays the size of one
body). The carry is an :class:`~jaxerr._domains.affine.Affine` over the same ``K``
shared slots as the rest of the program, so input symbols (an ``Interval`` argument's
box) and the rounding errors promoted before the loop keep their signs through every
iteration, and within one iteration the body's own promotions keep theirs.

**Soundness.** Let ``T0`` be the pool counter when the loop starts. Tracing the body
once allocates the slots ``[T0, T1)`` (mod ``K``) for the symbols it creates; every
iteration re-uses these slot numbers for *new* symbols. At the end of the body, every
output (carry and ``ys`` slice) has those slots folded into its independent term
(:func:`~jaxerr._domains.affine.fold`: sound for any values of the symbols), so no value
that leaves an iteration mentions a symbol of that iteration; the slots outside
``[T0, T1)`` still hold the symbols they held before the loop (values from outside the
loop are synced as usual when the body reads them). Each iteration therefore applies
the body's affine transformer to a valid claim about the carry and gives a valid
claim about the next carry; by induction the final carry and every ``ys`` slice are
enclosed. Independent terms of the carry are fresh symbols in every iteration (the
carry's forms get one static tag per position, and no value but the carry can reach
the next iteration), which is always sound: it only forgets correlations.

The static facts of a loop-carried value are normalised (full shape, every generator
and independent array present, no ``exact``/``nil`` flags, fixed tags and stamp) so
that the carry has one pytree structure in every iteration; dropping them is sound.
Diagnostics raised inside the body come back as flags OR-ed over the iterations, as in
the interval rule (:func:`~jaxerr._rules.control_flow.scan_rule`).

``while_loop`` (``fori_loop`` with traced bounds) works the same way inside a
``lax.while_loop`` of the analysis; its condition is evaluated by the interval domain
on the hulls of the loop state, and the loop runs while it is *certainly* true, as in
the interval rule (:func:`~jaxerr._rules.control_flow.while_rule`): if it may be true
when the loop stops, the exact and the computed execution may run different numbers of
iterations and every output is unbounded, with the interval rule's diagnostic.
``cond``/``switch``: every branch is evaluated by the affine domain on the operands'
forms (one after the other, as straight-line code: the slots a branch allocates are
synced like any other), and by the interval rule on their hulls
(:func:`~jaxerr._rules.control_flow.cond_rule`, which also clamps the index and raises
the diagnostics). Where the index is certain at run time, the exact and the computed
execution both take branch ``i`` and the output is branch ``i``'s affine value (its
forms are a valid claim about that branch's outputs, the other branches' forms are not
read). Where it is uncertain, the output is the interval rule's join, as independent
terms (sound; the correlations with the rest of the program are lost there). The
interval join is the output's interval claim in both cases.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.lax as lax
import jax.numpy as jnp
import numpy as np

from .. import _compat
from .._domains import affine as A
from .._domains.affine import Affine, Form, fold, fresh_tag, gsum, sync, to_real
from .._domains.interval import Discrete, Real
from .._interpreter import DiagnosticCollector, interpret
from .affine_common import invalid, register_affine, to_interval
from .affine_common import pool as _pool
from .control_flow import (
    UNCERTAIN_WHILE,
    _add_flags,
    _flags,
    _loose,
    _run,
    _strong,
    _sub_diag,
    _unbounded,
    cond_rule,
)


def _canon_form(f: Form, shape: tuple, adt: Any, K: int, tag: int) -> Form:
    """``f`` with every array present at full shape and the static facts fixed
    (``tag``, sign +1, not nil): the same set of values, one pytree structure."""
    if f.nil:
        z = jnp.zeros(shape, adt)
        return Form(z, jnp.zeros((K,) + shape, adt), z, z, tag=tag, sgn=1, nil=False)
    c = _strong(f.c, adt, shape)
    if f.G is None:
        G = jnp.zeros((K,) + shape, adt)
        gs = jnp.zeros(shape, adt)
    else:
        G = _strong(f.G, adt, (K,) + shape)
        gs = _strong(f.gs if f.gs is not None else gsum(f.G), adt, shape)
    r = jnp.zeros(shape, adt) if f.r is None else _strong(f.r, adt, shape)
    return Form(c, G, r, gs, tag=tag, sgn=1, nil=False)


def _canon(v: Any, aval: Any, ref: Any, adt: Any, K: int, tags: tuple[int, int],
           stamp: int, boxed: bool) -> Any:
    """A loop-carried value: an :class:`Affine` with full arrays, fixed tags, ``stamp``
    and ``boxed``; its interval claim is the hull of the forms met with its own claim
    (flags dropped). Discrete values as in the interval rule."""
    shape = tuple(aval.shape)
    if isinstance(v, Discrete):
        return _loose(v, aval, aval.dtype, adt)
    if isinstance(v, Real):  # a float value that some rule left as an interval
        v = A.from_real(v, stamp=stamp)
        v = Affine(v.x, v.e, v.value, v.stamp, v.boxed, None)
    vdt = ref.value.dtype if isinstance(ref, (Affine, Real)) else aval.dtype
    iv = _loose(to_real(v), aval, vdt, adt)
    x = _canon_form(v.x, shape, adt, K, tags[0])
    e = _canon_form(v.e, shape, adt, K, tags[1])
    return Affine(x, e, _strong(v.value, vdt, shape), stamp, boxed, iv)


def _retag(v: Any) -> Any:
    """``v`` with fresh tags on its forms' independent terms (sound: a fresh tag
    shares its symbols with nothing)."""
    if not isinstance(v, Affine):
        return v

    def one(f: Form) -> Form:
        if f.r is None:
            return f
        return Form(f.c, f.G, f.r, f.gs, tag=fresh_tag(), sgn=1, nil=f.nil)

    return Affine(one(v.x), one(v.e), v.value, v.stamp, v.boxed, v.iv)


def _full_affine(v: Any, aval: Any) -> Any:
    """``v`` with every array at its full shape (so that ``lax.scan`` stacks ``ys``
    along a new leading axis and slices ``xs`` along their first one)."""
    if not isinstance(v, Affine):
        return v
    shape = tuple(aval.shape)

    def one(f: Form) -> Form:
        b = lambda t, s=shape: None if t is None else jnp.broadcast_to(t, s)  # noqa: E731
        G = None if f.G is None else jnp.broadcast_to(f.G, (f.G.shape[0],) + shape)
        return Form.tree_unflatten((f.tag, f.sgn, f.nil), (b(f.c), G, b(f.r), b(f.gs)))

    iv = v.iv
    if iv is not None:
        iv = A.rbroadcast(iv, shape)
        if jnp.ndim(iv.value) != len(shape):
            iv = Real(iv.lo, iv.hi, iv.clo, iv.chi, iv.err, jnp.broadcast_to(iv.value, shape),
                      exact=iv.exact, point=iv.point)
    return Affine(one(v.x), one(v.e), jnp.broadcast_to(v.value, shape), v.stamp, v.boxed, iv)


def _gen_axis(v: Any, src: int, dst: int) -> Any:
    """Move the generator arrays' symbol axis (``xs`` enter with the loop axis first)."""
    if not isinstance(v, Affine):
        return v

    def one(f: Form) -> Form:
        if f.G is None:
            return f
        G = jnp.moveaxis(f.G, src, dst)
        return Form.tree_unflatten((f.tag, f.sgn, f.nil), (f.c, G, f.r, f.gs))

    return Affine(one(v.x), one(v.e), v.value, v.stamp, v.boxed, v.iv)


def _leave(v: Any, pool: Any, mask: np.ndarray | None, stamp: int) -> Any:
    """A body output as it leaves the iteration: synced, the body's own slots
    (``mask``) folded into the independent term, labelled with ``stamp``."""
    if not isinstance(v, Affine):
        return v
    v = sync(v, pool)
    x, e = v.x, v.e
    if mask is not None:
        x, e = fold(x, mask), fold(e, mask)
    return Affine(x, e, v.value, stamp, v.boxed, v.iv)


def _iteration(ctx, dom: Any, jaxpr: Any, body_consts: list[Any], consts: list[Any],
               carry: list[Any], xs: list[Any], memo: dict, T0: int, carry_avals: list[Any],
               tags: list[tuple[int, int]], boxed: bool, path: str) -> tuple[list[Any], list[Any], Any]:
    """One trace of a loop body on ``consts + carry + xs``: every output as it leaves the
    iteration (:func:`_leave`), the new carry (the first ``len(carry)`` of them,
    normalised like the old one) and the body's diagnostics. The promotion memo starts
    from the loop's entry every time (a body traced twice must not reuse the tracers or
    the symbols of the other trace)."""
    pool = _pool(ctx)
    pool.memo = dict(memo)
    sub = DiagnosticCollector(track_origins=ctx.diag.track_origins)
    outs = interpret(dom, jaxpr, body_consts, consts + list(carry) + list(xs), ctx.config, sub, path=path)
    mask = pool.stale(T0)
    outs = [_leave(o, pool, mask, T0) for o in outs]
    new = [_canon(o, a, ref, ctx.adt, pool.K, tags[k], T0, boxed)
           for k, (o, a, ref) in enumerate(zip(outs, carry_avals, carry))]
    return outs, new, sub


@register_affine(_compat.SCAN)
def affine_scan_rule(ctx, *ops, **params):
    """``lax.scan`` with loop-carried affine forms (see the module docstring)."""
    body, nconsts, ncarry, length, reverse = _compat.scan_params(params)
    pool = _pool(ctx)
    K = pool.K
    adt = ctx.adt
    eqn = ctx.eqn
    consts = list(ops[:nconsts])
    init = list(ops[nconsts:nconsts + ncarry])
    xs = list(ops[nconsts + ncarry:])
    out_avals = [v.aval for v in eqn.outvars]
    carry_avals = out_avals[:ncarry]
    y_avals = out_avals[ncarry:]
    x_avals = [v.aval for v in eqn.invars[nconsts + ncarry:]]
    boxed = any(isinstance(o, Affine) and o.boxed for o in ops)

    T0 = pool.T
    tags = [(fresh_tag(), fresh_tag()) for _ in range(ncarry)]
    init = [_canon(sync(v, pool), a, v, adt, K, tags[k], T0, boxed)
            for k, (v, a) in enumerate(zip(init, carry_avals))]
    xs = [_gen_axis(_full_affine(v, a), 0, 1) for v, a in zip(xs, x_avals)]

    jaxpr, body_consts = _compat.closed_parts(body)
    keep: list[Any] = []
    dom = _body_domain(ctx, jaxpr, keep)
    messages: list[str] = []
    path = f"{ctx.path}.scan/"

    memo = dict(pool.memo)

    def step(carry, x):
        outs, new, sub = _iteration(ctx, dom, jaxpr, body_consts, consts, carry, [_retag(v) for v in x],
                                    memo, T0, carry_avals, tags, boxed, path)
        ys = [_full_affine(o, a.update(shape=a.shape[1:])) for o, a in zip(outs[ncarry:], y_avals)]
        messages[:] = sub.messages
        return new, (ys, _flags(sub))

    # promotions inside the body are memoised on body values (tracers of this scan) and
    # on outer values given body symbols: neither may be reused after the loop
    try:
        carry, (ys, flags) = lax.scan(step, init, xs, length=length, reverse=reverse)
    finally:
        pool.memo = memo
    del keep
    if messages:
        _add_flags(ctx, messages, jnp.any(flags, axis=0) if length else jnp.zeros(len(messages), bool))
    T1 = pool.T
    return [_finish(v, T1) for v in carry] + [_finish(_gen_axis(y, 0, 1), T1) for y in ys]


def _body_domain(ctx, jaxpr: Any, keep: list[Any]) -> Any:
    """The affine domain for a loop body: this domain, with the fan-out promotion of
    the body's own multiply-read variables."""
    from .._affine import _fanout_convert, use_counts

    counts = use_counts(jaxpr, None, keep)
    return dataclasses.replace(ctx.domain, record=None, convert=_fanout_convert(counts, _pool(ctx)))


def _finish(v: Any, T1: int) -> Any:
    """A loop output after the loop: labelled with the pool counter (the body's slots
    are folded out of it) and with fresh tags."""
    if not isinstance(v, Affine):
        return v
    return _retag(Affine(v.x, v.e, v.value, T1, v.boxed, v.iv))


@register_affine(_compat.WHILE)
def affine_while_rule(ctx, *ops, **params):
    """``while_loop`` with loop-carried affine forms (see the module docstring)."""
    cond_j, body_j, cn, bn = _compat.while_params(params)
    pool = _pool(ctx)
    K, adt = pool.K, ctx.adt
    cconsts = list(ops[:cn])
    bconsts = list(ops[cn:cn + bn])
    state = list(ops[cn + bn:])
    avals = [v.aval for v in ctx.eqn.outvars]
    boxed = any(isinstance(o, Affine) and o.boxed for o in ops)
    T0 = pool.T
    tags = [(fresh_tag(), fresh_tag()) for _ in avals]
    init = [_canon(sync(v, pool), a, v, adt, K, tags[k], T0, boxed)
            for k, (v, a) in enumerate(zip(state, avals))]
    cpath, bpath = f"{ctx.path}.while/cond/", f"{ctx.path}.while/body/"
    msgs: dict[str, list[str]] = {"cond": [], "body": []}
    bjaxpr, bconsts_closed = _compat.closed_parts(body_j)
    keep: list[Any] = []
    dom = _body_domain(ctx, bjaxpr, keep)

    def pred_of(vals):
        args = [to_interval(v) for v in cconsts + list(vals)]
        sub = _sub_diag(ctx, args)
        (p,) = _run(ctx, cond_j, args, sub, cpath)
        msgs["cond"] = list(sub.messages)
        return jnp.all(p.lo), jnp.any(p.hi), _flags(sub)

    memo = dict(pool.memo)

    def run_body(vals):
        _, new, sub = _iteration(ctx, dom, bjaxpr, bconsts_closed, bconsts, vals, [], memo, T0,
                                 avals, tags, boxed, bpath)
        msgs["body"] = list(sub.messages)
        return new, _flags(sub)

    def body_fun(st):
        vals, bflags, cflags = st
        new, bf = run_body(vals)
        _, _, cf = pred_of(new)
        return new, bflags | bf, cflags | cf

    try:
        _, _, cflags0 = pred_of(init)
        nb = jax.eval_shape(lambda v: run_body(v)[1], init).shape[0]
        st0 = (init, jnp.zeros((nb,), bool), cflags0)
        vals, bflags, cflags = lax.while_loop(lambda st: pred_of(st[0])[0], body_fun, st0)
    finally:
        pool.memo = memo
    del keep
    _, possibly_true, cf_end = pred_of(vals)
    _add_flags(ctx, msgs["body"], bflags)
    _add_flags(ctx, msgs["cond"], cflags | cf_end)
    T1 = pool.T
    out = []
    for v in vals:
        v = _finish(v, T1)
        if isinstance(v, Affine):
            v = invalid(ctx, jnp.broadcast_to(possibly_true, v.shape), v, UNCERTAIN_WHILE)
        else:
            v = _unbounded(v, possibly_true)
            ctx.flag(possibly_true, UNCERTAIN_WHILE)
        out.append(v)
    return out


@register_affine(_compat.COND)
def affine_cond_rule(ctx, index, *ops, **params):
    """``lax.cond`` / ``lax.switch``: the taken branch's affine forms where the index is
    certain, the interval join elsewhere (see the module docstring)."""
    branches = _compat.cond_branches(params)
    n = len(branches)
    pool = _pool(ctx)
    K, adt = pool.K, ctx.adt
    boxed = any(isinstance(o, Affine) and o.boxed for o in ops)
    idx = to_interval(index)
    joined = cond_rule(ctx, idx, *[to_interval(o) for o in ops], **params)
    lo = jnp.clip(idx.lo.astype(jnp.int32), 0, n - 1)
    hi = jnp.clip(idx.hi.astype(jnp.int32), 0, n - 1)
    certain = lo == hi
    results = []
    for i, br in enumerate(branches):
        jaxpr, consts = _compat.closed_parts(br)
        keep: list[Any] = []
        dom = _body_domain(ctx, jaxpr, keep)
        sub = DiagnosticCollector(track_origins=ctx.diag.track_origins)
        outs = interpret(dom, jaxpr, consts, list(ops), ctx.config, sub, path=f"{ctx.path}.cond[{i}]/")
        # the interval rule reports the branches it may take; these are the affine
        # evaluation's own diagnostics, read only where branch i is certainly taken
        _add_flags(ctx, sub.messages, _flags(sub), certain & (lo == i))
        results.append(outs)
        del keep
    T = pool.T
    out = []
    for k, v in enumerate(ctx.eqn.outvars):
        iv = joined[k]
        if isinstance(iv, Discrete):
            out.append(iv)
            continue
        shape = tuple(v.aval.shape)
        cands = []
        for r in results:
            c = r[k]
            if isinstance(c, Real):
                c = A.from_real(c, stamp=T)
            cands.append(sync(c, pool))
        hull = A.from_real(iv, stamp=T)
        vdt = iv.value.dtype
        xs = [_canon_form(c.x, shape, adt, K, 0) for c in cands]
        es = [_canon_form(c.e, shape, adt, K, 0) for c in cands]
        hx, he = _canon_form(hull.x, shape, adt, K, 0), _canon_form(hull.e, shape, adt, K, 0)

        def pick(forms: list[Form], h: Form) -> Form:
            ch = [f.tree_flatten()[0] for f in forms]
            arrs = []
            for j, ha in enumerate(h.tree_flatten()[0]):
                sel = lax.select_n(lo, *[c[j] for c in ch]) if n > 1 else ch[0][j]
                arrs.append(jnp.where(certain, sel, ha))
            return Form(*arrs, tag=fresh_tag(), sgn=1, nil=False)

        value = _strong(iv.value, vdt, shape)
        out.append(Affine(pick(xs, hx), pick(es, he), value, T, boxed, iv))
    return out
