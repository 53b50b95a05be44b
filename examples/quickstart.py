"""jaxerr quickstart: guaranteed error bounds for a tiny function, at a point and over a box.

Run: python examples/quickstart.py
"""

import jax
import jax.numpy as jnp

import jaxerr

W = jax.random.normal(jax.random.PRNGKey(0), (4, 3)) / 2
f = lambda x: jnp.tanh(x @ W)  # noqa: E731
x = jnp.array([0.5, -1.0, 0.25, 2.0])

point = jaxerr.bound(f)(x)  # float32, as written
box = jaxerr.bound(f, precision="bfloat16")(jaxerr.Interval(x - 0.01, x + 0.01))

for title, b in [("float32 at the point x", point), ("bfloat16 over the box x +- 0.01", box)]:
    print(f"{title}:\n  lo      = {b.lo}\n  hi      = {b.hi}\n  abs_err = {b.abs_err}")
