"""Per-layer precision tuning with a certified result.

``jaxerr.tune(f, args, target=..., candidates=[...])`` assigns a format to each
*layer* of ``f`` (a distinct name stack: Flax module paths such as
``"MLP/Dense_0"``, the parent module's own activations, ``jax.named_scope``
blocks) so that the certified bound of :func:`jaxerr.bound` meets ``target``, at
the lowest cost it finds under the cost model

    cost = sum over layers of  storage_bits(format) x operations(layer)

where ``storage_bits`` is the format's width (32 for float32, 16 for bfloat16 and
float16, 8 for float8) and ``operations`` counts a multiply-add per term of a
``dot_general`` as 2, one per input element of a reduction, one per output
element of any other arithmetic equation, and nothing for data movement
(reshape, broadcast, ...). It is a proxy for time and energy on hardware whose
throughput scales inversely with the operand width.

Search (greedy, documented, not guaranteed optimal): start with every layer in
the widest candidate (which must meet the target); visit the layers from the most
to the fewest operations and give each the cheapest candidate that still meets the
target with the other layers as currently assigned. Every candidate assignment is
checked by a full analysis; the returned assignment is verified by one more
analysis whose bounds are returned (``TuneResult.bounds``).

Formats between layers: inputs, parameters and constants are stored in the
widest candidate; an equation whose format does not contain its operand's format
rounds the operand first, and that rounding counts as error (see
:class:`jaxerr.LayerPrecision`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import _compat
from . import _formats as F
from ._bound import Bound, Interval, bound

__all__ = ["Target", "TuneResult", "tune", "bits_needed", "layer_operations"]


# ---------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Target:
    """An accuracy target on the certified bounds of every output.

    - ``Target("abs", t)``: every ``abs_err <= t`` (``target=1e-3`` or ``"abs:1e-3"``
      or ``{"abs": 1e-3}``);
    - ``Target("rel", t)``: every ``rel_err <= t`` (``"rel:1e-2"``, ``{"rel": 1e-2}``);
    - ``Target("argmax")``: the predicted class is certified: for every row (last
      axis = classes) of the first output, the class ``k`` with the largest centre
      value has ``min(lo_k, computed_lo_k) > max(hi_j, computed_hi_j)`` for every
      ``j != k``, so for every input in the (box) input set the exact and the
      computed argmax are both ``k`` (``target="argmax"``).
    """

    kind: str
    value: float | None = None

    @classmethod
    def parse(cls, spec: Any) -> Target:
        if isinstance(spec, Target):
            return spec
        if isinstance(spec, (int, float)) and not isinstance(spec, bool):
            return cls("abs", float(spec))
        if isinstance(spec, dict) and len(spec) == 1:
            (k, v), = spec.items()
            return cls._make(str(k), v)
        if isinstance(spec, str):
            s = spec.strip().lower()
            if s in ("argmax", "top1", "top-1"):
                return cls("argmax")
            if ":" in s:
                k, v = s.split(":", 1)
                return cls._make(k, v)
            try:
                return cls("abs", float(s))
            except ValueError:
                pass
        raise ValueError(
            f"cannot interpret target {spec!r}; use a number (max abs_err), 'abs:1e-3', "
            "'rel:1e-2', {'rel': 1e-2} or 'argmax'"
        )

    @classmethod
    def _make(cls, kind: str, v: Any) -> Target:
        kind = kind.strip().lower()
        if kind not in ("abs", "rel"):
            raise ValueError(f"unknown target kind {kind!r}; use 'abs', 'rel' or 'argmax'")
        v = float(v)
        if not v > 0:
            raise ValueError(f"target {kind} must be positive, got {v}")
        return cls(kind, v)

    def describe(self) -> str:
        if self.kind == "argmax":
            return "argmax certified"
        return f"max {self.kind}_err <= {self.value:g}"

    def measure(self, outputs: Any) -> float:
        """The quantity compared with the target: max abs/rel error, or for argmax the
        smallest certified margin (positive: certified)."""
        leaves = [b for b in jax.tree_util.tree_leaves(outputs, is_leaf=lambda x: isinstance(x, Bound))
                  if isinstance(b, Bound)]
        if self.kind == "abs":
            return max(float(np.max(np.asarray(b.abs_err, np.float64))) for b in leaves)
        if self.kind == "rel":
            return max(float(np.max(np.asarray(b.rel_err, np.float64))) for b in leaves)
        return certified_margin(leaves[0])

    def met(self, outputs: Any) -> bool:
        m = self.measure(outputs)
        if self.kind == "argmax":
            return m > 0
        return m <= self.value


def certified_margin(b: Bound) -> float:
    """Smallest over rows of ``min(lo_k, clo_k) - max_{j != k} max(hi_j, chi_j)`` where
    ``k`` is the row's argmax at the centre (> 0: argmax certified for the whole set)."""
    v = np.asarray(b.value, np.float64)
    v = v.reshape(-1, v.shape[-1]) if v.ndim else v.reshape(1, 1)
    lo = np.minimum(np.asarray(b.lo, np.float64), np.asarray(b.computed_lo, np.float64)).reshape(v.shape)
    hi = np.maximum(np.asarray(b.hi, np.float64), np.asarray(b.computed_hi, np.float64)).reshape(v.shape)
    k = np.argmax(v, axis=-1)
    rows = np.arange(v.shape[0])
    lo_k = lo[rows, k]
    hi_o = hi.copy()
    hi_o[rows, k] = -np.inf
    m = lo_k - np.max(hi_o, axis=-1) if v.shape[-1] > 1 else lo_k * 0 + np.inf
    m = np.where(np.isnan(m), -np.inf, m)
    return float(np.min(m))


# ---------------------------------------------------------------------------
# Layers and their operation counts
# ---------------------------------------------------------------------------


def layer_operations(f: Callable[..., Any], args: Sequence[Any], kwargs: dict | None = None) -> dict[str, int]:
    """Floating operations per layer (name stack) of ``f(*args)``, in program order,
    under the cost model of this module. Layers with no arithmetic are omitted."""
    from .report import _op_count

    kwargs = kwargs or {}
    leaves, treedef = jax.tree_util.tree_flatten((tuple(args), kwargs), is_leaf=lambda x: isinstance(x, Interval))
    specs = [jax.ShapeDtypeStruct(jnp.shape(x.lo if isinstance(x, Interval) else x),
                                  (x.lo if isinstance(x, Interval) else jnp.asarray(x)).dtype)
             if _is_arr(x) else x for x in leaves]

    def flat(*ls):
        a, kw = jax.tree_util.tree_unflatten(treedef, ls)
        return f(*a, **kw)

    dyn = [i for i, x in enumerate(specs) if isinstance(x, jax.ShapeDtypeStruct)]

    def g(*arrs):
        ls = list(specs)
        for i, a in zip(dyn, arrs):
            ls[i] = a
        return flat(*ls)

    closed = jax.make_jaxpr(g)(*[specs[i] for i in dyn])
    ops: dict[str, int] = {}

    def walk(jaxpr: Any, scope: str) -> None:
        for eqn in jaxpr.eqns:
            own = _compat.name_stack(eqn)
            name = f"{scope}/{own}" if (scope and own) else (scope or own)
            sub = _compat.call_subjaxpr(eqn)
            if sub is not None:
                walk(sub[0], name)
                continue
            if not any(_is_float(getattr(v, "aval", None)) for v in eqn.outvars):
                continue
            n = _op_count(eqn)
            if n:
                ops[name] = ops.get(name, 0) + n

    walk(closed.jaxpr, "")
    return ops


def _is_arr(x: Any) -> bool:
    return isinstance(x, (Interval, jax.Array, np.ndarray, np.generic)) or (
        isinstance(x, (int, float)) and not isinstance(x, bool))


def _is_float(aval: Any) -> bool:
    dt = getattr(aval, "dtype", None)
    return dt is not None and jnp.issubdtype(dt, jnp.floating)


# ---------------------------------------------------------------------------
# Analyses of assignments
# ---------------------------------------------------------------------------


class _Analyser:
    def __init__(self, f, args, kwargs, accumulation, target: Target):
        self.f, self.args, self.kwargs = f, tuple(args), dict(kwargs or {})
        self.accumulation = accumulation
        self.target = target
        self.count = 0
        self.cache: dict[Any, tuple[bool, float, Any]] = {}

    def __call__(self, prec: F.LayerPrecision) -> tuple[bool, float, Any]:
        if prec in self.cache:
            return self.cache[prec]
        self.count += 1
        out = bound(self.f, prec, accumulation=self.accumulation, jit=False, warn=False)(
            *self.args, **self.kwargs)
        res = (self.target.met(out), self.target.measure(out), out)
        self.cache[prec] = res
        return res


def reduced(base: F.Format, p: int) -> F.Format:
    """``base`` with ``p`` significand bits (same exponent range)."""
    if p >= base.precision:
        return base
    emax = math.floor(math.log2(base.max_finite))
    return F.Format.custom(p, base.emin, emax, subnormals=base.subnormals,
                           name=f"{base.name}[p={p}]")


def _progress(enabled: bool, total: int, what: str):
    if not enabled:
        return None
    from rich.progress import Progress

    p = Progress(transient=True)
    p.start()
    task = p.add_task(what, total=total)
    return p, task


def bits_needed(
    f: Callable[..., Any],
    args: Sequence[Any],
    kwargs: dict | None,
    base: Any,
    names: Sequence[str],
    target: Any,
    *,
    accumulation: Any = "auto",
    progress: bool = False,
) -> dict[str, int | None]:
    """For each layer name: the fewest significand bits ``p`` (2 .. base's) such that
    that layer in ``base`` reduced to ``p`` bits, every other layer in ``base``, meets
    ``target`` (binary search, each step a full analysis; assumes more bits never
    hurt). ``None`` when ``base`` itself does not meet the target."""
    base = F.as_format(base)
    tgt = Target.parse(target)
    an = _Analyser(f, args, kwargs, accumulation, tgt)
    ok, _, _ = an(F.LayerPrecision(base))
    if not ok:
        return {n: None for n in names}
    out: dict[str, int | None] = {}
    bar = _progress(progress, len(names), "bits needed per layer")
    for name in names:
        lo, hi = 1, base.precision
        while hi - lo > 1:
            mid = (lo + hi) // 2
            ok, _, _ = an(F.LayerPrecision(base, ((name, reduced(base, mid)),)))
            if ok:
                hi = mid
            else:
                lo = mid
        out[name] = hi
        if bar:
            bar[0].advance(bar[1])
    if bar:
        bar[0].stop()
    return out


@dataclasses.dataclass
class TuneResult:
    """The assignment :func:`tune` chose and its certificate."""

    assignment: dict[str, str]  # layer name -> format name
    precision: F.LayerPrecision  # pass it as precision= to bound/report
    bounds: Any  # the final verifying analysis (Bound pytree)
    target: Target
    achieved: float  # target.measure(bounds)
    cost: float
    baseline_cost: float
    baseline: str  # the widest candidate
    operations: dict[str, int]
    analyses: int

    @property
    def saving(self) -> float:
        """1 - cost / baseline_cost."""
        return 1.0 - self.cost / self.baseline_cost if self.baseline_cost else 0.0

    def table(self) -> Any:
        from rich.table import Table

        what = "margin" if self.target.kind == "argmax" else "achieved"
        t = Table(title=f"jaxerr tune: {self.target.describe()} ({what} {self.achieved:.4g})",
                  caption=f"cost {self.cost:.4g} vs {self.cost_baseline_str()}: {100 * self.saving:.1f}% saved")
        t.add_column("layer")
        t.add_column("operations", justify="right")
        t.add_column("format")
        t.add_column("bits x ops", justify="right")
        for name, n in self.operations.items():
            fmt = F.as_format(self.assignment.get(name, self.baseline))
            t.add_row(name or "(top)", f"{n:,}", fmt.name, f"{n * F.storage_bits(fmt):,}")
        return t

    def cost_baseline_str(self) -> str:
        return f"{self.baseline_cost:.4g} (all {self.baseline})"

    def print(self, console: Any = None) -> None:
        from rich.console import Console

        (console or Console()).print(self.table())

    def to_dict(self) -> dict[str, Any]:
        return {
            "assignment": dict(self.assignment), "target": self.target.describe(),
            "achieved": self.achieved, "cost": self.cost, "baseline_cost": self.baseline_cost,
            "baseline": self.baseline, "saving": self.saving, "operations": dict(self.operations),
            "analyses": self.analyses,
        }


def tune(
    f: Callable[..., Any],
    args: Sequence[Any],
    *,
    target: Any,
    candidates: Sequence[Any] = ("float32", "bfloat16", "float16"),
    accumulation: Any = "auto",
    kwargs: dict | None = None,
    progress: bool = False,
) -> TuneResult:
    """Choose a format per layer of ``f`` so that its certified bound at ``args`` (arrays
    and/or :class:`jaxerr.Interval` boxes) meets ``target`` at the lowest cost found
    (module docstring: cost model and search).

    **Arguments:**

    - `target`: ``1e-3`` / ``"abs:1e-3"`` (max abs_err), ``"rel:1e-2"``, or
      ``"argmax"`` (the class is certified for every input in the box); see :class:`Target`.
    - `candidates`: formats to choose from (names or :class:`jaxerr.Format`).
    - `accumulation`: as :func:`jaxerr.bound`.

    **Returns:** a :class:`TuneResult`; ``result.precision`` can be passed as
    ``precision=`` to :func:`jaxerr.bound` and :func:`jaxerr.report`.

    **Guarantee:** ``result.bounds`` is :func:`jaxerr.bound` of ``f`` under
    ``result.precision`` and meets the target (else ``ValueError``: not even every
    layer in the widest candidate meets it).
    """
    tgt = Target.parse(target)
    cands = [F.as_format(c) for c in candidates]
    if not cands:
        raise ValueError("tune needs at least one candidate format")
    cands.sort(key=lambda c: (F.storage_bits(c), c.precision))
    widest = max(cands, key=lambda c: (c.precision, F.storage_bits(c)))
    ops = layer_operations(f, args, kwargs)
    an = _Analyser(f, args, kwargs, accumulation, tgt)
    assign: dict[str, F.Format] = {n: widest for n in ops}

    def prec(a: dict[str, F.Format]) -> F.LayerPrecision:
        return F.LayerPrecision(widest, tuple(sorted((n, fm) for n, fm in a.items() if fm != widest)))

    ok, m, _ = an(prec(assign))
    if not ok:
        raise ValueError(
            f"the target ({tgt.describe()}) is not met even with every layer in {widest.name} "
            f"(achieved {m:.4g}); relax the target or add a wider candidate"
        )
    order = sorted(ops, key=lambda n: -ops[n])
    bar = _progress(progress, len(order), "tuning layers")
    for name in order:
        for c in cands:
            if F.storage_bits(c) >= F.storage_bits(assign[name]) or c == assign[name]:
                continue
            trial = dict(assign)
            trial[name] = c
            ok, _, _ = an(prec(trial))
            if ok:
                assign = trial
                break
        if bar:
            bar[0].advance(bar[1])
    if bar:
        bar[0].stop()
    final = prec(assign)
    # the verifying analysis (a fresh call, not the search's cached result)
    out = bound(f, final, accumulation=accumulation, jit=False, warn=False)(*args, **(kwargs or {}))
    if not tgt.met(out):  # pragma: no cover - the search only accepts met targets
        raise AssertionError("tune: the final verification failed; please report this")

    def cost(a):
        return float(sum(ops[n] * F.storage_bits(a[n]) for n in ops))

    return TuneResult(
        assignment={n: assign[n].name for n in ops}, precision=final, bounds=out, target=tgt,
        achieved=tgt.measure(out), cost=cost(assign),
        baseline_cost=cost({n: widest for n in ops}), baseline=widest.name,
        operations=ops, analyses=an.count + 1,
    )
