"""jaxerr quickstart: the README's ten lines, then what they printed, labelled.

Run: python examples/quickstart.py  (docs/getting-started.md includes the ten lines from here;
tests/test_docs.py checks that the README shows the same code)
"""

# --8<-- [start:ten-lines]
import jax, jax.numpy as jnp
import jaxerr

W = jax.random.normal(jax.random.PRNGKey(0), (64, 10)) / 8
f = lambda x: jnp.tanh(x @ W)
x = jnp.linspace(-1.0, 1.0, 64)

out = jaxerr.bound(f, precision="bfloat16")(x)                       # at a point
box = jaxerr.bound(f, precision="bfloat16")(jaxerr.Interval(x - 1e-3, x + 1e-3))
print(out.abs_err.max(), box.lo[:3], box.hi[:3])
# --8<-- [end:ten-lines]

if __name__ == "__main__":
    for title, b in [("bfloat16 at the point x", out), ("bfloat16 over the box x +- 0.001", box)]:
        print(f"{title}:\n  lo      = {b.lo[:3]}\n  hi      = {b.hi[:3]}\n  abs_err = {b.abs_err[:3]}")
