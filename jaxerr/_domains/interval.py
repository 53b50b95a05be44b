"""The interval domain: range and error of every variable, as plain arrays.

A floating variable is a :class:`Real` holding, elementwise,

* ``[lo, hi]``: an enclosure of the **exact** real value (real arithmetic on the
  exact inputs) over the whole input set;
* ``[clo, chi]``: an enclosure of the **computed** floating-point value over the
  whole input set, under every rounding the error model allows;
* ``err``: a bound on ``|computed - exact|`` that holds pointwise (same input);
* ``value``: the value computed at the centre of the input set.

An integer or boolean variable is a :class:`Discrete` holding ``[lo, hi]`` (which
contains both the exact and the computed value) and ``value``. ``lo == hi``
means the value is certain: exact and computed agree.

This module knows nothing about jaxprs.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from .. import _formats as F


@jax.tree_util.register_pytree_node_class
class Real:
    __slots__ = ("lo", "hi", "clo", "chi", "err", "value", "exact", "point")

    def __init__(self, lo, hi, clo, chi, err, value, exact: bool = False, point: bool = False):
        self.lo, self.hi, self.clo, self.chi, self.err, self.value = lo, hi, clo, chi, err, value
        # Static facts that let rules skip work:
        # exact: err == 0 and the computed range equals the exact range;
        # point: lo == hi and clo == chi (a single input point, e.g. a weight).
        self.exact = exact
        self.point = point

    def tree_flatten(self):
        return (self.lo, self.hi, self.clo, self.chi, self.err, self.value), (self.exact, self.point)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children, exact=aux[0], point=aux[1])

    @property
    def shape(self):
        return jnp.shape(self.lo)

    @property
    def dtype(self):
        return self.lo.dtype

    def hull(self) -> tuple[Any, Any]:
        """Enclosure of both the exact and the computed value.

        The computed value lies in ``[clo, chi]`` also where ``err`` is infinite (it
        may then be ``±inf``: an overflowed constant such as ``finfo(float32).min`` in
        bfloat16); where it may be NaN the computed range is the whole line (see
        :func:`nan_possible`), and so is the hull."""
        if self.exact:
            return self.lo, self.hi
        return jnp.minimum(self.lo, self.clo), jnp.maximum(self.hi, self.chi)

    def __repr__(self) -> str:
        return f"Real(lo={self.lo}, hi={self.hi}, clo={self.clo}, chi={self.chi}, err={self.err})"


@jax.tree_util.register_pytree_node_class
class Discrete:
    __slots__ = ("lo", "hi", "value")

    def __init__(self, lo, hi, value):
        self.lo, self.hi, self.value = lo, hi, value

    def tree_flatten(self):
        return (self.lo, self.hi, self.value), None

    @classmethod
    def tree_unflatten(cls, _, children):
        return cls(*children)

    @property
    def shape(self):
        return jnp.shape(self.value)

    @property
    def dtype(self):
        return self.value.dtype

    def certain(self):
        return self.lo == self.hi


def point(x, value, adt) -> Real:
    """An exact point: range and computed value are ``x`` itself, no error."""
    xa = jnp.asarray(x).astype(adt)
    return Real(xa, xa, xa, xa, jnp.zeros_like(xa), value, exact=True, point=True)


def mag(lo, hi):
    """max |t| over [lo, hi]."""
    return jnp.maximum(jnp.abs(lo), jnp.abs(hi))


def mig(lo, hi):
    """min |t| over [lo, hi] (0 if the interval contains 0)."""
    return F.where((lo <= 0) & (hi >= 0), jnp.zeros_like(lo), jnp.minimum(jnp.abs(lo), jnp.abs(hi)))


def nan_possible(r: Real) -> Any:
    """Where the computed value may be NaN (``inf - inf``, ``0 * inf``, a NaN input).

    The encoding: ``err = inf`` with the computed range ``[-inf, inf]``. Anywhere
    else the computed value is a number (possibly ``±inf``) in ``[clo, chi]``, also
    where ``err`` is infinite (the interpreter's ``finalize`` hook keeps that true)."""
    return ~(r.err < jnp.inf) & ~(r.clo > -jnp.inf) & ~(r.chi < jnp.inf)


def sanitize(r: Real) -> Real:
    """Turn every NaN produced by the analysis into the safe infinite bound."""
    inf = jnp.inf
    lo = F.where(jnp.isnan(r.lo), -inf, r.lo)
    hi = F.where(jnp.isnan(r.hi), inf, r.hi)
    clo = F.where(jnp.isnan(r.clo), -inf, r.clo)
    chi = F.where(jnp.isnan(r.chi), inf, r.chi)
    err = F.where(jnp.isnan(r.err), inf, r.err)
    return Real(lo, hi, clo, chi, err, r.value, exact=r.exact, point=r.point)


def tighten(r: Real) -> Real:
    """Use that exact and computed values each lie in their ranges: ``err`` is at most
    extend beyond the exact range by more than ``err``.

    The first also holds where ``err`` is infinite, as long as the computed value is
    a number in ``[clo, chi]`` (not NaN, :func:`nan_possible`): ``exp`` of a computed
    ``-inf`` is ``0``, within ``exp(hi)`` of the exact value."""
    if r.exact:
        return r
    # where the computed value may be NaN the computed range is [-inf, inf], so the
    # spread is inf (a NaN from inf - inf is the same "no claim")
    spread = jnp.maximum(F.sub_up(r.chi, r.lo), F.sub_up(r.hi, r.clo))
    err = jnp.minimum(r.err, F.where(jnp.isnan(spread), jnp.inf, spread))
    finite = err < jnp.inf
    clo = F.where(finite, jnp.maximum(r.clo, F.sub_dn(r.lo, err)), r.clo)
    chi = F.where(finite, jnp.minimum(r.chi, F.add_up(r.hi, err)), r.chi)
    return Real(r.lo, r.hi, clo, chi, err, r.value, point=r.point)


# ---------------------------------------------------------------------------
# Interval arithmetic on (lo, hi) pairs, rounded outward
# ---------------------------------------------------------------------------


def iadd(a, b):
    return F.add_dn(a[0], b[0]), F.add_up(a[1], b[1])


def isub(a, b):
    return F.sub_dn(a[0], b[1]), F.sub_up(a[1], b[0])


def hull_of(lows, highs):
    """(min of the lower candidates, max of the upper candidates)."""
    lo, hi = lows[0], highs[0]
    for t in lows[1:]:
        lo = jnp.minimum(lo, t)
    for t in highs[1:]:
        hi = jnp.maximum(hi, t)
    return lo, hi


def imul(a, b):
    """Product of intervals from the four corner products, rounded outward
    (``0 * inf`` gives NaN, which the interpreter turns into the infinite bound)."""
    return hull_of([F.mul_dn(x, y) for x in a for y in b], [F.mul_up(x, y) for x in a for y in b])


def isqr(a):
    lo, hi = a
    m_dn = mig(lo, hi)
    m_up = mag(lo, hi)
    return F.mul_dn(m_dn, m_dn), F.mul_up(m_up, m_up)


def idiv(a, b):
    lo, hi = b
    has0 = (lo <= 0) & (hi >= 0)
    qlo, qhi = hull_of([F.div_dn(x, y) for x in a for y in b], [F.div_up(x, y) for x in a for y in b])
    return F.where(has0, -jnp.inf, qlo), F.where(has0, jnp.inf, qhi)
