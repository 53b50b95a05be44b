"""The model zoo (issue 4): small Flax linen / nnx / Keras 3 models shared by
``tests/test_zoo.py`` and ``benchmarks/zoo.py``.

Each entry builds a :class:`Model`: the function analysed at a point (``fn`` of the
``centres``), the function analysed over a box (``box_fn`` of ``box_centres``, boxed
with ``radius`` on its floating arguments; integer token inputs are never boxed, so the
box of a token model is over its embeddings), and, for the nnx and Keras models, the
adapter (``jaxerr.flax.bound_nnx`` / ``jaxerr.keras.bound_keras``) that must give the
same bound as ``jaxerr.bound(fn)``. Weights are random (fixed seeds); batch statistics
of BatchNorm layers are perturbed away from (0, 1) so that inference mode does work.

The models are deliberately tiny: the soundness check simulates every execution
operation by operation in NumPy.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

NAMES = ("mlp", "lenet", "resnet_block", "transformer_causal", "transformer_padded", "lstm", "nnx", "keras",
         "transformer_causal_flax_mask", "transformer_padded_flax_mask")


@dataclasses.dataclass
class Model:
    name: str
    fn: Callable[..., Any]
    centres: list[np.ndarray]
    box_fn: Callable[..., Any]
    box_centres: list[np.ndarray]
    radius: float
    # (precision, **bound_kwargs) -> g with g(*args) == jaxerr.bound(fn, precision, **kw)(*args)
    adapter: Callable[..., Callable[..., Any]] | None = None

    def case(self, kind: str) -> tuple[Callable[..., Any], list[np.ndarray], float]:
        """(function, centres, radius) for ``kind`` in ("point", "box")."""
        if kind == "point":
            return self.fn, self.centres, 0.0
        return self.box_fn, self.box_centres, self.radius


def _normal(seed: int, shape, scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


def _perturb_batch_stats(v: Any, seed: int) -> Any:
    """Batch statistics away from their (0, 1) initial values."""
    if "batch_stats" not in v:
        return v
    rng = np.random.default_rng(seed)

    def f(path, a):
        name = str(path[-1])
        a = np.asarray(a)
        if "mean" in name:
            return jnp.asarray(rng.normal(size=a.shape).astype(np.float32) * 0.3)
        return jnp.asarray(rng.uniform(0.5, 2.0, size=a.shape).astype(np.float32))

    return {**v, "batch_stats": jax.tree_util.tree_map_with_path(f, v["batch_stats"])}


def _linen(module: nn.Module, x: np.ndarray, seed: int, *extra: Any) -> Callable[..., Any]:
    v = jax.jit(module.init)(jax.random.PRNGKey(seed), x, *extra)  # one compile, not one per op
    v = _perturb_batch_stats(v, seed + 100)

    def f(*args):
        return module.apply(v, *args)

    return f


# ---------------------------------------------------------------------------
# linen models
# ---------------------------------------------------------------------------


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.gelu(nn.Dense(16)(x))
        x = nn.relu(nn.Dense(16)(x))
        return nn.Dense(4)(x)


class LeNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.relu(nn.BatchNorm(use_running_average=True)(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(nn.Conv(6, (3, 3), padding="VALID")(x))
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        return nn.Dense(5)(x.reshape((x.shape[0], -1)))


class BasicBlock(nn.Module):
    """ResNet basic block: conv-BN-relu-conv-BN, identity shortcut, relu."""

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        y = nn.Conv(c, (3, 3), use_bias=False)(x)
        y = nn.relu(nn.BatchNorm(use_running_average=True)(y))
        y = nn.Conv(c, (3, 3), use_bias=False)(y)
        y = nn.BatchNorm(use_running_average=True)(y)
        return nn.relu(x + y)


def finite_mask_attention(query, key, value, mask=None, **kw):
    """``nn.dot_product_attention`` with the mask applied as an additive bias of -1e4.

    Flax's default masks with ``finfo(float32).min``; analysed "as if" in bfloat16 or
    float16 that constant rounds to -inf (it is beyond both formats' largest finite
    value). The analysis bounds that too (``-inf - max = -inf``, ``exp(-inf) = 0``: the
    ``*_flax_mask`` models); this variant, a finite bias that ``exp`` underflows to 0,
    is kept to compare the two."""
    bias = None if mask is None else jnp.where(mask, 0.0, -1e4).astype(query.dtype)
    return nn.dot_product_attention(query, key, value, bias=bias, mask=None, **kw)


class EncoderBlock(nn.Module):
    """Pre-LN transformer encoder block (MultiHeadDotProductAttention with the mask as
    a finite bias, see :func:`finite_mask_attention`, or with ``flax_mask=True`` Flax's
    default masking by ``finfo(float32).min``)."""

    heads: int = 2
    flax_mask: bool = False

    @nn.compact
    def __call__(self, x, mask):
        h = nn.LayerNorm()(x)
        fn = nn.dot_product_attention if self.flax_mask else finite_mask_attention
        h = nn.MultiHeadDotProductAttention(num_heads=self.heads, deterministic=True,
                                            attention_fn=fn)(h, h, mask=mask)
        x = x + h
        h = nn.LayerNorm()(x)
        h = nn.Dense(2 * x.shape[-1])(h)
        h = nn.Dense(x.shape[-1])(nn.gelu(h))
        return x + h


class Causal(nn.Module):
    flax_mask: bool = False

    @nn.compact
    def __call__(self, x):
        mask = nn.make_causal_mask(jnp.ones(x.shape[:2], jnp.int32))
        return EncoderBlock(flax_mask=self.flax_mask)(x, mask)


class Padded(nn.Module):
    """Padding mask on the keys from an integer ``valid`` input (1 = real token); every
    query row keeps at least one key (the first token is always valid)."""

    flax_mask: bool = False

    @nn.compact
    def __call__(self, x, valid):
        mask = nn.make_attention_mask(jnp.ones_like(valid), valid > 0)
        return EncoderBlock(flax_mask=self.flax_mask)(x, mask)


class LSTMHead(nn.Module):
    hidden: int = 6

    @nn.compact
    def __call__(self, x):
        h = nn.RNN(nn.LSTMCell(features=self.hidden))(x)
        return nn.Dense(2)(h[:, -1])


class LSTMClassifier(nn.Module):
    vocab: int = 12
    dim: int = 4

    def setup(self):
        self.embed = nn.Embed(self.vocab, self.dim)
        self.head = LSTMHead()

    def __call__(self, tokens):
        return self.head(self.embed(tokens))

    def embeddings(self, tokens):
        return self.embed(tokens)

    def from_embeddings(self, x):
        return self.head(x)


# ---------------------------------------------------------------------------
# builders
# ---------------------------------------------------------------------------


def _float_model(name, module, x, radius, seed, *extra_centres):
    f = _linen(module, x, seed, *extra_centres)
    cs = [x, *extra_centres]
    return Model(name, f, cs, f, cs, radius)


def _mlp():
    return _float_model("mlp", MLP(), _normal(1, (2, 8)), 0.01, 0)


def _lenet():
    return _float_model("lenet", LeNet(), np.abs(_normal(2, (1, 10, 10, 1))), 0.01, 0)


def _resnet_block():
    return _float_model("resnet_block", BasicBlock(), _normal(3, (1, 5, 5, 3)), 0.01, 0)


def _transformer_causal():
    return _float_model("transformer_causal", Causal(), _normal(4, (1, 5, 8)), 0.01, 0)


def _transformer_padded():
    valid = np.array([[1, 1, 1, 0, 0]], np.int32)
    return _float_model("transformer_padded", Padded(), _normal(5, (1, 5, 8)), 0.01, 0, valid)


def _transformer_causal_flax_mask():
    """The causal block with Flax's default mask (``finfo(float32).min``: ``-inf`` in
    bfloat16 and float16, whose ``exp`` is an exact 0)."""
    return _float_model("transformer_causal_flax_mask", Causal(flax_mask=True), _normal(4, (1, 5, 8)), 0.01, 0)


def _transformer_padded_flax_mask():
    valid = np.array([[1, 1, 1, 0, 0]], np.int32)
    return _float_model("transformer_padded_flax_mask", Padded(flax_mask=True), _normal(5, (1, 5, 8)), 0.01, 0,
                        valid)


def _lstm():
    m = LSTMClassifier()
    tokens = np.array([[3, 7, 1, 11, 0]], np.int32)
    v = jax.jit(m.init)(jax.random.PRNGKey(0), tokens)

    def f(t):
        return m.apply(v, t)

    def g(x):
        return m.apply(v, x, method=LSTMClassifier.from_embeddings)

    emb = np.asarray(m.apply(v, tokens, method=LSTMClassifier.embeddings), np.float32)
    return Model("lstm", f, [tokens], g, [emb], 0.01)


def _nnx():
    from flax import nnx

    import jaxerr.flax as jflax

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(2, 3, (3, 3), rngs=rngs)
            self.bn = nnx.BatchNorm(3, rngs=rngs)
            self.drop = nnx.Dropout(0.5, rngs=rngs)
            self.l1 = nnx.Linear(3 * 16, 8, rngs=rngs)
            self.ln = nnx.LayerNorm(8, rngs=rngs)
            self.l2 = nnx.Linear(8, 3, rngs=rngs)

        def __call__(self, x):
            x = nnx.silu(self.bn(self.conv(x)))
            x = nnx.avg_pool(x, (2, 2), strides=(2, 2))
            x = self.drop(x.reshape((x.shape[0], -1)))
            return self.l2(nnx.tanh(self.ln(self.l1(x))))

    mod = Net(nnx.Rngs(0))
    mod.bn.mean.value = jnp.asarray(_normal(7, (3,), 0.3))
    mod.bn.var.value = jnp.asarray(np.random.default_rng(8).uniform(0.5, 2.0, 3).astype(np.float32))
    mod.eval()
    graphdef, state = nnx.split(mod)

    def f(x):
        return nnx.merge(graphdef, state)(x)

    x = _normal(6, (1, 8, 8, 2))

    def adapter(precision, **kw):
        return jflax.bound_nnx(mod, precision, **kw)

    return Model("nnx", f, [x], f, [x], 0.01, adapter)


def _keras():
    import jaxerr.keras as jkeras  # sets KERAS_BACKEND=jax before keras is imported

    keras = jkeras.keras

    m = keras.Sequential([
        keras.Input((6, 6, 2)),
        keras.layers.Conv2D(3, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(8, activation="tanh"),
        keras.layers.LayerNormalization(),
        keras.layers.Dense(3),
    ])
    rng = np.random.default_rng(9)
    m.set_weights([rng.normal(size=w.shape).astype(np.float32) * 0.5 if w.ndim > 1
                   else (w + rng.normal(size=w.shape) * 0.1).astype(np.float32) for w in m.get_weights()])
    tv = [v.value for v in m.trainable_variables]
    ntv = [v.value for v in m.non_trainable_variables]

    def f(x):
        with jax.numpy_rank_promotion("allow"):  # Keras adds (n,) biases to (b, ..., n)
            return m.stateless_call(tv, ntv, x, training=False)[0]

    def adapter(precision, **kw):
        g = jkeras.bound_keras(m, precision, **kw)

        def h(*args):
            with jax.numpy_rank_promotion("allow"):
                return g(*args)

        return h

    x = _normal(10, (1, 6, 6, 2))
    return Model("keras", f, [x], f, [x], 0.01, adapter)


_BUILDERS = {
    "mlp": _mlp,
    "lenet": _lenet,
    "resnet_block": _resnet_block,
    "transformer_causal": _transformer_causal,
    "transformer_padded": _transformer_padded,
    "lstm": _lstm,
    "nnx": _nnx,
    "keras": _keras,
    "transformer_causal_flax_mask": _transformer_causal_flax_mask,
    "transformer_padded_flax_mask": _transformer_padded_flax_mask,
}


@functools.cache
def build(name: str) -> Model:
    """The zoo model ``name`` (one of :data:`NAMES`), built once per process."""
    return _BUILDERS[name]()
