"""Certified tolerances for tests: replace hand-tuned ``atol`` with a proof.

``assert_allclose_certified(actual, f, *args, precision="bfloat16")`` analyses
``f(*args)`` with :func:`jaxerr.bound` and checks, elementwise,

    lo - abs_err  <=  actual  <=  hi + abs_err

(computed in float64, the bounds widened by one float64 ulp), where ``[lo, hi]``
encloses the exact real result of ``f`` and ``abs_err`` bounds ``|computed -
exact|`` for any execution of ``f`` in ``precision`` under the error model
(``docs/error-model.md``) and ``accumulation``. At a point input ``lo`` and ``hi``
are (nearly) equal, so this is ``|actual - exact| <= abs_err``: every faithful
low-precision implementation of ``f`` passes, for every input in the set when
arguments are :class:`jaxerr.Interval` boxes. A failure means ``actual`` is not
the result of running ``f`` in that format with that accumulation (a bug, a
different algorithm, or a wider error than the model allows: e.g. another
accumulation order or an approximate transcendental).

On failure the :class:`AssertionError` names the worst elements: index, actual
value, the certified interval, and how far outside it the value lies (absolutely
and in multiples of ``abs_err``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from ._bound import Bound, bound

__all__ = ["assert_allclose_certified", "certified_interval"]


def certified_interval(f: Callable[..., Any], *args: Any, precision: Any = "bfloat16",
                       accumulation: Any = "auto", **kwargs: Any) -> list[tuple[np.ndarray, np.ndarray, Bound]]:
    """For each output leaf of ``f``: ``(lower, upper, bound)`` with ``lower = lo - abs_err``
    and ``upper = hi + abs_err`` (float64, rounded outward)."""
    out = bound(f, precision, accumulation=accumulation, warn=False, **kwargs)(*args)
    leaves = [b for b in jax.tree_util.tree_leaves(out, is_leaf=lambda x: isinstance(x, Bound))]
    res = []
    for b in leaves:
        lo = np.asarray(b.lo, np.float64)
        hi = np.asarray(b.hi, np.float64)
        e = np.asarray(b.abs_err, np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            lower = np.nextafter(lo - e, -np.inf)
            upper = np.nextafter(hi + e, np.inf)
        res.append((lower, upper, b))
    return res


def assert_allclose_certified(
    actual: Any,
    f: Callable[..., Any],
    *args: Any,
    precision: Any = "bfloat16",
    accumulation: Any = "auto",
    show: int = 5,
    err_msg: str = "",
    **bound_kwargs: Any,
) -> None:
    """Assert that ``actual`` (a pytree shaped like ``f(*args)``) lies within the
    certified bound of ``f`` run in ``precision``: ``lo - abs_err <= actual <= hi +
    abs_err`` elementwise (see the module docstring for what that proves).

    **Arguments:**

    - `actual`: the output of the implementation under test (any dtype; compared in float64).
    - `f`, `args`: the reference function and its arguments (arrays or
      :class:`jaxerr.Interval` boxes), analysed with :func:`jaxerr.bound`.
    - `precision`, `accumulation`: the format and summation model the
      implementation is supposed to use.
    - `show`: how many of the worst elements the failure message lists.

    Raises ``AssertionError`` naming the worst elements (index, actual value,
    certified interval, excess over the bound) when some element lies outside, and
    when a certified bound is infinite (nothing can be certified there).
    """
    acts = jax.tree_util.tree_leaves(actual)
    certs = certified_interval(f, *args, precision=precision, accumulation=accumulation, **bound_kwargs)
    if len(acts) != len(certs):
        raise AssertionError(f"actual has {len(acts)} leaves but f returns {len(certs)}")
    problems = []
    for k, (a, (lower, upper, b)) in enumerate(zip(acts, certs)):
        dtype = np.asarray(a).dtype  # the implementation's own dtype, for the message
        a = np.asarray(a, dtype=np.float64)
        if a.shape != lower.shape:
            problems.append(f"output {k}: shape {a.shape} != expected {lower.shape}")
            continue
        e = np.asarray(b.abs_err, np.float64)
        with np.errstate(invalid="ignore"):
            excess = np.maximum(lower - a, a - upper)
        excess = np.where(np.isnan(a), np.inf, excess)
        inf_bound = ~np.isfinite(e)
        bad = (excess > 0) | inf_bound
        if not bad.any():
            continue
        nbad = int(bad.sum())
        order = np.argsort(-np.where(bad, np.where(inf_bound, np.inf, excess), -np.inf), axis=None)
        lines = [f"output {k} ({dtype}{list(a.shape)}): {nbad} of {a.size} element(s) outside "
                 f"the certified bound for precision={precision}, accumulation={accumulation}"]
        for flat in order[: min(show, nbad)]:
            idx = np.unravel_index(flat, a.shape) if a.ndim else ()
            if inf_bound[idx]:
                lines.append(f"  at {tuple(int(i) for i in idx)}: the certified bound is infinite "
                             "(see the bound's diagnostics); nothing can be certified")
                continue
            lines.append(
                f"  at {tuple(int(i) for i in idx)}: actual {a[idx]:.9g} not in "
                f"[{lower[idx]:.9g}, {upper[idx]:.9g}] (exact in [{float(np.asarray(b.lo)[idx]):.9g}, "
                f"{float(np.asarray(b.hi)[idx]):.9g}], abs_err {e[idx]:.3g}); outside by "
                f"{excess[idx]:.3g} = {excess[idx] / e[idx] if e[idx] > 0 else np.inf:.3g} x abs_err"
            )
        problems.append("\n".join(lines))
    if problems:
        raise AssertionError((err_msg + "\n" if err_msg else "") + "\n".join(problems))
