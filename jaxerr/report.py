"""Per-equation and per-layer error report: where error is created, where it is
amplified, and how many bits each layer needs.

``jaxerr.report(f, precision="bfloat16")(*args)`` runs the interval analysis of
:func:`jaxerr.bound` once and records, for every equation with a floating result,

* the enclosure of its exact values, ``abs_err`` and ``rel_err`` (exactly the
  numbers :func:`jaxerr.bound` propagates; the last equation's equal the output's);
* **created**: a bound on the error the equation itself adds,
  ``|fl(op(x^)) - op(x^)|`` for every computed operand ``x^`` (its rule evaluated on
  operands made exact over the hull of their exact and computed ranges, plus the
  rounding of operands into the equation's format under per-layer precision);
* **inherited**: a bound on ``|op(x^) - op(x)|``, the error the result would have
  if the operation were exact (its rule evaluated with the format
  :data:`jaxerr._formats.EXACT`: no rounding is one of the roundings every
  format's model allows, so the rule's bound holds for it).

  By the triangle inequality the true error is at most created + inherited; the
  propagated ``abs_err`` is another bound of it (usually close to the sum).
* **condition numbers** at the centre of the input set: inner products
  ``(|w|.|x|) / |w.x|`` (``dot_general``), sums ``(|a| + |b|) / |a + b|``
  (``add``/``sub``, ``reduce_sum``), elementwise functions ``|x phi'(x) / phi(x)|``.
  They are diagnostics, not bounds: large values mark cancellation, values below 1
  mark functions that damp relative error (tanh, logistic, softmax's exp...).

The same is computed per *stage*: a maximal run of consecutive equations with the
same name stack (a Flax module such as ``"MLP/Dense_0"``, or the activations
called in the parent module, or a ``jax.named_scope`` block). A stage's created
error is the error of its output when its inputs are exact (only the errors its own
equations create, propagated through the stage); its inherited error is the
error of its output if every operation of the stage were exact.

With ``target=`` each *layer* (a distinct name stack) also gets ``bits``: the
fewest significand bits that layer may use (its format: the analysed precision
with fewer significand bits, same exponent range) while every other layer stays in
``precision`` and the certified bound still meets the target (see
:func:`jaxerr.tune` for targets). ``None`` means the target is not met even with
that layer exact (other layers dominate).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import _compat
from . import _formats as F
from ._bound import (
    Bound,
    Diagnostics,
    Interval,
    _finalize,
    _has_subnormals,
    _input_value,
    _is_dynamic,
    _register_storage,
    _to_bound_parts,
    _validate_interval,
    convert_operand,
    make_domain,
)
from ._domains.interval import Discrete, Real, mig
from ._interpreter import (
    Config,
    Ctx,
    DiagnosticCollector,
    check_supported,
    interpret,
)
from ._rules import interval_rules
from ._rules.structural import STRUCTURAL

__all__ = ["Report", "EquationRecord", "StageRecord", "report"]

_P = _compat.prim
_SUMS = {p for p in (_P("add"), _P("sub"), _P("add_any")) if p is not None}
_NO_COND = {p for p in (_P("convert_element_type"), _P("copy"), _P("stop_gradient"), _P("neg"),
                        _P("reduce_max"), _P("reduce_min"), _P("max"), _P("min"), _P("abs"),
                        _P("select_n"), _P("sign"), _P("floor"), _P("ceil"), _P("round"),
                        _P("clamp")) if p is not None}


@dataclasses.dataclass
class EquationRecord:
    """One equation with a floating result (all numbers are maxima over its elements
    unless named ``*_median``)."""

    path: str
    primitive: str
    name: str  # name stack ("" if none)
    stage: int
    format: str
    shape: tuple[int, ...]
    lo: float
    hi: float
    abs_err: float
    rel_err: float
    rel_err_median: float
    created: float
    inherited: float
    cond_median: float | None
    cond_max: float | None
    structural: bool


@dataclasses.dataclass
class StageRecord:
    """A maximal run of consecutive equations with the same name stack."""

    index: int
    name: str
    label: str
    primitives: list[str]
    paths: list[str]
    format: str
    shape: tuple[int, ...]
    lo: float
    hi: float
    abs_err: float
    rel_err: float
    rel_err_median: float
    created: float
    inherited: float
    cond_median: float | None
    cond_max: float | None
    ops: int
    bits: int | None = None


@dataclasses.dataclass
class Report:
    """The result of :func:`report`: per-equation and per-stage records and the
    output bounds (identical to :func:`jaxerr.bound`'s)."""

    equations: list[EquationRecord]
    stages: list[StageRecord]
    outputs: Any
    precision: str
    accumulation: str
    target: str | None = None

    # ---------------------------------------------------------------- export
    def to_dict(self) -> dict[str, Any]:
        outs = []
        for b in jax.tree_util.tree_leaves(self.outputs, is_leaf=lambda x: isinstance(x, Bound)):
            outs.append({
                "shape": list(np.shape(b.value)),
                "abs_err": _f(np.max(np.asarray(b.abs_err, np.float64))),
                "rel_err": _f(np.max(np.asarray(b.rel_err, np.float64))),
                "lo": _f(np.min(np.asarray(b.lo, np.float64))),
                "hi": _f(np.max(np.asarray(b.hi, np.float64))),
            })
        return {
            "precision": self.precision,
            "accumulation": self.accumulation,
            "target": self.target,
            "outputs": outs,
            "stages": [_clean(dataclasses.asdict(s)) for s in self.stages],
            "equations": [_clean(dataclasses.asdict(e)) for e in self.equations],
        }

    def to_json(self, path: str | None = None, indent: int = 2) -> str:
        """The report as JSON (non-finite numbers as the strings "inf"/"nan"); written
        to ``path`` when given."""
        s = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            with open(path, "w") as fh:
                fh.write(s + "\n")
        return s

    # ---------------------------------------------------------------- tables
    def table(self, level: str = "stages") -> Any:
        """A :class:`rich.table.Table` of the stages (``level="stages"``) or of every
        non-structural equation (``level="equations"``)."""
        from rich.table import Table

        t = Table(title=f"jaxerr report: precision={self.precision}, accumulation={self.accumulation}"
                  + (f", target {self.target}" if self.target else ""))
        first = "stage" if level == "stages" else "equation"
        for col, j in ((first, "left"), ("op", "left"), ("format", "left"), ("exact range", "right"),
                       ("abs_err", "right"), ("rel_err med / max", "right"), ("created", "right"),
                       ("inherited", "right"), ("cond med / max", "right")):
            t.add_column(col, justify=j)
        if level == "stages":
            if any(s.bits is not None for s in self.stages) or self.target:
                t.add_column("bits needed", justify="right")
            for s in self.stages:
                row = [s.label, _ops_summary(s.primitives), _short(s.format), f"[{_g(s.lo)}, {_g(s.hi)}]",
                       _g(s.abs_err), f"{_g(s.rel_err_median)} / {_g(s.rel_err)}", _g(s.created),
                       _g(s.inherited), _cond(s.cond_median, s.cond_max)]
                if len(t.columns) > 9:
                    row.append("-" if s.bits is None else str(s.bits))
                t.add_row(*row)
        else:
            for e in self.equations:
                if e.structural:
                    continue
                t.add_row(f"{e.path} {e.name}", e.primitive, _short(e.format), f"[{_g(e.lo)}, {_g(e.hi)}]",
                          _g(e.abs_err), f"{_g(e.rel_err_median)} / {_g(e.rel_err)}", _g(e.created),
                          _g(e.inherited), _cond(e.cond_median, e.cond_max))
        return t

    def print(self, level: str = "stages", console: Any = None) -> None:
        """Print :meth:`table` with rich."""
        (console or _console()).print(self.table(level))

    def __str__(self) -> str:
        from rich.console import Console

        c = Console(width=160, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
        c.print(self.table())
        return c.export_text()

    # ---------------------------------------------------------------- plot
    def plot(self, path: str, level: str | None = None) -> str:
        """Save a PNG: error per stage (or equation) with created vs inherited, the
        median relative error, and condition numbers. Returns ``path``."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        if level is None:
            level = "equations" if len(self.stages) <= 1 or sum(
                not e.structural for e in self.equations) <= 40 else "stages"
        if level == "stages":
            rows = self.stages
            labels = [s.label for s in rows]
        else:
            rows = [e for e in self.equations if not e.structural]
            labels = [f"{e.name.split('/')[-1] or 'top'}: {e.primitive}" for e in rows]
        x = np.arange(len(rows))

        def arr(attr):  # inf (an unbounded stage) is drawn as a label, not as a bar
            a = np.array([_nz(getattr(r, attr)) for r in rows], dtype=np.float64)
            return np.where(np.isfinite(a), a, np.nan)

        unbounded = [i for i, r in enumerate(rows) if not np.isfinite(_nz(r.abs_err))]

        fig, axes = plt.subplots(3, 1, figsize=(max(8, 0.45 * len(rows) + 3), 10), sharex=True)
        ax = axes[0]
        w = 0.28
        ax.bar(x - w, arr("created"), w, label="created here", color="#d62728")
        ax.bar(x, arr("inherited"), w, label="inherited from inputs", color="#1f77b4")
        ax.plot(x + w, arr("abs_err"), "k_", markersize=12, label="abs_err (propagated)")
        ax.set_yscale("log")
        ax.set_ylabel("absolute error bound")
        for i in unbounded:
            ax.annotate("inf", (x[i], 0.98), xycoords=("data", "axes fraction"), ha="center",
                        va="top", fontsize=8, color="#d62728")
        ax.legend(fontsize=8, loc="upper left")
        ax.set_title(f"jaxerr report — precision={self.precision}, accumulation={self.accumulation}")
        ax = axes[1]
        ax.plot(x, arr("rel_err_median"), "o-", color="#2ca02c", label="median rel_err")
        ax.set_yscale("log")
        ax.set_ylabel("relative error bound")
        ax.legend(fontsize=8, loc="upper left")
        ax = axes[2]
        cm = np.array([np.nan if r.cond_median is None else r.cond_median for r in rows], np.float64)
        cm = np.where(np.isfinite(cm), cm, np.nan)
        cx = np.array([np.nan if r.cond_max is None else r.cond_max for r in rows], np.float64)
        ax.plot(x, cm, "s", color="#9467bd", label="median condition number")
        ax.plot(x, np.where(np.isfinite(cx), cx, np.nan), "^", color="#8c564b", alpha=0.6,
                label="max condition number")
        ax.axhline(1.0, color="gray", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.set_ylabel("condition number")
        ax.legend(fontsize=8, loc="upper left")
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


# ---------------------------------------------------------------------------
# Formatting helpers
# ---------------------------------------------------------------------------


def _console() -> Any:
    """A rich console at least 200 columns wide when not writing to a terminal (a file, a pipe)."""
    from rich.console import Console

    c = Console()
    return c if c.is_terminal else Console(width=max(c.width, 200))


def _short(fmt: str) -> str:
    return {"bfloat16": "bf16", "float16": "f16", "float32": "f32", "float64": "f64",
            "float8_e4m3fn": "e4m3", "float8_e5m2": "e5m2"}.get(fmt, fmt)


def _f(x: Any) -> Any:
    x = float(x)
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf" if x < 0 else "nan")


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, float):
            out[k] = _f(v)
        elif isinstance(v, tuple):
            out[k] = list(v)
        else:
            out[k] = v
    return out


def _g(x: float | None) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    if not math.isfinite(x):
        return "inf" if x > 0 else ("-inf" if x < 0 else "nan")
    return f"{x:.3g}"


def _cond(m: float | None, M: float | None) -> str:
    if m is None:
        return "-"
    return f"{_g(m)} / {_g(M)}"


def _nz(x: float) -> float:
    return np.nan if (x is None or x == 0) else x


def _stage_label(name: str, prims: list[str], seen: dict[str, int]) -> str:
    """A stage's row label: its name (the Flax module path) for a dense or convolution layer,
    plus a summary of its operations otherwise (activations called in the parent module);
    ``#k`` only when the same label repeats (``seen`` counts the labels so far)."""
    label = name or "(top)"
    if prims and not any(p in ("dot_general", "conv_general_dilated") for p in prims):
        label = f"{label}: {_ops_summary(prims)}"
    seen[label] = seen.get(label, 0) + 1
    return label if seen[label] == 1 else f"{label} #{seen[label]}"


def _ops_summary(prims: list[str]) -> str:
    seen: list[str] = []
    for p in prims:
        if p not in seen:
            seen.append(p)
    s = ", ".join(seen)
    return s if len(s) <= 40 else s[:37] + "..."


# ---------------------------------------------------------------------------
# The analysis with a recording hook
# ---------------------------------------------------------------------------


def _exactize(v: Any) -> Any:
    """The operand as an exact value ranging over the hull of its exact and computed ranges."""
    if not isinstance(v, Real) or v.exact:
        return v
    lo, hi = v.hull()
    return Real(lo, hi, lo, hi, jnp.zeros_like(v.err), v.value, exact=True)


def _stats(x: Any) -> tuple[Any, Any]:
    x = jnp.asarray(x)
    return jnp.max(x), jnp.nanmedian(x.reshape(-1))


def _mid(v: Real) -> Any:
    return jnp.where(v.lo == v.hi, v.lo, v.lo / 2 + v.hi / 2)


def _condition(ctx: Ctx, invals: list[Any], out: Real) -> Any | None:
    """Elementwise condition numbers at the centre (a diagnostic), or None."""
    prim = ctx.eqn.primitive
    if prim in STRUCTURAL or prim in _NO_COND:
        return None
    reals = [v for v in invals if isinstance(v, Real)]
    if not reals or any(not isinstance(v, (Real, Discrete)) for v in invals):
        return None
    if prim is _P("dot_general"):
        if len(reals) != 2:
            return None
        a, b = (_mid(v) for v in invals)
        dn = ctx.eqn.params["dimension_numbers"]
        prec = jax.lax.Precision.HIGHEST
        num = jax.lax.dot_general(jnp.abs(a), jnp.abs(b), dn, precision=prec)
        den = jnp.abs(jax.lax.dot_general(a, b, dn, precision=prec))
        return num / den
    if prim is _P("conv_general_dilated"):  # inner products of patches: (|w|*|x|)/|w*x|
        if len(reals) != 2:
            return None
        a, b = (_mid(v) for v in invals)
        params = dict(ctx.eqn.params)
        num = prim.bind(jnp.abs(a), jnp.abs(b), **params)
        den = jnp.abs(prim.bind(a, b, **params))
        return num / den
    if prim in _SUMS and len(invals) == 2 and len(reals) == 2:
        a, b = (_mid(v) for v in invals)
        s = a - b if prim is _P("sub") else a + b
        return (jnp.abs(a) + jnp.abs(b)) / jnp.abs(s)
    if prim is _P("reduce_sum") and len(reals) == 1:
        a = _mid(reals[0])
        axes = tuple(ctx.eqn.params["axes"])
        return jnp.sum(jnp.abs(a), axis=axes) / jnp.abs(jnp.sum(a, axis=axes))
    if len(invals) == 1 and len(reals) == 1 and reals[0].shape == out.shape:
        x = _mid(reals[0])
        params = dict(ctx.eqn.params)
        try:
            y, dy = jax.jvp(lambda t: prim.bind(t, **params), (x,), (jnp.ones_like(x),))
        except Exception:
            return None
        return jnp.abs(x * dy / y)
    return None


class _Recorder:
    """The ``record`` hook: per equation, the recorded stats and the stage shadows."""

    def __init__(self, config: Config, domain_ref: list[Any]):
        self.config = config
        self.domain_ref = domain_ref
        self.meta: list[dict[str, Any]] = []
        self.stats: list[dict[str, Any]] = []
        self.keep: list[Any] = []
        self.stage_of: dict[int, int] = {}
        self.shadow_c: dict[int, Any] = {}
        self.shadow_i: dict[int, Any] = {}
        self.stage_names: list[str] = []
        self.stage_last: list[int] = []  # index into meta of the stage's last equation
        self.cur_name: str | None = None

    def _src_fmt(self, v: Any) -> F.Format:
        lf = getattr(self.domain_ref[0], "layer_formats", None)
        return lf.get(v) if lf is not None else F.EXACT

    def _rule(self, ctx: Ctx, ins: list[Any]) -> Any:
        outs = interval_rules[ctx.eqn.primitive](ctx, *ins, **ctx.eqn.params)
        if not ctx.eqn.primitive.multiple_results:
            outs = [outs]
        return [_finalize(ctx, v.aval, o, ins) for v, o in zip(ctx.eqn.outvars, outs)]

    def _convert(self, ctx: Ctx, orig: list[Any], ins: list[Any]) -> list[Any]:
        if not isinstance(self.config.precision, F.LayerPrecision):
            return ins
        return [convert_operand(ctx, v, self._src_fmt(o), var)
                for o, v, var in zip(orig, ins, ctx.eqn.invars)]

    def __call__(self, ctx: Ctx, invals: list[Any], outs: list[Any]) -> None:
        eqn = ctx.eqn
        name = ctx.name
        if name != self.cur_name:
            self.stage_names.append(name)
            self.stage_last.append(-1)
            self.cur_name = name
        s = len(self.stage_names) - 1
        first = next((k for k, o in enumerate(outs) if isinstance(o, Real)), None)
        if first is None:
            return None
        quiet = DiagnosticCollector()
        cctx = Ctx(self.config, eqn, ctx.path, quiet, scope=ctx.scope)
        ictx = Ctx(self.config, eqn, ctx.path, quiet, exact_ops=True, scope=ctx.scope)
        out = outs[first]
        if out.exact:
            zero = jnp.zeros_like(out.err)
            created = inherited = zero
            sc = si = out
        else:
            ex = [_exactize(v) for v in invals]
            created = self._rule(cctx, self._convert(cctx, invals, ex))[first].err
            inherited = self._rule(ictx, invals)[first].err
            # stage shadows: operands produced inside this stage keep their shadow
            same = [self.stage_of.get(id(v)) == s for v in invals]
            if any(same):
                ins_c = [self.shadow_c[id(v)] if sm else e for v, e, sm in zip(invals, ex, same)]
                sc = self._rule(cctx, self._convert(cctx, invals, ins_c))[first]
                ins_i = [self.shadow_i[id(v)] if sm else v for v, sm in zip(invals, same)]
                si = self._rule(ictx, ins_i)[first]
            else:
                sc = Real(out.lo, out.hi, out.clo, out.chi, created, out.value)
                si = Real(out.lo, out.hi, out.clo, out.chi, inherited, out.value)
        for o in outs:
            if isinstance(o, Real):
                self.keep.append(o)
                self.stage_of[id(o)] = s
                self.shadow_c[id(o)] = sc
                self.shadow_i[id(o)] = si
        m = mig(out.lo, out.hi)
        rel = F.where(out.err == 0, 0.0, F.where(m > 0, F.div_up(out.err, m), jnp.inf))
        cond = _condition(ctx, invals, out)
        st = {
            "lo": jnp.min(out.lo), "hi": jnp.max(out.hi),
            "abs_err": jnp.max(out.err),
            "rel_err": jnp.max(rel), "rel_err_median": jnp.nanmedian(rel.reshape(-1)),
            "created": jnp.max(created), "inherited": jnp.max(inherited),
            "stage_created": jnp.max(sc.err), "stage_inherited": jnp.max(si.err),
        }
        if cond is not None:
            st["cond_max"] = jnp.max(jnp.where(jnp.isnan(cond), -jnp.inf, cond))
            st["cond_median"] = jnp.nanmedian(cond.reshape(-1))
        self.meta.append({
            "path": ctx.path, "primitive": eqn.primitive.name, "name": name, "stage": s,
            "format": "as written" if self.config.precision is None else ctx.fmt.name,
            "shape": tuple(int(d) for d in np.shape(out.lo)),
            "structural": eqn.primitive in STRUCTURAL or out.exact,
            "ops": _op_count(eqn),
        })
        self.stats.append(st)
        self.stage_last[s] = len(self.meta) - 1
        return None


def _op_count(eqn: Any) -> int:
    """Floating operations of one equation under the cost model: a multiply-add per
    term of a ``dot_general`` or ``conv_general_dilated`` (2 per term), one per input element of a reduction, one
    per output element otherwise; data movement (structural primitives) costs 0."""
    if eqn.primitive in STRUCTURAL:
        return 0
    out_size = sum(int(np.prod(v.aval.shape)) for v in eqn.outvars if hasattr(v.aval, "shape"))
    if eqn.primitive is _P("dot_general"):
        (lc, _), _ = eqn.params["dimension_numbers"]
        n = int(np.prod([eqn.invars[0].aval.shape[d] for d in lc]))
        return 2 * n * out_size
    if eqn.primitive is _P("conv_general_dilated"):  # a multiply-add per kernel term per output
        rhs = eqn.invars[1].aval.shape
        out_feat = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
        return 2 * (int(np.prod(rhs)) // max(out_feat, 1)) * out_size
    if eqn.primitive.name.startswith("reduce_"):
        return int(np.prod(eqn.invars[0].aval.shape))
    return out_size


def _run(f: Callable[..., Any], precision: Any, accumulation: Any, args: tuple, kwargs: dict,
         jit: bool = True):
    fmt = F.as_precision(precision)
    acc = F.Accumulation.parse(accumulation)
    leaves, treedef = jax.tree_util.tree_flatten((args, kwargs), is_leaf=lambda x: isinstance(x, Interval))
    dyn_idx = [i for i, x in enumerate(leaves) if _is_dynamic(x)]
    dyn = [leaves[i] for i in dyn_idx]
    for k, x in enumerate(dyn):
        if isinstance(x, Interval):
            _validate_interval(x, f"argument leaf {dyn_idx[k]}")
    config = Config(fmt, acc, F.analysis_dtype())
    subn = [bool(_has_subnormals(x)) for x in dyn]
    program_args = [x.lo if isinstance(x, Interval) else jnp.asarray(x) for x in dyn]

    def flat_f(*arrs):
        ls = list(leaves)
        for i, a in zip(dyn_idx, arrs):
            ls[i] = a
        a_, kw_ = jax.tree_util.tree_unflatten(treedef, ls)
        return f(*a_, **kw_)

    specs = [jax.ShapeDtypeStruct(jnp.shape(a), a.dtype) for a in program_args]
    closed, out_shape = jax.make_jaxpr(flat_f, return_shape=True)(*specs)
    check_supported(closed.jaxpr, interval_rules)
    holder: dict[str, Any] = {}

    def analyse(dyn_vals):
        ref: list[Any] = [None]
        rec = _Recorder(config, ref)
        dom = make_domain(config, record=rec)
        ref[0] = dom
        diag = DiagnosticCollector()
        values = []
        for k, x in enumerate(dyn_vals):
            v, _ = _input_value(x, config, diag, f"argument leaf {dyn_idx[k]}", subn[k])
            values.append(v)
            _register_storage(dom, v, config)
        outs = interpret(dom, closed.jaxpr, list(closed.consts), values, config, diag)
        holder["rec"] = rec
        holder["messages"] = tuple(diag.messages)
        out_leaves = jax.tree_util.tree_leaves(out_shape)
        parts = [_to_bound_parts(o, k, out_leaves[k], diag, config) for k, o in enumerate(outs)]
        holder["messages"] = tuple(diag.messages)
        flags = jnp.stack(diag.flags) if diag.flags else jnp.zeros((0,), bool)
        return parts, rec.stats, flags

    parts, stats, flags = (jax.jit(analyse) if jit else analyse)(dyn)
    rec: _Recorder = holder["rec"]
    d = Diagnostics(holder["messages"], flags)
    bounds = [Bound(*p, d) for p in parts]
    outputs = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), bounds)
    stats = jax.tree_util.tree_map(lambda a: float(np.asarray(a, np.float64)), stats)
    return rec, stats, outputs, fmt, acc


def report(
    f: Callable[..., Any],
    precision: Any = None,
    *,
    accumulation: Any = "auto",
    domain: str = "interval",
    target: Any = None,
    candidates: Sequence[Any] | None = None,
    progress: bool = False,
    jit: bool = True,
) -> Callable[..., Report]:
    """Per-equation and per-stage error report of ``f`` (see the module docstring).

    **Arguments:** as :func:`jaxerr.bound` (``precision`` may be per layer), plus

    - `target`: optional accuracy target (``1e-3`` = max abs_err, ``{"rel": 1e-2}``,
      ``"argmax"``; see :func:`jaxerr.tune`): adds the bits each layer needs.
    - `progress`: show a progress bar while searching the bits (rich).
    - `jit`: compile the recording analysis into one XLA program (``False``: op by
      op, which starts faster for small models and shares compilations between calls).

    Only ``domain="interval"`` is supported (created/inherited are interval bounds).

    **Returns:** a function of ``f``'s arguments returning a :class:`Report`; its
    ``outputs`` are the :class:`Bound` pytree :func:`jaxerr.bound` returns.
    """
    if domain != "interval":
        raise ValueError("report() analyses with domain='interval'; use jaxerr.bound(..., "
                         "domain='first_order') for first-order output bounds")

    def wrapped(*args: Any, **kwargs: Any) -> Report:
        rec, stats, outputs, fmt, acc = _run(f, precision, accumulation, args, kwargs, jit)
        eqs = []
        for m, st in zip(rec.meta, stats):
            eqs.append(EquationRecord(
                path=m["path"], primitive=m["primitive"], name=m["name"], stage=m["stage"],
                format=m["format"], shape=m["shape"], lo=st["lo"], hi=st["hi"],
                abs_err=st["abs_err"], rel_err=st["rel_err"], rel_err_median=st["rel_err_median"],
                created=st["created"], inherited=st["inherited"],
                cond_median=st.get("cond_median"), cond_max=st.get("cond_max"),
                structural=m["structural"],
            ))
        stages = []
        seen: dict[str, int] = {}
        for s, name in enumerate(rec.stage_names):
            idx = [k for k, m in enumerate(rec.meta) if m["stage"] == s]
            if not idx:
                continue
            last = rec.stage_last[s]
            m, st = rec.meta[last], stats[last]
            prims = [rec.meta[k]["primitive"] for k in idx if not rec.meta[k]["structural"]] or \
                [rec.meta[k]["primitive"] for k in idx]
            conds = [(stats[k].get("cond_median"), stats[k].get("cond_max")) for k in idx
                     if stats[k].get("cond_median") is not None and not rec.meta[k]["structural"]]
            cm = max((c[0] for c in conds if c[0] == c[0]), default=None)
            cM = max((c[1] for c in conds), default=None)
            main = [p for p, k in zip(prims, idx) if not rec.meta[k]["structural"]]
            label = _stage_label(name, main, seen)
            stages.append(StageRecord(
                index=len(stages), name=name, label=label, primitives=prims,
                paths=[rec.meta[k]["path"] for k in idx], format=m["format"], shape=m["shape"],
                lo=st["lo"], hi=st["hi"], abs_err=st["abs_err"], rel_err=st["rel_err"],
                rel_err_median=st["rel_err_median"], created=st["stage_created"],
                inherited=st["stage_inherited"], cond_median=cm, cond_max=cM,
                ops=sum(rec.meta[k]["ops"] for k in idx),
            ))
        prec_name = "as written" if fmt is None else fmt.name
        rep = Report(eqs, stages, outputs, prec_name, str(acc))
        if target is not None:
            from .tune import Target, bits_needed

            tgt = Target.parse(target)
            rep.target = tgt.describe()
            if fmt is None:
                raise ValueError("report(target=...) needs precision= (the format the other layers use)")
            names = list(dict.fromkeys(s.name for s in stages))
            bits = bits_needed(f, args, kwargs, fmt, names, tgt, accumulation=accumulation,
                               progress=progress)
            for s in stages:
                s.bits = bits.get(s.name)
        return rep

    return wrapped
