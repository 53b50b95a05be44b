"""A complete pytest file using a certified tolerance (docs/tutorials/certified-tests.md).

Run: python -m pytest -q examples/certified_test_example.py

``fused_bf16_layer`` stands for the implementation under test (a fused kernel, a
hand-written low-precision path); ``reference`` is the plain float32 computation it
implements. The first test passes for every faithful bfloat16 execution; the second
shows the failure message for an implementation that is *not* one (it uses a cheaper
tanh approximation), which ``atol=0.05`` would let through.
"""

# --8<-- [start:test]
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxerr.testing import assert_allclose_certified

key_x, key_w = jax.random.split(jax.random.PRNGKey(0))
x = jax.random.uniform(key_x, (8, 64), minval=-1.0, maxval=1.0)
w = jax.random.normal(key_w, (64, 16)) / 8
b = jnp.linspace(-0.5, 0.5, 16)[None, :]  # (1, 16): broadcasts over the batch


def reference(x, w, b):
    """What the implementation computes, written plainly (float32)."""
    return jnp.tanh(x @ w + b)


@jax.jit
def fused_bf16_layer(x, w, b):
    """The implementation under test: bfloat16 operands, float32 accumulation."""
    bf = jnp.bfloat16
    y = jnp.dot(x.astype(bf), w.astype(bf), preferred_element_type=jnp.float32)
    return jnp.tanh(y.astype(bf) + b.astype(bf))


def test_bf16_layer_is_certified():
    actual = fused_bf16_layer(x, w, b)
    assert_allclose_certified(actual, reference, x, w, b, precision="bfloat16")


def approx_layer(x, w, b):
    """A wrong implementation: a rational tanh, within 0.03 of it on [-3, 3], is not a rounding of it."""
    v = x @ w + b
    return (v * (27 + v**2) / (27 + 9 * v**2)).astype(jnp.bfloat16)


def test_a_wrong_approximation_is_caught():
    actual = approx_layer(x, w, b)
    np.testing.assert_allclose(actual.astype(jnp.float32), reference(x, w, b), atol=0.05)  # a guessed atol passes
    with pytest.raises(AssertionError, match="outside the certified bound"):
        assert_allclose_certified(actual, reference, x, w, b, precision="bfloat16")
# --8<-- [end:test]
