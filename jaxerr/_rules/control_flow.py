"""Rules for control flow: ``scan``, ``while`` and ``cond`` (``lax.scan``, ``nn.scan``,
``nn.RNN``, ``fori_loop``, ``while_loop``, ``lax.cond``, ``lax.switch``).

The bodies are evaluated by the same interpreter, over the same domain values, inside
a ``lax.scan`` / ``lax.while_loop`` of the analysis itself, so the compiled analysis
stays as small as the program (no unrolling). Soundness:

* ``scan``: each iteration applies the body's abstract transformer to an enclosure of
  the carry, which encloses the carry of every execution (exact and computed) at that
  iteration; by induction the final carry and every ``ys`` slice are enclosed. The
  static ``exact``/``point`` flags of a :class:`Real` carry are dropped (a loop-carried
  value is treated as a general one), so the carry has one pytree structure in every
  iteration.
* ``while``: the loop continues while the condition is *certainly* true (for the exact
  and the computed execution alike). It stops when the condition is certainly false (both
  executions stop: same trip count) or uncertain: then the two executions may run
  different numbers of iterations, no finite bound follows, and every output is
  ``inf`` with a diagnostic naming the loop (make the trip count static to fix it).
* ``cond``: the index is clamped into the branch range like ``lax.switch`` does; every
  branch the index range allows is evaluated, the others are masked out (their
  diagnostics too). With a certain index this is exactly the taken branch. With an
  uncertain index the exact execution may take branch ``i`` and the computed one branch
  ``j``: the exact result lies in the join of the possible branches' exact ranges, the
  computed one in the join of their computed ranges, and ``|computed - exact|`` is at
  most ``err_i`` if ``i == j`` and at most ``max(chi_j - lo_i, hi_i - clo_j)`` otherwise
  (each range encloses its value); the error bound is the largest of these over the
  possible pairs.

Diagnostics raised inside a body are returned from the loop as flags (OR-ed over the
iterations), with the messages of the body's equations (paths ``<eqn>.scan/<k>``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.lax as lax
import jax.numpy as jnp

from .. import _compat
from .. import _formats as F
from .._domains.interval import Discrete, Real, tighten
from .._interpreter import DiagnosticCollector, interpret
from . import register_rule

P = _compat.prim

#: the control-flow primitives (their outputs are not elementwise functions of their
#: operands: the interval domain's NaN poisoning of elementwise results skips them)
CONTROL_FLOW = frozenset(p for p in (_compat.SCAN, _compat.WHILE, _compat.COND) if p is not None)

_FIELDS = ("lo", "hi", "clo", "chi", "err")


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _sub_diag(ctx, inputs: list[Any]) -> DiagnosticCollector:
    """A collector for one evaluation of a body; in the 'origins' pass the body's inputs
    that are already infinite are marked inherited (their infinity started outside)."""
    sub = DiagnosticCollector(track_origins=ctx.diag.track_origins)
    if sub.track_origins:
        for v in inputs:
            if isinstance(v, Real):
                sub.set_inf(v, jnp.any(jnp.isinf(v.err)))
    return sub


def _flags(sub: DiagnosticCollector) -> Any:
    if not sub.flags:
        return jnp.zeros((0,), bool)
    return jnp.stack([jnp.asarray(f, bool).reshape(()) for f in sub.flags])


def _run(ctx, closed: Any, args: list[Any], sub: DiagnosticCollector, path: str) -> list[Any]:
    jaxpr, consts = _compat.closed_parts(closed)
    if ctx.domain is not None:
        dom = ctx.domain.body_domain()
    else:  # a Ctx built outside the interpreter (e.g. the per-layer report)
        from .._bound import DOMAIN as dom
    return interpret(dom, jaxpr, consts, list(args), ctx.config, sub, path=path)


def _strong(x: Any, dtype: Any, shape: Any) -> Any:
    """``x`` broadcast to ``shape`` with the (non-weak) ``dtype``."""
    return lax.convert_element_type(jnp.broadcast_to(jnp.asarray(x), shape), dtype)


def _loose(v: Any, aval: Any, vdtype: Any, adt: Any) -> Any:
    """``v`` as a loop-carried value: full shape, fixed dtypes, no static exact/point
    flags (dropping them is always sound), so that every iteration has one type."""
    shape = tuple(aval.shape)
    if isinstance(v, Real):
        return Real(*(_strong(getattr(v, f), adt, shape) for f in _FIELDS),
                    _strong(v.value, vdtype, shape))
    return Discrete(_strong(v.lo, aval.dtype, shape), _strong(v.hi, aval.dtype, shape),
                    _strong(v.value, aval.dtype, shape))


def _loose_all(vals: list[Any], avals: list[Any], adt: Any, like: list[Any] | None = None) -> list[Any]:
    out = []
    for k, (v, a) in enumerate(zip(vals, avals)):
        ref = v if like is None else like[k]
        vdt = ref.value.dtype if isinstance(ref, Real) else a.dtype
        out.append(_loose(v, a, vdt, adt))
    return out


def _unbounded(v: Any, bad: Any) -> Any:
    """Where ``bad``: nothing is known (every range and error infinite)."""
    if isinstance(v, Real):
        inf = jnp.inf
        return Real(F.where(bad, -inf, v.lo), F.where(bad, inf, v.hi), F.where(bad, -inf, v.clo),
                    F.where(bad, inf, v.chi), F.where(bad, inf, v.err), v.value)
    dt = v.value.dtype
    if dt == jnp.bool_:
        flo, fhi = jnp.zeros_like(v.lo), jnp.ones_like(v.hi)
    else:
        info = jnp.iinfo(dt)
        flo, fhi = jnp.full_like(v.lo, info.min), jnp.full_like(v.hi, info.max)
    return Discrete(F.where(bad, flo, v.lo), F.where(bad, fhi, v.hi), v.value)


def _add_flags(ctx, messages: list[str], flags: Any, mask: Any = True) -> None:
    for k, m in enumerate(messages):
        ctx.diag.add_scalar(m, jnp.asarray(flags[k], bool) & mask)


# ---------------------------------------------------------------------------
# scan
# ---------------------------------------------------------------------------


@register_rule(_compat.SCAN)
def scan_rule(ctx, *ops, **params):
    """``lax.scan``: the body's transformer applied once per iteration, as a ``lax.scan``
    over the domain values (consts closed over, carries normalised, ``xs`` sliced)."""
    body, nconsts, ncarry, length, reverse = _compat.scan_params(params)
    consts = list(ops[:nconsts])
    init = list(ops[nconsts:nconsts + ncarry])
    xs = list(ops[nconsts + ncarry:])
    avals = [v.aval for v in ctx.eqn.outvars[:ncarry]]
    init = _loose_all(init, avals, ctx.adt)
    messages: list[str] = []
    path = f"{ctx.path}.scan/"

    def step(carry, x):
        args = consts + list(carry) + list(x)
        sub = _sub_diag(ctx, args)
        outs = _run(ctx, body, args, sub, path)
        new = _loose_all(outs[:ncarry], avals, ctx.adt, like=carry)
        messages[:] = sub.messages
        return new, (outs[ncarry:], _flags(sub))

    carry, (ys, flags) = lax.scan(step, init, xs, length=length, reverse=reverse)
    if messages:
        _add_flags(ctx, messages, jnp.any(flags, axis=0) if length else jnp.zeros(len(messages), bool))
    return list(carry) + list(ys)


# ---------------------------------------------------------------------------
# while
# ---------------------------------------------------------------------------


#: the diagnostic of a while loop whose condition may still be true when it stops
UNCERTAIN_WHILE = (
    "the loop condition depends on uncertain values (after some iteration it may be true "
    "for one execution and false for another), so the exact and the computed execution "
    "may run different numbers of iterations: every output of this while_loop is "
    "unbounded (inf). Make the trip count static: lax.fori_loop with Python int bounds "
    "(or lax.scan), or a condition on integer counters only."
)


@register_rule(_compat.WHILE)
def while_rule(ctx, *ops, **params):
    """``while_loop``: iterate while the condition is certainly true; an uncertain
    condition when the loop stops makes every output unbounded, with a diagnostic."""
    cond_j, body_j, cn, bn = _compat.while_params(params)
    cconsts = list(ops[:cn])
    bconsts = list(ops[cn:cn + bn])
    avals = [v.aval for v in ctx.eqn.outvars]
    init = _loose_all(list(ops[cn + bn:]), avals, ctx.adt)
    cpath, bpath = f"{ctx.path}.while/cond/", f"{ctx.path}.while/body/"
    msgs: dict[str, list[str]] = {"cond": [], "body": []}

    def pred_of(vals):
        sub = _sub_diag(ctx, cconsts + list(vals))
        (p,) = _run(ctx, cond_j, cconsts + list(vals), sub, cpath)
        msgs["cond"] = list(sub.messages)
        # certainly true: the exact and the computed execution both continue
        return jnp.all(p.lo), jnp.any(p.hi), _flags(sub)

    _, _, cflags0 = pred_of(init)

    def run_body(vals):
        args = bconsts + list(vals)
        sub = _sub_diag(ctx, args)
        outs = _run(ctx, body_j, args, sub, bpath)
        msgs["body"] = list(sub.messages)
        return _loose_all(outs, avals, ctx.adt, like=vals), _flags(sub)

    def body_fun(state):
        vals, k, bflags, cflags = state
        new, bf = run_body(vals)
        _, _, cf = pred_of(new)
        return new, k + 1, bflags | bf, cflags | cf

    # the size of the body's flag vector is known once the body has been traced
    nb = jax.eval_shape(lambda v: run_body(v)[1], init).shape[0]
    state0 = (init, jnp.zeros((), jnp.int32), jnp.zeros((nb,), bool), cflags0)
    vals, k, bflags, cflags = lax.while_loop(lambda s: pred_of(s[0])[0], body_fun, state0)
    certainly_true, possibly_true, cf_end = pred_of(vals)
    _add_flags(ctx, msgs["body"], bflags)
    _add_flags(ctx, msgs["cond"], cflags | cf_end)
    uncertain = possibly_true  # the loop stopped, so the condition is not certainly true
    ctx.flag(uncertain, UNCERTAIN_WHILE)
    return [_unbounded(v, uncertain) for v in vals]


# ---------------------------------------------------------------------------
# cond / switch
# ---------------------------------------------------------------------------

#: above this many branches an uncertain index joins all errors at once (not pairwise)
_MAX_PAIRWISE = 6


def _join(fields: list[Any], possible: list[Any], fill: Any, op: Any) -> Any:
    out = None
    for f, p in zip(fields, possible):
        t = F.where(p, f, fill)
        out = t if out is None else op(out, t)
    return out


@register_rule(_compat.COND)
def cond_rule(ctx, index, *ops, **params):
    """``lax.cond`` / ``lax.switch``: every branch the (clamped) index range allows,
    joined; a certain index selects exactly its branch."""
    branches = _compat.cond_branches(params)
    n = len(branches)
    lo = jnp.clip(index.lo.astype(jnp.int32), 0, n - 1)
    hi = jnp.clip(index.hi.astype(jnp.int32), 0, n - 1)
    centre = jnp.clip(index.value.astype(jnp.int32), 0, n - 1)
    possible = [(lo <= i) & (i <= hi) for i in range(n)]
    results = []
    for i, br in enumerate(branches):
        sub = _sub_diag(ctx, list(ops))
        outs = _run(ctx, br, list(ops), sub, f"{ctx.path}.cond[{i}]/")
        _add_flags(ctx, sub.messages, _flags(sub), possible[i])
        results.append(outs)
    ctx.flag(lo != hi, "the branch index depends on uncertain values: the result joins every "
                       "branch it may take (the exact and the computed execution may take "
                       "different branches)")
    outs = []
    for k, v in enumerate(ctx.eqn.outvars):
        shape = tuple(v.aval.shape)
        cands = [r[k] for r in results]
        vdt = cands[0].value.dtype
        values = [_strong(c.value, vdt, shape) for c in cands]
        value = lax.select_n(centre, *values) if n > 1 else values[0]
        if isinstance(cands[0], Discrete):
            dt = v.aval.dtype
            los = [_strong(c.lo, dt, shape) for c in cands]
            his = [_strong(c.hi, dt, shape) for c in cands]
            if dt == jnp.bool_:
                jlo = _join(los, possible, True, jnp.logical_and)
                jhi = _join(his, possible, False, jnp.logical_or)
            else:
                info = jnp.iinfo(dt)
                jlo = _join(los, possible, info.max, jnp.minimum)
                jhi = _join(his, possible, info.min, jnp.maximum)
            outs.append(Discrete(jlo, jhi, value))
            continue
        f = {name: [_strong(getattr(c, name), ctx.adt, shape) for c in cands] for name in _FIELDS}
        inf = jnp.inf
        jlo = _join(f["lo"], possible, inf, jnp.minimum)
        jhi = _join(f["hi"], possible, -inf, jnp.maximum)
        jclo = _join(f["clo"], possible, inf, jnp.minimum)
        jchi = _join(f["chi"], possible, -inf, jnp.maximum)
        if n <= _MAX_PAIRWISE:
            # exact from branch i, computed from branch j
            pairs = []
            pmask = []
            for i in range(n):
                for j in range(n):
                    if i == j:
                        e = f["err"][i]
                    else:
                        e = jnp.maximum(F.sub_up(f["chi"][j], f["lo"][i]), F.sub_up(f["hi"][i], f["clo"][j]))
                        e = F.where(jnp.isinf(f["err"][j]), inf, e)
                    pairs.append(e)
                    pmask.append(possible[i] & possible[j])
            err = _join(pairs, pmask, 0.0, jnp.maximum)
        else:
            spread = jnp.maximum(F.sub_up(jchi, jlo), F.sub_up(jhi, jclo))
            any_inf = _join([jnp.isinf(e) for e in f["err"]], possible, False, jnp.logical_or)
            err_max = _join(f["err"], possible, 0.0, jnp.maximum)
            err = F.where(lo == hi, err_max, F.where(any_inf, inf, spread))
        outs.append(tighten(Real(jlo, jhi, jclo, jchi, err, value)))
    return outs


# ---------------------------------------------------------------------------
# first_order: unroll short scans into straight-line code
# ---------------------------------------------------------------------------

#: unroll scans into the first_order tape while the unrolled program has at most this
#: many body equations (longer scans are evaluated whole and cut: one event each).
#: Every unrolled value that is refined adds a reverse pass to the program, so the
#: analysis grows faster than the unrolled length: the zoo's LSTM(6) cell (~30 body
#: equations) gives ~32k analysis equations for 1 step (33 s of compile CPU), ~84k for
#: 3 steps, and 5 steps (~150 unrolled equations) did not compile within 15 minutes
#: on 2 cores; an 8-step LSTM (~320) not within 30.
MAX_UNROLLED_EQNS = 96


def _size(jaxpr: Any) -> int:
    """Equations of ``jaxpr`` with scans unrolled and calls inlined."""
    n = 0
    for eqn in jaxpr.eqns:
        sub = _compat.call_subjaxpr(eqn)
        if sub is not None:
            n += _size(sub[0])
        elif eqn.primitive is _compat.SCAN:
            n += _scan_size(eqn)
        else:
            n += 1
    return n


def _scan_size(eqn: Any) -> int:
    body, _, _, length, _ = _compat.scan_params(eqn.params)
    return length * _size(_compat.closed_parts(body)[0])


def _has_scan(jaxpr: Any) -> bool:
    for eqn in jaxpr.eqns:
        if eqn.primitive is _compat.SCAN:
            return True
        sub = _compat.call_subjaxpr(eqn)
        if sub is not None and _has_scan(sub[0]):
            return True
    return False


def unroll_scans(closed: Any, max_eqns: int | None = None) -> Any:
    """An equivalent closed jaxpr in which every ``scan`` whose unrolled body fits the
    budget is replaced by its iterations (slices of ``xs``, the body's equations, a
    stack of ``ys``), and calls containing scans are inlined. Used by
    ``domain="first_order"``, whose tape then sees through the loop; the program
    computed is the same (same operations in the same order)."""
    jaxpr, consts = _compat.closed_parts(closed)
    if not _has_scan(jaxpr):
        return closed
    budget = [int(MAX_UNROLLED_EQNS if max_eqns is None else max_eqns)]

    def ev(j, cs, args):
        env: dict[Any, Any] = {}

        def read(v):
            return v.val if isinstance(v, _compat.Literal) else env[v]

        def write(v, x):
            if _compat.DropVar is not None and isinstance(v, _compat.DropVar):
                return
            env[v] = x

        for v, c in zip(j.constvars, cs):
            write(v, c)
        for v, a in zip(j.invars, args):
            write(v, a)
        for eqn in j.eqns:
            invals = [read(v) for v in eqn.invars]
            sub = _compat.call_subjaxpr(eqn)
            if sub is not None and _has_scan(sub[0]):
                outs = ev(sub[0], sub[1], invals)
            elif eqn.primitive is _compat.SCAN and _scan_size(eqn) <= budget[0]:
                budget[0] -= _scan_size(eqn)
                outs = unrolled(eqn, invals)
            else:
                outs = _compat.bind_eqn(eqn, invals)
            for v, o in zip(eqn.outvars, outs):
                write(v, o)
        return [read(v) for v in j.outvars]

    def unrolled(eqn, invals):
        body, nconsts, ncarry, length, reverse = _compat.scan_params(eqn.params)
        bj, bc = _compat.closed_parts(body)
        cs = list(invals[:nconsts])
        carry = list(invals[nconsts:nconsts + ncarry])
        xs = list(invals[nconsts + ncarry:])
        ys: dict[int, list[Any]] = {}
        for t in (range(length - 1, -1, -1) if reverse else range(length)):
            x_t = [lax.index_in_dim(x, t, keepdims=False) for x in xs]
            outs = ev(bj, bc, cs + carry + x_t)
            carry, ys[t] = list(outs[:ncarry]), list(outs[ncarry:])
        stacked = []
        for k, v in enumerate(eqn.outvars[ncarry:]):
            if length == 0:
                stacked.append(jnp.zeros(v.aval.shape, v.aval.dtype))
            else:
                stacked.append(lax.concatenate([lax.expand_dims(jnp.asarray(ys[t][k]), (0,))
                                               for t in range(length)], 0))
        return carry + stacked

    specs = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in jaxpr.invars]
    new = jax.make_jaxpr(lambda *a: ev(jaxpr, consts, list(a)))(*specs)
    return new
