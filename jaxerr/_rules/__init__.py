"""Rule registry of the interval domain, keyed by Primitive objects.

A rule is ``rule(ctx, *operands, **params) -> value`` (a list of values for
primitives with multiple results), where operands are :class:`Real` (floating)
or :class:`Discrete` (integer/boolean) and ``ctx`` is the equation's
:class:`jaxerr._interpreter.Ctx`. Rules are small pure functions; family helpers
(`def_structural`, ...) register many primitives at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

interval_rules: dict[Any, Callable[..., Any]] = {}


def register_rule(*prims: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``rule`` for each primitive object in ``prims`` (None is skipped,
    so primitives missing from this JAX version are tolerated)."""

    def deco(rule: Callable[..., Any]) -> Callable[..., Any]:
        for p in prims:
            if p is not None:
                interval_rules[p] = rule
        return rule

    return deco


def _load() -> None:
    # Importing the family modules registers their rules.
    from . import (  # noqa: F401
        arithmetic,
        control_flow,
        conv,
        cumulative,
        discrete,
        elementwise,
        linear,
        reductions,
        scatter,
        sorting,
        structural,
        windows,
    )


_load()
