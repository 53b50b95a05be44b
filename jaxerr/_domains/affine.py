"""The affine domain: exact values and rounding errors as affine forms over shared noise symbols.

A floating variable is an :class:`Affine` made of two :class:`Form` objects,

* ``x``: the **exact** value (real arithmetic on the exact inputs),
* ``e``: the **error** ``computed - exact``,

each of them, elementwise,

    c + sum_j G[j] * eps_j + r * xi          eps_j, xi in [-1, 1]

where ``eps_1 .. eps_K`` are **shared** noise symbols (one global slot axis of static
size ``K``, the symbol budget) and ``xi`` is an **independent** symbol of this element
of this form. Shared symbols carry input uncertainty (an ``Interval`` argument's box)
and rounding errors that have gone through a mixing operation (a matmul, a sum); the
independent term carries everything else (new roundings, linearisation remainders,
the analysis' own rounding, folded symbols).

The claim a value makes (its **semantics**): for every input in the input set and
every execution the error model allows, there are values of the shared symbols
(common to every variable of the program) and of the independent symbols (one per
element of each form, free) such that the exact and computed values of every live
variable equal their forms. Every rule keeps that claim true:

* shared symbols combine linearly (that is where correlations, ``x - x = 0`` and
  sign cancellation in ``G @ W`` come from);
* independent terms only ever combine by magnitude (``|a| r_a + |b| r_b``), which
  is valid whatever the independent symbols are, so treating two correlated
  quantities as independent is always sound (it only loses tightness);
* the analysis' own float arithmetic on ``c`` and ``G`` is rounded: each rule adds a
  bound on the rounding of the arrays it produced to the independent term.

**Fixed budget, sound order reduction.** Slots are handed out by a :class:`Pool` in
allocation order (static, at trace time) and reused round-robin once all ``K`` are
taken. Each :class:`Affine` remembers (statically) the allocation counter its slots
are valid for; before a rule combines it with anything, :func:`sync` folds the
generators of every slot that was reassigned since then into the independent term
(``r += sum over those slots of |G[j]|``). Proof that folding is sound: the folded
part ``sum_{j in D} G[j] eps_j`` is a number in ``[-sum_D |G[j]|, +sum_D |G[j]|]``,
so it equals ``(sum_D |G[j]|) * xi'`` for some ``xi'`` in ``[-1, 1]``; merging it with
the old independent term ``r * xi`` gives ``(r + sum_D |G[j]|) * xi''``. The other
variables keep their own coefficients of the dropped symbols (still valid: their
values did not change), and the folded variable no longer mentions them, so reusing
the slot for a new symbol cannot create a false correlation. Shapes never change.

**Promotion.** Before a mixing operation, an operand's independent term ``r`` (of
``n <= K`` elements) becomes ``n`` fresh shared symbols (a diagonal block of
generators); the value itself does not change (``r_i xi_i`` with ``xi_i`` a new
symbol), so this is exact. After a matmul the rounding errors of one layer then keep
their signs through the next ``W`` instead of growing with ``|W|``.

This module knows nothing about jaxprs.
"""

from __future__ import annotations

import itertools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import _formats as F
from .interval import Real

_TAGS = itertools.count(1)


def fresh_tag() -> int:
    return next(_TAGS)


def u_an(dt: Any) -> float:
    """Unit roundoff of the analysis dtype."""
    return float(np.finfo(dt).eps) / 2


def tiny(dt: Any) -> float:
    return float(np.finfo(dt).tiny)


def gsum(G: Any) -> Any:
    """Upper bound of ``sum_j |G[j]|`` per element (0 exactly where every ``G[j]`` is 0)."""
    K = G.shape[0]
    s = jnp.sum(jnp.abs(G), axis=0)
    g = F.gamma(K, u_an(G.dtype))
    up = F.add_up_nn(F.scale_up(s, 1 + 2 * g), F.static_up(K * tiny(G.dtype), G.dtype))
    # a sum of nonnegative normal numbers is 0 only if every term is 0 (no flushing)
    return F.where(s == 0, jnp.zeros_like(s), up)


def add_nn(a: Any, b: Any) -> Any:
    """Upper bound of ``a + b`` for nonnegative (or None = 0) arrays."""
    if a is None:
        return b
    if b is None:
        return a
    return F.add_up_nn(a, b)


@jax.tree_util.register_pytree_node_class
class Form:
    """``c + sum_j G[j] eps_j + r xi`` elementwise.

    ``G`` (shape ``(K, *shape)``) and ``r`` may be None (zero); ``gs`` is an upper bound
    of ``sum_j |G[j]|``. Static: ``tag`` names the independent symbols of ``r`` (two
    forms with the same tag share them, with static signs ``sgn``), ``nil`` says the
    whole form is exactly 0 (an error part of an exact value).
    """

    __slots__ = ("c", "G", "r", "gs", "tag", "sgn", "nil")

    def __init__(self, c, G=None, r=None, gs=None, tag=None, sgn=1, nil=False):
        if G is not None and gs is None:
            gs = gsum(G)
        self.c, self.G, self.r, self.gs = c, G, r, gs
        self.tag = tag if (tag is not None or r is None) else fresh_tag()
        self.sgn, self.nil = sgn, nil

    def tree_flatten(self):
        return (self.c, self.G, self.r, self.gs), (self.tag, self.sgn, self.nil)

    @classmethod
    def tree_unflatten(cls, aux, ch):
        obj = object.__new__(cls)
        obj.c, obj.G, obj.r, obj.gs = ch
        obj.tag, obj.sgn, obj.nil = aux
        return obj

    @classmethod
    def zero(cls, c_like) -> Form:
        return cls(jnp.zeros_like(c_like), nil=True)

    @property
    def shape(self):
        return jnp.shape(self.c)

    def rad(self) -> Any:
        """Upper bound of ``|value - c|``."""
        out = add_nn(self.gs, self.r)
        return jnp.zeros_like(self.c) if out is None else out

    def mag(self) -> Any:
        """Upper bound of ``|value|``."""
        if self.nil:
            return jnp.zeros_like(self.c)
        return F.add_up_nn(jnp.abs(self.c), self.rad())

    def bounds(self) -> tuple[Any, Any]:
        rad = self.rad()
        lo = F.where(rad == 0, self.c, F.sub_dn(self.c, rad))
        hi = F.where(rad == 0, self.c, F.add_up(self.c, rad))
        return lo, hi

    def neg(self) -> Form:
        G = None if self.G is None else -self.G
        return Form(-self.c, G, self.r, self.gs, self.tag, -self.sgn, self.nil)

    def __repr__(self) -> str:
        return f"Form(c={self.c}, G={'-' if self.G is None else self.G.shape}, r={self.r})"


@jax.tree_util.register_pytree_node_class
class Affine:
    """Exact value ``x`` and error ``e`` (computed - exact) of a floating variable.

    ``value``: the value computed at the centre of the input set. ``iv``: None, or an
    interval-domain value (:class:`~jaxerr._domains.interval.Real`) that is a second,
    independent valid claim about the same variable (the *reduced product*: the
    affine domain also runs the interval rule of every equation on the operands'
    tightest intervals, see ``_affine.py``); where an affine form's range is wider
    than that interval (products and squares over wide boxes), rules read the
    intersection (:func:`to_real`). Static: ``stamp``, the pool counter its slots are
    valid for; ``boxed``, the exact part carries input uncertainty (False at point
    inputs, where ``x.r`` is only the analysis' rounding, which is not worth symbols).
    """

    __slots__ = ("x", "e", "value", "stamp", "boxed", "iv")

    def __init__(self, x: Form, e: Form, value, stamp: int = 0, boxed: bool = False, iv: Any = None):
        self.x, self.e, self.value, self.stamp, self.boxed = x, e, value, stamp, boxed
        self.iv = iv

    def tree_flatten(self):
        return (self.x, self.e, self.value, self.iv), (self.stamp, self.boxed)

    @classmethod
    def tree_unflatten(cls, aux, ch):
        return cls(*ch[:3], stamp=aux[0], boxed=aux[1], iv=ch[3])

    @property
    def shape(self):
        return jnp.shape(self.x.c)

    @property
    def dtype(self):
        return self.x.c.dtype

    @property
    def exact(self) -> bool:
        return self.e.nil

    def err(self) -> Any:
        """Upper bound of ``|computed - exact|``."""
        return self.e.mag()

    def __repr__(self) -> str:
        return f"Affine(x={self.x}, e={self.e})"


# ---------------------------------------------------------------------------
# The symbol pool
# ---------------------------------------------------------------------------


class Pool:
    """Static allocation of the ``K`` shared slots, round-robin (see the module docstring).

    One pool per analysis (it lives in ``Config.state``); all of its bookkeeping is
    Python-level and happens at trace time."""

    def __init__(self, K: int, shard: Any = None):
        self.K = int(K)
        self.T = 0
        self.memo: dict[int, tuple[Any, Any]] = {}
        # None, or a function that puts a sharding constraint on a (K, ...) generator
        # array (the symbol axis split over devices); applied to every equation's result
        self.shard = shard

    def alloc(self, n: int) -> int:
        s = self.T
        self.T += n
        return s

    def stale(self, stamp: int) -> np.ndarray | None:
        """Mask of slots reassigned since ``stamp`` (None if none)."""
        d = self.T - stamp
        if d <= 0:
            return None
        if d >= self.K:
            return np.ones(self.K, bool)
        m = np.zeros(self.K, bool)
        m[np.arange(stamp, self.T) % self.K] = True
        return m


def shard_generators(a: Any, pool: Pool) -> Any:
    """``a`` with ``pool.shard`` applied to the generators of its forms (the values do
    not change: only where XLA places the symbol axis)."""
    if pool.shard is None or not isinstance(a, Affine):
        return a

    def one(f: Form) -> Form:
        if f.G is None:
            return f
        ch, aux = f.tree_flatten()
        return Form.tree_unflatten(aux, (ch[0], pool.shard(ch[1]), ch[2], ch[3]))

    return Affine(one(a.x), one(a.e), a.value, a.stamp, a.boxed, a.iv)


def fold(f: Form, mask: np.ndarray) -> Form:
    """Move the generators of the slots in ``mask`` into the independent term (sound:
    see the module docstring)."""
    if f.G is None or not mask.any():
        return f
    if mask.all():
        return Form(f.c, None, add_nn(f.r, f.gs), nil=False)
    mk = jnp.asarray(mask).reshape((-1,) + (1,) * (f.G.ndim - 1))
    dropped = gsum(F.where(mk, f.G, jnp.zeros_like(f.G)))
    G = F.where(mk, jnp.zeros_like(f.G), f.G)
    return Form(f.c, G, add_nn(f.r, dropped))


def sync(a: Any, pool: Pool) -> Any:
    """``a`` with every slot reassigned since its stamp folded away."""
    if not isinstance(a, Affine) or a.stamp == pool.T:
        return a
    m = pool.stale(a.stamp)
    x, e = a.x, a.e
    if m is not None:
        x, e = fold(x, m), fold(e, m)
    return Affine(x, e, a.value, pool.T, a.boxed, a.iv)


def _diag(r: Any, start: int, K: int) -> Any:
    n = int(np.prod(r.shape)) if r.shape else 1
    slots = (start + np.arange(n)) % K
    D = jnp.zeros((K, n), r.dtype).at[slots, np.arange(n)].set(jnp.reshape(r, (n,)))
    return D.reshape((K,) + tuple(r.shape))


def _promote_form(f: Form, start: int, K: int) -> Form:
    D = _diag(f.r, start, K)
    G = D if f.G is None else f.G + D  # the new slots of f.G are 0 (synced): exact
    gs = f.r if f.gs is None else F.add_up_nn(f.gs, f.r)
    return Form(f.c, G, None, gs)


def prepare(pool: Pool, operands: list[Any], promote: list[bool]) -> list[Any]:
    """Sync every operand; first turn the independent terms of those marked in
    ``promote`` into fresh shared symbols (memoised per operand object, so that two uses
    of one variable get the same symbols)."""
    K = pool.K
    out = list(operands)
    todo = []  # (index, which parts)
    for i, (a, p) in enumerate(zip(operands, promote)):
        if not (p and isinstance(a, Affine)):
            continue
        hit = pool.memo.get(id(a))
        if hit is not None and hit[0] is a:
            out[i] = hit[1]
            continue
        n = int(np.prod(a.shape)) if a.shape else 1
        px = a.boxed and a.x.r is not None and n <= K
        pe = (not a.e.nil) and a.e.r is not None and n <= K
        if px or pe:
            todo.append((i, px, pe, n))
    starts = {}
    for i, px, pe, n in todo:
        starts[i] = (pool.alloc(n) if px else None, pool.alloc(n) if pe else None)
    out = [sync(a, pool) for a in out]
    for i, px, pe, _n in todo:
        a = out[i]
        sx, se = starts[i]
        x = _promote_form(a.x, sx, K) if px else a.x
        e = _promote_form(a.e, se, K) if pe else a.e
        new = Affine(x, e, a.value, pool.T, a.boxed, a.iv)
        pool.memo[id(operands[i])] = (operands[i], new)
        out[i] = new
    return out


# ---------------------------------------------------------------------------
# Conversions
# ---------------------------------------------------------------------------


def from_real(r: Real, stamp: int = 0) -> Affine:
    """An interval value as an affine one (independent terms only).

    A rounded point (``lo == hi`` and ``clo == chi``: an input or constant that the
    precision override rounds) keeps its known signed error ``clo - lo`` as the centre
    of its error form, so that first-order cancellations of input roundings survive."""
    mid = F.where(r.lo == r.hi, r.lo, r.lo / 2 + r.hi / 2)
    rad = jnp.maximum(F.sub_up(r.hi, mid), F.sub_up(mid, r.lo))
    inf = ~(jnp.isfinite(r.lo) & jnp.isfinite(r.hi))
    mid = F.where(inf, jnp.zeros_like(mid), mid)
    rad = F.where(inf, jnp.full_like(rad, jnp.inf), rad)
    if r.point and r.exact:
        # an infinite point (the constant -inf of max(-inf, x)) is no affine form:
        # nothing is known about it here (its interval claim keeps the value)
        x = Form(mid, None, F.where(inf, rad, jnp.zeros_like(rad)))
    else:
        x = Form(mid, None, F.where((r.lo == r.hi) & ~inf, jnp.zeros_like(rad), rad))
    if r.exact:
        e = Form.zero(mid)
    else:
        pointlike = (r.lo == r.hi) & (r.clo == r.chi) & jnp.isfinite(r.err) & jnp.isfinite(r.clo)
        d = F.where(pointlike, r.clo - r.lo, jnp.zeros_like(r.lo))
        # |fl(clo - lo) - (clo - lo)| <= u |fl(clo - lo)| (+ a flushed result)
        slack = F.where(d == 0, jnp.zeros_like(d), F.up_nn(jnp.abs(d) * u_an(d.dtype)))
        er = F.where(pointlike, slack, r.err)
        e = Form(d, None, er)
    return Affine(x, e, r.value, stamp, boxed=not r.point)


def _form_real(a: Affine) -> Real:
    """The interval hull of the affine forms alone (exact range, computed range, error)."""
    lo, hi = a.x.bounds()
    err = a.err()
    if a.exact:
        return Real(lo, hi, lo, hi, jnp.zeros_like(lo), a.value)
    # computed = x + e: its centre c_x + c_e, radius rad_x + rad_e
    cc = a.x.c + a.e.c
    crad = F.add_up_nn(F.add_up_nn(a.x.rad(), a.e.rad()), F.up_nn(jnp.abs(cc) * u_an(cc.dtype)))
    clo = jnp.maximum(F.sub_dn(cc, crad), F.sub_dn(lo, err))
    chi = jnp.minimum(F.add_up(cc, crad), F.add_up(hi, err))
    bad = jnp.isinf(err) | jnp.isnan(err)
    err = F.where(bad, jnp.inf, err)
    clo = F.where(bad, -jnp.inf, clo)
    chi = F.where(bad, jnp.inf, chi)
    return Real(lo, hi, clo, chi, err, a.value)


def meet(a: Real, b: Real) -> Real:
    """The intersection of two valid claims about one variable (both hold, so every
    field may take the tighter of the two; ``exact``/``point`` survive from either)."""
    exact = a.exact or b.exact
    lo, hi = jnp.maximum(a.lo, b.lo), jnp.minimum(a.hi, b.hi)
    if exact:
        z = jnp.zeros_like(lo)
        return Real(lo, hi, lo, hi, z, a.value, exact=True, point=a.point or b.point)
    clo, chi = jnp.maximum(a.clo, b.clo), jnp.minimum(a.chi, b.chi)
    err = jnp.minimum(a.err, b.err)
    return Real(lo, hi, clo, chi, err, a.value, point=a.point or b.point)


def to_real(a: Affine) -> Real:
    """The interval hull of an affine value (exact range, computed range, error),
    intersected with its interval claim ``a.iv`` where it has one."""
    r = _form_real(a)
    if a.iv is not None and jnp.shape(a.iv.lo) == jnp.shape(r.lo):
        r = meet(r, a.iv)
    return r


def rbroadcast(r: Any, shape: tuple) -> Any:
    """A :class:`Real` (or None) broadcast to ``shape``."""
    if r is None or tuple(jnp.shape(r.lo)) == tuple(shape):
        return r
    b = lambda t: jnp.broadcast_to(t, shape)  # noqa: E731
    return Real(b(r.lo), b(r.hi), b(r.clo), b(r.chi), b(r.err),
                r.value if jnp.ndim(r.value) != 0 else b(r.value), exact=r.exact, point=r.point)


# ---------------------------------------------------------------------------
# Arithmetic on forms (outward: every rounding of c or G lands in r)
# ---------------------------------------------------------------------------


def _slack_c(c: Any, exact: Any) -> Any:
    """Bound on the rounding of one float operation that produced ``c`` (0 where the
    operation is known to be exact)."""
    return F.where(exact, jnp.zeros_like(c), F.up_nn(jnp.abs(c) * u_an(c.dtype)))


def _slack_G(gs_terms: Any, K: int, k_ops: int) -> Any:
    """Bound on ``sum_j`` of the rounding of ``k_ops`` float operations per generator entry
    whose exact terms sum (in absolute value, over ``j``) to at most ``gs_terms``."""
    dt = gs_terms.dtype
    return F.add_up_nn(F.scale_up(gs_terms, k_ops * u_an(dt) * (1 + 4 * k_ops * u_an(dt))),
                       F.static_up(K * k_ops * tiny(dt), dt))


def per_element(x: Any) -> Any:
    """``x`` (one value per element) materialised before it is broadcast over the
    symbol axis: otherwise XLA fuses the whole elementwise chain that produced it (a
    GELU, a LayerNorm: thousands of operations) into the ``(K, ...)`` loop and
    recomputes it once per symbol (a 16-wide MLP's affine analysis took 2.4 s per call
    in three such fusions). An exact no-op.

    ``lax.optimization_barrier``, a trivial ``while_loop`` or ``copy`` do not stop that
    fusion on XLA:CPU; a sort does (XLA does not fuse it into its consumers): the values
    are sorted by their own positions along the last axis (keys: an iota), which
    returns them unchanged, at ``O(n log d)`` against the ``O(K n)`` of the generator
    arithmetic it saves (``tests/test_affine.py::test_per_element_values_are_not_recomputed_per_symbol``)."""
    if not isinstance(x, jax.Array):
        return x
    if jnp.ndim(x) == 0 or jnp.shape(x)[-1] <= 1:
        # a sort along an axis of length 1 is removed by XLA, and then the whole chain is
        # fused into the (K, ...) loops again (a 1-wide recurrent cell's affine analysis
        # did not compile in 10 minutes): sort two copies along a new axis, keep one
        y = jnp.stack([x, x], axis=-1)
        keys = jax.lax.broadcasted_iota(jnp.int32, jnp.shape(y), jnp.ndim(y) - 1)
        return jax.lax.sort((keys, y), dimension=jnp.ndim(y) - 1, num_keys=1)[1][..., 0]
    keys = jax.lax.broadcasted_iota(jnp.int32, jnp.shape(x), jnp.ndim(x) - 1)
    return jax.lax.sort((keys, x), dimension=jnp.ndim(x) - 1, num_keys=1)[1]


def zero_generators(G: Any, bad: Any) -> Any:
    """``G`` (``(K, ...)``) with every symbol's coefficient 0 where ``bad`` (one flag per
    element, broadcast to ``G``'s element shape and materialised first)."""
    return F.where(per_element(jnp.broadcast_to(bad, G.shape[1:]))[None], jnp.zeros_like(G), G)


def fadd(f1: Form, f2: Form, s: int = 1) -> Form:
    """``f1 + s * f2`` (``s`` = +1 or -1)."""
    if f2.nil:
        return f1
    if f1.nil:
        return f2 if s == 1 else f2.neg()
    c1, c2 = f1.c, f2.c
    c = c1 + c2 if s == 1 else c1 - c2
    exact = (c1 == 0) | (c2 == 0) | ((c == 0) & (c1 == -c2 if s == 1 else c1 == c2))
    slack = _slack_c(c, exact)
    if f1.G is None and f2.G is None:
        G, gs = None, None
    elif f2.G is None:
        G, gs = f1.G, f1.gs
    elif f1.G is None:
        G, gs = (f2.G if s == 1 else -f2.G), f2.gs
    else:
        G = f1.G + f2.G if s == 1 else f1.G - f2.G
        gs = gsum(G)
        slack = F.add_up_nn(slack, _slack_G(gs, G.shape[0], 1))
    if f1.tag is not None and f1.tag == f2.tag and f1.r is f2.r and f1.sgn + s * f2.sgn == 0:
        r = slack  # the same independent symbols with opposite signs cancel
    else:
        r = add_nn(add_nn(f1.r, f2.r), slack)
    return Form(c, G, r, gs)


def fscale(f: Form, a: Any, exact_mult: Any = False, extra: Any = None) -> Form:
    """``a * f + extra * xi`` for an exact float array ``a`` of ``f``'s shape."""
    if f.nil and extra is None:
        return f
    c = a * f.c
    slack = _slack_c(c, (f.c == 0) | (a == 0) | exact_mult)
    G, gs = None, None
    if f.G is not None:
        G = per_element(a)[None] * f.G
        gs = gsum(G)
        slack = F.add_up_nn(slack, _slack_G(gs, G.shape[0], 1))
    r = slack if f.r is None else F.add_up_nn(F.mul_up(jnp.abs(a), f.r), slack)
    r = add_nn(r, extra)
    return Form(c, G, r, gs)


def fcentred(f: Form, fc: Any, a: Any, extra: Any) -> Form:
    """``fc + a * (f - f.c) + extra * xi``: a linearisation around ``f``'s centre."""
    G, gs = None, None
    slack = None
    if f.G is not None:
        G = per_element(a)[None] * f.G
        gs = gsum(G)
        slack = _slack_G(gs, G.shape[0], 1)
    r = None if f.r is None else F.mul_up(jnp.abs(a), f.r)
    return Form(fc, G, add_nn(add_nn(r, extra), slack), gs)


def fmul(p: Form, q: Form) -> Form:
    """Elementwise product of two forms: the bilinear part exactly, the quadratic
    remainder ``|dp| |dq| <= rad(p) rad(q)`` in the independent term."""
    if p.nil or q.nil:
        return Form.zero(p.c if not p.nil else q.c)
    c = p.c * q.c
    slack = _slack_c(c, (p.c == 0) | (q.c == 0))
    G = None
    terms = None
    if p.G is not None or q.G is not None:
        G = 0
        if q.G is not None:
            G = G + per_element(p.c)[None] * q.G
            terms = F.mul_up(jnp.abs(p.c), q.gs)
        if p.G is not None:
            G = G + per_element(q.c)[None] * p.G
            t = F.mul_up(jnp.abs(q.c), p.gs)
            terms = t if terms is None else F.add_up_nn(terms, t)
        k = 2 if (p.G is not None and q.G is not None) else 1
        slack = F.add_up_nn(slack, _slack_G(terms, G.shape[0], k))
    r = slack
    if q.r is not None:
        r = F.add_up_nn(r, F.mul_up(jnp.abs(p.c), q.r))
    if p.r is not None:
        r = F.add_up_nn(r, F.mul_up(jnp.abs(q.c), p.r))
    if (p.G is not None or p.r is not None) and (q.G is not None or q.r is not None):
        r = F.add_up_nn(r, F.mul_up(p.rad(), q.rad()))
    return Form(c, G, r)


def fwiden(f: Form, extra: Any) -> Form:
    """``f + extra * xi`` (a new independent term)."""
    if extra is None:
        return f
    if f.nil:
        return Form(f.c, None, extra)
    return Form(f.c, f.G, add_nn(f.r, extra), f.gs)


def fwhere(mask: Any, f1: Form, f2: Form) -> Form:
    """Elementwise choice between two forms (``mask`` is traced: both are valid claims
    about the same quantity, or the caller knows which one holds where)."""
    if f1.nil and f2.nil:
        return f1
    c = F.where(mask, f1.c, f2.c)
    if f1.G is None and f2.G is None:
        G = None
    else:
        K = (f1.G if f1.G is not None else f2.G).shape[0]
        z = jnp.zeros((K,) + c.shape, c.dtype)
        g1 = z if f1.G is None else f1.G
        g2 = z if f2.G is None else f2.G
        G = F.where(per_element(jnp.broadcast_to(mask, c.shape))[None], g1, g2)
    zero = jnp.zeros_like(c)
    r1 = zero if f1.r is None else f1.r
    r2 = zero if f2.r is None else f2.r
    r = None if (f1.r is None and f2.r is None) else F.where(mask, r1, r2)
    return Form(c, G, r)


def fpoison(f: Form, bad: Any) -> Form:
    """Where ``bad``: nothing is known (infinite independent term, no generators)."""
    c = F.where(bad, jnp.zeros_like(f.c), f.c)
    c = F.where(jnp.isfinite(c), c, jnp.zeros_like(c))
    G = None if f.G is None else zero_generators(f.G, bad)
    r = jnp.zeros_like(c) if f.r is None else f.r
    r = F.where(bad, jnp.full_like(c, jnp.inf), r)
    return Form(c, G, r)


def fbroadcast(f: Form, shape: tuple) -> Form:
    if tuple(f.shape) == tuple(shape):
        return f
    nd = len(shape) - len(f.shape)

    def b(x):
        return None if x is None else jnp.broadcast_to(jnp.reshape(x, (1,) * nd + tuple(jnp.shape(x))), shape)

    G = None
    if f.G is not None:
        K = f.G.shape[0]
        G = jnp.broadcast_to(jnp.reshape(f.G, (K,) + (1,) * nd + tuple(f.shape)), (K,) + tuple(shape))
    return Form(b(f.c), G, b(f.r), b(f.gs), nil=f.nil)


def abroadcast(a: Affine, shape: tuple) -> Affine:
    if tuple(a.shape) == tuple(shape):
        return a
    v = jnp.broadcast_to(a.value, shape) if jnp.ndim(a.value) == 0 else a.value
    return Affine(fbroadcast(a.x, shape), fbroadcast(a.e, shape), v, a.stamp, a.boxed, rbroadcast(a.iv, shape))
