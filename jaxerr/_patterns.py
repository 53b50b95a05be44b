"""Program patterns the first-order analysis treats specially (``domain="first_order"``).

**Shift-invariant softmax.** ``p = e / sum_A(e)`` with ``e = exp(x - mb)`` and ``mb`` the
maximum of ``x`` over axes ``A' ⊇ A`` broadcast back (``jax.nn.softmax``, Flax's
attention: ``exp(x - stop_gradient(max(x))) / sum``). The exact result does not depend
on the subtracted value, and neither does the computed one up to a rescaling of the
rounding events: for any constant ``c`` (per normalisation group) write
``k = exp(m^ - c)`` with ``m^`` the computed maximum; then

    p^ = (exp(x^ - m^ + e1) + e2) / (sum(...) + e3) + e4
       = (exp(x^ - c + e1) + k e2) / (sum(exp(x^ - c + e1) + k e2) + k e3) + e4

(multiply numerator and denominator by ``k``), the same program with ``c`` in place
of ``m^`` and the events of ``exp`` and of the sum scaled by ``k``. Choosing ``c >= m^``
(the upper end of ``m``'s path range) gives ``k <= 1``; every local bound of the
error model is ``a·(magnitudes) + b`` with ``a, b >= 0``, and the magnitudes of the
rescaled program are ``k`` times the original ones, so ``k |e_j| <= E_j`` evaluated on
the rescaled program's path ranges. The subtraction's own event ``e1`` is unchanged
and ``|e1| <= u |x^ - m^| <= u |x^ - c|`` because ``x^ <= m^ <= c``. So the first-order
analysis may run the rescaled program: ``c`` is a constant (no event, no
sensitivity), the maximum's deviation and its non-smooth Clarke gradient drop out
of the sensitivities, and the exponent's path range is only as wide as ``x``'s.

The recognition is strict (any other use of ``e``, ``sum(e)`` or ``x - mb``, or a
broadcast that is not "keepdims along the reduced axes", leaves the program
alone): :func:`softmax_shifts`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _compat

P = _compat.prim


def _uses(jaxpr: Any) -> dict[Any, list[tuple[Any, int]]]:
    """var -> [(eqn, operand position)], with ``(None, -1)`` for an output of the jaxpr."""
    out: dict[Any, list[tuple[Any, int]]] = {}
    for eqn in jaxpr.eqns:
        for k, v in enumerate(eqn.invars):
            if not isinstance(v, _compat.Literal):
                out.setdefault(v, []).append((eqn, k))
    for v in jaxpr.outvars:
        if not isinstance(v, _compat.Literal):
            out.setdefault(v, []).append((None, -1))
    return out


def _is_neg_inf_literal(v: Any) -> bool:
    if not isinstance(v, _compat.Literal):
        return False
    try:
        return bool(np.all(np.asarray(v.val) == -np.inf))
    except Exception:  # pragma: no cover - exotic literal
        return False


def _keepdims_shape(full: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(1 if d in axes else n for d, n in enumerate(full))


def _broadcast_back(jaxpr_prod: dict[Any, Any], uses: dict[Any, Any], v: Any, red: Any,
                    full: tuple[int, ...], axes: tuple[int, ...], through: set[Any]) -> list[Any] | None:
    """Follow ``v`` back to the output of the reduction ``red`` through ops that only
    re-insert the reduced axes (keepdims) or broadcast along them, and are the only use of
    their operand when ``single`` (returns the chain of equations, or None)."""
    chain = []
    keep = _keepdims_shape(full, axes)
    kept = tuple(d for d in range(len(full)) if d not in axes)
    red_shape = tuple(full[d] for d in kept)
    while True:
        eqn = jaxpr_prod.get(v)
        if eqn is None:
            return None
        if eqn is red:
            return chain
        prim = eqn.primitive
        src = eqn.invars[0] if eqn.invars else None
        if prim in through and len(eqn.invars) == 1:
            pass
        elif prim is P("max") and len(eqn.invars) == 2 and any(_is_neg_inf_literal(x) for x in eqn.invars):
            src = eqn.invars[1] if _is_neg_inf_literal(eqn.invars[0]) else eqn.invars[0]
            if tuple(src.aval.shape) != tuple(eqn.outvars[0].aval.shape):
                return None
        elif prim is P("broadcast_in_dim"):
            shp = tuple(eqn.params["shape"])
            if tuple(src.aval.shape) != red_shape or tuple(eqn.params["broadcast_dimensions"]) != kept or \
                    shp not in (keep, tuple(full)):
                return None
        elif prim is P("reshape"):
            if tuple(src.aval.shape) != red_shape or tuple(eqn.outvars[0].aval.shape) != keep:
                return None
        else:
            return None
        if isinstance(src, _compat.Literal):
            return None
        chain.append(eqn)
        v = src


def softmax_shifts(jaxpr: Any) -> dict[int, Any]:
    """``{id(sub equation): (sub equation, [equations of the max chain], index of the
    subtracted operand's producer in its jaxpr, [equations whose results the shift
    rescales: exp, the sum and its broadcast], the div equation)}`` for every shift-invariant softmax
    (module docstring) in ``jaxpr`` and the bodies of its call equations. The
    subtracted operand is operand 1 of the ``sub``."""
    found: dict[int, Any] = {}

    def walk(j: Any) -> None:
        prod = {}
        index = {id(eqn): i for i, eqn in enumerate(j.eqns)}
        for eqn in j.eqns:
            for o in eqn.outvars:
                prod[o] = eqn
            sub = _compat.call_subjaxpr(eqn)
            if sub is not None:
                walk(sub[0])
        uses = _uses(j)
        through = {P("stop_gradient"), P("copy"), P("copy_p")} - {None}
        for eqn in j.eqns:
            if eqn.primitive is not P("sub"):
                continue
            r = _match(eqn, prod, uses, through)
            if r is not None:
                chain, shifted, div = r
                found[id(eqn)] = (eqn, chain, str(index[id(prod[eqn.invars[1]])]), shifted, div)

    walk(jaxpr)
    return found


def _match(sub: Any, prod: dict[Any, Any], uses: dict[Any, Any], through: set[Any]) -> list[Any] | None:
    x, mb = sub.invars
    d = sub.outvars[0]
    if isinstance(x, _compat.Literal) or isinstance(mb, _compat.Literal):
        return None
    full = tuple(x.aval.shape)
    if tuple(d.aval.shape) != full:
        return None
    # d -> exp only
    ud = uses.get(d, [])
    if len(ud) != 1 or ud[0][0] is None or ud[0][0].primitive is not P("exp"):
        return None
    e = ud[0][0].outvars[0]
    ue = uses.get(e, [])
    if len(ue) != 2 or any(q is None for q, _ in ue):
        return None
    rs = [q for q, _ in ue if q.primitive is P("reduce_sum")]
    dv = [(q, k) for q, k in ue if q.primitive is P("div")]
    if len(rs) != 1 or len(dv) != 1 or dv[0][1] != 0:
        return None
    rs, (div, _) = rs[0], dv[0]
    sum_axes = tuple(int(a) for a in rs.params["axes"])
    # the subtracted value: max over axes A ⊇ sum axes, broadcast back
    red = None
    v = mb
    for _ in range(8):
        eqn = prod.get(v)
        if eqn is None:
            return None
        if eqn.primitive is P("reduce_max"):
            red = eqn
            break
        v = next((a for a in eqn.invars if not isinstance(a, _compat.Literal)), None)
        if v is None:
            return None
    if red is None or red.invars[0] is not x:
        return None
    max_axes = tuple(int(a) for a in red.params["axes"])
    if not set(sum_axes) <= set(max_axes) or not sum_axes:
        return None
    chain = _broadcast_back(prod, uses, mb, red, full, max_axes, through)
    if chain is None:
        return None
    # the divisor: exactly this sum, broadcast back along the summed axes, used once
    S = rs.outvars[0]
    sb = div.invars[1]
    if isinstance(sb, _compat.Literal):
        return None
    schain = _broadcast_back(prod, uses, sb, rs, full, sum_axes, through)
    if schain is None:
        return None
    for q in [rs] + schain:
        if len(uses.get(q.outvars[0], [])) != 1:
            return None
    del S
    return [red] + chain, [ud[0][0], rs] + schain, div


# ---------------------------------------------------------------------------
# Elementwise unary blocks (GELU, SiLU, ...)
# ---------------------------------------------------------------------------

#: primitives a unary block may contain (elementwise, smooth on the whole line)
_BLOCK_PRIMS = frozenset(p for p in (P(n) for n in (
    "add", "sub", "mul", "neg", "div", "integer_pow", "square", "tanh", "logistic", "exp", "erf",
    "erfc", "copy", "copy_p", "convert_element_type")) if p is not None)


class UnaryBlock:
    """A composite elementwise function ``y = h(a)`` of one variable: ``eqns`` (in
    program order) read only ``a``, each other's results and scalar literals, and only
    ``y`` (the last equation's result) is read outside them."""

    __slots__ = ("root", "eqns", "out", "last")

    def __init__(self, root: Any, eqns: list[Any]):
        self.root, self.eqns = root, eqns
        self.last = eqns[-1]
        self.out = self.last.outvars[0]


def _block_member(eqn: Any, inside: set[Any], shape: tuple[int, ...]) -> bool:
    prim = eqn.primitive
    if prim not in _BLOCK_PRIMS or len(eqn.outvars) != 1:
        return False
    o = eqn.outvars[0]
    if tuple(o.aval.shape) != shape or not np.issubdtype(o.aval.dtype, np.floating):
        return False
    varying = [v for v in eqn.invars if not isinstance(v, _compat.Literal)]
    if not varying or any(v not in inside for v in varying):
        return False
    for v in eqn.invars:
        if isinstance(v, _compat.Literal):
            if np.shape(v.val) != () or not np.issubdtype(np.asarray(v.val).dtype, np.floating):
                return False
    if prim is P("div"):  # only by a constant (no pole)
        return isinstance(eqn.invars[1], _compat.Literal)
    if prim is P("integer_pow"):
        return int(eqn.params["y"]) >= 1
    if prim is P("convert_element_type"):
        return np.issubdtype(eqn.invars[0].aval.dtype, np.floating)
    return True


def unary_blocks(jaxpr: Any) -> dict[int, UnaryBlock]:
    """``{id(last equation): block}`` for every elementwise unary block of ``jaxpr`` and
    of its call bodies that is not a plain chain: some value (the root or an inner one)
    is read twice inside it, as ``a`` in GELU's ``a * cdf(a)`` and SiLU's
    ``a * logistic(a)``. Blocks do not overlap; the earliest root wins."""
    found: dict[int, UnaryBlock] = {}

    def walk(j: Any) -> None:
        calls: set[int] = set()
        for eqn in j.eqns:
            sub = _compat.call_subjaxpr(eqn)
            if sub is not None:
                calls.add(id(eqn))
                walk(sub[0])
        uses = _uses(j)
        taken: set[int] = set()
        producer_index = {o: i for i, eqn in enumerate(j.eqns) for o in eqn.outvars}
        roots = list(j.invars) + [o for eqn in j.eqns for o in eqn.outvars]
        for a in roots:
            aval = getattr(a, "aval", None)
            if aval is None or not hasattr(aval, "shape") or len(uses.get(a, [])) < 2 \
                    or not np.issubdtype(aval.dtype, np.floating):
                continue
            shape = tuple(aval.shape)
            start = producer_index.get(a, -1) + 1
            inside = {a}
            members = []
            for eqn in j.eqns[start:]:
                if id(eqn) in taken or id(eqn) in calls:
                    continue
                if _block_member(eqn, inside, shape):
                    members.append(eqn)
                    inside.add(eqn.outvars[0])
            if len(members) < 2:
                continue
            member_ids = {id(e) for e in members}
            escaping = [e.outvars[0] for e in members
                        if any(q is None or id(q) not in member_ids for q, _ in uses.get(e.outvars[0], []))]
            if len(escaping) != 1:
                continue
            y = escaping[0]
            # the block: the members y depends on
            prod = {e.outvars[0]: e for e in members}
            need, stack = set(), [y]
            while stack:
                v = stack.pop()
                e = prod.get(v)
                if e is None or id(e) in need:
                    continue
                need.add(id(e))
                stack.extend(w for w in e.invars if not isinstance(w, _compat.Literal))
            eqns = [e for e in members if id(e) in need]
            if len(eqns) < 2 or eqns[-1].outvars[0] is not y:
                continue
            # not a plain chain: some value read twice inside the block
            reads: dict[Any, int] = {}
            for e in eqns:
                for w in e.invars:
                    if not isinstance(w, _compat.Literal):
                        reads[w] = reads.get(w, 0) + 1
            if max(reads.values()) < 2:
                continue
            # every inner value read inside the block only
            if any(q is None or id(q) not in need for e in eqns[:-1] for q, _ in uses.get(e.outvars[0], [])):
                continue
            taken.update(need)
            found[id(eqns[-1])] = UnaryBlock(a, eqns)

    walk(jaxpr)
    return found
