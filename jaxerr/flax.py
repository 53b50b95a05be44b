"""Adapters from Flax models to functions of their input, for :func:`jaxerr.bound`.

``bound_linen(model, variables, precision)(x)`` and ``bound_nnx(module, precision)(x)``
bound the error of the model's forward pass as a function of its input ``x`` (an array,
or a :class:`jaxerr.Interval` box), with the parameters fixed.

**Parameters (``weights=``).** The parameters are passed to the analysis as exact point
arguments (one compiled analysis serves every input and every set of weights of the
same shapes):

* ``weights="rounded"`` (default): with a ``precision`` override, the parameters are
  rounded into that format (as a low-precision deployment stores them) and that rounding
  **counts** as error. The bounds compare the deployed model with the exact real
  computation of the model *as given* (float32 weights, say).
* ``weights="exact"``: the parameters are first rounded into the format (host side) and
  then taken as exact: the bounds compare the deployed model with the exact real
  computation *with the deployed (rounded) weights*, i.e. they bound the arithmetic only.

With ``precision=None`` (the model as written, in its own dtypes) the two coincide.

**Guarantee:** that of :func:`jaxerr.bound` for ``lambda x: apply(params, x)``: for every
input in the input set and every rounding the error model allows, the exact real output
lies in ``[lo, hi]`` and the computed one within ``abs_err`` of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import _formats as F
from ._bound import bound

WEIGHTS = ("rounded", "exact")


def _check_weights(weights: str) -> None:
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")


def _is_float_leaf(x: Any) -> bool:
    try:
        return jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)
    except TypeError:  # PRNG keys and other extended dtypes
        return False


def prepare_weights(leaves: list[Any], precision: Any, weights: str) -> list[Any]:
    """The floating parameter leaves as passed to the analysis: unchanged for
    ``weights="rounded"`` (the analysis rounds them and counts it), rounded into the
    format on the host for ``weights="exact"`` (so that they are exact values of it)."""
    _check_weights(weights)
    if weights == "rounded" or precision is None:
        return [jnp.asarray(x) for x in leaves]
    fmt = F.as_format(precision)
    out = []
    for x in leaves:
        a = jnp.asarray(x)
        car = np.float64 if fmt.precision > 24 else np.float32
        # a format at least as wide as the leaf's dtype rounds nothing
        out.append(F.round_to(a.astype(car), fmt).astype(a.dtype))
    return out


def _split_float(tree: Any) -> tuple[list[Any], list[Any], Any, list[bool]]:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    is_f = [_is_float_leaf(x) for x in leaves]
    return [x for x, f in zip(leaves, is_f) if f], [x for x, f in zip(leaves, is_f) if not f], treedef, is_f


def _merge_float(floats: list[Any], others: list[Any], treedef: Any, is_f: list[bool]) -> Any:
    fi, oi = iter(floats), iter(others)
    return jax.tree_util.tree_unflatten(treedef, [next(fi) if f else next(oi) for f in is_f])


def bound_linen(
    model: Any,
    variables: Any,
    precision: Any = None,
    *,
    weights: str = "rounded",
    method: Any = None,
    **bound_kwargs: Any,
) -> Callable[..., Any]:
    """Bound a ``flax.linen`` model as a function of its input.

    **Arguments:**

    - `model`: a ``flax.linen.Module``.
    - `variables`: its variables (``model.init(...)``), e.g. ``{"params": ...,
      "batch_stats": ...}``.
    - `precision`: as in :func:`jaxerr.bound` (``None``: as written).
    - `weights`: ``"rounded"`` (default) or ``"exact"``; see the module docstring.
    - `method`: passed to ``model.apply`` (default ``__call__``).
    - `bound_kwargs`: any keyword of :func:`jaxerr.bound` (``accumulation``, ``domain``,
      ``probabilistic``, ``symbols``, ``refine_budget``, ``analysis_dtype``, ``jit``,
      ``warn``).

    **Returns:** ``g(*inputs, **apply_kwargs)`` returning :func:`jaxerr.bound`'s result for
    ``model.apply(variables, *inputs, method=method, **apply_kwargs)``. Inputs may be
    arrays or :class:`jaxerr.Interval` boxes; ``apply_kwargs`` (e.g. ``train=False``)
    must be static Python values. Use inference mode (BatchNorm with running averages,
    deterministic Dropout): randomness and mutation are not analysed.
    """
    floats, others, treedef, is_f = _split_float(variables)
    floats = prepare_weights(floats, precision, weights)

    def forward(float_vars, *inputs, **apply_kwargs):
        v = _merge_float(list(float_vars), others, treedef, is_f)
        kw = dict(apply_kwargs)
        if method is not None:
            kw["method"] = method
        return model.apply(v, *inputs, **kw)

    g = bound(forward, precision, **bound_kwargs)

    def bounded(*inputs: Any, **apply_kwargs: Any) -> Any:
        return g(floats, *inputs, **apply_kwargs)

    return bounded


def bound_nnx(
    module: Any,
    precision: Any = None,
    *,
    weights: str = "rounded",
    **bound_kwargs: Any,
) -> Callable[..., Any]:
    """Bound a ``flax.nnx`` module as a function of its input.

    The module is split (``nnx.split``) into its graph definition and state; the
    floating state (parameters, batch statistics) becomes the analysis' point
    arguments, the rest (PRNG keys, counters) stays fixed, and each call merges them
    back (``nnx.merge``) and calls the module. Put the module in inference mode first
    (``module.eval()``): randomness and state updates are not analysed, and the module
    passed in is not modified.

    **Arguments:** `module` (an ``nnx.Module``), `precision`, `weights` (see the module
    docstring), `bound_kwargs` as for :func:`jaxerr.bound`.

    **Returns:** ``g(*inputs, **call_kwargs)`` returning :func:`jaxerr.bound`'s result for
    ``module(*inputs, **call_kwargs)``.
    """
    from flax import nnx

    graphdef, state = nnx.split(module)
    floats, others, treedef, is_f = _split_float(state)
    floats = prepare_weights(floats, precision, weights)

    def forward(float_state, *inputs, **call_kwargs):
        st = _merge_float(list(float_state), others, treedef, is_f)
        return nnx.merge(graphdef, st)(*inputs, **call_kwargs)

    g = bound(forward, precision, **bound_kwargs)

    def bounded(*inputs: Any, **call_kwargs: Any) -> Any:
        return g(floats, *inputs, **call_kwargs)

    return bounded


def bound_model(model: Any, variables: Any = None, precision: Any = None, **kwargs: Any) -> Callable[..., Any]:
    """:func:`bound_nnx` for an ``nnx.Module``, :func:`bound_linen` for a linen module
    (which needs its ``variables``)."""
    from flax import nnx

    if isinstance(model, nnx.Module):
        if variables is not None:
            raise ValueError("an nnx.Module carries its own state: call bound_model(module, precision=...)")
        return bound_nnx(model, precision, **kwargs)
    if variables is None:
        raise ValueError("a flax.linen module needs its variables: bound_model(model, variables, precision)")
    return bound_linen(model, variables, precision, **kwargs)


__all__ = ["bound_linen", "bound_model", "bound_nnx", "prepare_weights"]
