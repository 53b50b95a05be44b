"""Everything that depends on the JAX version lives here, and only here.

The rest of jaxerr imports jaxpr types and primitives from this module. JAX moves
these names between releases (``jax.core`` -> ``jax.extend.core``, ``pjit_p`` ->
``jit_p``, ``custom_vjp_call_jaxpr_p`` -> ``custom_vjp_call_p``), so each lookup
below tolerates absence and the interpreter asks :func:`call_subjaxpr` instead of
reading parameter names itself.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.extend.core as _jex_core
from jax.extend.core import primitives as _prims

ClosedJaxpr = _jex_core.ClosedJaxpr
Jaxpr = _jex_core.Jaxpr
JaxprEqn = _jex_core.JaxprEqn
Literal = _jex_core.Literal
Var = _jex_core.Var
Primitive = _jex_core.Primitive
DropVar = getattr(_jex_core, "DropVar", None)

try:  # jax >= 0.4.30
    from jax.extend import source_info_util as _source_info_util
except ImportError:  # pragma: no cover - older jax
    _source_info_util = None


def prim(name: str) -> Primitive | None:
    """The primitive ``<name>_p`` of this JAX version, or None if it does not exist.

    ``jax.extend.core.primitives`` lags behind: newer primitives (``split``, ``stack``)
    are looked up in ``jax.lax`` and then in JAX's internal lax module."""
    p = getattr(_prims, name + "_p", None)
    if p is None:
        p = getattr(jax.lax, name + "_p", None)
    if p is None:
        try:
            from jax._src.lax import lax as _lax_internal
        except ImportError:  # pragma: no cover
            return None
        p = getattr(_lax_internal, name + "_p", None)
    return p if isinstance(p, Primitive) else None


# Call-like primitives whose body is a sub-jaxpr that computes the outputs.
# Value: the parameter that holds the body. Derivative rules (jvp_jaxpr_fun,
# fwd_jaxpr_thunk, bwd) are ignored: they do not run in the primal program.
_CALL_BODY_PARAM: dict[Any, str] = {}
for _name, _param in (
    ("jit", "jaxpr"),
    ("pjit", "jaxpr"),
    ("closed_call", "call_jaxpr"),
    ("call", "call_jaxpr"),
    ("core_call", "call_jaxpr"),
    ("custom_jvp_call", "call_jaxpr"),
    ("custom_vjp_call", "call_jaxpr"),
    ("custom_vjp_call_jaxpr", "fun_jaxpr"),
    ("remat", "jaxpr"),
    ("checkpoint", "jaxpr"),
    ("custom_lin", None),
):
    _p = prim(_name)
    if _p is not None and _param is not None:
        _CALL_BODY_PARAM[_p] = _param

CALL_PRIMITIVES = frozenset(_CALL_BODY_PARAM)


def call_subjaxpr(eqn: JaxprEqn) -> tuple[Jaxpr, list[Any]] | None:
    """For a call-like equation, its body as ``(jaxpr, consts)``; None otherwise.

    ``custom_jvp_call`` / ``custom_vjp_call`` carry ``num_consts`` leading operands
    that are ordinary inputs of the body, so the operands map one-to-one onto the
    body's invars in every case handled here.
    """
    param = _CALL_BODY_PARAM.get(eqn.primitive)
    if param is None:
        return None
    body = eqn.params[param]
    if isinstance(body, ClosedJaxpr):
        return body.jaxpr, list(body.consts)
    return body, []


def subjaxprs(eqn: JaxprEqn) -> list[Jaxpr]:
    """Every jaxpr nested in an equation's parameters (bodies, branches, ...)."""
    out: list[Jaxpr] = []

    def visit(v: Any) -> None:
        if isinstance(v, ClosedJaxpr):
            out.append(v.jaxpr)
        elif isinstance(v, Jaxpr):
            out.append(v)
        elif isinstance(v, (tuple, list)):
            for x in v:
                visit(x)

    for v in eqn.params.values():
        visit(v)
    return out


_LIBRARY_DIRS = ("site-packages", "dist-packages")


def _own_dir() -> str:
    return os.path.dirname(os.path.abspath(__file__)) + os.sep


def source_summary(eqn: JaxprEqn) -> str:
    """A short 'file:line (function)' of the user code that produced ``eqn``, or ''.

    JAX's summary names the innermost frame outside JAX, which for a Flax layer is in
    Flax's own source (``flax/linen/normalization.py``); the user's line that called it
    (the innermost frame outside installed packages and jaxerr) is named first then,
    with the library frame after ``via``."""
    if _source_info_util is None:  # pragma: no cover
        return ""
    try:
        jax_summary = _source_info_util.summarize(eqn.source_info)
    except Exception:  # pragma: no cover - best effort only
        return ""
    try:
        frames = list(eqn.source_info.traceback.frames)
    except Exception:  # pragma: no cover - best effort only
        return jax_summary
    if not any(d in jax_summary for d in _LIBRARY_DIRS):
        return jax_summary
    own = _own_dir()
    for fr in frames:  # innermost first
        fn = str(fr.file_name)
        if any(d in fn for d in _LIBRARY_DIRS) or fn.startswith(own) or fn.startswith("<"):
            continue
        return f"{os.path.basename(fn)}:{fr.line_num} ({fr.function_name}) via {jax_summary}"
    return jax_summary


def is_batch_tracer(x: Any) -> bool:
    """Whether ``x`` is batched by an enclosing ``jax.vmap`` (a value that does not
    depend on the mapped arguments is not)."""
    try:
        from jax._src.interpreters import batching as _batching

        return isinstance(x, _batching.BatchTracer)
    except Exception:  # pragma: no cover - private API moved: assume batched (no-op)
        return True


def x64_enabled() -> bool:
    return bool(jax.config.read("jax_enable_x64"))


def x64_scope(on: bool) -> Any:
    """A context in which JAX's 64-bit types are on (``on``) or off."""
    return jax.enable_x64(on)


def reduced_precision_matmul_backend() -> str | None:
    """The default backend's name where XLA may compute a float32 ``dot_general`` or
    convolution with ``precision=DEFAULT`` in fewer bits than float32 (TF32 on NVIDIA
    Ampere and newer, bfloat16 passes on TPU); None on CPU, where it is float32."""
    try:
        name = jax.default_backend()
    except Exception:  # pragma: no cover - no backend at all
        return None
    return name if name in ("gpu", "cuda", "rocm", "tpu") else None


def full_precision_products(params: dict[str, Any]) -> bool:
    """Whether a ``dot_general`` / ``conv_general_dilated`` equation's ``precision``
    parameter asks for full-precision float32 products on every backend: both operands
    ``Precision.HIGHEST``, or the algorithm presets ``F32_F32_F32`` / ``F64_F64_F64``.
    ``None`` (JAX's default, resolved by XLA per backend), ``HIGH`` and the other
    presets may use fewer bits on GPUs and TPUs."""
    p = params.get("precision")
    if p is None:
        return False
    parts = p if isinstance(p, (tuple, list)) else (p,)
    highest = getattr(jax.lax.Precision, "HIGHEST", None)
    preset = getattr(jax.lax, "DotAlgorithmPreset", None)
    full = {getattr(preset, n) for n in ("F32_F32_F32", "F64_F64_F64") if hasattr(preset, n)} if preset else set()
    return all(q == highest or q in full for q in parts)


def is_tracer(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


def map_batched(f: Any, xs: Any, batch_size: int) -> Any:
    """``lax.map`` over ``xs`` in vmapped batches of ``batch_size``."""
    import jax.lax as lax

    return lax.map(f, xs, batch_size=batch_size)


# ---------------------------------------------------------------------------
# Control flow: parameter names of scan / while / cond
# ---------------------------------------------------------------------------

SCAN = prim("scan")
WHILE = prim("while")
COND = prim("cond")


def scan_params(params: dict[str, Any]) -> tuple[ClosedJaxpr, int, int, int, bool]:
    """``(body, num_consts, num_carry, length, reverse)`` of a ``scan`` equation.
    (``unroll`` and ``_split_transpose`` only change how XLA runs it.)"""
    return (params["jaxpr"], int(params["num_consts"]), int(params["num_carry"]),
            int(params["length"]), bool(params.get("reverse", False)))


def while_params(params: dict[str, Any]) -> tuple[ClosedJaxpr, ClosedJaxpr, int, int]:
    """``(cond_jaxpr, body_jaxpr, cond_nconsts, body_nconsts)`` of a ``while`` equation."""
    return (params["cond_jaxpr"], params["body_jaxpr"], int(params["cond_nconsts"]),
            int(params["body_nconsts"]))


def cond_branches(params: dict[str, Any]) -> list[ClosedJaxpr]:
    """The branches of a ``cond`` equation (operands: the index, then the branch operands)."""
    return list(params["branches"])


def closed_parts(j: Any) -> tuple[Jaxpr, list[Any]]:
    """``(jaxpr, consts)`` of a ClosedJaxpr or an open Jaxpr."""
    if isinstance(j, ClosedJaxpr):
        return j.jaxpr, list(j.consts)
    return j, []


def bind_eqn(eqn: JaxprEqn, invals: list[Any]) -> list[Any]:
    """Re-bind one equation on new operands (like ``jax.core.eval_jaxpr`` does), keeping
    its source information; always returns a list of results."""
    res = eqn.primitive.get_bind_params(eqn.params)
    if isinstance(res, tuple) and len(res) == 2 and isinstance(res[1], dict):
        subfuns, params = res  # older jax: (subfuns, params)
    else:
        subfuns, params = [], res
    try:
        ctx = _source_info_util.user_context(eqn.source_info.traceback,
                                             name_stack=eqn.source_info.name_stack)
    except Exception:  # pragma: no cover - best effort only
        import contextlib

        ctx = contextlib.nullcontext()
    with ctx:
        out = eqn.primitive.bind(*subfuns, *invals, **params)
    return list(out) if eqn.primitive.multiple_results else [out]


def name_stack(eqn: JaxprEqn) -> str:
    """The equation's name stack as ``"Outer/Inner"`` (Flax module path, ``jax.named_scope``
    blocks), ``""`` when it has none. Transformation markers such as ``jvp(...)`` are kept."""
    try:
        return str(eqn.source_info.name_stack)
    except Exception:  # pragma: no cover - best effort only
        return ""


def shard_leading_axis(x: Any, mesh: Any, axis: str) -> Any:
    """``x`` constrained to be split along its first axis over the mesh axis ``axis``
    (the other axes left to XLA's sharding propagation)."""
    from jax.sharding import NamedSharding, PartitionSpec

    rest = (PartitionSpec.UNCONSTRAINED,) * (len(jax.numpy.shape(x)) - 1)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, PartitionSpec(axis, *rest)))
