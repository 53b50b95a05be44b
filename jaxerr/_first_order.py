"""First-order sensitivity bounds (``domain="first_order"``) and probabilistic bounds.

Write every operation ``k`` of the program as ``v_k = op_k(operands) + e_k``, where
``e_k`` is its local rounding error (``|e_k| <= E_k``). The computed output is
``F(e)``, the exact one ``F(0)``, and by the mean value theorem along the segment
``t e`` (t in [0, 1])::

    |F(e) - F(0)| <= sum_k  sup_t |dF/de_k (t e)| * E_k.

Three passes compute this, all as JAX code in one XLA program:

1. the interval analysis (``_bound``), which also gives every equation's total
   error bound (used where the program is not differentiable: a *cut*);
2. a *path* pass: the interval rules applied to operands whose range is the hull
   of everything the operand can be along the segment, widened at every equation
   by that equation's local rounding bound ``E_k`` (so the ranges enclose every
   intermediate state of every ``t e``), recording ``E_k`` on a tape;
3. a reverse pass over the tape, one output component at a time (``vmap``, in
   chunks): cotangent *enclosures* (midpoint, radius) of ``dF/dv_k`` over those
   ranges, rounded outward (``_rules/sensitivity.py``), summed against ``E_k``.

The result is a guaranteed bound; each output's error is the smaller of it and
the interval bound. It is close to the first-order limit ``sum |dF/de_k(0)| E_k``
when the ranges are narrow (point inputs), which is where it is meant to be used.

``probabilistic=delta``: the rounding errors are modelled as independent mean-zero
random variables (Higham & Mary 2019): each elementary rounding ``delta_j`` with
``|delta_j| <= u`` has mean zero given everything computed before it. The path pass
then differs in three ways (``_prob_record``, ``_refine``):

* every node is *linearised at a fixed point* ``c``: ``f(x^) = f(x) + f'(c) dx + r``,
  so the output's deviation is exactly ``sum_k J_k e_k + sum_nodes J_n r_n + sum_p J_p D_p``
  with ``J`` the sensitivities of the linearised program (fixed, not random): for the
  nonlinear elementwise primitives ``c`` is the midpoint of the exact-value range and
  ``f'(c)`` is enclosed at that point (``_lin_point``: no interval-width radius),
  elsewhere ``c = x`` with ``J`` enclosed over the interval domain's exact-value
  ranges; the remainders include ``(f'(x) - f'(c)) dx`` (proofs: ``_taylor``,
  ``_mul_rem``, ``_extreme_rem``, ``docs/error-model.md``);
* ``sum_k J_k e_k`` is a martingale: Azuma-Hoeffding gives, with probability at
  least ``1 - delta``, ``|.| <= sqrt(2 ln(2/delta) sum_j c_j^2)`` over the elementary
  roundings, ``c_j = |J| u |v_j|`` (a sum or dot product: per level of partial sums,
  ``_sum_parts``); the remainders ``r_n`` (Taylor / Lebourg bounds from the path
  ranges), the known input shifts ``D_p`` (one signed sum), cut events, underflow and
  the float evaluation of the shifts are added in worst case;
* the path ranges of refined values use their own probabilistic deviation bound; the
  failure probability is split (``_prob_refined_delta``): ``delta / 2`` over all
  refinable elements, ``delta / 2`` for the output.

The result holds per output element with probability ``>= 1 - delta`` under that
model, and is capped by the guaranteed first_order bound (a separate pass).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.lax as lax
import jax.numpy as jnp
import numpy as np

from . import _compat
from . import _formats as F
from ._domains import first_order as C
from ._domains.first_order import Cot
from ._domains.interval import Discrete, Real, mag, mig, nan_possible, sanitize
from ._interpreter import Config, DiagnosticCollector, Domain, interpret
from ._patterns import softmax_shifts, unary_blocks
from ._rules import interval_rules
from ._rules.control_flow import CONTROL_FLOW
from ._rules.conv import conv_terms
from ._rules.sensitivity import sensitivity_rules
from ._rules.structural import STRUCTURAL as _STRUCTURAL

P = _compat.prim


class _Tape:
    def __init__(self, interval_outs: dict[str, list[Any]], probabilistic: bool,
                 delta: float | None = None, n_refinable: int = 0):
        self.entries: list[tuple[Any, list[Any], list[Any]]] = []
        self.local: dict[int, Any] = {}  # id(path value) -> local rounding bound E_k
        self.random: dict[int, tuple[Any, Any]] = {}  # id -> (sum of squares, deterministic)
        self.inputs: list[tuple[Any, Any]] = []  # (path value, E) for rounded inputs/constants
        self.has_event: set[int] = set()
        self.interval_outs = interval_outs
        self.probabilistic = probabilistic
        # probabilistic mode: the Azuma-Hoeffding factor of refined intermediate elements
        self.lam_ref = _lam(_prob_refined_delta(delta, n_refinable)) if delta is not None else None
        self.poison = jnp.asarray(False)
        self.nan_seen = jnp.asarray(False)  # a path state may be NaN (see _path_domain)
        self.sensitive: set[Any] = set()
        self.refined: dict[int, Any] = {}  # id(path value) -> first-order bound of its deviation
        # id(refined path value) -> the interval domain's exact range (lo, hi) of that value
        self.refined_exact: dict[int, tuple[Any, Any]] = {}
        self.n_refined = 0
        self.n_pre_refined = 0
        self.n_refined_elems = 0
        self.full_refine_cost = 0  # tape entries walked by full (checkpoint-free) refinements
        self.refine_budget = 0  # ... and how many they may walk while splitting (_pass_mode)
        self.n_refinable = n_refinable
        self.adt: Any = None
        # every object whose id() keys a table above stays alive for the whole analysis
        # (a recycled id would attach one value's events to another)
        self.keep: list[Any] = []
        self.single_use: set[int] = set()  # ids of rounded inputs read by one primitive only
        self.input_E: dict[int, Any] = {}  # id(path input) -> its rounding bound
        # id(path input) -> the bound of its event beyond the known shift (see _known_shift)
        self.input_res: dict[int, Any] = {}
        self.input_exact: dict[int, Any] = {}  # id(path input) -> its exact (point) value
        # id(value) -> known signed part D of its event (the event is D + e, |e| <= local E):
        # a point input rounded into the format moves by exactly round(x) - x
        self.shift: dict[int, Any] = {}
        self.folded: set[int] = set()  # inputs whose events a dot_general absorbed
        # probabilistic mode (see _prob_record): id(path value) -> the exact-value range
        # (interval domain), the bound of its node's linearisation remainder, and the
        # nodes that are cut instead (no linearisation rule)
        self.exact: dict[int, Any] = {}
        self.rem: dict[int, Any] = {}
        self.prob_cut: set[int] = set()
        # id(eqn) -> (operands, results) at the *linearisation points* of a nonlinear
        # elementwise node (``_lin_point``): point operands inside the exact ranges
        self.lin: dict[int, Any] = {}
        # shift-invariant softmax (``_patterns``): id(sub eqn) -> (eqn, max chain, path of
        # the subtracted value's producer); operands the path pass substituted, by eqn id
        self.softmax: dict[int, Any] = {}
        self.substituted: dict[int, list[Any]] = {}
        self.shifted_exact: dict[int, Any] = {}  # id(sub eqn) -> exact range of x - c
        self.rescaled: set[int] = set()  # ids of eqns whose results the shift rescales
        # softmax blocks: id(eqn) -> (role, id(sub eqn)); per sub: ctxs and d's path value;
        # id(div eqn) -> (block ranges, d, axes) (``_rules/sensitivity_softmax``)
        self.sm_role: dict[int, tuple[str, int]] = {}
        self.sm_parts: dict[int, dict[str, Any]] = {}
        self.sm_block: dict[int, Any] = {}
        # id(path value) -> elements cut at this equation (_cut_infinite)
        self.elem_cut: dict[int, Any] = {}
        # id(refined path value) -> its deviation's linear structure (``_gram.Gram``)
        self.gram: dict[int, Any] = {}
        # unary blocks (``_unary_block``): id(inner eqn) -> block; id(last eqn) -> block;
        # id(block) -> the inner equations' ctxs and the root's path value; id(last eqn)
        # -> the block's derivative data for the reverse pass
        self.ub_inner: dict[int, Any] = {}
        self.ub_last: dict[int, Any] = {}
        self.ub_ctxs: dict[int, list[Any]] = {}
        self.ub_root: dict[int, Any] = {}
        self.ub_rec: dict[int, Any] = {}

    def segment(self, x: Any) -> Any:
        """``(x0, D, e)`` for a rounded point input whose states along the segment are
        ``x0 + t (D + e')``, ``|e'| <= e`` (its rounding its only event), else None."""
        if not isinstance(x, Real) or id(x) not in self.input_exact or id(x) not in self.shift:
            return None
        return self.input_exact[id(x)], self.shift[id(x)], self.input_res[id(x)]

    def kink_bound(self, ctx, ins) -> Any:
        """For a 1-Lipschitz piecewise-linear primitive (max, min, abs, clamp) whose
        operands with events all have refined deviation bounds: the largest of them,
        which bounds the output's total deviation (else None)."""
        if ctx.eqn.primitive not in _KINKS:
            return None
        b = None
        for x in ins:
            if not isinstance(x, Real) or id(x) not in self.has_event:
                continue
            r = self.refined.get(id(x))
            if r is None:
                return None
            b = r if b is None else jnp.maximum(b, r)
        return b

    def kink_exact(self, ctx, ins) -> Any:
        """``max``/``min`` with a kink bound (:meth:`kink_bound`), at the elements whose
        path ranges overlap (the selected operand is uncertain along the segment) but
        whose *exact* ranges do not: ``(a_ex, b_ex, R)``, where ``a_ex`` / ``b_ex`` say
        the exact execution selects ``a`` / ``b`` there and ``R`` bounds the remainder
        event (0 elsewhere); None when it does not apply.

        There the reverse pass goes on through the operand the exact execution selects
        (slope 1, the other 0) and charges ``R`` as an event at the output. Sound: write
        ``max(a, b) = a + relu(d)``, ``d = b - a`` (exact ``d_0 <= -gap < 0``); along
        the segment ``d(max)/dt = da/dt + relu'(d(t)) dd/dt``, the first term is the
        pass through ``a``, the second is nonzero only while ``d(t) > 0``. The path
        length of ``d`` is at most ``B = B_a + B_b`` (the operands' refined bounds bound
        their path lengths), and ``d`` must travel ``gap`` before it can be positive, so
        the second term's integral against any cotangent ``G(t)`` is at most
        ``sup |G| (B - gap)^+`` (``min`` and ``b`` alike)."""
        prim = ctx.eqn.primitive
        if prim not in (P("max"), P("min")):
            return None
        if not all(isinstance(x, Real) for x in ins):
            return None
        ex, B = [], None
        for x in ins:
            if id(x) in self.has_event:
                e = self.refined_exact.get(id(x))
                r = self.refined.get(id(x))
                if e is None or r is None:
                    return None
                ex.append(e)
                B = r if B is None else F.add_up_nn(B, r)
            else:  # no event: the path range is the exact one
                ex.append((x.lo, x.hi))
        if B is None:
            return None
        a, b = ins
        (alo, ahi), (blo, bhi) = ex
        if prim is P("max"):
            tie = ~((a.lo > b.hi) | (b.lo > a.hi))
            a_ex, b_ex = alo > bhi, blo > ahi
            gap = F.where(a_ex, F.sub_dn(alo, bhi), F.sub_dn(blo, ahi))
        else:
            tie = ~((a.hi < b.lo) | (b.hi < a.lo))
            a_ex, b_ex = ahi < blo, bhi < alo
            gap = F.where(a_ex, F.sub_dn(blo, ahi), F.sub_dn(alo, bhi))
        a_ex, b_ex = tie & a_ex, tie & b_ex
        R = jnp.maximum(F.sub_up(B, gap), 0.0)
        R = F.where(a_ex | b_ex, R, jnp.zeros_like(R))
        return a_ex, b_ex, R

    def event_value(self, r: Real, E: Any) -> Real:
        """The path value of a value whose deviation is bounded by ``E``."""
        # (E == 0: no outward step, which would make an exactly converted 0 mask
        # [-tiny, tiny] and `mask != 0` uncertain)
        lo = F.where(E == 0, r.lo, F.sub_dn(r.lo, E))
        hi = F.where(E == 0, r.hi, F.add_up(r.hi, E))
        p = Real(lo, hi, lo, hi, jnp.zeros_like(lo), r.value, exact=True)
        self.keep.append(p)
        self.local[id(p)] = E
        self.has_event.add(id(p))
        if self.probabilistic:
            self.poison = self.poison | jnp.any(jnp.isinf(E))
        # worst case: an infinite event counts only where its sensitivity is not exactly
        # 0 (_contrib); states past an infinity are cut at the next equation whose
        # interval bound is finite (_cut_infinite)
        return p


def _to_path_input(tape: _Tape, r: Any) -> Any:
    """An argument or constant of the interval domain as a path value (+ its event)."""
    if not isinstance(r, Real) or r.exact:
        return r
    hlo, hhi = jnp.minimum(r.lo, r.clo), jnp.maximum(r.hi, r.chi)
    base = Real(hlo, hhi, hlo, hhi, jnp.zeros_like(hlo), r.value, exact=True)
    p = tape.event_value(base, r.err)
    if not tape.probabilistic:
        # an infinite rounding event (finfo(float32).min is -inf in bfloat16): its
        # states are the exact and the rounded value (see _path_domain's finalize)
        inf_e = ~(r.err < jnp.inf)
        lo, hi = F.where(inf_e, hlo, p.lo), F.where(inf_e, hhi, p.hi)
        q = Real(lo, hi, lo, hi, jnp.zeros_like(lo), r.value, exact=True)
        tape.keep.append(q)
        tape.local[id(q)] = tape.local.pop(id(p))
        tape.has_event.add(id(q))
        p = q
    E = r.err
    if r.point:
        D, E = _known_shift(r, tape.adt)
        tape.shift[id(p)] = D
        tape.input_res[id(p)] = E
        tape.input_exact[id(p)] = r.lo
    tape.inputs.append((p, E))
    tape.input_E[id(p)] = r.err
    if tape.probabilistic:
        tape.exact[id(p)] = _exact_value(r.lo, r.hi, r.value)
    tape.local.pop(id(p))  # input events are accumulated from tape.inputs
    return p


def _known_shift(r: Real, adt: Any) -> tuple[Any, Any]:
    """For a point input rounded into the format (exact value ``lo``, computed ``clo``):
    ``(D, e)`` with ``clo - lo`` in ``D ± e``. ``D`` is the float difference (a
    correctly rounded subtraction, so within ``u|D|`` of the true one, plus underflow);
    where the inputs are subnormal (flushed, widened) or the difference exceeds the
    interval bound, ``D = 0`` and ``e`` is the whole bound."""
    tiny = float(np.finfo(adt).tiny)
    D = r.clo - r.lo
    # a float64 input is rounded through the float32 carrier (double rounding): use the
    # shift only where the input is a float32 number (one rounding, to nearest)
    f32 = r.lo.astype(np.float32).astype(r.lo.dtype) == r.lo
    ok = f32 & (jnp.abs(D) <= r.err) & ((r.lo == 0) | (jnp.abs(r.lo) >= tiny)) & \
        ((r.clo == 0) | (jnp.abs(r.clo) >= tiny)) & jnp.isfinite(D)
    e = F.add_up_nn(F.scale_up(jnp.abs(D), float(np.finfo(adt).eps)), F.static_up(tiny, adt))
    return F.where(ok, D, 0.0), F.where(ok, e, r.err)


def _path_domain(tape: _Tape, base: Domain) -> Domain:
    def constant(val, aval, config):
        if isinstance(val, (Real, Discrete)):  # a constvar converted in first_order_errors
            return val
        p = _to_path_input(tape, base.constant(val, aval, config))
        tape.single_use.add(id(p))  # a literal: one object per read
        return p

    def finalize(ctx, aval, out, invals):
        out = base.finalize(ctx, aval, out, invals)
        if not isinstance(out, Real):
            return out
        # a state that may be NaN (log of a range reaching below 0, 0 * inf): a later
        # bounded primitive (logistic, clamp) gives it a finite path range although the
        # computed value stays NaN, so the path ranges no longer enclose the computed
        # outputs (fuzz seeds 32034, 32035; the derivative bound itself meets the
        # infinite event there)
        tape.nan_seen = tape.nan_seen | jnp.any(nan_possible(out))
        if out.exact:
            return Real(out.lo, out.hi, out.lo, out.hi, jnp.zeros_like(out.lo), out.value,
                        exact=True, point=out.point)
        p = tape.event_value(out, out.err)
        iv = tape.interval_outs.get(ctx.path)
        if tape.probabilistic or iv is None or len(iv) != 1 or not isinstance(iv[0], Real) \
                or jnp.shape(iv[0].lo) != jnp.shape(p.lo):
            return p
        if id(ctx.eqn) in tape.rescaled:
            return p  # (the interval hull is in another frame: see _cut_infinite)
        # an infinite event (an overflow, a mask constant that is -inf in the format):
        # its states are the exact and the computed value, enclosed by the interval
        # domain's hull; the event counts only where its sensitivity over that hull is
        # not exactly 0 (_contrib), and _cut_infinite stops it where the interval
        # domain bounds a later result
        inf_e = ~(out.err < jnp.inf)
        r = iv[0]
        lo = F.where(inf_e, jnp.minimum(r.lo, r.clo), p.lo)
        hi = F.where(inf_e, jnp.maximum(r.hi, r.chi), p.hi)
        if id(ctx.eqn) in tape.softmax:
            # the shifted exponent x - c (c >= the exact and the computed maximum): its
            # two states are at most those of x - max that the interval hull encloses,
            # so only the hull's upper end holds for them (see _cut_infinite)
            lo = F.where(inf_e, -jnp.inf, p.lo)
        q = Real(lo, hi, lo, hi, jnp.zeros_like(lo), p.value, exact=True)
        tape.keep.append(q)
        tape.local[id(q)] = tape.local.pop(id(p))
        tape.has_event.add(id(q))
        return q

    def convert(ctx, invals):
        ins = _softmax_shift(tape, ctx, invals)
        _pre_refine(tape, ctx, ins)
        return ins

    def record(ctx, invals, outs):
        outs = list(outs)
        invals = tape.substituted.pop(id(ctx.eqn), invals)
        blk = tape.ub_inner.get(id(ctx.eqn)) or tape.ub_last.get(id(ctx.eqn))
        if blk is not None:
            for v, x in zip(ctx.eqn.invars, invals):
                if v is blk.root:
                    tape.ub_root[id(blk)] = x
            if id(ctx.eqn) in tape.ub_inner:  # inside a unary block: not on the tape
                tape.ub_ctxs.setdefault(id(blk), []).append(ctx)
                return outs
            invals, outs = _unary_block(tape, base, ctx, blk, outs)
        if tape.probabilistic:
            for o in outs:
                if id(o) in tape.local:
                    tape.random[id(o)] = _random_parts(ctx, invals, o, tape.local[id(o)])
            _prob_record(tape, ctx, invals, outs)
        _fold_input_events(tape, ctx, invals, outs)
        if any(id(x) in tape.has_event for x in invals):
            tape.has_event.update(id(o) for o in outs)
        iv = tape.interval_outs.get(ctx.path)
        if iv is not None and any(isinstance(o, Real) and not o.exact for o in iv):
            tape.has_event.update(id(o) for o in outs)
        outs = _softmax_block(tape, ctx, outs)
        if not tape.probabilistic:
            outs = _cut_infinite(tape, ctx, invals, outs)
        outs = _refine(tape, ctx, invals, outs)
        role = tape.sm_role.get(id(ctx.eqn))
        if role is not None and role[0] == "sub":
            tape.sm_parts.setdefault(role[1], {})["d"] = outs[0]
        tape.entries.append((ctx, list(invals), list(outs)))
        tape.has_event.update(id(o) for o in outs if isinstance(o, Real) and id(o) in tape.local)
        return outs

    # control-flow bodies are traced inside lax.scan/while_loop: evaluate them with the
    # plain interval domain (no tape); the whole equation is one event (a cut)
    return Domain(rules=interval_rules, constant=constant, finalize=finalize, record=record,
                  inner=base, convert=convert)


class _BlockRec:
    """A unary block on the tape: enclosures of ``h'`` over the root's path range and
    over its exact range (when refined), and of ``h''`` over the path range."""

    __slots__ = ("root", "d1", "d1_exact", "d2")

    def __init__(self, root: Any, d1: Any, d1_exact: Any, d2: Any):
        self.root, self.d1, self.d1_exact, self.d2 = root, d1, d1_exact, d2

    def rule(self, ctx, gs, ins, outs, **_):
        if self.root is None:
            return [], None
        return [C.scale(gs[0], *self.d1)], None


def _unary_block(tape: _Tape, base: Domain, ctx, blk: Any, outs: list[Any]) -> tuple[list[Any], list[Any]]:
    """The last equation of a unary block ``y = h(a)`` (``_patterns.unary_blocks``):
    ``(operands, results)`` of its one tape entry.

    The block is one operation of the error model: ``y^ = h(a^) + e`` with ``e`` the
    rounding error of the whole block evaluated at its computed operand ``a^``. The
    interval domain, run on the block's equations from the exact operand range ``A`` =
    the root's path range (which holds ``a^``), bounds ``|e| <= E`` for every operand
    in ``A`` and encloses ``h(A)``: every state ``h(a(t)) + t e`` of the segment lies in
    ``h(A) ± E`` (the block's path range), and ``dF/de`` is the cotangent at ``y``. The
    reverse pass multiplies by ``h'`` enclosed over ``A`` (:func:`jet`), and the
    quadratic split charges ``h''`` over ``A`` (``_quad_split``)."""
    a = tape.ub_root.get(id(blk))
    ctxs = tape.ub_ctxs.pop(id(blk), []) + [ctx]
    iv = tape.interval_outs.get(ctx.path)
    o = outs[0]
    if not isinstance(a, Real) or len(ctxs) != len(blk.eqns) or not isinstance(o, Real):
        # (not expected) no derivative: the result's whole error is one event
        E = iv[0].err if iv is not None and isinstance(iv[0], Real) else jnp.full_like(o.lo, jnp.inf)
        hlo, hhi = (iv[0].lo, iv[0].hi) if iv is not None and isinstance(iv[0], Real) else (o.lo, o.hi)
        r = Real(hlo, hhi, hlo, hhi, jnp.zeros_like(hlo), o.value, exact=True)
        tape.ub_rec[id(ctx.eqn)] = _BlockRec(None, None, None, None)
        return [], [tape.event_value(r, E)]
    config = ctx.config
    # the block over UB_PIECES sub-ranges of A and over A itself, stacked on a leading
    # axis: every operand in A lies in some piece, so the pieces' worst error and the
    # union of their ranges bound the block over A as well; they are intersected with
    # the whole range's (interval evaluation reads the root several times, and its
    # overestimate grows with the width of A)
    plo, phi = _pieces(a.lo, a.hi, UB_PIECES)
    z = jnp.zeros_like(plo)
    val = jnp.broadcast_to(a.value, plo.shape)
    env: dict[Any, Any] = {blk.root: Real(plo, phi, plo, phi, z, val, exact=True)}
    for c, eqn in zip(ctxs, blk.eqns):
        ins = [base.constant(v.val, v.aval, config) if isinstance(v, _compat.Literal) else env[v]
               for v in eqn.invars]
        if base.convert is not None:
            ins = base.convert(c, ins)
        r = base.rules[eqn.primitive](c, *ins, **eqn.params)
        env[eqn.outvars[0]] = base.finalize(c, eqn.outvars[0].aval, r, ins)
    R = env[blk.out]
    tape.nan_seen = tape.nan_seen | jnp.any(nan_possible(R))
    R = sanitize(R)
    rlo, rhi = _union_meet((R.lo, R.hi))
    err = jnp.minimum(jnp.max(R.err[:-1], axis=0), R.err[-1])
    y = tape.event_value(Real(rlo, rhi, rlo, rhi, jnp.zeros_like(rlo), o.value, exact=True), err)
    _, d1, d2 = _piecewise_jet(blk, a.lo, a.hi)
    d1_exact = None
    ex = tape.refined_exact.get(id(a))
    if ex is not None:
        d1_exact = _piecewise_jet(blk, *ex)[1]
    tape.ub_rec[id(ctx.eqn)] = _BlockRec(a, d1, d1_exact, d2)
    return [a], [y]


def _pieces(lo: Any, hi: Any, k: int) -> tuple[Any, Any]:
    """``k`` sub-ranges of ``[lo, hi]`` whose union is ``[lo, hi]``, then the whole
    range: arrays of shape ``(k + 1, *lo.shape)``. Neighbours share their end point
    (one float, so no gap); where the width is not finite every piece is the whole
    range."""
    w = hi - lo
    fin = jnp.isfinite(w)
    # lo + w i/k rounds monotonically in i, so the cuts do not decrease
    cuts = [lo] + [jnp.clip(lo + w * (i / k), lo, hi) for i in range(1, k)] + [hi]
    los = [F.where(fin, c, lo) for c in cuts[:-1]]
    his = [F.where(fin, c, hi) for c in cuts[1:]]
    return jnp.stack(los + [lo]), jnp.stack(his + [hi])


def _union_meet(p: tuple[Any, Any]) -> tuple[Any, Any]:
    """Stacked enclosures over ``_pieces``: the union over the pieces, intersected with
    the whole range's (the last slice)."""
    lo, hi = p
    return jnp.maximum(jnp.min(lo[:-1], axis=0), lo[-1]), jnp.minimum(jnp.max(hi[:-1], axis=0), hi[-1])


def _piecewise_jet(blk: Any, lo: Any, hi: Any) -> tuple[Any, Any, Any]:
    """:func:`~._rules.sensitivity_blocks.jet` over ``[lo, hi]`` as the union of its
    jets over ``UB_PIECES`` sub-ranges, intersected with the jet of the whole range."""
    from ._rules.sensitivity_blocks import jet

    plo, phi = _pieces(lo, hi, UB_PIECES)
    v, d1, d2 = jet(blk, plo, phi)
    return _union_meet(v), _union_meet(d1), _union_meet(d2)


def _softmax_block(tape: _Tape, ctx, outs: list[Any]) -> list[Any]:
    """Record the parts of a shifted softmax; at its division, compute the block's
    ranges and tighten ``p``'s path range with the sharp softmax range."""
    from ._rules.sensitivity_softmax import block_ranges, p_range

    role = tape.sm_role.get(id(ctx.eqn))
    if role is None:
        return outs
    kind, sid = role
    parts = tape.sm_parts.setdefault(sid, {})
    if kind in ("exp", "sum"):
        parts[kind] = ctx
        if kind == "sum":
            parts["axes"] = tuple(int(a) for a in ctx.eqn.params["axes"])
        return outs
    if kind != "div" or not all(k in parts for k in ("d", "exp", "sum")):
        return outs
    p = outs[0]
    d = parts["d"]
    if not (isinstance(p, Real) and isinstance(d, Real)):
        return outs
    blk = block_ranges(parts["exp"], parts["sum"], d, parts["axes"])
    tape.sm_block[id(ctx.eqn)] = (blk, d, parts["axes"])
    E = tape.local.get(id(p))
    if E is None:
        return outs
    # the block's relative events move e and S off their additive path ranges (by up to
    # the absolute budget times e^hi/e^lo), so p's states are enclosed by the sharp range
    # alone, not by its intersection with the interval rule's e/S range
    lo, hi = p_range(blk)
    lo, hi = F.sub_dn(lo, E), F.add_up(hi, E)
    r = Real(lo, hi, lo, hi, jnp.zeros_like(lo), p.value, exact=True)
    tape.keep.append(r)
    for table in (tape.local, tape.random, tape.shift):
        if id(p) in table:
            table[id(r)] = table[id(p)]
    if id(p) in tape.has_event:
        tape.has_event.add(id(r))
    return [r]


#: elementwise primitives (output element i reads operand element i only) that
#: ``_cut_infinite`` may cut per element
_ELEMENTWISE_CUT = frozenset(p for p in (P(n) for n in (
    "exp", "exp2", "expm1", "log", "log1p", "tanh", "logistic", "erf", "erfc", "sqrt", "rsqrt",
    "sin", "cos", "add", "sub", "mul", "div", "max", "min", "neg", "abs", "square", "integer_pow",
    "pow", "clamp", "select_n", "convert_element_type")) if p is not None)


def _cut_infinite(tape: _Tape, ctx, invals: list[Any], outs: list[Any]) -> list[Any]:
    """Cut an elementwise equation where an operand's path range is not finite (a state
    past an infinity: Flax's ``finfo(float32).min`` mask is ``-inf`` in bfloat16 while
    the exact value is finite) or reaches half the format's largest value (a mask
    ``finfo(dtype).min``), but the interval domain bounds the result's total error
    (``exp`` of it is 0, exact or computed): those elements become one event bounded by
    the interval error, with the interval domain's hull of exact and computed values
    as their path range (every state between the exact and the computed value), and
    the reverse pass sends no sensitivity through them (``_reverse``). The infinite
    events before them then meet an exactly-zero sensitivity (``_contrib``). Elsewhere
    nothing changes."""
    if ctx.eqn.primitive not in _ELEMENTWISE_CUT:
        return outs  # (a dot or a transpose of square operands is not elementwise)
    if id(ctx.eqn) in tape.softmax or id(ctx.eqn) in tape.rescaled:
        # the shifted exponent x - c and the values it rescales are states in the frame
        # of the constant c, while the interval domain's hull describes x - max (the
        # computed maximum): no enclosure of these states (found by fuzzing, seed 28471:
        # float8_e5m2 rounding moved two logits onto one value, the cut pinned x - c near
        # 0 where it is -1915 exactly, and a bound downstream missed an error of 1.7)
        return outs
    if len(outs) != 1 or not isinstance(outs[0], Real) or id(outs[0]) not in tape.local:
        return outs
    o = outs[0]
    iv = tape.interval_outs.get(ctx.path)
    if iv is None or not isinstance(iv[0], Real) or jnp.shape(iv[0].err) != jnp.shape(o.lo):
        return outs
    shape = jnp.shape(o.lo)
    bad = jnp.zeros(shape, bool)
    big = ctx.fmt.max_finite
    # select_n: a case operand matters only where the predicate may select it (Flax's
    # mask constant is -inf everywhere, but selected only at the masked logits: cutting
    # every logit lost the first-order chain back to q and k)
    pred = invals[0] if ctx.eqn.primitive is P("select_n") else None
    for k, x in enumerate(invals):
        if not isinstance(x, Real) or id(x) not in tape.has_event:
            continue
        if jnp.shape(x.lo) != shape:
            return outs  # not elementwise in this operand: no per-element cut
        # (or near the format's overflow threshold, where one rounding moves a value by
        # u max_finite: finfo(bfloat16).min - m rounds by 6.6e35, and the reverse pass's
        # smallest sensitivity, the carrier's tiny, times that is not small)
        huge = F.scale_up(jnp.maximum(jnp.abs(x.lo), jnp.abs(x.hi)), 2.0) > big
        this = ~(jnp.isfinite(x.lo) & jnp.isfinite(x.hi)) | huge
        if pred is not None and k > 0:
            if not isinstance(pred, Discrete) or jnp.shape(pred.lo) not in ((), shape):
                return outs
            plo, phi = pred.lo.astype(jnp.int32), pred.hi.astype(jnp.int32)
            this = this & (plo <= k - 1) & (k - 1 <= phi)
        bad = bad | this
    r = iv[0]
    E = tape.local[id(o)]
    hlo, hhi = jnp.minimum(r.lo, r.clo), jnp.maximum(r.hi, r.chi)
    cut = bad & (r.err < jnp.inf) & jnp.isfinite(hlo) & jnp.isfinite(hhi)
    lo, hi = F.where(cut, hlo, o.lo), F.where(cut, hhi, o.hi)
    p = Real(lo, hi, lo, hi, jnp.zeros_like(lo), o.value, exact=True)
    tape.keep.append(p)
    tape.local[id(p)] = F.where(cut, r.err, E)
    for table in (tape.random, tape.shift):
        if id(o) in table:
            table[id(p)] = table[id(o)]
    tape.has_event.add(id(p))
    tape.elem_cut[id(p)] = cut
    return [p]


def _softmax_shift(tape: _Tape, ctx, invals: list[Any]) -> list[Any]:
    """The ``x - max`` of a shift-invariant softmax (``_patterns``): subtract the constant
    ``c`` = upper end of the maximum's path range instead (it encloses the computed
    maximum, so ``c >= m^``): no event, no sensitivity through the maximum."""
    hit = tape.softmax.get(id(ctx.eqn))
    if hit is None:
        return invals
    x, m = invals
    if not (isinstance(x, Real) and isinstance(m, Real)):
        return invals
    c = m.hi
    tape.poison = tape.poison | jnp.any(~jnp.isfinite(c))
    c = F.where(jnp.isfinite(c), c, 0.0)
    cst = Real(c, c, c, c, jnp.zeros_like(c), m.value, exact=True, point=True)
    tape.keep.append(cst)
    new = [x, cst]
    tape.substituted[id(ctx.eqn)] = new
    # the exact value of x - c: (x - m)_exact + (m_exact - c), from the interval analysis
    producer = hit[2]
    prefix = ctx.path[:ctx.path.rfind("/") + 1]
    ivd = tape.interval_outs.get(ctx.path)
    ivm = tape.interval_outs.get(prefix + producer)
    if ivd is not None and ivm is not None and isinstance(ivd[0], Real) and isinstance(ivm[0], Real):
        lo = F.add_dn(ivd[0].lo, F.sub_dn(ivm[0].lo, c))
        hi = F.add_up(ivd[0].hi, F.sub_up(ivm[0].hi, c))
        tape.shifted_exact[id(ctx.eqn)] = (lo, hi)
    return new


_KINKS = {P("max"), P("min"), P("abs"), P("clamp")}
#: at a max/min whose selected operand is uncertain along the path but certain in exact
#: arithmetic, go on through that operand and charge a remainder event
#: (:meth:`_Tape.kink_exact`) instead of cutting the output
KINK_EXACT = True


def _fold_terms(tape: _Tape, ctx, invals) -> list[tuple[int, Any, Any, Any, Any]]:
    """The rounded inputs of a dot_general whose events :func:`_fold_input_events` folds
    into the product's: ``(k, x, V, Dout, SS)`` per operand ``k``, where the product
    moves by ``other·dW`` with ``dW = D + e`` (``D`` the known shift, or none) and
    ``|other·dW - Dout| <= V`` for every ``other`` in its path range (``Dout`` the
    float ``mid(other)·D``, None without a shift); ``SS``: ``other^2·E^2`` summed
    (probabilistic sum of squares, without a shift)."""
    if ctx.eqn.primitive is not P("dot_general") or len(invals) != 2:
        return []
    dn = ctx.eqn.params["dimension_numbers"]
    adt = tape.adt
    terms = []
    for k, x in enumerate(invals):
        if not (isinstance(x, Real) and id(x) in tape.input_E and id(x) in tape.single_use):
            continue
        other = invals[1 - k]
        if not isinstance(other, Real):
            continue
        # worth it (a weight-sized cotangent per output element), and nearly lossless: each
        # element of x reaches the output through few products (the other operand's free
        # size), so folding gives up little cancellation between them
        (lc2, rc2), (lb2, rb2) = dn
        ocontr, obatch = (rc2, rb2) if k == 0 else (lc2, lb2)
        oshape = jnp.shape(other.lo)
        other_free = int(np.prod([oshape[d] for d in range(len(oshape)) if d not in ocontr and d not in obatch]))
        if other_free > 8 or int(np.prod(jnp.shape(x.lo))) < 1024:
            continue
        E_x = tape.input_E[id(x)]
        om = mag(other.lo, other.hi)
        n = _contracted_length(ctx, invals)
        gam = F.gamma(n + 1, float(np.finfo(adt).eps) / 2)
        slack = F.static_up(2 * (n + 1) * float(np.finfo(adt).tiny), adt)

        def dot_up(a, b, k=k):
            lhs, rhs = (a, b) if k == 1 else (b, a)
            r = lax.dot_general(lhs, rhs, dn, precision=lax.Precision.HIGHEST, preferred_element_type=adt)
            return F.add_up_nn(F.scale_up(r, 1 + 2 * gam), slack)

        D_x = tape.shift.get(id(x))
        if D_x is None:
            V, Dout = dot_up(om, E_x), None
            SS = dot_up(F.mul_up(om, om), F.mul_up(E_x, E_x)) if tape.probabilistic else None
        else:
            # the event is D_x + e with |e| <= the residual bound (not the whole E_x)
            E_x = tape.input_res.get(id(x), E_x)
            # the known shift moves the product by other·D_x, other in [lo, hi]:
            # mid·D_x (computed; its rounding error bounded) ± rad·|D_x|
            omid = other.lo / 2 + other.hi / 2
            orad = F.up(jnp.maximum(F.sub_up(other.hi, omid), F.sub_up(omid, other.lo)))
            lhs_rhs = (D_x, omid) if k == 0 else (omid, D_x)
            Dout = lax.dot_general(*lhs_rhs, dn, precision=lax.Precision.HIGHEST, preferred_element_type=adt)
            absD = jnp.abs(D_x)
            V = F.add_up_nn(F.add_up_nn(dot_up(om, E_x), dot_up(orad, absD)),
                            F.scale_up(dot_up(jnp.abs(omid), absD), 2 * gam))
            SS = None
        terms.append((k, x, V, Dout, SS))
    return terms


def _fold_input_events(tape: _Tape, ctx, invals, outs) -> None:
    """A rounded input (a weight matrix) read once, by a dot_general: its rounding events
    ``e_W`` reach the output only through this product, and
    ``sum |d out/d W| E_W = sum_i |g_i| (|x|·E_W)_i``: fold them into the product's own
    event (``E += |x|·E_W``; sum of squares ``+= x^2·E_W^2``) instead of forming a
    weight-sized cotangent per output element (:func:`_fold_terms`)."""
    if len(outs) != 1 or not isinstance(outs[0], Real):
        return
    out = outs[0]
    adt = tape.adt
    for _k, x, V, Dout, SS in _fold_terms(tape, ctx, invals):
        if Dout is not None:
            D_old = tape.shift.get(id(out))
            tape.shift[id(out)] = Dout if D_old is None else D_old + Dout
            if D_old is not None:  # the float add of two shifts: one more rounding
                V = F.add_up_nn(V, F.scale_up(jnp.abs(D_old + Dout), float(np.finfo(adt).eps)))
        E_old = tape.local.get(id(out))
        tape.local[id(out)] = V if E_old is None else F.add_up_nn(E_old, V)
        if tape.probabilistic:
            ss_old, det_old = tape.random.get(id(out), (jnp.zeros_like(V), jnp.zeros_like(V)))
            if Dout is None:
                tape.random[id(out)] = (F.add_up_nn(ss_old, SS), det_old)
            else:  # the shift is deterministic (counted through tape.shift); the rest too
                tape.random[id(out)] = (ss_old, F.add_up_nn(det_old, V))
        tape.has_event.add(id(out))
        # the input's events are accounted for here; nothing else reads it
        tape.has_event.discard(id(x))
        tape.folded.add(id(x))


def _refine(tape: _Tape, ctx, invals, outs: list[Any]) -> list[Any]:
    """Tighten the path range of outputs read by range-sensitive primitives with their own
    first-order deviation bound ``B`` (a reverse pass over the tape so far):
    every path state lies within ``B`` of the exact value, which lies in the interval
    domain's exact range."""
    if not tape.sensitive:
        return outs
    iv = tape.interval_outs.get(ctx.path)
    new = list(outs)
    for j, (v, o) in enumerate(zip(ctx.eqn.outvars, outs)):
        if v not in tape.sensitive or not isinstance(o, Real) or iv is None or not isinstance(iv[j], Real):
            continue
        has_ev = id(o) in tape.has_event or any(id(x) in tape.has_event for x in invals)
        size = max(1, int(np.prod(jnp.shape(o.lo))))
        if not has_ev or size > MAX_REFINED_SIZE or tape.n_refined >= MAX_REFINED_VALUES:
            continue
        # the rescaled values of a shifted softmax have no interval-domain exact range
        shifted = id(ctx.eqn) in tape.softmax
        if id(ctx.eqn) in tape.rescaled or (shifted and id(ctx.eqn) not in tape.shifted_exact):
            continue
        tape.n_refined += 1
        tape.n_refined_elems += size
        # the deviation of o comes from events before this equation and its own
        probe = Real(o.lo, o.hi, o.lo, o.hi, jnp.zeros_like(o.lo), o.value, exact=True)
        tape.keep.extend((o, probe))
        tape.has_event.add(id(probe))
        # the other results of a multiple-result equation stay in place (no cotangent)
        entry = (ctx, list(invals), [probe if k == j else x for k, x in enumerate(outs)])
        for table in (tape.local, tape.random, tape.exact, tape.rem, tape.elem_cut):
            if id(o) in table:
                table[id(probe)] = table[id(o)]
        if id(o) in tape.prob_cut:
            tape.prob_cut.add(id(probe))
        # the pass stops at the values refined before (their deviation is one event
        # bounded by their B): each refinement costs a reverse pass over the equations
        # since those, not over the whole program (worst case only: a stopped value
        # has no probabilistic part; not for a softmax exponent: exp's derivative range
        # grows like e^B there)
        # (while the whole-tape passes so far and this one fit REFINE_FULL_BUDGET
        # entries, the pass *splits* at the refined values instead: it goes back to the
        # inputs with the cotangent midpoints, so the cancellations across those values
        # survive, and charges only the enclosures' widths times their B; a pass that
        # keeps the whole enclosures instead sums their radii through |W| at every layer:
        # 4-layer 256-wide bfloat16 MLP, first_order / first-order limit 4.36 -> 2.99
        # (tanh), 24.7 -> 7.3 (gelu))
        stops, split = _pass_mode(tape, not shifted and not tape.probabilistic)
        from ._gram import row_budget

        want_gram = GRAM and split and stops is not None and row_budget(size) > 0
        res = _reverse(tape, tape.entries + [entry], list(tape.inputs), [probe], tape.adt, stops=stops,
                       split=split, gram=want_gram)
        gram_rows = None
        if want_gram:
            res, gram_rows, gram_cols = res[0], res[1:4], res[4]
        B = res[:, 0]
        if tape.probabilistic:
            # probabilistic path ranges (see _prob_refined_delta): B holds with
            # probability >= 1 - delta_ref per element, under the rounding model
            B = jnp.minimum(B, _prob_combine(res, tape.lam_ref))
        B = B.reshape(jnp.shape(o.lo))
        B = F.where(tape.poison, jnp.inf, B)
        ex_lo, ex_hi = iv[j].lo, iv[j].hi
        if shifted:  # the exponent x - c, not the interval domain's x - max
            ex_lo, ex_hi = tape.shifted_exact[id(ctx.eqn)]
        lo = jnp.maximum(o.lo, F.sub_dn(ex_lo, B))
        hi = jnp.minimum(o.hi, F.add_up(ex_hi, B))
        r = Real(lo, hi, lo, hi, jnp.zeros_like(lo), o.value, exact=True)
        tape.keep.append(r)
        for table in (tape.local, tape.random, tape.exact, tape.rem, tape.elem_cut):
            if id(o) in table:
                table[id(r)] = table[id(o)]
        if id(o) in tape.prob_cut:
            tape.prob_cut.add(id(r))
        tape.has_event.add(id(r))
        tape.refined[id(r)] = B
        if gram_rows is not None and jnp.shape(gram_rows[0][0])[1] > 1:
            from ._gram import Gram

            (rows, gd_), gL, gR = gram_rows
            Bf = B.reshape(-1)
            gR = F.where(tape.poison | ~jnp.isfinite(Bf) | ~jnp.isfinite(gd_), jnp.inf, gR)
            # (the probe's own event is the refined value's in later passes)
            cols = [(k if k is None or k[0] != id(probe) else (id(r), k[1]), n) for k, n in gram_cols]
            tape.gram[id(r)] = Gram(rows, F.where(jnp.isfinite(gd_), gd_, 0.0), gL, gR, Bf, cols)
        tape.refined_exact[id(r)] = (jnp.broadcast_to(ex_lo, jnp.shape(lo)), jnp.broadcast_to(ex_hi, jnp.shape(lo)))
        new[j] = r
    return new


def _pass_mode(tape: _Tape, checkpoints: bool) -> tuple[dict[int, Any] | None, bool]:
    """``(stops, split)`` for a refinement pass over the tape so far (``_reverse``): it
    stops at the values refined before (``checkpoints`` and ``REFINE_CHECKPOINTS``), and
    splits there instead while the whole-tape passes fit ``tape.refine_budget`` entries
    (or with ``REFINE_SPLIT``); counts the entries a whole-tape pass walks."""
    stops = tape.refined if REFINE_CHECKPOINTS and checkpoints else None
    split = REFINE_SPLIT
    if stops is not None and tape.full_refine_cost + len(tape.entries) + 1 <= tape.refine_budget:
        split = True
    if stops is None or split:
        tape.full_refine_cost += len(tape.entries) + 1
    return stops, split


def _pre_refine(tape: _Tape, ctx, ins: list[Any]) -> None:
    """The *pre-rounding refinement* of a dot_general / convolution (worst case): before
    its rule runs, bound the deviation ``B'`` of its exact result over the operands'
    states along the segment from the exact one (a reverse pass over the tape so far,
    the equation's own rounding excluded), and give the rule the range
    ``exact ± B'`` (``ctx.range_hint``).

    Sound: every state of the result before its rounding is ``x(t e)·w(t e)``, within
    ``B'`` of ``x(0)·w(0)`` (the bound of :func:`_reverse`, like ``_refine``'s), which
    lies in the interval domain's exact range. Why: the interval product of the path
    ranges, ``|w| · rad(x)``, loses the cancellations in ``w · dx``; the wide
    accumulator's final rounding ``u |y|`` and every later elementwise event were
    bounded over that range (4-layer 256-wide tanh MLP in bfloat16: 4-10x the value in
    layers 3-4)."""
    if not PRE_REFINE or tape.probabilistic or ctx.eqn.primitive not in _BILINEAR:
        return
    if tape.n_pre_refined >= MAX_PRE_REFINED or id(ctx.eqn) in tape.rescaled:
        return
    if not all(isinstance(x, Real) for x in ins) or not any(id(x) in tape.has_event for x in ins):
        return
    iv = tape.interval_outs.get(ctx.path)
    if iv is None or len(iv) != 1 or not isinstance(iv[0], Real):
        return
    shape = jnp.shape(iv[0].lo)
    size = int(np.prod(shape))
    if size == 0 or size > MAX_REFINED_SIZE:
        return
    # only where the result's range matters to its own event: a wide accumulator's final
    # rounding (b |y|; the other models bound by a S, whatever the range) over enough
    # terms for the interval product to lose much (it grows like sqrt(n) over |x·w|)
    n = _contracted_length(ctx, ins)
    if n < PRE_REFINE_MIN_N or ctx.acc.coefficients(n, ctx.fmt, products=True)[1] == 0:
        return
    tape.n_pre_refined += 1
    z = jnp.zeros(shape, tape.adt)
    probe = Real(z, z, z, z, z, z, exact=True)
    tape.keep.append(probe)
    tape.has_event.add(id(probe))  # (no local event: its own rounding is excluded)
    stops, split = _pass_mode(tape, True)
    # the weights whose events the product will fold (_fold_input_events): not through
    # the pass (a weight-sized cotangent per element) but their whole effect,
    # |other·dW| <= |Dout| + V for every state of the other operand
    folds = _fold_terms(tape, ctx, ins)
    held = [x for _, x, _, _, _ in folds if id(x) in tape.has_event]
    tape.has_event.difference_update(id(x) for x in held)
    res = _reverse(tape, tape.entries + [(ctx, list(ins), [probe])], list(tape.inputs), [probe], tape.adt,
                   stops=stops, split=split)
    tape.has_event.update(id(x) for x in held)
    B = res[:, 0].reshape(shape)
    for _, _, V, Dout, _ in folds:
        B = F.add_up_nn(B, V if Dout is None else F.add_up_nn(V, jnp.abs(Dout)))
    B = F.where(tape.poison | jnp.isnan(B), jnp.inf, B)
    ctx.range_hint = (F.sub_dn(iv[0].lo, B), F.add_up(iv[0].hi, B))


def _contracted_length(ctx, ins: list[Any]) -> int:
    """Terms per output element of a dot_general / convolution."""
    if ctx.eqn.primitive is P("dot_general"):
        (lc, _), _ = ctx.eqn.params["dimension_numbers"]
        return int(np.prod([jnp.shape(ins[0].lo)[d] for d in lc]))
    return conv_terms(jnp.shape(ins[1].lo), ctx.eqn.params["dimension_numbers"])


# ---------------------------------------------------------------------------
# probabilistic=delta
# ---------------------------------------------------------------------------


def _lam(delta: float) -> float:
    """Azuma-Hoeffding: ``P(|sum X_j| >= lam sqrt(sum c_j^2)) <= delta`` for martingale
    differences ``|X_j| <= c_j``, with ``lam = sqrt(2 ln(2/delta))`` (rounded up)."""
    return math.sqrt(2 * math.log(2 / delta)) * (1 + 1e-12)


def _prob_refined_delta(delta: float, n_max: int = 0) -> float:
    """The failure probability allotted to each refined intermediate element.

    In probabilistic mode the refined path ranges (``_refine``) use the element's own
    probabilistic deviation bound. Let ``A`` be the event that every refined element
    stays within its bound. On ``A`` every path range, local bound ``E_k`` and
    sensitivity enclosure computed from those ranges is valid, so each later bound
    holds on ``A`` intersected with its own Azuma-Hoeffding event (the martingale
    differences stopped at the first range violation are still bounded by the same
    ``c_j``). At most ``n_max`` elements are refined (``_refinable_elements``, and never
    more than ``MAX_REFINED_VALUES * MAX_REFINED_SIZE``), each allotted
    ``delta / (2 n_max)``: ``P(not A) <= delta / 2``, and the outputs get the other
    ``delta / 2``."""
    cap = MAX_REFINED_VALUES * MAX_REFINED_SIZE
    n = cap if n_max <= 0 else min(n_max, cap)
    return delta / (2.0 * n)


def _refinable_elements(jaxpr: Any, sensitive: set[Any]) -> int:
    """An upper bound of the number of elements ``_refine`` can refine: the sizes of
    every equation result in ``sensitive`` of at most ``MAX_REFINED_SIZE`` elements,
    counted once per interpretation (call bodies once per call site)."""
    total = 0

    def walk(j):
        nonlocal total
        for eqn in j.eqns:
            sub = _compat.call_subjaxpr(eqn)
            if sub is not None:
                walk(sub[0])
                continue
            for v in eqn.outvars:
                if v in sensitive:
                    size = max(1, int(np.prod(getattr(v.aval, "shape", ()))))
                    if size <= MAX_REFINED_SIZE:
                        total += size

    walk(jaxpr)
    return total


def _prob_combine(res: Any, lam: float) -> Any:
    """``lam * sqrt(sum of squares) + variation + deterministic`` from ``_reverse``'s rows."""
    s = F.up(jnp.sqrt(F.up(res[:, 1])))
    return F.add_up_nn(F.add_up_nn(F.scale_up(s, lam), res[:, 2]), res[:, 3])


def _exact_value(lo: Any, hi: Any, value: Any) -> Real:
    return Real(lo, hi, lo, hi, jnp.zeros_like(lo), value, exact=True)


#: elementwise primitives linearised at the exact point in probabilistic mode; the
#: remainder is bounded from their sensitivity rule over the path ranges
_PROB_ELEMENTWISE = {P(n) for n in (
    "exp", "exp2", "expm1", "log", "log1p", "tanh", "logistic", "erf", "erfc", "sqrt", "rsqrt",
    "square", "integer_pow", "mul", "div", "max", "min", "abs", "clamp")}
#: primitives whose sensitivity rule does not read the operands' ranges (linear in the
#: floating operands, data movement, selections by a path predicate)
_PROB_RANGE_FREE = ({P(n) for n in (
    "add", "add_any", "add_jaxvals", "sub", "neg", "reduce_sum", "copy", "copy_p", "stop_gradient",
    "optimization_barrier", "sharding_constraint", "device_put", "name", "reduce_precision",
    "convert_element_type", "split", "dynamic_slice", "dynamic_update_slice", "gather", "select_n",
    "scatter_add", "scatter-add", "scatter", "cumsum", "reduce_window_sum")} | _STRUCTURAL) - {None}
_PROB_BILINEAR = {P("dot_general"), P("conv_general_dilated")} - {None}
_PROB_EXTREME = {P("reduce_max"), P("reduce_min")} - {None}


def _prob_record(tape: _Tape, ctx, invals, outs) -> None:
    """Probabilistic mode: every node is *linearised at the exact point*,
    ``f(x^) = f(x) + f'(x) (x^ - x) + r`` (``f'`` from an element of the Clarke
    gradient where ``f`` is not differentiable), so that the output's deviation is
    exactly ``sum_k J_k e_k + sum_nodes J_node r_node + sum_inputs J_p D_p`` with
    ``J`` the (fixed, deterministic) sensitivities of the linearised program at the
    exact point: the reverse pass encloses them over the interval domain's
    *exact-value* ranges (``tape.exact``), not over the path ranges. By Lebourg's mean
    value theorem ``f(x^) - f(x) = z (x^ - x)`` with ``z`` in the generalised gradient
    over the path range, so ``|r| <= sum_i width(d_i f over the path) |dx_i|``; the
    rules' enclosures over the path ranges give the widths, and ``|dx_i|`` is bounded
    by the operand's refined deviation bound (else its path width). A dot product
    of two varying operands has the exact remainder ``da . db``: ``|.| <= |da|.|db|``.
    Records ``tape.exact`` for the outputs and ``tape.rem`` (or ``tape.prob_cut``:
    a node of any other nonlinear primitive is cut)."""
    iv = tape.interval_outs.get(ctx.path)
    for j, o in enumerate(outs):
        if isinstance(o, Real) and iv is not None and j < len(iv) and isinstance(iv[j], Real):
            tape.exact[id(o)] = _exact_value(iv[j].lo, iv[j].hi, iv[j].value)
    prim = ctx.eqn.primitive
    varying = [isinstance(x, Real) and id(x) in tape.has_event for x in invals]
    if not any(varying) or prim in _PROB_RANGE_FREE:
        return
    real_outs = [o for o in outs if isinstance(o, Real)]
    if not real_outs:
        return

    def dev(x):  # |x^ - x| on the path (valid on the event of the refined bounds)
        w = F.sub_up(x.hi, x.lo)
        b = tape.refined.get(id(x))
        return w if b is None else jnp.minimum(w, b)

    adt = ctx.adt
    R = None
    if prim in _PROB_ELEMENTWISE or prim in _PROB_EXTREME:
        _lin_point(tape, ctx, invals, outs)
    if prim in _PROB_BILINEAR:
        if not all(varying):
            return  # linear in the varying operand
        if prim is P("dot_general"):
            a, b = invals
            dn = ctx.eqn.params["dimension_numbers"]
            (lc, _), _ = dn
            n = int(np.prod([jnp.shape(a.lo)[d] for d in lc]))
            r = lax.dot_general(dev(a), dev(b), dn, precision=lax.Precision.HIGHEST, preferred_element_type=adt)
            gam = F.gamma(n + 1, float(np.finfo(adt).eps) / 2)
            R = F.add_up_nn(F.scale_up(r, 1 + 2 * gam), F.static_up(2 * (n + 1) * float(np.finfo(adt).tiny), adt))
    elif prim in _PROB_SPECIFIC:
        R = _PROB_SPECIFIC[prim](tape, ctx, invals, real_outs[0], varying, dev)
    if R is None and (prim in _PROB_ELEMENTWISE or prim in _PROB_EXTREME):
        rule = sensitivity_rules.get(prim)
        o = real_outs[0]
        if rule is not None and len(real_outs) == 1:
            ctx.need = [isinstance(x, Real) for x in invals]
            ctx.kink_cut = False
            one = Cot(jnp.ones_like(o.lo), jnp.zeros_like(o.lo))
            cots, cut = rule(ctx, [one], list(invals), list(outs), **ctx.eqn.params)
            # the derivative at the linearisation point c (else over the exact ranges):
            # |z - f'(c)| <= |mid_p - mid_c| + rad_p + rad_c, z in the path enclosure
            lin = tape.lin.get(id(ctx))
            if lin is None:
                lin = ([tape.exact.get(id(x), x) for x in invals], [tape.exact.get(id(y), y) for y in outs])
            ex_cots, ex_cut = rule(ctx, [one], list(lin[0]), list(lin[1]), **ctx.eqn.params)
            if cut is None and ex_cut is None:
                R = jnp.zeros_like(o.lo)
                for x, c, ce, v in zip(invals, cots, ex_cots, varying):
                    if not v:
                        continue
                    if c is None or ce is None:
                        R = None
                        break
                    dist = F.add_up_nn(F.add_up_nn(F.up(jnp.abs(c.mid - ce.mid)), c.rad), ce.rad)
                    t = F.mul_up(dist, dev(x))
                    t = F.where(jnp.isnan(t), jnp.inf, t)
                    if prim in _PROB_EXTREME:
                        axes = tuple(ctx.eqn.params["axes"])
                        t = _sum_axes_up(t, axes)
                    if jnp.shape(t) != jnp.shape(o.lo):
                        R = None  # a broadcast operand: not handled
                        break
                    R = F.add_up_nn(R, t)
    if R is None:
        for o in real_outs:
            tape.prob_cut.add(id(o))
        return
    tape.rem[id(real_outs[0])] = R


def _lin_point(tape: _Tape, ctx, invals, outs) -> None:
    """Record ``tape.lin[id(ctx)]``: the operands and results of a nonlinear elementwise
    node at its *linearisation point* ``c``: for every operand with an exact range
    ``[lo, hi]`` (``tape.exact``) the point ``c = mid(lo, hi)`` (in the range), the
    results as the interval rule's exact-operation enclosure of ``f(c)``.

    Why: the exact ranges of a point input are not points (the interval domain's own
    outward rounding widens them layer by layer: relative widths of 1e-4 to 1e-2
    after a few 256-wide layers); a derivative enclosed over them has a radius
    ``rad`` that the probabilistic bound pays in worst case (``sum rad |D|`` over the
    known input shifts, ``rad`` inside every remainder). Linearising instead at a
    *fixed, known* ``c`` (deterministic: it does not depend on the rounding events)
    gives derivatives enclosed to the analysis' rounding, and the difference
    ``(f'(x) - f'(c)) dx`` is part of the node's remainder: the generic Lebourg
    bound ``|z - f'(c)| |dx|`` with ``z`` over the path range (which contains both
    ``x`` and ``x^``) covers it as is; the Taylor remainders (``_taylor``) add
    ``M2 |x - c| |dx|``; ``max``/``min`` (``_extreme_rem``) keep their slope, since
    ``c`` lies on the exact value's side where that side is certain.

    Nothing is recorded (exact ranges are used) if the rule fails or an operand
    with events has no exact range."""
    from dataclasses import replace

    pins = []
    for x in invals:
        if not isinstance(x, Real):
            pins.append(x)
            continue
        ex = tape.exact.get(id(x))
        if ex is None:
            if id(x) in tape.has_event:
                return
            ex = x
        c = jnp.clip(ex.lo / 2 + ex.hi / 2, ex.lo, ex.hi)
        ok = jnp.isfinite(c)
        lo, hi = F.where(ok, c, ex.lo), F.where(ok, c, ex.hi)
        pins.append(Real(lo, hi, lo, hi, jnp.zeros_like(lo), x.value, exact=True))
    rule = interval_rules.get(ctx.eqn.primitive)
    if rule is None:
        return
    ictx = replace(ctx, exact_ops=True, diag=DiagnosticCollector())
    try:
        res = rule(ictx, *pins, **ctx.eqn.params)
    except Exception:  # noqa: BLE001 - no point enclosure: keep the exact ranges
        return
    res = list(res) if ctx.eqn.primitive.multiple_results else [res]
    pouts = []
    for o, r in zip(outs, res):
        if not isinstance(o, Real):
            pouts.append(o)
            continue
        if not isinstance(r, Real) or jnp.shape(r.lo) != jnp.shape(o.lo):
            return
        # the exact-operation enclosure of f(c) (both of its ranges)
        lo, hi = jnp.minimum(r.lo, r.clo), jnp.maximum(r.hi, r.chi)
        pouts.append(Real(lo, hi, lo, hi, jnp.zeros_like(lo), o.value, exact=True))
    tape.keep.append(ctx)
    tape.lin[id(ctx)] = (pins, pouts)


def _lin_offset(tape: _Tape, ctx, k: int, a: Real) -> Any:
    """Bound of ``|x - c|`` for operand ``k`` of a node linearised at ``c``
    (``_lin_point``): the exact operand ``x`` lies in its exact range, so the larger
    distance from ``c`` to the range's ends (``c`` the midpoint: half the width)."""
    ex = tape.exact.get(id(a))
    if ex is None:  # no events: _lin_point took the point in a's own range
        ex = a
    c = tape.lin[id(ctx)][0][k]
    return jnp.maximum(F.sub_up(ex.hi, c.lo), F.sub_up(c.hi, ex.lo))


def _taylor(m2_fn):
    """A unary smooth ``f`` linearised at ``c`` (``_lin_point``; ``c = x`` without one):
    ``f(x^) - f(x) - f'(c) dx = [f(x^) - f(x) - f'(x) dx] + (f'(x) - f'(c)) dx``, so
    ``|r| <= M2 dx^2 / 2 + M2 |x - c| |dx|`` with ``M2 >= sup |f''|`` over the path
    range (it contains the exact range, hence ``x``, ``c`` and ``x^``)."""
    def rem(tape, ctx, ins, o, varying, dev):
        a = ins[0]
        if not (isinstance(a, Real) and varying[0]):
            return None
        m2 = m2_fn(a, o)
        d = dev(a)
        half = F.scale_up(d, 0.5)
        if id(ctx) in tape.lin:
            half = F.add_up_nn(half, _lin_offset(tape, ctx, 0, a))
        return F.mul_up(m2, F.mul_up(d, half))
    return rem


def _tanh_m2(a, o):
    # tanh'' = -2 t (1 - t^2), |.| <= 4 / (3 sqrt 3) < 0.7699
    tmax = jnp.minimum(mag(o.lo, o.hi), 1.0)
    tmin = mig(o.lo, o.hi)
    return jnp.minimum(0.7699, F.scale_up(F.mul_up(tmax, F.sub_up(1.0, F.mul_dn(tmin, tmin))), 2.0))


def _logistic_m2(a, o):
    # s'' = s (1 - s) (1 - 2 s), |.| <= s(1-s) |1 - 2s| <= |1 - 2s| / 4, and <= 1 / (6 sqrt 3) < 0.0963
    s_lo, s_hi = jnp.clip(o.lo, 0.0, 1.0), jnp.clip(o.hi, 0.0, 1.0)
    w = jnp.maximum(jnp.abs(F.sub_up(1.0, F.mul_dn(s_lo, 2.0))), jnp.abs(F.sub_dn(1.0, F.mul_up(s_hi, 2.0))))
    w = jnp.maximum(w, jnp.abs(F.sub_dn(1.0, F.mul_up(s_lo, 2.0))))
    return jnp.minimum(0.0963, F.scale_up(w, 0.25))


def _erf_m2(a, o):
    # erf'' = -(4 / sqrt pi) x exp(-x^2), |.| <= (4 / sqrt pi) |x| and <= 0.9679
    return jnp.minimum(0.9679, F.scale_up(mag(a.lo, a.hi), 2.2568))


def _integer_pow_rem(tape, ctx, ins, o, varying, dev):
    """``x^n`` with ``2 <= n <= 8``: a Taylor remainder (``_taylor``) with ``M2 =
    n (n - 1) mag(path)^(n - 2) >= sup |f''|`` over the path range."""
    n = int(ctx.eqn.params["y"])
    a = ins[0]
    if not (2 <= n <= 8 and isinstance(a, Real)):
        return None
    m = mag(a.lo, a.hi)
    m2 = jnp.full_like(m, float(n * (n - 1)))
    for _ in range(n - 2):
        m2 = F.mul_up(m2, m)
    return _taylor(lambda a_, o_: m2)(tape, ctx, ins, o, varying, dev)


def _extreme_rem(is_max):
    """``max(a, c)`` / ``min(a, c)`` with ``c`` free of events (a ReLU): where the exact
    ``a`` is certainly on one side with a gap ``g`` to ``c``, the linearisation (slope 1
    or 0) is wrong only if ``a`` moves past ``c``: ``|r| <= max(0, |da| - g)``; where
    the side is not certain at the exact point, ``|r| <= |da|`` (slope in [0, 1])."""
    def rem(tape, ctx, ins, o, varying, dev):
        a, c = ins
        if not (isinstance(a, Real) and isinstance(c, Real)) or varying[1] or not varying[0]:
            return None
        if jnp.shape(a.lo) != jnp.shape(o.lo):
            return None
        ax = tape.exact.get(id(a), a)
        # gap between the exact a and c's range (0 where they overlap)
        gap = jnp.maximum(jnp.maximum(F.sub_dn(ax.lo, c.hi), F.sub_dn(c.lo, ax.hi)), 0.0)
        return jnp.maximum(F.sub_up(dev(a), gap), 0.0)
    return rem


def _mul_rem(tape, ctx, ins, o, varying, dev):
    """``a * b``: ``a^ b^ - a b = b da + a db + da db`` exactly; linearised at ``c``
    (``_lin_point``; ``c = (a, b)`` without one) the remainder is ``(b - c_b) da +
    (a - c_a) db + da db``: ``|r| <= w_b |da| + w_a |db| + |da| |db|`` with ``w`` the
    exact ranges' widths (``_lin_offset``). Operands broadcast (a scalar literal
    rounded into the format: its event is ``db``)."""
    a, b = ins
    if not (isinstance(a, Real) and isinstance(b, Real)):
        return None
    da = dev(a) if varying[0] else jnp.zeros_like(a.lo)
    db = dev(b) if varying[1] else jnp.zeros_like(b.lo)
    R = F.mul_up(da, db)
    if id(ctx) in tape.lin:
        R = F.add_up_nn(R, F.add_up_nn(F.mul_up(_lin_offset(tape, ctx, 1, b), da),
                                       F.mul_up(_lin_offset(tape, ctx, 0, a), db)))
    R = F.where(jnp.isnan(R), jnp.inf, R)
    if jnp.broadcast_shapes(jnp.shape(R), jnp.shape(o.lo)) != jnp.shape(o.lo):
        return None
    return jnp.broadcast_to(R, jnp.shape(o.lo))


_PROB_SPECIFIC = {P("tanh"): _taylor(_tanh_m2), P("logistic"): _taylor(_logistic_m2),
                  P("erf"): _taylor(_erf_m2), P("exp"): _taylor(lambda a, o: o.hi),
                  P("max"): _extreme_rem(True), P("min"): _extreme_rem(False), P("mul"): _mul_rem,
                  P("integer_pow"): _integer_pow_rem}


def _sum_axes_up(t: Any, axes: tuple) -> Any:
    n = max(1, int(np.prod([jnp.shape(t)[d] for d in axes]))) if axes else 1
    dt = t.dtype
    gam = F.gamma(n, float(np.finfo(dt).eps) / 2)
    return F.add_up_nn(F.scale_up(jnp.sum(t, axis=axes), 1 + 2 * gam), F.static_up(2 * n * float(np.finfo(dt).tiny), dt))


def _random_parts(ctx, ins, out: Real, E: Any) -> tuple[Any, Any]:
    """(sum of squared bounds of the independent elementary roundings, deterministic part)
    of one equation's local error. A sum or dot product: see ``_sum_parts``; any other
    equation is one rounding (or one budgeted function evaluation) bounded by ``E``."""
    prim = ctx.eqn.primitive
    adt = ctx.adt
    if prim is P("dot_general") and all(isinstance(x, Real) for x in ins):
        a, b = ins
        dn = ctx.eqn.params["dimension_numbers"]
        (lc, _), _ = dn
        n = int(np.prod([jnp.shape(a.lo)[d] for d in lc]))
        am, bm = mag(a.lo, a.hi), mag(b.lo, b.hi)

        def dot_up(x, y):
            r = lax.dot_general(x, y, dn, precision=lax.Precision.HIGHEST, preferred_element_type=adt)
            gam = F.gamma(n + 1, float(np.finfo(adt).eps) / 2)
            return F.add_up_nn(F.scale_up(r, 1 + 2 * gam), F.static_up(2 * (n + 1) * float(np.finfo(adt).tiny), adt))

        S = dot_up(am, bm)
        Q = dot_up(F.mul_up(am, am), F.mul_up(bm, bm))
        return _sum_parts(ctx, n, True, S, Q, out, E)
    if prim is P("reduce_sum") and isinstance(ins[0], Real):
        a = ins[0]
        axes = ctx.eqn.params["axes"]
        n = int(np.prod([jnp.shape(a.lo)[d] for d in axes])) if axes else 1
        am = mag(a.lo, a.hi)
        gam = F.gamma(n + 1, float(np.finfo(adt).eps) / 2)
        slack = F.static_up(2 * (n + 1) * float(np.finfo(adt).tiny), adt)
        S = F.add_up_nn(F.scale_up(jnp.sum(am, axis=axes), 1 + 2 * gam), slack)
        Q = F.add_up_nn(F.scale_up(jnp.sum(F.mul_up(am, am), axis=axes), 1 + 2 * gam), slack)
        return _sum_parts(ctx, n, False, S, Q, out, E)
    # one rounding (or one budgeted function evaluation): bounded by E itself
    return F.mul_up(E, E), jnp.zeros_like(E)


def _sum_levels(acc: Any, n: int) -> np.ndarray:
    """The additions of a sum of ``n`` terms under ``acc``, grouped in *levels* whose
    results are sums of disjoint sets of terms: the largest set size ``m_l`` of each
    level (ascending; the last level is the final addition, ``m = n``).

    - recursive (any order; also the inner sum of ``wide``): the ``j``-th addition's
      result is a partial sum of ``j + 1`` terms: ``m = 2, ..., n``;
    - pairwise (any binary tree of height ``L = ceil(log2 n)``): the additions whose
      node has height ``h`` are disjoint subtrees of at most ``2^h`` leaves;
    - blocked:B: the ``j``-th addition inside every block (``m = 2..B``), then the
      recursive sum of the ``ceil(n/B)`` block sums (``m = 2B, 3B, ..., n``)."""
    if n <= 1:
        return np.zeros((0,), np.float64)
    if acc.kind == "pairwise":
        L = math.ceil(math.log2(n))
        ms = [min(2 ** h, n) for h in range(1, L + 1)]
    elif acc.kind == "blocked":
        b = min(acc.block, n)
        nb = math.ceil(n / b)
        ms = list(range(2, b + 1)) + [min((i + 1) * b, n) for i in range(1, nb)]
    else:
        ms = list(range(2, n + 1))
    return np.asarray(ms, np.float64)


def _sum_parts(ctx, n: int, products: bool, S: Any, Q: Any, out: Real, E: Any):
    """Elementary roundings of a sum of ``n`` terms ``t_i`` (products if ``products``),
    ``S >= sum |t_i|``, ``Q >= sum t_i^2`` over the operands' path ranges.

    A product's rounding is bounded by ``u |t_i|``: sum of squares ``u^2 Q``. An
    addition's rounding is bounded by ``u |p|``, ``p`` the computed partial sum it
    produces. The additions of one level (``_sum_levels``) produce partial sums of
    disjoint sets of at most ``m`` terms, so (Cauchy-Schwarz) ``sum p^2 <= min(S^2,
    m Q) (1 + gamma_d)^2`` (the factor covers the computed terms and partial sums
    against the exact ones); the final addition's result is within ``E`` of the
    exact sum, so also ``<= (|out| + E)^2``. Every bound holds for any summation
    order the model allows. Underflow (``c`` of the accumulation model) is
    deterministic."""
    fmt, acc = ctx.fmt, ctx.acc.resolve(ctx.fmt)
    _, _, cc = acc.coefficients(n, fmt, products=products)
    d = acc.depth(n, products)
    u_in = acc.wide.unit_roundoff if acc.kind == "wide" else fmt.unit_roundoff
    g = F.gamma(d + 1, u_in)
    if math.isinf(g):
        inf = jnp.full_like(E, jnp.inf)
        return inf, jnp.zeros_like(E)
    dt = E.dtype
    S2 = F.mul_up(S, S)
    total = Q if products else jnp.zeros_like(Q)
    ms = _sum_levels(acc, n)
    if ms.size:
        Y = F.add_up_nn(mag(out.lo, out.hi), E)
        Yb = _binade(Y, fmt)
        last = jnp.minimum(jnp.minimum(S2, F.scale_up(Q, float(ms[-1]))), F.mul_up(Yb, Yb))
        inner = ms[:-1]
        if inner.size:
            # sum_l min(S^2, m_l Q) <= Q sum_{l<k} m_l + (L - k) S^2 for ANY k in [0, L]
            # (each term bounded by one of its two arguments): k from the float ratio
            cum = np.concatenate([[0.0], np.cumsum(inner)])
            cum_dt = cum.astype(dt)
            cum_dt = np.where(cum_dt < cum, np.nextafter(cum_dt, np.inf), cum_dt).astype(dt)
            ratio = jnp.where(Q > 0, S2 / jnp.where(Q > 0, Q, 1), jnp.inf)
            k = jnp.searchsorted(jnp.asarray(inner.astype(dt)), ratio, side="right")
            below = F.mul_up(Q, jnp.asarray(cum_dt)[k])
            above = F.mul_up((inner.size - k).astype(dt), S2)
            total = F.add_up_nn(total, F.where(S2 == 0, 0.0, F.add_up_nn(below, above)))
        total = F.add_up_nn(total, last)
    coef = (u_in * (1 + g)) ** 2 * (1 + 1e-6)
    ss = F.scale_up(total, coef)
    if acc.kind == "wide":
        # one final rounding to the narrow format of a value within E of the exact sum
        y = F.add_up_nn(mag(out.lo, out.hi), E)
        fin = F.scale_up(_binade(y, fmt), fmt.unit_roundoff)
        ss = F.add_up_nn(ss, F.mul_up(fin, fin))
    return ss, jnp.full_like(E, F.static_up(cc, E.dtype))


def _binade(M: Any, fmt: Any) -> Any:
    """``2^floor(log2 M)`` where ``M`` and that power of two are normal numbers of the
    analysis dtype and of ``fmt`` (else ``M``): round to nearest errs by at most
    ``u 2^floor(log2 |r|) <= u 2^floor(log2 M)`` for a result ``|r| <= M``
    (``_rules._common.rounding``; below ``fmt``'s smallest normal the underflow
    term covers it, as with ``u M``). Exact (``frexp``)."""
    tiny = max(float(np.finfo(M.dtype).tiny), 2.0 ** fmt.emin)
    _, ex = jnp.frexp(M)
    b = jnp.ldexp(jnp.ones_like(M), ex - 1)
    ok = jnp.isfinite(M) & (M >= tiny) & (b >= tiny)
    return F.where(ok, jnp.minimum(M, b), M)


def _sum_all(x: Any) -> Any:
    """Upper bound of the sum of a nonnegative array."""
    n = max(1, int(np.prod(jnp.shape(x))))
    dt = x.dtype
    gam = F.gamma(n, float(np.finfo(dt).eps) / 2)
    s = jnp.sum(x)
    return F.add_up_nn(F.scale_up(s, 1 + 2 * gam), F.static_up(2 * n * float(np.finfo(dt).tiny), dt))


def _contrib(g: Cot, E: Any) -> Any:
    """sum over elements of mag(g) * E (0 where E == 0, also against an infinite g)."""
    m = g.mag()
    E = C.fixed(E)
    # an exactly-zero sensitivity takes nothing from an event, even an infinite one
    # (mag() of an exact 0 is the smallest normal: test the enclosure itself)
    zero = (m == 0) | ((g.mid == 0) & (g.rad == 0))
    t = F.where((E == 0) | zero, 0.0, F.mul_up(m, E))
    # an inverted enclosure (negative radius or magnitude) is no enclosure: no claim
    # (fuzz seed 34033: a one-element float16 softmax at |x| ~ 1e4 gave abs_err -1.18)
    t = F.where(jnp.isnan(t) | (t < 0) | (g.rad < 0), jnp.inf, t)
    return _sum_all(t.astype(g.mid.dtype))


class _SignedSum:
    """Bound of ``|sum_k integral dF/de_k * D_k|`` over the known signed shifts ``D_k``:
    with cotangent enclosures ``mid ± rad``, ``|sum mid·D| + sum rad·|D|``; the float
    sum of ``mid·D`` is computed plainly and its rounding error bounded by
    ``gamma_{N+1} sum |mid·D|`` (plus underflow)."""

    def __init__(self, zero: Any) -> None:
        self.s, self.a, self.r, self.n, self.k = zero, zero, zero, 0, 0

    def add(self, g: Cot, D: Any) -> None:
        prod = g.mid * D
        self.s = self.s + jnp.sum(prod)
        self.a = F.add_up_nn(self.a, _sum_all(jnp.abs(prod)))
        self.r = F.add_up_nn(self.r, _contrib(Cot(jnp.zeros_like(g.rad), g.rad), jnp.abs(D)))
        self.n += max(1, int(np.prod(jnp.shape(D))))
        self.k += 1

    def parts(self, adt: Any) -> tuple[Any, Any]:
        """``(s, e)``: the sum is within ``e`` of the float ``s``."""
        if self.k == 0:
            return self.s, self.s
        u = float(np.finfo(adt).eps) / 2
        N = self.n + self.k + 1
        err = F.add_up_nn(F.scale_up(self.a, 2 * F.gamma(N, u)), F.static_up(2 * N * float(np.finfo(adt).tiny), adt))
        return self.s, F.add_up_nn(err, self.r)

    def bound(self, adt: Any) -> Any:
        s, e = self.parts(adt)
        return F.add_up_nn(jnp.abs(s), e)


def _quad_split(tape: _Tape, ctx, gs: list[Any], ins: list[Any], outs: list[Any],
                stops: dict[int, Any], per_seed: frozenset[int]) -> tuple[list[Any], Any] | None:
    """The quadratic split (``_gram``) at an equation that reads split values: a smooth
    unary primitive of one, or the product of two. Returns the operands' cotangents
    (enclosed at the *exact* point) and the charge, or None where it does not apply
    (the plain rule and split then run). ``per_seed``: the split values whose quadratic
    bounds use the per-seed Gram weights."""
    from . import _gram
    from ._rules.sensitivity import second_derivatives

    prim = ctx.eqn.primitive
    g = gs[0]
    if len(outs) != 1 or g is None or not isinstance(outs[0], Real):
        return None
    # (a shifted softmax's values: the interval domain's exact ranges are in another frame)
    if id(ctx.eqn) in tape.softmax or id(ctx.eqn) in tape.rescaled or id(ctx.eqn) in tape.sm_role:
        return None
    ecut = tape.elem_cut.get(id(outs[0]))
    if ecut is not None:  # cut elements (_cut_infinite): their event is charged at the output
        if jnp.shape(ecut) != jnp.shape(g.mid):
            return None
        g = C.mask(g, ~ecut)
    o = outs[0]
    shape = jnp.shape(o.lo)
    iv = tape.interval_outs.get(ctx.path)
    if iv is None or not isinstance(iv[0], Real):
        return None
    ub = tape.ub_rec.get(id(ctx.eqn))
    rule = sensitivity_rules.get(prim)
    if rule is None and ub is None:
        return None

    def split_val(x, broadcast=False):
        if not (isinstance(x, Real) and id(x) in stops and id(x) in tape.refined_exact):
            return False
        xs = jnp.shape(x.lo)
        return xs == shape or (broadcast and len(xs) == len(shape)
                               and all(a in (1, b) for a, b in zip(xs, shape)))

    def exact(x):
        lo, hi = tape.refined_exact[id(x)]
        return _exact_value(lo, hi, x.value)

    o_ex = _exact_value(iv[0].lo, iv[0].hi, iv[0].value)
    gm = Cot(g.mid, jnp.zeros_like(g.rad))
    gr = Cot(jnp.zeros_like(g.mid), g.rad)
    adt = g.mid.dtype

    def flat(v):
        return jnp.broadcast_to(v, shape).reshape(-1).astype(adt)

    if ub is not None:
        # a unary block (_unary_block): h' at the exact range, h' and h'' over the path
        # range of its root
        if ub.root is None or len(ins) != 1 or ins[0] is not ub.root or ub.d1_exact is None \
                or not split_val(ins[0]):
            return None
        x = ins[0]
        c0, cg = C.scale(gm, *ub.d1_exact), C.scale(gr, *ub.d1)
        lo, hi = ub.d2
        return _quad_unary(tape, x, stops, flat, gm, c0, cg, lo, hi, per_seed)
    if prim is P("integer_pow") and int(ctx.eqn.params.get("y", 0)) < 2:
        return None  # (x^1 is linear; negative powers are not smooth at 0)
    if prim in second_derivatives and len(ins) == 1 and split_val(ins[0]):
        x = ins[0]
        c0 = rule(ctx, [gm], [exact(x)], [o_ex], **ctx.eqn.params)[0][0]
        cg = rule(ctx, [gr], [x], [o], **ctx.eqn.params)[0][0]
        lo, hi = second_derivatives[prim](x, o, **ctx.eqn.params)
        if c0 is None or cg is None:
            return None
        return _quad_unary(tape, x, stops, flat, gm, c0, cg, lo, hi, per_seed)
    if prim is P("mul") and len(ins) == 2 and all(split_val(x, CROSS_GROUPED) for x in ins) \
            and ins[0] is not ins[1] and any(jnp.shape(x.lo) == shape for x in ins):
        a, b = ins
        c0 = rule(ctx, [gm], [exact(a), exact(b)], [o_ex], **ctx.eqn.params)[0]
        cg = rule(ctx, [gr], [a, b], [o], **ctx.eqn.params)[0]
        if any(c is None for c in list(c0) + list(cg)):
            return None
        # gm (a b)(1) - gm (a b)(0) = gm b0 Da + gm a0 Db + gm Da Db
        if jnp.shape(a.lo) != shape or jnp.shape(b.lo) != shape:
            # one operand broadcast against the other (LayerNorm's (x - m) * rsqrt(.)):
            # the cross term grouped by the broadcast operand's elements
            x, z = (a, b) if jnp.shape(a.lo) == shape else (b, a)
            zs = jnp.shape(z.lo)
            group = np.broadcast_to(np.arange(int(np.prod(zs))).reshape(zs), shape).reshape(-1)
            total = _gram.cross_grouped(tape.gram.get(id(x)), flat(stops[id(x)]),
                                        stops[id(z)].reshape(-1).astype(adt), group, flat(g.mid))
        else:
            Ba, Bb = flat(stops[id(a)]), flat(stops[id(b)])
            ga, gb = tape.gram.get(id(a)), tape.gram.get(id(b))
            both = id(a) in per_seed and id(b) in per_seed
            total = _gram.cross_signed(ga, Ba, gb, Bb, flat(g.mid), both)
            if CROSS_ALIGNED:
                # b = h(a) (GELU's x * cdf(x)) and the like: D^b = lam D^a + T, a signed
                # quadratic form in D^a plus a small rest (_gram.cross_aligned)
                al = _gram.cross_aligned(ga, Ba, gb, Bb, flat(g.mid), both)
                if al is not None:
                    total = jnp.minimum(total, al)
        total = F.add_up_nn(total, _contrib(cg[0], stops[id(a)]))
        total = F.add_up_nn(total, _contrib(cg[1], stops[id(b)]))
        return list(c0), F.where(jnp.isnan(total), jnp.inf, total)
    return None


def _quad_unary(tape: _Tape, x: Any, stops: dict[int, Any], flat: Any, gm: Cot, c0: Cot, cg: Cot,
                lo: Any, hi: Any, per_seed: frozenset[int]) -> tuple[list[Any], Any]:
    """The quadratic split at a smooth unary function ``h`` of the split value ``x``:
    ``gm (h(x0 + D) - h(x0)) = gm h'(x0) D + gm h''(xi) D^2 / 2`` (Taylor with the
    Lagrange remainder, ``xi`` in ``x``'s path range, ``h''`` in ``[lo, hi]`` there);
    ``c0`` encloses ``gm h'(x0)``, ``cg`` the cotangent radius times ``h'``."""
    from . import _gram

    B = flat(stops[id(x)])
    q = C.scale(gm, lo, hi)  # gm h'' = phi +- eps
    phi, eps = flat(q.mid), flat(q.rad)
    quad = _gram.quad_signed(tape.gram.get(id(x)), B, phi, id(x) in per_seed)
    rest = _sum_all(F.where(eps == 0, 0.0, F.mul_up(eps, F.mul_up(B, B))))
    total = F.scale_up(F.add_up_nn(quad, rest), 0.5)
    total = F.add_up_nn(total, _contrib(cg, stops[id(x)]))
    return [c0], F.where(jnp.isnan(total), jnp.inf, total)


def _no_cots(ctx, gs, ins, outs, **_):
    return [None] * len(ins), None


def _reverse(tape: _Tape, entries: list[Any], inputs: list[Any], seeds: list[Any], adt: Any,
             chunk: int | None = None, stops: dict[int, Any] | None = None, split: bool = False,
             gram: bool = False, per_seed: bool = False) -> Any:
    """For every element of the ``seeds`` values (in order, flattened): the bounds
    ``(worst case, sum of squares, sensitivity variation, deterministic part)`` of its
    deviation due to the events on ``entries`` and ``inputs``; shape ``(M, 4)``.

    ``stops`` (worst case only): ``id(value) -> B``, values whose total deviation is
    known to be at most ``B``: the pass does not go back through them, their deviation
    counts as one event bounded by ``B`` (``_refine``).

    ``split`` (with ``stops``): the pass goes on through those values with the
    midpoint of their cotangent enclosure only, and charges ``rad · B`` for the rest.
    Sound: along the segment, the sensitivity to ``x`` is ``G(t) = mid + r(t)`` with
    ``|r(t)| <= rad``, and ``|dx/dt| <= B`` at every ``t`` (``B`` bounds the
    derivative along the whole segment, like every bound of this pass), so the part
    through ``x`` is ``∫ mid · dx/dt dt`` (the rest of the pass, with the fixed
    cotangent ``mid``) plus at most ``rad · B``. Cancellations in ``mid`` survive
    upstream; only the enclosure's width is summarised by ``B``. Where the value
    feeds a smooth elementwise primitive (or a product with another split value),
    the *quadratic split* (``_gram``) charges the second-order term instead.

    ``gram`` (worst case): also return, per seed, the row ``a`` of its linear
    deviation (``mid(cotangent) * E`` for every event, flattened), ``L >= sum |a|``
    and ``R`` bounding the rest (``_gram.Gram``), and the rows' static column blocks
    ``(key, size)``: ``(res, rows, L, R, cols)``."""
    sizes = [max(1, int(np.prod(jnp.shape(o.lo)))) for o in seeds]
    M = int(sum(sizes))
    offsets = np.cumsum([0] + sizes[:-1])
    if gram:
        from ._gram import row_budget

        gram_cap = row_budget(M)
    seeded: frozenset[int] = frozenset()
    if per_seed and split and stops is not None:
        from ._gram import per_seed_set

        seeded = per_seed_set(M, [(k, tape.gram[k]) for k in stops if k in tape.gram])

    def needed(x):
        return isinstance(x, Real) and id(x) in tape.has_event

    def one_seed(i):
        cots: dict[int, Cot] = {}
        for o, off, size in zip(seeds, offsets, sizes):
            if not needed(o):
                continue
            hot = (jnp.arange(size) + off == i).astype(adt).reshape(jnp.shape(o.lo))
            cots[id(o)] = C.add(cots.get(id(o)), Cot(hot, jnp.zeros_like(hot)))
        zero = jnp.zeros((), adt)
        wc, ss, var, det = zero, zero, zero, zero
        signed = _SignedSum(zero)
        rows: list[Any] = []
        # (key, size) of every recorded column block (_gram.Gram.cols): key = (id of the
        # event's value, its bound E); two records share a column where both match
        cols: list[Any] = []
        rr = zero
        gram_len = [0]

        def row(g, E, key):  # gram: the event's column (mid * E) and the radius part
            nonlocal rr
            if not gram:
                return
            size = int(np.prod(jnp.shape(g.mid)))
            if gram_len[0] + size > gram_cap:  # beyond the row budget: the whole event in R
                rr = F.add_up_nn(rr, _contrib(g, E))
                return
            gram_len[0] += size
            cols.append((key, size))
            E = jnp.broadcast_to(C.fixed(E), jnp.shape(g.mid)).astype(adt)
            z = (E == 0) | ((g.mid == 0) & (g.rad == 0))
            t = F.where(z, 0.0, g.mid.astype(adt) * E)
            bad = ~jnp.isfinite(t)
            rows.append(F.where(bad, 0.0, t).reshape(-1))
            rr = F.add_up_nn(rr, _contrib(Cot(jnp.zeros_like(g.rad), g.rad), E))
            rr = F.where(jnp.any(bad), jnp.inf, rr)

        def event(g, E, recorded=True, key=None):  # an event bounded by E: into wc, and its row
            nonlocal wc
            wc = F.add_up_nn(wc, _contrib(g, E))
            if recorded:
                row(g, E, key)

        def charge(x):  # a non-row part of the bound
            nonlocal wc, rr
            x = F.where(~(x >= 0), jnp.inf, x)  # (negative or NaN: no claim)
            wc = F.add_up_nn(wc, x)
            if gram:
                rr = F.add_up_nn(rr, x)
        for ctx, ins, outs_ in reversed(entries):
            gs = [cots.pop(id(o), None) for o in outs_]
            if all(g is None for g in gs):
                continue
            rule = sensitivity_rules.get(ctx.eqn.primitive)
            ub = tape.ub_rec.get(id(ctx.eqn))
            if ub is not None:  # a unary block: h' over its root's path range
                rule = ub.rule
            block = tape.sm_block.get(id(ctx.eqn))
            if block is not None:  # a softmax's division: the whole block below
                rule = _no_cots
            ctx.need = [needed(x) for x in ins]
            prob = tape.probabilistic
            # rounded inputs whose only event is their known shift: their states are a
            # segment (bilinear rules use the signed transpose of the shift)
            ctx.segments = None if prob else [tape.segment(x) for x in ins]
            kink = None if prob else tape.kink_bound(ctx, ins)
            ctx.kink_cut = kink is not None
            ctx.kink_exact = tape.kink_exact(ctx, ins) if KINK_EXACT and kink is not None else None
            cut = None
            in_cots: list[Any] = [None] * len(ins)
            quad = None
            if split and stops is not None and not prob and block is None and kink is None:
                quad = _quad_split(tape, ctx, gs, ins, outs_, stops, seeded)
            if quad is not None:
                in_cots, q_charge = quad
                charge(q_charge)
            elif rule is None or (prob and any(id(o) in tape.prob_cut for o in outs_)):
                cut = True
            elif prob:
                # the derivative at the linearisation point (see _prob_record)
                lin = tape.lin.get(id(ctx))
                if lin is not None:
                    ex_ins, ex_outs = lin
                else:
                    ex_ins = [tape.exact.get(id(x), x) for x in ins]
                    ex_outs = [tape.exact.get(id(o), o) for o in outs_]
                in_cots, cut = rule(ctx, gs, ex_ins, ex_outs, **ctx.eqn.params)
            else:
                in_cots, cut = rule(ctx, gs, ins, outs_, **ctx.eqn.params)
            iv = tape.interval_outs.get(ctx.path)
            for j, (o, g) in enumerate(zip(outs_, gs)):
                if g is None or not isinstance(o, Real):
                    continue
                E = tape.local.get(id(o))
                E = jnp.zeros_like(o.lo) if E is None else E
                ss_k, det_k = tape.random.get(id(o), (None, None))
                if cut is not None:
                    E_cut = iv[j].err if iv is not None else jnp.full_like(o.lo, jnp.inf)
                    if kink is not None:
                        E_cut = jnp.minimum(E_cut, kink)
                    cmask = jnp.broadcast_to(jnp.asarray(cut), jnp.shape(o.lo))
                    E = F.where(cmask, E_cut, E)
                    if ss_k is not None:
                        ss_k = F.where(cmask, 0.0, ss_k)
                        det_k = F.where(cmask, E_cut, det_k)
                    elif tape.probabilistic:
                        ss_k = F.where(cmask, 0.0, F.mul_up(E, E))
                        det_k = F.where(cmask, E_cut, 0.0)
                if ctx.kink_exact is not None:  # the remainder event (_Tape.kink_exact)
                    # (worst case only: kink_exact is None in probabilistic mode)
                    E = F.add_up_nn(E, jnp.broadcast_to(ctx.kink_exact[2], jnp.shape(o.lo)))
                D = tape.shift.get(id(o))
                if D is not None:
                    signed.add(g, D if cut is None else F.where(cmask, 0.0, D))
                # (no row for an output without an event: E is 0)
                event(g, E, id(o) in tape.local or cut is not None or ctx.kink_exact is not None, (id(o), E))
                R = tape.rem.get(id(o)) if tape.probabilistic else None
                if R is not None:
                    # the linearisation remainder of this node: deterministic
                    R = R if cut is None else F.where(cmask, 0.0, R)
                    wc = F.add_up_nn(wc, _contrib(g, R))
                    det = F.add_up_nn(det, _contrib(g, R))
                if tape.probabilistic:
                    if ss_k is None:
                        ss_k, det_k = F.mul_up(E, E), jnp.zeros_like(E)
                    m = g.mag()
                    ss = F.add_up_nn(ss, _sum_all(F.where(ss_k == 0, 0.0, F.mul_up(F.mul_up(m, m), ss_k))))
                    det = F.add_up_nn(det, _contrib(g, det_k))
                    # (no variation term: the sensitivities are those at the exact point,
                    # the nonlinearity is in the remainders)
            if block is not None and gs[0] is not None:
                from ._rules.sensitivity_softmax import block_cot

                blk, d_val, axes = block
                cd, _, extra = block_cot(gs[0], blk, axes)
                charge(extra)
                if tape.probabilistic:
                    det = F.add_up_nn(det, extra)
                ins, in_cots = [d_val], [cd]
            ecut = tape.elem_cut.get(id(outs_[0])) if len(outs_) == 1 else None
            if ecut is not None:  # elements cut by _cut_infinite: no sensitivity through them
                in_cots = [c if c is None or jnp.shape(c.mid) != jnp.shape(ecut) else C.mask(c, ~ecut)
                           for c in in_cots]
            for x, c in zip(ins, in_cots):
                if c is not None and needed(x):
                    if stops is not None and id(x) in stops:
                        if not split:
                            charge(_contrib(c, stops[id(x)]))
                            continue
                        charge(_contrib(Cot(jnp.zeros_like(c.rad), c.rad), stops[id(x)]))
                        c = Cot(c.mid, jnp.zeros_like(c.rad))
                    cots[id(x)] = C.add(cots.get(id(x)), c)
        for p, E in inputs:
            g = cots.pop(id(p), None)
            if g is None or id(p) in tape.folded:
                continue
            D = tape.shift.get(id(p))
            if D is not None:
                signed.add(g, D)
            event(g, E, key=(id(p), E))
            if tape.probabilistic and D is not None:
                # beyond the known shift: the float evaluation of D (not a rounding event)
                det = F.add_up_nn(det, _contrib(g, E))
            elif tape.probabilistic:
                m = g.mag()
                ss = F.add_up_nn(ss, _sum_all(F.mul_up(F.mul_up(m, m), F.mul_up(E, E))))
        known = signed.bound(adt)
        wc = F.add_up_nn(wc, known)
        det = F.add_up_nn(det, known)
        out = jnp.stack([wc, ss, var, det])
        if not gram:
            return out
        a = jnp.concatenate(rows) if rows else jnp.zeros((1,), adt)
        # (static, the same for every seed: handed out beside the traced results)
        gram_cols[:] = cols if rows else [(None, 1)]
        L = _sum_all(jnp.abs(a))
        # the float products mid * E: |a - mid E| <= u |a| / (1 - u); the known
        # shifts' part is the float d, within e
        d, e = signed.parts(adt)
        R = F.add_up_nn(F.add_up_nn(rr, e), F.scale_up(L, float(np.finfo(adt).eps) * 1.01))
        return out, (a, d), L, R

    gram_cols: list[Any] = []
    idx = jnp.arange(M)
    if chunk is None:
        chunk = _default_chunk(entries, M, [tape.gram[k] for k in seeded],
                               gram)
    run = jax.vmap(one_seed) if chunk >= M else (lambda i: _compat.map_batched(one_seed, i, chunk))
    if not gram:
        res = run(idx)
        return F.where(jnp.isnan(res), jnp.inf, res)
    res, rows, L, R = run(idx)
    return F.where(jnp.isnan(res), jnp.inf, res), rows, L, F.where(jnp.isnan(R), jnp.inf, R), gram_cols


def first_order_errors(
    jaxpr: Any,
    consts: list[Any],
    interval_inputs: list[Any],
    interval_outs_by_path: dict[str, list[Any]],
    interval_results: list[Any],
    base: Domain,
    config: Config,
    probabilistic: float | None,
    chunk: int | None = None,
    refine: bool = True,
    refine_budget: int | None = None,
) -> tuple[list[Any], list[Any], list[Any]]:
    """Per output: (worst-case first-order error bound, probabilistic bound or None,
    enclosure ``(lo, hi)`` of the computed value or None).

    The enclosure is the worst-case path pass's output range (its state at ``t = 1``),
    infinite where that range is not finite or an event was infinite (``poison``):
    where it is finite, every state of the segment is finite, so the computed output
    is a finite number in it even where the interval pass feared a NaN. With
    ``probabilistic``, the guaranteed pass' ranges (the probabilistic pass' path
    ranges hold with a probability only).

    With ``probabilistic`` the worst-case bound comes from a separate, guaranteed pass
    and caps the probabilistic one (whose tape uses probabilistic path ranges). The
    softmax pattern (``_patterns``) is used by the worst-case pass only.

    ``refine_budget``: the tape entries the splitting refinement passes may walk in all
    (``REFINE_FULL_BUDGET`` if None; see ``_pass_mode``)."""
    wc_guaranteed, path_guaranteed = None, None
    if probabilistic is not None:
        wc_guaranteed, _, path_guaranteed = first_order_errors(
            jaxpr, consts, interval_inputs, interval_outs_by_path, interval_results, base, config, None,
            chunk, refine, refine_budget)
    softmax = softmax_shifts(jaxpr) if probabilistic is None else {}
    # unary blocks (GELU, SiLU): one tape entry each, worst case only
    blocks = unary_blocks(jaxpr) if probabilistic is None and UNARY_BLOCKS else {}
    # the max of a shifted softmax only gives the constant c (any c >= m^ will do); a
    # unary block's derivative depends on its root's range only
    skip = {id(q) for hit in softmax.values() for q in hit[1]} | {id(e) for b in blocks.values() for e in b.eqns}
    sensitive = _sensitive_vars(jaxpr, skip) | {b.root for b in blocks.values()} if refine else set()
    tape = _Tape(interval_outs_by_path, probabilistic is not None, probabilistic,
                 _refinable_elements(jaxpr, sensitive) if probabilistic is not None else 0)
    tape.sensitive = sensitive
    tape.refine_budget = REFINE_FULL_BUDGET if refine_budget is None else refine_budget
    tape.softmax = softmax
    for b in blocks.values():
        tape.ub_last[id(b.last)] = b
        tape.ub_inner.update((id(e), b) for e in b.eqns[:-1])
    tape.rescaled = {id(q) for hit in softmax.values() for q in hit[3]}
    for sid, hit in softmax.items():
        tape.sm_role[sid] = ("sub", sid)
        tape.sm_role[id(hit[3][0])] = ("exp", sid)
        tape.sm_role[id(hit[3][1])] = ("sum", sid)
        tape.sm_role[id(hit[4])] = ("div", sid)
    tape.adt = config.adt
    dom = _path_domain(tape, base)
    path_inputs = [_to_path_input(tape, x) for x in interval_inputs]
    path_consts = [_to_path_input(tape, base.constant(c, v.aval, config)) for v, c in zip(jaxpr.constvars, consts)]
    uses = _use_counts(jaxpr)
    for v, p in list(zip(jaxpr.invars, path_inputs)) + list(zip(jaxpr.constvars, path_consts)):
        if uses.get(v, 0) == 1:
            tape.single_use.add(id(p))
    diag = DiagnosticCollector()
    outs = interpret(dom, jaxpr, path_consts, path_inputs, config, diag)

    # zero-size outputs have no error to refine (and no seeds)
    float_outs = [(k, o) for k, o in enumerate(outs) if isinstance(o, Real) and o.lo.size > 0]
    if not float_outs:
        return [None] * len(outs), [None] * len(outs), [None] * len(outs)
    seeds = [o for _, o in float_outs]
    res = _reverse(tape, tape.entries, tape.inputs, seeds, config.adt, chunk)
    if probabilistic is None and FINAL_CHECKPOINTS and tape.refined:
        # a second bound of the outputs' deviation: the pass that stops at the refined
        # values (their deviation one event each, bounded by their B); sound like the
        # full pass, and smaller where the full pass widens cotangents through wide path
        # ranges that a refined value's own bound summarises better (a LayerNorm after
        # attention); each output keeps the smaller of the two
        ck = _reverse(tape, tape.entries, tape.inputs, seeds, config.adt, chunk, stops=tape.refined,
                      split=FINAL_SPLIT, per_seed=True)
        res = res.at[:, 0].set(jnp.minimum(res[:, 0], ck[:, 0]))
    # an operation whose bound is infinite may make values inf/NaN, which no
    # derivative argument covers: there, keep the interval bound only
    poison = tape.poison
    wc_out: list[Any] = [None] * len(outs)
    pr_out: list[Any] = [None] * len(outs)
    off = 0
    for k, o in float_outs:
        shape = jnp.shape(o.lo)
        size = max(1, int(np.prod(shape)))
        part = res[off:off + size]
        off += size
        wc = F.where(poison, jnp.inf, part[:, 0].reshape(shape))
        wc_out[k] = wc
        if probabilistic is not None:
            # with probabilistic refined ranges, half of delta covers their failure
            lam = _lam(probabilistic / 2 if tape.n_refined else probabilistic)
            pb = _prob_combine(part, lam)
            pb = F.where(poison, jnp.inf, pb.reshape(shape))
            pr_out[k] = jnp.minimum(pb, wc)
    # the path pass' output ranges enclose the computed outputs (t = 1 on the segment):
    # where they are finite (no infinite event reached them, nothing NaN-possible) the
    # computed output is a finite number, whatever the interval pass feared
    path_out: list[Any] = [None] * len(outs)
    if probabilistic is not None:
        path_out = list(path_guaranteed or path_out)  # (the guaranteed pass' ranges)
    else:
        for k, o in float_outs:
            fin = jnp.isfinite(o.lo) & jnp.isfinite(o.hi) & ~poison & ~tape.nan_seen
            path_out[k] = (F.where(fin, o.lo, -jnp.inf), F.where(fin, o.hi, jnp.inf))
    if wc_guaranteed is not None:
        if tape.n_refined_elems > (tape.n_refinable or MAX_REFINED_VALUES * MAX_REFINED_SIZE):
            # more refined elements than delta was split for: not covered, keep the guarantee
            pr_out = [None if w is None else w for w in wc_guaranteed]
        wc_out = wc_guaranteed
        pr_out = [p if w is None else jnp.minimum(p, w) for p, w in zip(pr_out, wc_out)]
    return wc_out, pr_out, path_out


#: primitives whose sensitivity does not depend on the operands' ranges
_LINEAR = {P(n) for n in ("add", "add_any", "add_jaxvals", "sub", "neg", "reduce_sum", "dot_general",
                          "copy", "copy_p", "stop_gradient", "optimization_barrier", "sharding_constraint",
                          "device_put", "name", "reduce_precision",
                          "conv_general_dilated", "reduce_window_sum", "cumsum", "scatter_add", "split")}
#: refine at most this many values, each of at most this many elements (cost control)
MAX_REFINED_VALUES = 64
MAX_REFINED_SIZE = 1 << 14
#: refinement passes stop at earlier refined values (see ``_refine``): far fewer
#: equations; the ranges lose the cancellations across those values, the final
#: bound (a full reverse pass) does not
REFINE_CHECKPOINTS = True
#: ...except while the full refinement passes walk at most this many tape entries in all
#: (``bound(..., refine_budget=)``; their ranges keep the cancellations across the refined
#: values: a 4-layer 256-wide GELU MLP in bfloat16 walks ~205 and its bound drops ~2.5x).
#: 4096 (was 256) covers the transformer blocks measured (the benchmark's walks ~1050,
#: the zoo's Flax one ~1420): float16 benchmark block 13.5x -> 1.2x the first-order limit
#: (median), zoo transformers' abs_err / observed 86 -> 36 and 147 -> 50, at about 2.3x
#: the compile time (more traced passes) and 13x the call time there; programs that
#: walked fewer than 256 entries (MLPs, CNNs) are unchanged
REFINE_FULL_BUDGET = 4096
#: the worst-case output bound is also computed by a pass that stops at the refined
#: values (``first_order_errors``); each output keeps the smaller bound
FINAL_CHECKPOINTS = True
#: ... and that pass *splits* there (``_reverse``'s ``split``): the midpoint of the
#: cotangent goes on upstream, ``rad · B`` is charged; else it stops (``(|mid| + rad) · B``)
FINAL_SPLIT = True
#: refinement passes beyond the budget split at the refined values too instead of
#: stopping (within the budget they always split; every refinement then traces the
#: whole tape, whatever its size)
REFINE_SPLIT = False
#: the pre-rounding refinement of bilinear results (``_pre_refine``), at most this many
PRE_REFINE = True
MAX_PRE_REFINED = 64
PRE_REFINE_MIN_N = 8
_BILINEAR = {P("dot_general"), P("conv_general_dilated")}
#: the quadratic split (``_gram``): refined values record their deviation's linear
#: structure, and split passes charge second-order terms that cancel across elements
GRAM = True
#: elementwise unary blocks (``_patterns.unary_blocks``: GELU, SiLU) are one tape entry
#: each, with their own derivative and curvature enclosures (``_unary_block``)
UNARY_BLOCKS = True
#: a unary block's error, range and derivative enclosures are the union of those over
#: this many equal sub-ranges of its operand's path range (``_unary_block``)
UB_PIECES = 8
#: the product of two split values that share rounding events (GELU's ``x * cdf(x)``):
#: also bound the cross term as a signed quadratic form in one of them
#: (``_gram.cross_aligned``), keep the smaller
CROSS_ALIGNED = True
#: the product of two split values one of which is broadcast against the other
#: (LayerNorm's ``(x - m) * rsqrt(var + eps)``): bound the cross term by groups of the
#: broadcast operand (``_gram.cross_grouped``) instead of charging both cotangent radii
CROSS_GROUPED = True


def _use_counts(jaxpr: Any) -> dict[Any, int]:
    """How many primitive operand slots read each variable (call bodies expanded: a
    variable passed into a call counts the uses of the body's variable). Output
    variables count as a use."""
    counts: dict[Any, int] = {}

    def walk(j, alias):
        def add(v, c=1):
            if isinstance(v, _compat.Literal):
                return
            v = alias.get(v, v)
            counts[v] = counts.get(v, 0) + c

        for eqn in j.eqns:
            sub = _compat.call_subjaxpr(eqn)
            if sub is not None:
                body = sub[0]
                inner = {}
                for bv, ov in zip(body.invars, eqn.invars):
                    if not isinstance(ov, _compat.Literal):
                        inner[bv] = alias.get(ov, ov)
                walk(body, inner)
                continue
            # an operand of a loop or branch may be read several times by its body
            many = 2 if eqn.primitive in CONTROL_FLOW else 1
            for v in eqn.invars:
                add(v, many)
        for v in j.outvars:
            add(v)

    walk(jaxpr, {})
    return counts


def _sensitive_vars(jaxpr: Any, skip: frozenset[int] | set[int] = frozenset()) -> set[Any]:
    """Variables read by a primitive whose derivative enclosure depends on the operand
    ranges (everything but linear and data-movement primitives), or passed into a
    call body (conservatively)."""
    from ._rules.structural import STRUCTURAL

    out: set[Any] = set()
    consts = set(jaxpr.constvars)

    def walk(j):
        for eqn in j.eqns:
            prim = eqn.primitive
            sub = _compat.call_subjaxpr(eqn)
            if sub is not None:
                out.update(v for v in eqn.invars if not isinstance(v, _compat.Literal))
                walk(sub[0])
                continue
            if prim in _LINEAR or prim in STRUCTURAL or id(eqn) in skip:
                continue
            if prim is P("convert_element_type") and eqn.params.get("new_dtype") is not None and \
                    jnp.issubdtype(eqn.params["new_dtype"], jnp.floating):
                continue
            if prim in (P("mul"), P("div")):
                # x * c, x / c with c a constant: the derivative in x does not depend on
                # x's range; only an operand paired with a varying one (and a divisor) does
                a, b = eqn.invars
                const = [isinstance(v, _compat.Literal) or v in consts for v in (a, b)]
                if prim is P("mul"):
                    out.update(v for v, oc in ((a, const[1]), (b, const[0])) if not oc and not isinstance(v, _compat.Literal))
                elif not const[1]:
                    out.add(b)
                continue
            out.update(v for v in eqn.invars if not isinstance(v, _compat.Literal))

    walk(jaxpr)
    return out


def _default_chunk(entries: list[Any], M: int, seed_grams: Sequence[Any] = (), gram: bool = False) -> int:
    """Seeds per vmapped batch: keep the largest cotangent batch around 2^24 elements
    (and the per-seed ``n x K`` products of the quadratic split over ``seed_grams``,
    and the Gram rows of a ``gram`` pass: ``_gram``)."""
    biggest = 1
    total = 0
    for _, ins, outs in entries:
        for x in list(ins) + list(outs):
            if isinstance(x, Real):
                size = int(np.prod(jnp.shape(x.lo)))
                biggest = max(biggest, size)
                total += size
    for gd in seed_grams:
        biggest = max(biggest, int(np.prod(jnp.shape(gd.A))))
    if gram:
        from ._gram import row_budget

        biggest = max(biggest, min(total, row_budget(M)))
    return max(1, min(M, (1 << 24) // biggest))
