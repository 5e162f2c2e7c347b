"""Smoke test of an installed wheel, run from outside the source tree.

Proves the wheel holds what the editable install sees: the package imports
from site-packages (not from a checkout), ships py.typed, exports every name
of __all__, and one jitted step of a few factories runs.
"""

import pathlib

import jax
import jax.numpy as jnp

import optax_suite as ox

where = pathlib.Path(ox.__file__).resolve()
assert "site-packages" in where.parts, where
assert (where.parent / "py.typed").exists(), "py.typed is missing"
missing = [n for n in ox.__all__ if not hasattr(ox, n)]
assert not missing, missing
params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
grads = jax.tree.map(lambda p: p * 0.5 + 0.25, params)
for opt in (ox.adam(0.1, use_ema=True, gradient_accumulation_steps=2),
            ox.muon(0.1), ox.sgd(0.1, global_clipnorm=1.0),
            ox.loss_scale_optimizer(ox.adamw(0.1))):
  p, s = params, opt.init(params)
  for _ in range(2):
    p, s = jax.jit(lambda g, ps, opt=opt: ox.apply(opt, g, ps))(grads, (p, s))
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(p))
  assert bool(jnp.any(p["w"] != params["w"])), opt.factory.__name__
print(f"wheel smoke test passed: optax_suite {ox.__version__} from {where.parent}")
