"""Rule registry of the affine domain, the interval fallback and shared helpers.

An affine rule is ``rule(ctx, *operands, **params) -> value`` like an interval rule,
with :class:`~jaxerr._domains.affine.Affine` operands for floating values and
:class:`~jaxerr._domains.interval.Discrete` ones for integers and booleans. Every
primitive with an interval rule but no affine rule runs through :func:`fallback`:
the operands' interval hulls go through the interval rule and the result comes back
as an affine value with independent terms only (sound: the interval rule's
guarantee is about every point of those hulls; only correlations are lost).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp

from .._domains.affine import Affine, Form, Pool, fpoison, from_real, prepare, to_real
from .._domains.interval import Real

affine_rules: dict[Any, Callable[..., Any]] = {}


def register_affine(*prims: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def deco(rule):
        for p in prims:
            if p is not None:
                affine_rules[p] = rule
        return rule

    return deco


def pool(ctx) -> Pool:
    return ctx.config.state


def to_interval(v: Any) -> Any:
    return to_real(v) if isinstance(v, Affine) else v


def to_affine(ctx, v: Any, boxed: bool | None = None) -> Any:
    """An interval value as an affine one (independent terms only), keeping the
    interval itself as its ``iv`` claim."""
    if isinstance(v, Real):
        a = from_real(v, stamp=pool(ctx).T)
        return Affine(a.x, a.e, a.value, a.stamp, a.boxed if boxed is None else boxed, v)
    return v


def fallback(interval_rule: Callable[..., Any]) -> Callable[..., Any]:
    """The affine rule that evaluates ``interval_rule`` on interval hulls."""

    def rule(ctx, *operands, **params):
        boxed = any(isinstance(o, Affine) and o.boxed for o in operands)
        out = interval_rule(ctx, *[to_interval(o) for o in operands], **params)
        if ctx.eqn.primitive.multiple_results:
            return [to_affine(ctx, o, boxed) for o in out]
        return to_affine(ctx, out, boxed)

    rule.__name__ = f"affine_fallback_{getattr(interval_rule, '__name__', 'rule')}"
    rule.is_fallback = True
    return rule


def prep(ctx, *operands: Any, promote: tuple[bool, ...] | None = None) -> list[Any]:
    """Sync the operands with the symbol pool (promoting those marked)."""
    pr = list(promote) if promote is not None else [False] * len(operands)
    return prepare(pool(ctx), list(operands), pr)


def out_shape(ctx) -> tuple:
    return tuple(ctx.eqn.outvars[0].aval.shape)


def make(ctx, x: Form, e: Form, value: Any, *operands: Any) -> Affine:
    boxed = any(isinstance(o, Affine) and o.boxed for o in operands)
    return Affine(x, e, value, pool(ctx).T, boxed)


def invalid(ctx, bad: Any, a: Affine, what: str) -> Affine:
    """Where ``bad`` nothing is known: infinite ranges and error, with a diagnostic."""
    ctx.flag(bad, what)
    return Affine(fpoison(a.x, bad), fpoison(a.e, bad), a.value, a.stamp, a.boxed)


def zeros(ctx) -> Any:
    return jnp.zeros(out_shape(ctx), ctx.adt)
