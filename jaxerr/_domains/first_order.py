"""Cotangents with guaranteed enclosures, for first-order sensitivity bounds.

A :class:`Cot` encloses, elementwise, the sensitivity ``d output / d v`` of one
output component to one intermediate value ``v`` of the program, for every
state the program can pass through (exact, computed, and everything in between):
the true sensitivity lies in ``[mid - rad, mid + rad]``. Every operation below
rounds outward: the float error of computing ``mid`` goes into ``rad``.

``None`` stands for a cotangent that is exactly zero. This module knows nothing
about jaxprs.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import _compat
from .. import _formats as F
from .affine import per_element


@jax.tree_util.register_pytree_node_class
class Cot:
    __slots__ = ("mid", "rad")

    def __init__(self, mid: Any, rad: Any):
        self.mid, self.rad = mid, rad

    def tree_flatten(self):
        return (self.mid, self.rad), None

    @classmethod
    def tree_unflatten(cls, _, children):
        return cls(*children)

    def mag(self) -> Any:
        """Upper bound of ``|d|`` over the enclosure."""
        return F.add_up_nn(jnp.abs(self.mid), self.rad)

    def __neg__(self) -> Cot:
        return Cot(-self.mid, self.rad)

    def __repr__(self) -> str:
        return f"Cot(mid={self.mid}, rad={self.rad})"


def fixed(x: Any) -> Any:
    """A factor that does not depend on the output element (not batched by the reverse
    pass's ``vmap``), materialised once (``affine.per_element``): XLA:CPU otherwise
    fuses the chain that computes it (a derivative enclosure, a local error bound:
    hundreds of operations) into the ``(outputs, ...)`` loop and recomputes it for every
    output element. Batched values are returned as they are."""
    if not isinstance(x, jax.Array) or _compat.is_batch_tracer(x):
        return x
    return per_element(x)


def _round_err(x: Any) -> Any:
    """Bound on the rounding error of the float operation that produced ``x``."""
    eps, tiny, _ = F._consts(x.dtype)
    return jnp.abs(x) * eps + tiny  # eps = 2u covers |x| u and the rounding of this bound


def _zero(g: Cot) -> Any:
    """Where ``g`` is exactly 0 (a sensitivity that is certainly 0, e.g. through
    elements cut by the reverse pass): operations on it are exact there."""
    return (g.mid == 0) & (g.rad == 0)


def add(a: Cot | None, b: Cot | None) -> Cot | None:
    if a is None:
        return b
    if b is None:
        return a
    mid = a.mid + b.mid
    rad = F.add_up_nn(F.add_up_nn(a.rad, b.rad), _round_err(mid))
    return Cot(mid, F.where(_zero(a) & _zero(b), 0.0, rad))


def scale_point(g: Cot, d: Any) -> Cot:
    """Multiply by an exactly known factor ``d`` (broadcasting)."""
    d = fixed(d)
    mid = g.mid * d
    rad = F.add_up_nn(F.mul_up(g.rad, jnp.abs(d)), _round_err(mid))
    return Cot(mid, F.where(_zero(g) & jnp.isfinite(d), 0.0, rad))


def mid_rad(lo: Any, hi: Any) -> tuple[Any, Any]:
    """Midpoint and radius of ``[lo, hi]`` with ``[mid - rad, mid + rad] ⊇ [lo, hi]``."""
    mid = F.where(lo == hi, lo, lo / 2 + hi / 2)
    rad = jnp.maximum(F.sub_up(hi, mid), F.sub_up(mid, lo))
    # infinite ends: inf - inf is NaN in mid; make the whole factor unbounded
    bad = jnp.isnan(mid) | jnp.isnan(rad)
    return F.where(bad, 0.0, mid), F.where(bad, jnp.inf, rad)


def scale(g: Cot, lo: Any, hi: Any) -> Cot:
    """Multiply by a factor known to lie in ``[lo, hi]`` (elementwise, broadcasting)."""
    dm, dr = mid_rad(lo, hi)
    dm, dr = fixed(dm), fixed(dr)
    mid = g.mid * dm
    # |g d - gm dm| <= |gm| dr + gr (|dm| + dr)
    t1 = F.mul_up(jnp.abs(g.mid), dr)
    t2 = F.mul_up(g.rad, F.add_up_nn(jnp.abs(dm), dr))
    t1 = F.where(g.mid == 0, 0.0, t1)  # 0 * inf: the sensitivity is exactly 0 there
    t2 = F.where(g.rad == 0, 0.0, t2)
    rad = F.add_up_nn(F.add_up_nn(t1, t2), _round_err(mid))
    rad = F.where(_zero(g) & jnp.isfinite(dm) & jnp.isfinite(dr), 0.0, rad)
    return Cot(mid, rad.astype(mid.dtype))


def mask(g: Cot, keep: Any) -> Cot:
    """Zero the cotangent where ``keep`` is false (exact)."""
    keep = fixed(keep)
    z = jnp.zeros_like(g.mid)
    return Cot(F.where(keep, g.mid, z), F.where(keep, g.rad, z))


def unit_interval(g: Cot, certain_one: Any, possible: Any) -> Cot:
    """Multiply by 1 where ``certain_one``, by some value in [0, 1] where only
    ``possible``, by 0 elsewhere (the Clarke gradient of max/min/clamp)."""
    one = jnp.ones_like(g.mid)
    zero = jnp.zeros_like(g.mid)
    lo = F.where(certain_one, one, zero)
    hi = F.where(certain_one | possible, one, zero)
    return scale(g, lo, hi)


def linear(g: Cot, T: Any, n_sum: int) -> Cot:
    """Apply a linear map ``T`` whose matrix has entries 0 and 1 and whose outputs
    each sum at most ``n_sum`` inputs (``n_sum <= 1``: no sums, ``T`` is exact)."""
    mid = T(g.mid)
    rad = T(g.rad)
    if n_sum <= 1:
        return Cot(mid, rad)
    dt = mid.dtype
    gam = F.gamma(n_sum, float(np.finfo(dt).eps) / 2)
    slack = F.static_up(2 * n_sum * float(np.finfo(dt).tiny), dt)
    amid = T(jnp.abs(g.mid))
    exact0 = (amid == 0) & (rad == 0)  # sums of exact zeros only
    # computed nonnegative sums are within (1 + gamma) of the exact ones
    rad = F.add_up_nn(F.scale_up(rad, 1 + 2 * gam), F.scale_up(amid, 2 * gam))
    rad = F.add_up_nn(rad, slack)
    return Cot(mid, F.where(exact0, 0.0, rad))
