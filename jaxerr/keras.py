"""Adapter from Keras 3 models (JAX backend) to functions of their input, for
:func:`jaxerr.bound`.

``bound_keras(model, precision)(x)`` bounds the error of ``model(x)`` in inference
mode, through ``model.stateless_call(trainable, non_trainable, x, training=False)``,
with the model's variables as exact point arguments (``weights=`` as in
:mod:`jaxerr.flax`: ``"rounded"`` counts rounding them into the format as error,
``"exact"`` takes the format-rounded weights as the reference).

Keras must run on the JAX backend: importing this module sets ``KERAS_BACKEND=jax``
when Keras has not been imported yet (and the variable is unset); if Keras was already
imported with another backend it raises an ``ImportError`` saying how to fix it.
Install Keras with ``pip install "jaxerr[keras]"``. A model saved with
``model.save("m.keras")`` loads offline with ``keras.saving.load_model("m.keras")``.

**Guarantee:** that of :func:`jaxerr.bound` for ``lambda x: model(x, training=False)``
with the weights fixed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

if "keras" not in sys.modules:
    os.environ.setdefault("KERAS_BACKEND", "jax")

try:
    import keras
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "jaxerr.keras needs Keras 3 on the JAX backend: pip install 'jaxerr[keras]' "
        "(or pip install keras)"
    ) from e

if not hasattr(keras, "backend") or keras.backend.backend() != "jax":
    raise ImportError(
        f"jaxerr.keras needs Keras 3 on the JAX backend, but Keras runs on "
        f"{getattr(getattr(keras, 'backend', None), 'backend', lambda: '?')()!r}. Set the "
        "environment variable KERAS_BACKEND=jax before Keras is first imported (or import "
        "jaxerr.keras first)."
    )

from ._bound import bound  # noqa: E402
from .flax import _is_float_leaf, prepare_weights  # noqa: E402


def _prepared(variables: list[Any], precision: Any, weights: str) -> list[Any]:
    vals = [v.value for v in variables]
    is_f = [_is_float_leaf(v) for v in vals]
    floats = iter(prepare_weights([v for v, f in zip(vals, is_f) if f], precision, weights))
    return [next(floats) if f else v for v, f in zip(vals, is_f)]


def bound_keras(
    model: Any,
    precision: Any = None,
    *,
    weights: str = "rounded",
    training: bool = False,
    **bound_kwargs: Any,
) -> Callable[..., Any]:
    """Bound a Keras 3 model (JAX backend) as a function of its inputs.

    **Arguments:**

    - `model`: a built ``keras.Model`` (``Sequential``, functional or subclassed).
    - `precision`: as in :func:`jaxerr.bound` (``None``: as written).
    - `weights`: ``"rounded"`` (default) or ``"exact"`` (see :mod:`jaxerr.flax`).
    - `training`: passed to the model (keep ``False``: dropout and batch statistics
      updates are not analysed).
    - `bound_kwargs`: any keyword of :func:`jaxerr.bound` (``accumulation``, ``domain``,
      ``probabilistic``, ``symbols``, ``refine_budget``, ``analysis_dtype``, ``jit``,
      ``warn``).

    **Returns:** ``g(*inputs)`` returning :func:`jaxerr.bound`'s result for
    ``model(*inputs)``; inputs may be arrays or :class:`jaxerr.Interval` boxes. The
    variables are read once, when ``bound_keras`` is called.
    """
    if not model.built:
        raise ValueError("the Keras model is not built: call it once on an input (or build it) first")
    trainable = _prepared(model.trainable_variables, precision, weights)
    non_trainable = _prepared(model.non_trainable_variables, precision, weights)

    def forward(tv, ntv, *inputs):
        out, _ = model.stateless_call(list(tv), list(ntv), *inputs, training=training)
        return out

    g = bound(forward, precision, **bound_kwargs)

    def bounded(*inputs: Any) -> Any:
        return g(trainable, non_trainable, *inputs)

    return bounded


__all__ = ["bound_keras"]
